"""Pretraining data: lesion-centred views, the world-size-independent batch plan, slices and boxes, config."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clear_bench_lecl.pretrain.config import load_config
from clear_bench_lecl.pretrain.data import (
    Augment,
    BatchPlan,
    PretrainDataset,
    SliceTable,
    build_slice_table,
)
from clear_bench_lecl.pretrain.seed_cli import IMAGENET_MEAN, IMAGENET_STD, PUBLIC_RECIPE
from clear_bench_lecl.pretrain.train import build_source
from lecl_pretrain_helpers import tiny_config
from lecl_toy_source import ToySource

from clear_bench.cli import main as cli_main
from clear_bench.data.scan import Scan
from clear_bench.data.slices import SlicePlan
from clear_bench.data.windowing import PRESETS
from clear_bench.errors import ConfigError
from clear_bench.specs import LesionBox

PLAIN = Augment(crop_min=0.08, blur=(0.0, 0.0), solarize=(0.0, 0.0), hflip=0.0, vflip=0.0)


def _table(lesion_box: tuple[float, float, float, float] | None) -> SliceTable:
    image = np.zeros((1, 64, 64), dtype=np.uint8)
    boxes = np.zeros((0, 4), dtype=np.float32)
    if lesion_box is not None:
        x0, y0, x1, y1 = lesion_box
        image[0, int(y0):int(y1), int(x0):int(x1)] = 255
        boxes = np.asarray([lesion_box], dtype=np.float32)
    return SliceTable.from_images([image], [boxes])


def test_lesion_slice_gives_a_whole_view_and_a_crop_centred_on_the_lesion() -> None:
    table = _table((50.0, 4.0, 58.0, 12.0))  # near the top-right corner: crops leave the slice
    dataset = PretrainDataset(table, 32, 3, (0.0,) * 3, (1.0,) * 3, "lesion", PLAIN)
    for seed in range(20):
        whole, crop, is_lesion = dataset[(0, seed)]
        assert is_lesion and whole.shape == crop.shape == (3, 32, 32)
        assert whole.sum() == pytest.approx(64 / 64 * 64 * 3 * 0.25, rel=0.05)  # whole slice, 64 px lesion
        assert crop[:, 15:17, 15:17].min() > 0.9, seed  # the lesion sits at the centre of the crop
    sides = {float((dataset[(0, s)][1][0] > 0.5).sum()) for s in range(20)}
    assert len(sides) > 3  # random crop sides


def test_plain_moco_and_non_lesion_slices_get_two_random_resized_crops() -> None:
    lesion = _table((28.0, 28.0, 36.0, 36.0))
    moco = PretrainDataset(lesion, 32, 3, (0.0,) * 3, (1.0,) * 3, "none", PLAIN)
    views = [moco[(0, seed)] for seed in range(10)]
    assert all(flag for _, _, flag in views)  # the flag is carried either way
    assert any(not np.allclose(a.numpy(), b.numpy()) for a, b, _ in views)
    plain = PretrainDataset(_table(None), 32, 3, (0.0,) * 3, (1.0,) * 3, "lesion", PLAIN)
    a1, b1, flag = plain[(0, 7)]
    a2, b2, _ = plain[(0, 7)]
    assert not flag and np.array_equal(a1.numpy(), a2.numpy()) and np.array_equal(b1.numpy(), b2.numpy())


def test_batch_plan_splits_the_same_global_batches_across_ranks() -> None:
    lesion = np.arange(40) % 5 == 0
    single = BatchPlan(lesion, 8, world=1, accum=2, seed=3)
    ranks = [BatchPlan(lesion, 8, world=2, rank=r, accum=2, seed=3) for r in range(2)]
    assert single.steps_per_epoch == ranks[0].steps_per_epoch == 5
    for epoch in (0, 1):
        one = list(single.micro_batches(epoch))
        two = [list(plan.micro_batches(epoch)) for plan in ranks]
        assert [a + b for a, b in zip(*two, strict=True)] == one
    assert list(single.micro_batches(1, start_step=3)) == list(single.micro_batches(1))[6:]
    assert not np.array_equal(single.epoch_order(0), single.epoch_order(1))


def test_lesion_oversampling_repeats_lesion_slices() -> None:
    lesion = np.arange(40) % 5 == 0  # 8 lesion slices
    plan = BatchPlan(lesion, 8, oversample=2.5, seed=0)
    order = plan.epoch_order(0)
    assert len(order) == plan.epoch_length == 40 + 8 + 4
    counts = np.bincount(order, minlength=40)
    assert set(counts[lesion]) <= {2, 3} and counts[lesion].sum() == 20 and set(counts[~lesion]) == {1}


def test_slice_table_keeps_lesion_slices_and_maps_boxes_onto_the_resized_slice() -> None:
    source = ToySource(scans=2, slices=9, size=48, seed=0)
    plan = SlicePlan(windows=("soft-tissue", "lung"), slice_step=4, image_size=32, channels=1)
    table = build_slice_table(source, source.scan_ids(), plan, keep_lesion_slices=True)
    # slices 0, 4, 8 plus lesion slices 1, 4, 7 -> 5 slices x 2 windows per scan, at the plan's fixed size
    assert len(table) == 2 * 5 * 2 and table.images.shape[1:] == (1, 32, 32)
    assert table.is_lesion.sum() == 2 * 3 * 2
    for index in np.flatnonzero(table.is_lesion & (table.window_of == 0)):
        x0, y0, x1, y1 = table.boxes[index][0]
        cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
        # lesion 160 HU -> 0.8 in the soft-tissue window, tissue 40 HU -> 0.5
        assert table.images[index, 0, cy, cx] > 180
    without = build_slice_table(source, source.scan_ids(), plan, keep_lesion_slices=False)
    assert len(without) == 2 * 3 * 2


class _Volumes:
    """A scan source serving the given HU volumes with their lesion boxes."""

    name = "volumes"

    def __init__(self, scans: dict[str, tuple[np.ndarray, list[LesionBox]]]) -> None:
        self.scans = scans

    def scan_ids(self) -> list[str]:
        return list(self.scans)

    def fingerprint(self, scan_id: str) -> str:
        return str(hash(self.scans[scan_id][0].tobytes()))

    def load(self, scan_id: str) -> Scan:
        volume, lesions = self.scans[scan_id]
        return Scan(scan_id, volume.astype(np.float32), lesions=list(lesions))


def test_native_slices_keep_their_resolution_and_boxes_their_pixels() -> None:
    rng = np.random.default_rng(0)
    tall = rng.uniform(-200, 300, size=(2, 56, 40))  # padded to 56 x 56, 8 px of air each side
    big = rng.uniform(-200, 300, size=(1, 300, 300))  # above the 150 px cap: downsampled
    source = _Volumes({"tall": (tall, [LesionBox(1, 10.0, 20.0, 18.0, 30.0)]),
                       "big": (big, [LesionBox(0, 100.0, 60.0, 140.0, 90.0)])})
    plan = SlicePlan(windows=("soft-tissue",), image_size=32, channels=1)
    table = build_slice_table(source, source.scan_ids(), plan, native_max=150)
    assert [table.image(i).shape for i in range(len(table))] == [(1, 56, 56)] * 2 + [(1, 150, 150)]
    window = PRESETS["soft-tissue"]
    expected = np.rint(window.apply(tall[1]) * 255).astype(np.uint8)
    assert np.array_equal(table.image(1)[0, :, 8:48], expected)  # the scan's own pixels, not resampled
    assert np.array_equal(table.image(1)[0, :, :8], np.zeros((56, 8), np.uint8))  # air
    np.testing.assert_allclose(table.boxes[1], [[18.0, 20.0, 26.0, 30.0]])  # shifted by the padding
    np.testing.assert_allclose(table.boxes[2], [[50.0, 30.0, 70.0, 45.0]])  # scaled by 150 / 300
    assert table.is_lesion.tolist() == [False, True, True]
    with pytest.raises(ValueError, match="different shapes"):
        table.images  # noqa: B018


def test_a_lesion_crop_has_the_detail_of_the_native_slice() -> None:
    """Crops are cut from the stored slice at its native 256 px and then resized: a 4 px checkerboard
    survives, where the same crop cut from a 64 px copy of the slice is a flat grey."""
    yy, xx = np.mgrid[0:256, 0:256]
    checker = np.where((yy // 4 + xx // 4) % 2 == 0, -60.0, 200.0)[None]  # 0.25 / 0.9 in soft tissue
    box = LesionBox(0, 120.0, 110.0, 136.0, 130.0)
    source = _Volumes({"checker": (checker, [box])})
    native = build_slice_table(source, ["checker"], SlicePlan(windows=("soft-tissue",), channels=1),
                               native_max=512)
    small = build_slice_table(source, ["checker"], SlicePlan(windows=("soft-tissue",), image_size=64,
                                                             channels=1))
    assert native.image(0).shape == (1, 256, 256) and small.image(0).shape == (1, 64, 64)
    np.testing.assert_allclose(native.boxes[0], [[120.0, 110.0, 136.0, 130.0]])  # native coordinates
    views = {name: PretrainDataset(table, 128, 1, (0.0,), (1.0,), "lesion", PLAIN)
             for name, table in (("native", native), ("small", small))}
    for seed in range(8):
        crops = {name: dataset[(0, seed)][1].numpy()[0, 32:96, 32:96] for name, dataset in views.items()}
        assert crops["native"].std() > 0.15, seed  # the pattern (0.25 / 0.9: std 0.325 unblurred)
        assert crops["small"].std() < 0.04, seed  # blurred away
        assert crops["native"].mean() == pytest.approx(crops["small"].mean(), abs=0.01)


def _line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_config_errors_name_the_file_line_key_or_option(tmp_path: Path) -> None:
    path = tiny_config(tmp_path, "bad", optim={"epochs": 2, "batch_size": 16, "base_lr": "fast"},
                       model={"arch": "vit_tiny_patch16", "imagesize": 32})
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    lines = excinfo.value.lines
    assert f"{path}:{_line_of(path, 'base_lr:')}: optim.base_lr: expected float, got str 'fast'" in lines
    assert any(line.startswith(f"{path}:{_line_of(path, 'imagesize:')}: model.imagesize: unknown key "
                               "(did you mean 'image_size'?)") for line in lines)
    good = tiny_config(tmp_path, "good")
    # An override is named as the pretrainer's option, its flag and the recipe key it sets (the run cannot
    # tell a --flag from a benchmark YAML's `pretrain: {options: ...}`).
    with pytest.raises(ConfigError) as excinfo:
        load_config(good, {"batch_size": 0})
    assert excinfo.value.lines == [
        "options: batch_size (--batch-size, sets optim.batch_size): must be > 0, got 0"]
    with pytest.raises(ConfigError) as excinfo:
        load_config(good, {"epochs": "7", "epoch": 3})
    assert excinfo.value.lines == [
        "options: epochs (--epochs, sets optim.epochs): expected int, got str '7'",
        "options: epoch: unknown option (did you mean 'epochs'?); expected one of: experiment, arch, epochs, "
        "batch_size, lr, sampling, sample_weight, loss, seed, max_steps, checkpoint_every, threads, "
        "num_workers, device, progress",
    ]
    # A recipe key checked against an overridden one says where that value came from.
    with pytest.raises(ConfigError) as excinfo:
        load_config(good, {"epochs": 0})
    assert excinfo.value.lines == [
        "options: epochs (--epochs, sets optim.epochs): must be > 0, got 0",
        f"{good}:{_line_of(good, 'warmup_epochs:')}: optim.warmup_epochs: longer than optim.epochs "
        "(0, from option epochs)",
    ]
    config = load_config(good, {"epochs": 7, "sample_weight": 2.5, "sampling": "none", "lr": 1, "seed": None})
    assert config.optim.epochs == 7 and config.loss.sample_weight == 2.5 and config.sampling == "none"
    assert config.seed == 0  # None leaves the recipe's value
    assert isinstance(config.optim.base_lr, float) and config.optim.base_lr == 1.0
    assert config.training_fingerprint() == load_config(good, {"lr": 1.0, "epochs": 7, "sample_weight": 2.5,
                                                               "sampling": "none"}).training_fingerprint()
    assert config.runtime.output_dir == str(tmp_path / "good")  # the recipe's
    moved = load_config(good, output=Path("elsewhere"))  # an output folder given to the run: from the cwd
    assert moved.runtime.output_dir == str(Path.cwd() / "elsewhere")
    assert moved.training_fingerprint() == load_config(good).training_fingerprint()


def test_command_line_override_problems_name_the_flag(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    good = tiny_config(tmp_path, "good")
    assert cli_main(["pretrain", "lecl", "--config", str(good), "--batch-size", "0", "--lr", "-1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: options: batch_size (--batch-size, sets optim.batch_size): must be > 0, got 0",
                   "error: options: lr (--lr, sets optim.base_lr): must be > 0, got -1.0"]
    with pytest.raises(SystemExit):  # a value of the wrong type never reaches the run
        cli_main(["pretrain", "lecl", "--config", str(good), "--epochs", "many"])
    assert "--epochs: invalid int value: 'many'" in capsys.readouterr().err


def test_source_options_are_checked_with_the_recipe_line(tmp_path: Path) -> None:
    path = tiny_config(tmp_path, "src", data={"options": {"scans": "six", "slice": 9}})
    with pytest.raises(ConfigError) as excinfo:
        build_source(load_config(path))
    assert excinfo.value.lines == [
        f"{path}:{_line_of(path, 'scans:')}: data.options.scans: expected int, got str 'six'",
        f"{path}:{_line_of(path, 'slice:')}: data.options.slice: unknown key (did you mean 'slices'?); "
        "expected one of: scans, slices, size, seed",
    ]
    source = build_source(load_config(tiny_config(tmp_path, "ok", data={"options": {"scans": 2}})))
    assert source.scan_ids() == ["toy-000", "toy-001"]


def test_registering_the_pretrainer_imports_no_torch() -> None:
    code = ("import sys; from clear_bench_lecl.pretrain import pretrainer_specs; "
            "spec, = pretrainer_specs(); assert not spec.config_required and 'epochs' in spec.options; "
            "assert spec.code_version.startswith('lecl-pretrain-'), spec.code_version; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


RECIPES = Path(__file__).resolve().parents[3] / "benchmarks" / "pretrain"


def test_every_recipe_validates_and_says_whose_settings_it_has() -> None:
    recipes = sorted(RECIPES.glob("*.yaml"))
    assert len(recipes) >= 7
    for recipe in recipes:
        config = load_config(recipe)
        assert config.optim.batch_size % config.optim.accum_steps == 0, recipe.name
        first = recipe.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# Settings: ") and len(first) > len("# Settings: ") + 10, recipe.name


def test_the_public_code_recipe_has_the_seed_commands_settings() -> None:
    recipe = load_config(RECIPES / "clear-public.yaml")
    seed = load_config(None, recipe=PUBLIC_RECIPE)
    # main_moco.py's defaults, as the recipe's Settings line says
    assert (recipe.loss.temperature, recipe.optim.weight_decay, recipe.optim.base_lr) == (1.0, 1e-6, 1e-4)
    assert recipe.optim.momentum == 0.99 and not recipe.optim.momentum_cosine
    assert (recipe.optim.batch_size, recipe.optim.epochs, recipe.optim.warmup_epochs) == (4096, 100, 10.0)
    assert recipe.model.arch == "vit_conv_base" and recipe.augment.jitter == 0.4
    assert list(recipe.model.mean) == IMAGENET_MEAN and list(recipe.model.std) == IMAGENET_STD
    # one set of values for both; the recipe takes the public code's loss form, the seed command the paper's
    assert recipe.loss.name == "lecl-reference" and seed.loss.name == "lecl"
    assert replace(recipe.loss, name=seed.loss.name) == seed.loss
    for section in ("model", "augment", "optim"):
        assert getattr(recipe, section) == getattr(seed, section), section
    assert (recipe.sampling, recipe.lesion_oversample) == (seed.sampling, seed.lesion_oversample)
