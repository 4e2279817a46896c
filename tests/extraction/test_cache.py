"""The embedding cache: content-addressed keys, validated reads, atomic locked writes, the CLEAR export."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from clear_bench.atomic import temporaries
from clear_bench.cache import RECORDED_ONLY, EmbeddingCache, export_clear
from clear_bench.data.slices import SlicePlan
from clear_bench.extraction import slice_plan_for
from clear_bench.naming import safe_filename


def _entry(seed: int, n: int = 6, dim: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, dim)).astype(np.float32), np.repeat(np.arange(n // 2), 2),
            np.tile([0, 1], n // 2))


def _put(cache: EmbeddingCache, key: str, seed: int = 0, *, overwrite: bool = False) -> Path:
    embeddings, slice_index, window_id = _entry(seed)
    return cache.put(key, embeddings, slice_index, window_id, {"scan_id": "s1", "seed": seed},
                     overwrite=overwrite)


@pytest.fixture
def encoder(tiny_vit):
    return tiny_vit()


def test_round_trip_keeps_values_and_provenance_without_patient_fields(tmp_path, encoder):
    cache = EmbeddingCache(tmp_path)
    plan = slice_plan_for(encoder, windows=("soft-tissue", "lung"))
    provenance = {**cache.describe(encoder, plan, "patient-0001", "f" * 64), "precision": "fp32"}
    key = cache.key_of(provenance)
    assert key == cache.key(encoder, plan, "patient-0001", "f" * 64)
    embeddings, slice_index, window_id = _entry(1)
    path = cache.put(key, embeddings, slice_index, window_id, provenance)

    assert path == cache.path(key)
    assert path.relative_to(tmp_path).parts[0] == key.split("-")[0]
    assert "patient" not in str(path)  # file names come from the hash alone
    entry = cache.get(key)
    assert entry is not None and cache.contains(key)
    np.testing.assert_array_equal(entry.embeddings, embeddings)
    np.testing.assert_array_equal(entry.slice_index, slice_index)
    np.testing.assert_array_equal(entry.window_id, window_id)
    stored = entry.provenance
    assert stored["encoder"]["weights_digest"] == "random-init:0"
    assert stored["encoder"]["random_init"] is True
    assert stored["slice_plan"]["windows"] == ["soft-tissue", "lung"]
    assert stored["encoder"]["preprocessing"]["image_size"] == 32
    assert stored["clear_bench_version"] and stored["scan_fingerprint"] == "f" * 64
    assert set(stored) == {"format", "clear_bench_version", "encoder", "slice_plan", "precision",
                           "storage_dtype", "scan_id", "scan_fingerprint"}
    with h5py.File(path, "r") as h5:
        assert set(h5.attrs) == {"key", "embed_dim", "sha256", "provenance", "created_utc"}
        assert json.loads(h5.attrs["provenance"]) == stored
    assert not list(path.parent.glob("*.tmp")) and not temporaries(path)


def test_key_changes_with_everything_that_determines_the_numbers(tmp_path, encoder, tiny_vit):
    cache = EmbeddingCache(tmp_path)
    plan = slice_plan_for(encoder)
    base = cache.key(encoder, plan, "s1", "abc")
    assert base == EmbeddingCache(tmp_path / "elsewhere").key(encoder, plan, "s1", "abc")
    variants = {
        "window": cache.key(encoder, replace(plan, windows=("soft-tissue", "lung", "W350L50")), "s1", "abc"),
        "window level": cache.key(encoder, replace(plan, windows=("soft-tissue", "lung", "W1800L300")),
                                  "s1", "abc"),
        "slice step": cache.key(encoder, replace(plan, slice_step=2), "s1", "abc"),
        "scan content": cache.key(encoder, plan, "s1", "abd"),
        "scan id": cache.key(encoder, plan, "s2", "abc"),
        "storage": EmbeddingCache(tmp_path, storage_dtype="float16").key(encoder, plan, "s1", "abc"),
        "weights": cache.key(replace(encoder, weights_digest="sha256:0123"), plan, "s1", "abc"),
        "seed": cache.key(tiny_vit(seed=1), plan, "s1", "abc"),
        "architecture": cache.key(tiny_vit(arch_kwargs={"depth": 1}), plan, "s1", "abc"),
    }
    assert base == cache.key(encoder, plan, "s1", "abc")
    assert len(set(variants.values()) | {base}) == len(variants) + 1, variants
    # the encoder part of the key (its folder) follows the weights, not the scan or the windows
    assert variants["window"].split("-")[0] == base.split("-")[0]
    assert variants["weights"].split("-")[0] != base.split("-")[0]


def test_the_key_is_the_same_whatever_precision_or_machine_computed_the_entry(tmp_path, encoder):
    cache = EmbeddingCache(tmp_path)
    plan = slice_plan_for(encoder)
    address = cache.describe(encoder, plan, "s1", "abc")
    assert "precision" not in address and "device" not in address
    assert set(RECORDED_ONLY) == {"precision", "scan_notes"}
    key = cache.key(encoder, plan, "s1", "abc")
    assert key == cache.key_of(address)
    for precision in ("bf16", "fp32"):
        assert cache.key_of({**address, "precision": precision}) == key
    assert cache.key_of({**address, "scan_notes": ["uneven slice spacing"]}) == key
    with pytest.raises(TypeError):
        cache.key(encoder, plan, "s1", "abc", precision="bf16")  # not an input of the key any more

    embeddings, slice_index, window_id = _entry(7)
    cache.put(key, embeddings, slice_index, window_id, {**address, "precision": "bf16"})
    entry = cache.get(key)  # found by a reader that knows nothing of the writer's precision
    assert entry is not None and entry.provenance["precision"] == "bf16"
    assert cache.key_of(entry.provenance) == key


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip-value", "drop-dataset"])
def test_corrupt_entry_is_detected_reported_removed_and_never_served(tmp_path, damage):
    cache = EmbeddingCache(tmp_path)
    key = "0123456789abcdef-" + "a" * 32
    path = _put(cache, key)
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not an hdf5 file" * 50)
    elif damage == "flip-value":
        with h5py.File(path, "r+") as h5:
            h5["embeddings"][0, 0] = 123.0
    else:
        with h5py.File(path, "r+") as h5:
            del h5["window_id"]

    assert cache.inspect(key).state == "corrupt"
    assert cache.get(key) is None
    assert len(cache.problems) == 1 and cache.problems[0].path == path
    assert not path.exists()
    _put(cache, key, seed=3)
    assert cache.get(key) is not None


def test_put_keeps_a_finished_entry_unless_asked_to_overwrite(tmp_path):
    cache = EmbeddingCache(tmp_path)
    key = "0123456789abcdef-" + "b" * 32
    _put(cache, key, seed=1)
    _put(cache, key, seed=2)
    assert cache.get(key).provenance["seed"] == 1
    _put(cache, key, seed=2, overwrite=True)
    assert cache.get(key).provenance["seed"] == 2


def test_keys_are_the_only_path_material(tmp_path):
    cache = EmbeddingCache(tmp_path)
    for bad in ("../../etc/passwd", "0123456789abcdef-" + "A" * 32, "x-y"):
        with pytest.raises(ValueError, match="not an embedding cache key"):
            cache.path(bad)


def test_float16_storage_halves_the_bytes_and_reads_back_close(tmp_path):
    cache = EmbeddingCache(tmp_path, storage_dtype="float16")
    key = "0123456789abcdef-" + "c" * 32
    embeddings, slice_index, window_id = _entry(4, n=8, dim=16)
    cache.put(key, embeddings, slice_index, window_id, {})
    entry = cache.get(key)
    assert entry.embeddings.dtype == np.float16
    np.testing.assert_allclose(entry.embeddings.astype(np.float32), embeddings, rtol=1e-3, atol=1e-3)


_WRITER = """
import sys
import numpy as np
from clear_bench.cache import EmbeddingCache
root, key, seed, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cache = EmbeddingCache(root)
for index in range(rounds):
    value = seed * 1000 + index
    rng = np.random.default_rng(value)
    embeddings = rng.normal(size=(6, 8)).astype(np.float32)
    cache.put(key, embeddings, np.repeat(np.arange(3), 2), np.tile([0, 1], 3), {"seed": value},
              overwrite=True)
"""


def test_two_processes_writing_one_entry_leave_a_valid_entry(tmp_path):
    key = "0123456789abcdef-" + "d" * 32
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), key, str(seed), "15"])
               for seed in (1, 2)]
    cache = EmbeddingCache(tmp_path)
    seen = 0
    while any(writer.poll() is None for writer in writers):
        if cache.path(key).exists():  # a reader meanwhile never sees a half-written entry
            assert cache.inspect(key).state == "valid"
            seen += 1
        time.sleep(0.01)
    assert [writer.returncode for writer in writers] == [0, 0]
    entry = cache.get(key)
    assert entry is not None and not cache.problems
    assert entry.provenance["seed"] in {1014, 2014}
    expected = np.random.default_rng(entry.provenance["seed"]).normal(size=(6, 8)).astype(np.float32)
    np.testing.assert_array_equal(entry.embeddings, expected)
    assert not list(cache.path(key).parent.glob("*.tmp")) and not temporaries(cache.path(key))
    assert seen > 0


def test_export_in_the_clear_layout(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    entries = {}
    for seed, scan_id in enumerate(["case001", "site A/case 2", ".hidden"]):
        key = f"0123456789abcdef-{seed:032x}"
        embeddings, slice_index, window_id = _entry(seed)
        cache.put(key, embeddings, slice_index, window_id,
                  {"scan_id": scan_id, "encoder": {"name": "lecl-vit", "weights_digest": "random-init:0",
                                                   "random_init": True}, "precision": "fp32"})
        entries[scan_id] = cache.get(key)

    written = export_clear(entries, tmp_path / "out")
    assert written["case001"] == tmp_path / "out" / "case001.h5"
    assert safe_filename("site A/case 2").startswith("site_A_case_2-")
    assert not safe_filename(".hidden").startswith(".")
    assert len({p.name for p in written.values()}) == 3
    for scan_id, path in written.items():
        assert path.parent == tmp_path / "out"
        with h5py.File(path, "r") as h5:
            np.testing.assert_array_equal(h5["feats"][()], entries[scan_id].embeddings)
            assert h5["feats"].dtype == np.float32
            np.testing.assert_array_equal(h5["slice_index"][()], entries[scan_id].slice_index)
            assert h5.attrs["scan_id"] == scan_id and bool(h5.attrs["random_init"])
    index = (tmp_path / "out" / "index.csv").read_text().splitlines()
    assert index[0] == "scan_id,file" and len(index) == 4
    assert any(line.startswith("case001,case001.h5") for line in index)


def test_slice_plan_fingerprint_is_part_of_the_provenance(tmp_path, encoder):
    cache = EmbeddingCache(tmp_path)
    plan = SlicePlan(image_size=32)
    provenance = cache.describe(encoder, plan, "s", "f")
    assert provenance["slice_plan"]["fingerprint"] == plan.fingerprint()
