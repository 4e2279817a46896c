"""Extraction: batched, cached, resumable embedding of scans read from NIfTI files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import h5py
import numpy as np
import pytest

from clear_bench.cache import EmbeddingCache
from clear_bench.components import build_encoder
from clear_bench.errors import DataError
from clear_bench.extraction import extract, load_bags, loop, slice_plan_for

FP32 = {"precision": "fp32", "progress": False}


class ForwardCounter:
    """Counts forward calls of the real model through a forward hook."""

    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.calls += 1


@pytest.fixture
def vit(tiny_vit):
    return tiny_vit()


def test_embeddings_are_finite_with_the_declared_dims_and_instance_order(tmp_path, scans, vit):
    source, ids = scans
    plan = slice_plan_for(vit)
    cache = EmbeddingCache(tmp_path / "cache")
    report = extract(vit, source, ids, plan, cache, batch_size=16, num_workers=2, **FP32)
    assert sorted(report.extracted) == ids and not report.failed and not report.cached
    assert set(report.keys) == set(ids)

    bags = load_bags(cache, vit, plan, source, ids)
    assert list(bags) == ids
    for scan_id, bag in bags.items():
        slices = source.load(scan_id).num_slices
        assert bag.embeddings.shape == (slices * 3, vit.embed_dim) == (slices * 3, 192)
        assert np.isfinite(bag.embeddings).all() and bag.embeddings.std() > 0
        np.testing.assert_array_equal(bag.slice_index, np.repeat(np.arange(slices), 3))
        np.testing.assert_array_equal(bag.window_id, np.tile([0, 1, 2], slices))
    assert report.instances == sum(len(b) for b in bags.values())
    # the three windows of one slice give different embeddings
    first = bags[ids[0]].embeddings
    assert not np.allclose(first[0], first[1])


def test_a_scan_alone_equals_the_same_scan_inside_a_batch_of_others(tmp_path, scans, vit):
    source, ids = scans
    plan = slice_plan_for(vit)
    alone, mixed = EmbeddingCache(tmp_path / "alone"), EmbeddingCache(tmp_path / "mixed")
    extract(vit, source, [ids[2]], plan, alone, batch_size=4, num_workers=0, **FP32)
    extract(vit, source, ids, plan, mixed, batch_size=16, num_workers=2, **FP32)
    one = load_bags(alone, vit, plan, source, [ids[2]])[ids[2]]
    among = load_bags(mixed, vit, plan, source, [ids[2]])[ids[2]]
    np.testing.assert_allclose(one.embeddings, among.embeddings, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(one.slice_index, among.slice_index)


def test_a_second_extraction_reads_the_cache_and_runs_no_model(tmp_path, scans, vit, monkeypatch):
    source, ids = scans
    plan = slice_plan_for(vit, windows=("soft-tissue",))
    cache = EmbeddingCache(tmp_path / "cache")
    counter = ForwardCounter(vit.model)
    first = extract(vit, source, ids, plan, cache, batch_size=8, num_workers=2, **FP32)
    assert counter.calls == first.forward_calls > 0

    counter.calls = 0
    # Served entries need neither loader workers nor the scans.
    monkeypatch.setattr(loop, "DataLoader", lambda *a, **k: pytest.fail("a loader started for cached scans"))
    monkeypatch.setattr(source, "load", lambda *a: pytest.fail("a cached scan was read"))
    second = extract(vit, source, ids, plan, cache, batch_size=8, num_workers=2, **FP32)
    assert counter.calls == 0 and second.forward_calls == 0
    assert sorted(second.cached) == ids and not second.extracted
    assert second.keys == first.keys


def test_changing_the_window_or_the_weights_re_extracts(tmp_path, scans, vit, tiny_vit):
    source, ids = scans
    cache = EmbeddingCache(tmp_path / "cache")
    plan = slice_plan_for(vit, windows=("soft-tissue", "lung"))
    base = extract(vit, source, ids, plan, cache, batch_size=16, num_workers=0, **FP32)

    counter = ForwardCounter(vit.model)
    other_window = replace(plan, windows=("soft-tissue", "W350L50"))
    windowed = extract(vit, source, ids, other_window, cache, batch_size=16, num_workers=0, **FP32)
    assert sorted(windowed.extracted) == ids and counter.calls > 0
    assert set(windowed.keys.values()).isdisjoint(base.keys.values())

    reseeded = tiny_vit(seed=1)
    assert reseeded.weights_digest != vit.weights_digest
    new_weights = extract(reseeded, source, ids, plan, cache, batch_size=16, num_workers=0, **FP32)
    assert sorted(new_weights.extracted) == ids
    a = load_bags(cache, vit, plan, source, ids[:1])[ids[0]]
    b = load_bags(cache, reseeded, plan, source, ids[:1])[ids[0]]
    assert not np.allclose(a.embeddings, b.embeddings)

    again = extract(vit, source, ids, plan, cache, batch_size=16, num_workers=0, **FP32)
    assert sorted(again.cached) == ids  # the earlier entries are still there and valid


def test_a_changed_scan_file_re_extracts_only_that_scan(tmp_path, scans, vit, scan_writer):
    source, ids = scans
    cache = EmbeddingCache(tmp_path / "cache")
    plan = slice_plan_for(vit, windows=("lung",))
    extract(vit, source, ids, plan, cache, batch_size=16, num_workers=0, **FP32)
    scan_writer(tmp_path / "rewrite", 5, slices=9)
    os.replace(tmp_path / "rewrite" / f"{ids[3]}.nii.gz", source.path(ids[3]))
    report = extract(vit, source, ids, plan, cache, batch_size=16, num_workers=0, **FP32)
    assert report.extracted == [ids[3]] and len(report.cached) == 4


def test_a_corrupt_entry_is_detected_and_recomputed(tmp_path, scans, vit):
    source, ids = scans
    cache = EmbeddingCache(tmp_path / "cache")
    plan = slice_plan_for(vit, windows=("bone",))
    first = extract(vit, source, ids, plan, cache, batch_size=16, num_workers=2, **FP32)
    before = load_bags(cache, vit, plan, source, [ids[1]])[ids[1]]
    path = cache.path(first.keys[ids[1]])
    path.write_bytes(path.read_bytes()[:300])  # a torn file

    report = extract(vit, source, ids, plan, cache, batch_size=16, num_workers=2, **FP32)
    assert report.recomputed == [ids[1]] and report.extracted == [ids[1]] and len(report.cached) == 4
    after = load_bags(cache, vit, plan, source, [ids[1]])[ids[1]]
    np.testing.assert_allclose(after.embeddings, before.embeddings, rtol=1e-4, atol=1e-5)


def test_a_scan_that_fails_to_load_is_recorded_and_the_rest_extract(tmp_path, scans, vit):
    source, ids = scans
    source.path(ids[1]).write_bytes(b"this is not a NIfTI file")
    cache = EmbeddingCache(tmp_path / "cache")
    plan = slice_plan_for(vit, windows=("soft-tissue",))
    report = extract(vit, source, ids, plan, cache, batch_size=16, num_workers=2, **FP32)
    assert sorted(report.extracted) == [i for i in ids if i != ids[1]]
    assert [f.scan_id for f in report.failed] == [ids[1]]
    failure = report.failed[0]
    assert failure.file == str(source.path(ids[1])) and "cannot read as NIfTI" in failure.error
    assert ids[1] in report.summary()
    with pytest.raises(DataError, match=ids[1]):
        load_bags(cache, vit, plan, source, ids)
    bags = load_bags(cache, vit, plan, source, ids, on_missing="skip")
    assert sorted(bags) == sorted(report.extracted)


def test_non_finite_embeddings_are_a_data_error_naming_scan_and_file(tmp_path, scans, vit):
    source, ids = scans
    cache = EmbeddingCache(tmp_path / "cache")
    plan = slice_plan_for(vit, windows=("soft-tissue",))
    key = cache.key(vit, plan, ids[0], source.fingerprint(ids[0]))
    embeddings = np.zeros((3, vit.embed_dim), dtype=np.float32)
    embeddings[1, 5] = np.nan
    cache.put(key, embeddings, np.arange(3), np.zeros(3, dtype=np.int64), {"scan_id": ids[0]})
    with pytest.raises(DataError, match=rf"{ids[0]}.*NaN or infinite.*{cache.path(key).name}"):
        load_bags(cache, vit, plan, source, ids[:1])


def test_ranks_take_disjoint_shares_of_the_scans(tmp_path, scans, vit, monkeypatch):
    source, ids = scans
    cache = EmbeddingCache(tmp_path / "cache")
    plan = slice_plan_for(vit, windows=("lung",))
    shares = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        report = extract(vit, source, ids, plan, cache, batch_size=16, num_workers=0, **FP32)
        assert (report.rank, report.world_size) == (rank, 2)
        shares.append(report.extracted)
    assert sorted(shares[0]) == ids[0::2] and sorted(shares[1]) == ids[1::2]
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert sorted(extract(vit, source, ids, plan, cache, num_workers=0, **FP32).cached) == ids


def test_bf16_autocast_runs_and_stays_close_to_fp32(tmp_path, scans, vit):
    source, ids = scans
    plan = slice_plan_for(vit, windows=("soft-tissue",))
    full_cache, half_cache = EmbeddingCache(tmp_path / "fp32"), EmbeddingCache(tmp_path / "bf16")
    full = extract(vit, source, ids[:2], plan, full_cache, batch_size=16, num_workers=0, **FP32)
    half = extract(vit, source, ids[:2], plan, half_cache, batch_size=16, num_workers=0, precision="bf16",
                   progress=False)
    assert full.precision == "fp32" and half.precision == "bf16" and sorted(half.extracted) == ids[:2]
    assert half.keys == full.keys  # the precision is no part of an entry's address
    for scan_id in ids[:2]:
        assert full_cache.get(full.keys[scan_id]).provenance["precision"] == "fp32"
        assert half_cache.get(half.keys[scan_id]).provenance["precision"] == "bf16"
    a = load_bags(full_cache, vit, plan, source, ids[:2])[ids[0]].embeddings
    b = load_bags(half_cache, vit, plan, source, ids[:2])[ids[0]].embeddings
    assert not np.array_equal(a, b)  # bf16 really ran
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.98


def test_an_entry_written_at_bf16_is_found_by_a_reader_that_would_run_fp32(tmp_path, scans, vit):
    source, ids = scans
    plan = slice_plan_for(vit, windows=("lung",))
    cache = EmbeddingCache(tmp_path / "cache")
    half = extract(vit, source, ids, plan, cache, batch_size=16, num_workers=0, precision="bf16",
                   progress=False)
    assert half.precision == "bf16" and sorted(half.extracted) == ids

    # an fp32 machine (a CPU without native bf16, say) reads the same entries: no model runs
    counter = ForwardCounter(vit.model)
    again = extract(vit, source, ids, plan, cache, batch_size=16, num_workers=0, **FP32)
    assert again.precision == "fp32" and sorted(again.cached) == ids and not again.extracted
    assert counter.calls == 0 and again.keys == half.keys
    bags = load_bags(cache, vit, plan, source, ids)
    assert sorted(bags) == sorted(ids)
    for scan_id in ids:
        entry = cache.get(half.keys[scan_id])
        assert entry.provenance["precision"] == "bf16"  # what ran is recorded with the embeddings
        assert cache.key_of(entry.provenance) == half.keys[scan_id]
        np.testing.assert_array_equal(bags[scan_id].embeddings, entry.embeddings)

    # recomputing at fp32 rewrites the entries in place and records the new precision
    forced = extract(vit, source, ids[:1], plan, cache, batch_size=16, num_workers=0, force=True, **FP32)
    assert forced.extracted == ids[:1] and forced.keys[ids[0]] == half.keys[ids[0]]
    assert cache.get(half.keys[ids[0]]).provenance["precision"] == "fp32"
    assert cache.get(half.keys[ids[1]]).provenance["precision"] == "bf16"


def test_the_missing_scans_error_names_the_encoder_and_scans_but_no_precision(tmp_path, scans, vit):
    source, ids = scans
    plan = slice_plan_for(vit, windows=("lung",))
    with pytest.raises(DataError) as caught:
        load_bags(EmbeddingCache(tmp_path / "empty"), vit, plan, source, ids)
    message = str(caught.value)
    assert f"encoder '{vit.label}' for 5 scan(s): {', '.join(ids)}" in message
    assert "fp32" not in message and "bf16" not in message


def test_a_volume_encoder_gets_one_instance_per_window(tmp_path, scans, registry):
    source, ids = scans
    encoder = build_encoder(registry.encoder("tiny-cnn3d"), {"weights": "random"})
    plan = slice_plan_for(encoder, windows=("soft-tissue", "lung"))
    cache, alone = EmbeddingCache(tmp_path / "cache"), EmbeddingCache(tmp_path / "alone")
    report = extract(encoder, source, ids, plan, cache, batch_size=64, num_workers=2, **FP32)
    assert sorted(report.extracted) == ids
    bags = load_bags(cache, encoder, plan, source, ids)
    for bag in bags.values():
        assert bag.embeddings.shape == (2, 16) and np.isfinite(bag.embeddings).all()
        np.testing.assert_array_equal(bag.slice_index, [-1, -1])
        np.testing.assert_array_equal(bag.window_id, [0, 1])
    extract(encoder, source, [ids[4]], plan, alone, batch_size=8, num_workers=0, **FP32)
    one = load_bags(alone, encoder, plan, source, [ids[4]])[ids[4]]
    np.testing.assert_allclose(one.embeddings, bags[ids[4]].embeddings, rtol=1e-4, atol=1e-5)


_CHILD = """
import sys
from clear_bench.cache import EmbeddingCache
from clear_bench.components import build_encoder
from clear_bench.extraction import extract, slice_plan_for
from clear_bench.registry import load_registry
plugin, folder, cache_dir = sys.argv[1:4]
registry = load_registry([plugin], installed=False)
encoder = build_encoder(registry.encoder("tiny-cnn"), {"weights": "random"})
source = registry.source("nifti-folder").build({"folder": folder, "delay_s": 0.15})
extract(encoder, source, source.scan_ids(), slice_plan_for(encoder), EmbeddingCache(cache_dir),
        batch_size=4, num_workers=1, precision="fp32", progress=False)
"""


def _entries(cache: EmbeddingCache) -> dict[str, np.ndarray]:
    out = {}
    for key in cache.entry_keys():
        entry = cache.get(key)
        assert entry is not None, f"corrupt entry {key}"
        out[key] = entry.embeddings
    return out


def test_sigkill_midway_then_rerun_gives_the_uninterrupted_cache(tmp_path, registry, folder_source,
                                                                scan_writer, plugin_file):
    ids = scan_writer(tmp_path / "scans", 16, slices=4, size=32)
    source = folder_source(tmp_path / "scans")
    killed = EmbeddingCache(tmp_path / "killed")
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(plugin_file), str(tmp_path / "scans"),
                              str(killed.root)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(killed.root.rglob("*.h5"))) < 3 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    _, stderr = child.communicate()
    assert child.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    done_before = len(list(killed.root.rglob("*.h5")))
    assert 3 <= done_before < len(ids)  # really interrupted midway

    encoder = build_encoder(registry.encoder("tiny-cnn"), {"weights": "random"})
    plan = slice_plan_for(encoder)
    resumed = extract(encoder, source, ids, plan, killed, batch_size=4, num_workers=1, **FP32)
    assert len(resumed.cached) == done_before and not resumed.failed and not resumed.recomputed
    clean = EmbeddingCache(tmp_path / "clean")
    extract(encoder, source, ids, plan, clean, batch_size=4, num_workers=1, **FP32)

    after_kill, uninterrupted = _entries(killed), _entries(clean)
    assert sorted(after_kill) == sorted(uninterrupted) and len(after_kill) == len(ids)
    for key, embeddings in uninterrupted.items():
        np.testing.assert_allclose(after_kill[key], embeddings, rtol=1e-4, atol=1e-5)
    assert not list(killed.root.rglob("*.tmp")) and not killed.problems
    with h5py.File(killed.path(next(iter(after_kill))), "r") as h5:
        assert h5["embeddings"].shape[1] == 16


def test_the_synthetic_cohort_with_the_hu_reference_and_a_vit(tmp_path, registry, tiny_vit):
    source = registry.source("synthetic").build({"patients": 3, "slices": 6, "matrix": 48, "cache": False})
    ids = source.scan_ids()
    cache = EmbeddingCache(tmp_path / "cache")
    reference = build_encoder(registry.encoder("hu-reference"), {"image_size": 32})
    for encoder in (reference, tiny_vit()):
        plan = slice_plan_for(encoder)
        report = extract(encoder, source, ids, plan, cache, batch_size=16, num_workers=1, progress=False)
        assert sorted(report.extracted) == ids, report.summary()
        if encoder is reference:  # no weights: autocast would gain nothing, so it always runs in fp32
            assert plan.input == "hu" and report.precision == "fp32"
        bags = load_bags(cache, encoder, plan, source, ids)
        windows = 1 if encoder is reference else 3
        for scan_id, bag in bags.items():
            slices = source.load(scan_id).num_slices
            assert bag.embeddings.shape == (slices * windows, encoder.embed_dim)
            assert np.isfinite(bag.embeddings).all()
