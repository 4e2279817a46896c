"""The non-learned HU-histogram reference encoder."""

import numpy as np
import torch

from clear_bench.data.scan import Scan
from clear_bench.data.slices import SlicePlan, slice_instances
from clear_bench.encoders.hu_reference import HU_EDGES, feature_names, reference_encoder_spec
from clear_bench.encoders.hu_reference_model import HUReference


def _named(features):
    return dict(zip(feature_names(), features.tolist(), strict=True))


def test_features_of_known_slices():
    model = HUReference()
    air = torch.full((1, 1, 8, 8), -1000.0)
    half = torch.full((1, 1, 8, 8), -100.0)
    half[..., 4:, :] = 40.0  # half fat, half soft tissue
    out = model(torch.cat([air, half]))
    assert out.shape == (2, len(feature_names())) == (2, model.embed_dim)
    a, h = _named(out[0]), _named(out[1])
    assert a["hist[-1100,-950)"] == 1.0 and a["frac_air"] == 1.0 and a["mean"] == -1.0 and a["std"] == 0.0
    assert h["hist[-100,-50)"] == 0.5 and h["hist[25,50)"] == 0.5
    assert h["frac_fat"] == 0.5 and h["frac_soft_tissue"] == 0.5
    assert abs(h["mean"] - (-0.03)) < 1e-6 and abs(h["std"] - 0.07) < 1e-6
    assert abs(h["skewness"]) < 1e-4 and abs(h["kurtosis"] - (-2.0)) < 1e-4
    hist = out[:, : len(HU_EDGES) - 1]
    torch.testing.assert_close(hist.sum(1), torch.ones(2))


def test_out_of_range_values_fall_in_end_bins():
    out = _named(HUReference()(torch.tensor([[[[-3000.0, 3000.0]]]]))[0])
    assert out["hist[-1100,-950)"] == 0.5 and out["hist[1000,1500)"] == 0.5


def test_spec_builds_an_hu_encoder_that_reads_slice_instances():
    spec = reference_encoder_spec()
    assert spec.name == "hu-reference" and spec.weights_source == "none (non-learned)"
    encoder = spec.build({"image_size": 32})
    assert encoder.weights_digest == "none" and not encoder.random_init
    pre = encoder.preprocessing
    assert (pre.input, pre.channels, pre.image_size) == ("hu", 1, 32)
    volume = np.full((4, 40, 40), -1000.0, np.float32)
    volume[:, 10:30, 10:30] = 50.0
    volume[2, 15:25, 15:25] = 800.0  # a bright lesion on slice 2
    plan = SlicePlan(input=pre.input, channels=pre.channels, image_size=pre.image_size)
    instances = slice_instances(Scan("s", volume), plan)
    with torch.inference_mode():
        feats = encoder.model(torch.from_numpy(instances.images))
    assert feats.shape == (4, encoder.embed_dim == spec.embed_dim and encoder.embed_dim)
    bone = feature_names().index("frac_bone")
    assert feats[2, bone] > 0.03 and feats[[0, 1, 3], bone].max() < 0.01
