"""HU windowing presets and custom W/L parsing."""

import numpy as np
import pytest

from clear_bench.data.windowing import PRESETS, Window, parse_window, window_name
from clear_bench.errors import ConfigError


def test_presets_map_window_edges_to_0_and_1():
    lung = PRESETS["lung"]
    out = lung.apply(np.array([-1350.0, -600.0, 150.0, 3000.0]))
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0, 1.0])
    assert out.dtype == np.float32


@pytest.mark.parametrize(
    ("spec", "width", "level"),
    [("W400L40", 400, 40), ("w1500 l-600", 1500, -600), ("W1500/L-600", 1500, -600), ("L40W80", 80, 40),
     ({"width": 350, "level": 50}, 350, 50), ("soft_tissue", 400, 40), ("bone", 1800, 400)],
)
def test_parse_window_forms(spec, width, level):
    window = parse_window(spec)
    assert (window.width, window.level) == (width, level)


def test_custom_window_name_is_canonical():
    assert window_name("w400 L40") == "W400L40"
    assert window_name({"width": 80, "level": 40, "name": "brain"}) == "brain"
    assert parse_window(Window("x", 1, 0)).name == "x"


@pytest.mark.parametrize("spec", ["brain", "W0L40", "W-5L3", {"width": 400}, {"width": "a", "level": 1}, 3])
def test_bad_windows_raise_config_error(spec):
    with pytest.raises(ConfigError):
        parse_window(spec)
