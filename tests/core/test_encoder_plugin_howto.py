"""The encoder-plugin how-to, taken literally: its files are written to a temporary folder and the plugin
is loaded both ways (installed entry point, and local file named under ``plugins:``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from clear_bench.config import load_benchmark
from clear_bench.errors import WeightsNotFoundError
from clear_bench.registry import load_registry
from clear_bench.specs import resolve_options

HOWTO = Path(__file__).resolve().parents[2] / "docs" / "writing-an-encoder-plugin.md"


def files_of_howto(dest: Path) -> dict[str, Path]:
    """Write every code block introduced by a line like `` `my-encoder/name.ext`: `` below ``dest``."""
    text = HOWTO.read_text()
    blocks = re.findall(r"^`(my-encoder/[^`]+)`:\n\n```[a-z]*\n(.*?)^```", text, flags=re.M | re.S)
    written = {}
    for relative, body in blocks:
        path = dest / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        written[Path(relative).name] = path
    return written


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    files = files_of_howto(tmp_path)
    assert set(files) == {"my_encoder.py", "pyproject.toml"}, "the how-to must hold both files"
    return tmp_path / "my-encoder"


def test_howto_plugin_as_local_file_in_a_benchmark_yaml(plugin_dir: Path) -> None:
    bench = plugin_dir.parent / "bench.yaml"
    bench.write_text(textwrap.dedent("""
        plugins: [my-encoder/my_encoder.py]
        encoders:
          - name: my-timm
            options: {weights: random, image_size: 32}
        tasks: [lesion-location]
    """))
    registry = load_registry([plugin_dir / "my_encoder.py"])
    entry = registry.encoders["my-timm"]
    assert entry.provider.distribution.startswith("local: ")
    config = load_benchmark(bench, registry)
    [ref] = config.encoders
    spec = registry.encoder(ref.name)
    encoder = spec.build(resolve_options(spec.options, ref.options))
    assert encoder.random_init and encoder.label == "my-timm (random init)"
    with torch.inference_mode():
        out = encoder.model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, encoder.embed_dim) and encoder.embed_dim == 512
    assert torch.isfinite(out).all()


def test_howto_plugin_refuses_missing_weights(plugin_dir: Path) -> None:
    spec = load_registry([plugin_dir / "my_encoder.py"]).encoder("my-timm")
    with pytest.raises(WeightsNotFoundError, match=r"no weights file at .*absent\.pt"):
        spec.build(resolve_options(spec.options, {"weights": str(plugin_dir / "absent.pt")}))


def test_howto_plugin_as_installed_distribution(plugin_dir: Path, tmp_path: Path) -> None:
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is needed to install the how-to plugin (it is the project's installer)")
    site = tmp_path / "site"
    subprocess.run([uv, "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(plugin_dir)],
                   check=True, capture_output=True, text=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    listing = subprocess.run([sys.executable, "-m", "clear_bench", "plugins", "--kind", "encoders"],
                             check=True, capture_output=True, text=True, env=env).stdout
    [row] = [line for line in listing.splitlines() if line.strip().startswith("my-timm")]
    assert "my-encoder" in row and "0.1.0" in row and "slice" in row and "local state-dict file" in row

    probe = textwrap.dedent("""
        import json, torch
        from clear_bench.registry import load_registry
        from clear_bench.specs import resolve_options
        entry = load_registry().encoders["my-timm"]
        options = resolve_options(entry.spec.options, {"weights": "random", "image_size": 32})
        encoder = entry.spec.build(options)
        out = encoder.model(torch.rand(1, 3, 32, 32))
        print(json.dumps({"dist": entry.provider.distribution, "shape": list(out.shape)}))
    """)
    result = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True,
                            env=env)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"dist": "my-encoder", "shape": [1, 512]}
