"""The public CLEAR code's command line without a recipe: flags -> recipe, checkpoint names, and a run on a
seed-layout folder whose encoder loads in lecl-vit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml
from clear_bench_lecl.pretrain import OPTIONS
from clear_bench_lecl.pretrain.config import load_config
from clear_bench_lecl.pretrain.seed_cli import NEEDS_RECIPE, PUBLIC_RECIPE, seed_settings
from clear_bench_lecl.pretrain.seed_layout import SOURCE_NAME
from clear_bench_lecl.pretrain.state import run_stem

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lecl_pretrain_helpers import tiny_config
from test_lecl_seed_layout import write_slices

from clear_bench.cli import main as cli_main
from clear_bench.errors import ConfigError
from clear_bench.registry import load_registry


@pytest.fixture
def seed_folder(tmp_path: Path) -> tuple[Path, Path]:
    """Two DeepLesion-style series of 64 px 8-bit slices and the File_name,Bounding_boxes CSV."""
    root = tmp_path / "DeepLesion" / "Images_png"
    write_slices(root / "000001_01_01", ["1.png", "2.png", "3.png", "4.png"])
    write_slices(root / "000002_01_01", ["7.png", "8.png", "9.png", "10.png"])
    csv = tmp_path / "DL_info.csv"
    csv.write_text('File_name,Bounding_boxes\n000001_01_01_2.png,"20, 22, 40, 44"\n'
                   '000002_01_01_9.png,"8.5, 30.2, 20.1, 50"\n')
    return root, csv


def _config(options: dict, has_config: Path | None = None):
    run = seed_settings(options, has_config=has_config is not None)
    return load_config(has_config, run.options, recipe=run.recipe, settings=run.settings), run


def test_the_seed_flags_make_a_recipe_of_the_public_codes_settings(seed_folder: tuple[Path, Path]) -> None:
    root, csv = seed_folder
    config, run = _config({"data": str(root), "df_path": str(csv), "arch": "vit_small", "sampling": "Lesion",
                           "sample_weight": 2.0, "batch_size": 64, "lr": 1e-3, "epochs": 3, "moco_t": 0.5,
                           "moco_m_cos": True, "name_add": "ps-run"})
    assert config.data.source == SOURCE_NAME
    assert config.data.options == {"root": str(root), "lesions": str(csv)}
    assert config.model.arch == "vit_small_patch16"
    assert config.model.arch_kwargs == {"num_heads": 12, "pos_embed": "sincos"}  # MoCo v3's ViT-Small
    assert config.sampling == "lesion" and config.loss.sample_weight == 2.0 and config.loss.name == "lecl"
    assert (config.optim.batch_size, config.optim.base_lr, config.optim.epochs) == (64, 1e-3, 3)
    assert config.loss.temperature == 0.5 and config.optim.momentum_cosine
    # the public code's defaults where no flag is given
    assert config.optim.weight_decay == 1e-6 and config.optim.momentum == 0.99
    assert list(config.model.mean) == [0.485, 0.456, 0.406] and config.augment.jitter == 0.4
    assert config.runtime.keep_checkpoints == 0
    # 10 warm-up epochs do not fit in 3: said, and shortened
    assert config.optim.warmup_epochs == 3.0 and any("warm-up" in note for note in run.notes)
    assert run_stem(config) == "vit_small-moco-lecl-1-ps-run"
    assert config.experiment == "ps-run"


def test_sampling_none_is_plain_moco_v3_and_the_default_name_is_the_public_codes(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    config, _ = _config({"data": str(tmp_path / "d"), "sampling": "None", "epochs": 20})
    assert config.sampling == "none" and config.loss.name == "infonce" and config.mode == "mocov3"
    assert config.model.arch == PUBLIC_RECIPE["model"]["arch"] == "vit_conv_base"
    assert config.optim.warmup_epochs == 10.0
    assert run_stem(config) == "vit_conv_base-moco-lecl-1-exp-ps"  # the public code's 'lecl-1' always


def test_neither_a_recipe_nor_the_seed_flags_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"--config FILE.*--data DIR"):
        seed_settings({"epochs": 3}, has_config=False)
    assert cli_main(["pretrain", "lecl", "--epochs", "3"]) == 2
    assert NEEDS_RECIPE in capsys.readouterr().err


def test_unknown_archs_and_bad_values_are_named_by_their_flag(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(ConfigError, match=r"--arch swin is not available.*vit_conv_base"):
        seed_settings({"data": str(tmp_path / "d"), "arch": "swin"}, has_config=False)
    with pytest.raises(ConfigError, match=r"moco_t \(--moco-t, sets loss.temperature\): must be > 0"):
        _config({"data": str(tmp_path / "d"), "moco_t": 0.0})
    with pytest.raises(ConfigError, match="--df-path needs --data"):
        seed_settings({"df_path": str(tmp_path / "x.csv")}, has_config=True)


def test_with_a_recipe_the_data_flags_replace_its_source_and_names_stay_the_recipes(
        tmp_path: Path, seed_folder: tuple[Path, Path]) -> None:
    root, csv = seed_folder
    recipe = tiny_config(tmp_path)
    config, _ = _config({"data": str(root), "df_path": str(csv), "moco_t": 0.3}, has_config=recipe)
    assert config.data.source == SOURCE_NAME and config.data.options == {"root": str(root),
                                                                         "lesions": str(csv)}
    assert config.loss.temperature == 0.3
    assert config.model.arch == yaml.safe_load(recipe.read_text())["model"]["arch"]
    assert run_stem(config) == "vit_tiny_patch16-moco-lecl-tiny"


def test_the_pretrainer_declares_the_seed_flags() -> None:
    for name in ("data", "df_path", "name_add", "moco_t", "moco_m_cos", "crop_min", "arch", "sample_weight"):
        assert name in OPTIONS, name
    assert {"Lesion", "None"} <= set(OPTIONS["sampling"].choices)


def test_the_seed_command_trains_on_a_seed_folder_and_its_encoder_loads_in_lecl_vit(
        tmp_path: Path, seed_folder: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    torch.set_num_threads(1)
    root, csv = seed_folder
    out = tmp_path / "run"
    code = cli_main(["pretrain", "lecl", "--data", str(root), "--df-path", str(csv),
                     "--arch", "vit_tiny_patch16", "--sampling", "Lesion", "--sample-weight", "2",
                     "--batch-size", "4", "--lr", "1e-3", "--epochs", "1", "--image-size", "32",
                     "--moco-dim", "32", "--moco-mlp-dim", "64", "--moco-m-cos", "--threads", "1",
                     "--output-dir", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "8 slices from 2 scans (2 with lesions)" in printed
    names = sorted(p.name for p in out.glob("*.pth.tar"))
    assert names == ["vit_tiny_patch16-moco-lecl-1-exp-ps-checkpoint_0001.pth.tar"]
    (encoder_path,) = out.glob("*-encoder.pt")
    assert f"encoder checkpoint: {encoder_path}" in printed

    encoder = load_registry([]).encoder("lecl-vit").build({"checkpoint": str(encoder_path)})
    assert not encoder.random_init and encoder.embed_dim == 192
    assert encoder.preprocessing.image_size == 32
    assert tuple(encoder.preprocessing.mean) == (0.485, 0.456, 0.406)
    state = torch.load(out / names[0], weights_only=True)["model"]
    for key, value in encoder.model.state_dict().items():
        assert torch.equal(value, state[f"backbone.{key}"]), key
    with torch.no_grad():
        features = encoder.model(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 192) and torch.isfinite(features).all()
