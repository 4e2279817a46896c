"""Every foundation encoder passes ``check-encoder`` on a synthetic-cohort CT: random weights at a tiny size
(no weights are present here), checked against the preprocessing each one publishes."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import Dinov2Config, Dinov2Model

from clear_bench.cli import main
from clear_bench.conformance import PROPERTIES, check_encoder
from clear_bench.registry import load_registry
from clear_bench.specs import Preprocessing

IMAGENET = {"channels": 3, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
OPENAI = {"channels": 3, "mean": (0.48145466, 0.4578275, 0.40821073),
          "std": (0.26862954, 0.26130258, 0.27577711)}
TINY_VIT = {"embed_dim": 32, "depth": 1, "num_heads": 2}


def _hf_folder(tmp_path, config: dict) -> str:
    folder = tmp_path / "tiny-hf"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return str(folder)


def cases(tmp_path, tiny_clip_dir):
    """encoder -> (options: random weights at a tiny size, the preprocessing it must declare; the tiny
    transformers folders have no processor config: the published mean / std at the config's size)."""
    dino_cfg = {"model_type": "dinov2", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                "mlp_ratio": 2, "image_size": 28, "patch_size": 14}
    siglip_cfg = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                  "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32, "patch_size": 8}
    return {
        "biomedclip": ({"weights": "random", "local_dir": str(tiny_clip_dir)},
                       Preprocessing(image_size=160, **OPENAI)),
        "dinov2": ({"weights": "random", "model_kwargs": TINY_VIT, "img_size": 28},
                   Preprocessing(image_size=28, **IMAGENET)),
        "dino-vit": ({"weights": "random", "model_kwargs": TINY_VIT, "img_size": 32},
                     Preprocessing(image_size=32, **IMAGENET)),
        "sam2-hiera": ({"weights": "random", "img_size": 64,
                        "model_kwargs": {"embed_dim": 16, "num_heads": 1, "stages": [1, 1, 1, 1]}},
                       Preprocessing(image_size=64, **IMAGENET)),
        "rad-dino": ({"weights": "random", "local_dir": _hf_folder(tmp_path / "rad", dino_cfg)},
                     Preprocessing(image_size=28, channels=3, mean=(0.5307,) * 3, std=(0.2583,) * 3)),
        "medsiglip": ({"weights": "random", "local_dir": _hf_folder(tmp_path / "sig", siglip_cfg)},
                      Preprocessing(image_size=32, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)),
        "ct-fm": ({"weights": "random", "arch_kwargs": {"init_filters": 4, "blocks_down": [1, 1, 1]},
                   "image_size": 32, "depth": 16},
                  Preprocessing(image_size=32, input="hu", depth=16, channels=1, mean=(0.0,), std=(1.0,))),
        "merlin": ({"weights": "random", "arch_kwargs": {"layers": [1, 1, 1, 1], "width": 8},
                    "image_size": 32, "depth": 16},
                   Preprocessing(image_size=32, depth=16, channels=1, mean=(0.0,), std=(1.0,))),
    }


NAMES = ["biomedclip", "dinov2", "dino-vit", "sam2-hiera", "rad-dino", "medsiglip", "ct-fm", "merlin"]


def test_every_foundation_encoder_is_checked():
    registry = load_registry()
    provided = {name for name, entry in registry.encoders.items()
                if entry.provider.distribution == "clear-bench-foundation"}
    assert provided == {*NAMES, "hf-image"}  # hf-image wraps any model: test_foundation_hf_image checks it


@pytest.mark.parametrize("name", NAMES)
def test_built_in_foundation_encoder_conforms(name, tmp_path, tiny_clip_dir, ct_scan):
    for sub in ("rad", "sig"):
        (tmp_path / sub).mkdir()
    options, published = cases(tmp_path, tiny_clip_dir)[name]
    report = check_encoder(load_registry().encoder(name), options, scan=ct_scan, slices=1, declared=published)
    assert report.passed, "\n".join(report.lines())
    assert [r.name for r in report.results] == list(PROPERTIES)
    assert "random init" in report.label


def test_a_published_preprocessing_that_differs_fails_naming_the_field(tiny_clip_dir, ct_scan):
    wrong = Preprocessing(image_size=160, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    report = check_encoder(load_registry().encoder("biomedclip"),
                           {"weights": "random", "local_dir": str(tiny_clip_dir)}, scan=ct_scan, slices=1,
                           declared=wrong)
    assert report.failed == ["preprocessing"]
    assert "mean (0.48145466, 0.4578275, 0.40821073) (declared (0.5, 0.5, 0.5))" in \
        report.result("preprocessing").detail


def test_the_command_checks_a_saved_rad_dino_folder(tmp_path, ct_scan, capsys):
    folder = tmp_path / "rad-dino"
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
                             image_size=28, patch_size=14)).save_pretrained(folder)
    processor = {"do_resize": True, "size": {"shortest_edge": 28}, "do_center_crop": True,
                 "crop_size": {"height": 28, "width": 28}, "image_mean": [0.5307] * 3,
                 "image_std": [0.2583] * 3}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    scan = tmp_path / "scan.nii.gz"
    import nibabel as nib
    import numpy as np

    nib.save(nib.Nifti1Image(np.ascontiguousarray(ct_scan.volume.transpose(2, 1, 0)).astype(np.int16),
                             np.diag([*ct_scan.spacing[::-1], 1.0])), scan)
    code = main(["check-encoder", "rad-dino", "--option", f"local_dir={folder}", "--scan", str(scan),
                 "--slices", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("PASS") == len(PROPERTIES) and "28 px" in out and "mean (0.5307, 0.5307, 0.5307)" in out
