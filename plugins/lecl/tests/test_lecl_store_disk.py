"""The disk slice store: the slices and views of the in-RAM table, built once per node and data, shared."""

from __future__ import annotations

import os
import pickle
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clear_bench_lecl.pretrain.config import load_config
from clear_bench_lecl.pretrain.data import Augment, BatchPlan, EpochBatches, PretrainDataset, collate
from clear_bench_lecl.pretrain.store import (
    default_store_root,
    open_slice_store,
    open_store,
    store_description,
    store_key,
)
from lecl_pretrain_helpers import tiny_config
from lecl_store_workers import PLAN, LoggedSource, disk_config, loads, open_as_rank

from clear_bench.errors import ConfigError, DataError

AUGMENT = Augment(crop_min=0.08, blur=(1.0, 0.1), solarize=(0.0, 0.2), hflip=0.5)


def _dataset(table: object) -> PretrainDataset:
    return PretrainDataset(table, 32, 3, (0.5,) * 3, (0.5,) * 3, "lesion", AUGMENT)  # type: ignore[arg-type]


def test_disk_and_memory_stores_hold_the_same_slices_and_give_the_same_batches(tmp_path: Path) -> None:
    source = LoggedSource(tmp_path / "loads.txt")
    memory = open_slice_store(disk_config(tmp_path, store="memory"), source, source.scan_ids(), PLAN)
    disk = open_slice_store(disk_config(tmp_path / "stores"), source, source.scan_ids(), PLAN)
    assert memory.kind == "memory" and disk.kind == "disk" and disk.location.parent == tmp_path / "stores"
    assert isinstance(disk.pixels, np.memmap) and not disk.pixels.flags.writeable  # bulk reads
    assert not np.shares_memory(disk.image(3), disk.pixels)  # an item: read into a buffer of its own
    assert memory.image(0).shape == (1, 48, 48)  # native resolution (the plan's 32 px is not used)
    assert np.array_equal(memory.pixels, disk.pixels) and np.array_equal(memory.items, disk.items)
    assert np.array_equal(memory.box_xyxy, disk.box_xyxy) and memory.scan_ids == disk.scan_ids
    assert memory.is_lesion.sum() == disk.is_lesion.sum() > 0
    # the same batches: in-process from RAM, and from the mapped store through two loader workers
    plan = BatchPlan(memory.is_lesion, 8, seed=5)
    batches = []
    for table, workers in ((memory, 0), (disk, 2)):
        loader = DataLoader(_dataset(table), batch_sampler=EpochBatches(plan, 1), collate_fn=collate,
                            num_workers=workers)
        batches.append(list(loader))
    assert len(batches[0]) == len(batches[1]) == plan.steps_per_epoch > 1
    for one, two in zip(*batches, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))


def test_a_disk_table_travels_to_spawned_workers_as_its_folder(tmp_path: Path) -> None:
    source = LoggedSource(tmp_path / "loads.txt")
    disk = open_slice_store(disk_config(tmp_path), source, source.scan_ids(), PLAN)
    blob = pickle.dumps(disk)
    assert len(blob) < disk.nbytes / 10  # not the pixels
    again = pickle.loads(blob)
    assert isinstance(again.pixels, np.memmap) and np.array_equal(again.pixels, disk.pixels)
    assert np.array_equal(again.items, disk.items) and again.location == disk.location


def test_a_later_run_reuses_the_store_without_reading_a_scan(tmp_path: Path) -> None:
    log = tmp_path / "loads.txt"
    source = LoggedSource(log)
    first = open_slice_store(disk_config(tmp_path), source, source.scan_ids(), PLAN)
    assert loads(log) == source.scan_ids()
    again = open_slice_store(disk_config(tmp_path), source, source.scan_ids(), PLAN)
    assert loads(log) == source.scan_ids() and again.location == first.location  # nothing read again
    bone = replace(PLAN, windows=("bone",))
    other = open_slice_store(disk_config(tmp_path), source, source.scan_ids(), bone)
    assert other.location != first.location and len(loads(log)) == 2 * len(source.scan_ids())
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(
        [first.location.name, other.location.name])  # no temporaries, no lock files left
    manifest = (first.location / "manifest.json").read_text()
    assert first.location.name == store_key(store_description(source, source.scan_ids(), PLAN, True, 512))
    assert '"native_max": 512' in manifest and '"failures": []' in manifest


def test_only_the_builder_of_a_node_reads_the_scans_the_other_rank_waits(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    mp.spawn(open_as_rank, args=(str(tmp_path / "stores"), str(out)), nprocs=2, join=True)
    ranks = [(out / f"rank-{r}.txt").read_text().split() for r in range(2)]
    assert ranks[0] == ranks[1] and ranks[0][2] == "memmap"  # the same store, mapped by both
    assert len(loads(out / "loads-0.txt")) == 3 and loads(out / "loads-1.txt") == []


def test_a_failed_build_is_reported_to_the_waiting_rank(tmp_path: Path) -> None:
    class Broken(LoggedSource):
        def load(self, scan_id: str) -> object:
            raise DataError(f"{scan_id}.nii.gz: truncated file")

    source = Broken(tmp_path / "loads.txt")
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            open_slice_store(disk_config(tmp_path), source, source.scan_ids(), PLAN, builder=False)
        except DataError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    with pytest.raises(DataError, match="no slices to pretrain on"):
        open_slice_store(disk_config(tmp_path), source, source.scan_ids(), PLAN, builder=True)
    waiter.join(timeout=30)
    assert not waiter.is_alive() and len(errors) == 1
    assert "could not be built" in str(errors[0]) and "toy-000.nii.gz: truncated file" in str(errors[0])
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # nothing a reader could take


def test_leftovers_of_a_killed_build_are_removed_and_a_damaged_store_is_named(tmp_path: Path) -> None:
    source = LoggedSource(tmp_path / "loads.txt")
    key = store_key(store_description(source, source.scan_ids(), PLAN, True, 512))
    stale = tmp_path / f".{key}.dead1234.tmp"
    stale.mkdir()
    (stale / "pixels.u8").write_bytes(b"half")
    (tmp_path / key).mkdir()  # renamed without a manifest cannot happen, but a hand-made copy can
    table = open_slice_store(disk_config(tmp_path), source, source.scan_ids(), PLAN)
    assert not stale.exists() and table.location == tmp_path / key
    with open(table.location / "pixels.u8", "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(DataError, match=r"pixels\.u8: 100 bytes, the manifest says pixel_bytes"):
        open_store(table.location)


def test_where_the_slices_are_kept_leaves_the_training_fingerprint_alone(tmp_path: Path) -> None:
    recipe = tiny_config(tmp_path, "fp")
    disk = load_config(recipe)
    assert disk.data.store == "disk" and disk.data.store_dir is None
    assert default_store_root().parent == Path(os.environ["CLEAR_BENCH_CACHE"])  # set by conftest
    memory = load_config(tiny_config(tmp_path, "fp", data={"store": "memory", "store_dir": "elsewhere"}))
    assert memory.data.store_dir == str(tmp_path / "elsewhere")  # relative to the recipe
    assert memory.training_fingerprint() == disk.training_fingerprint()
    native = load_config(tiny_config(tmp_path, "fp", data={"native_max_size": 256}))
    assert native.training_fingerprint() != disk.training_fingerprint()
    for bad, problem in (({"store": "ram"}, "data.store: expected one of disk, memory, got 'ram'"),
                         ({"native_max_size": 4}, "data.native_max_size: must be >= 8, got 4")):
        with pytest.raises(ConfigError) as excinfo:
            load_config(tiny_config(tmp_path, "bad", data=bad))
        assert [line.split(": ", 1)[1] for line in excinfo.value.lines] == [problem]
