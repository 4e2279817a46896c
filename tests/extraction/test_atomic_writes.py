"""The one atomic-write helper that cache entries, exports, fold results and montages go through."""

from __future__ import annotations

import numpy as np
import pytest

from clear_bench.atomic import atomic_path, atomic_write, atomic_write_text, temporaries


def test_atomic_path_lends_a_temporary_beside_the_target_that_no_extension_glob_sees(tmp_path):
    target = tmp_path / "sub" / "entry.h5"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.exists() and tmp != target
        assert tmp.name.startswith(".entry.h5.") and tmp.name.endswith(".tmp")
        assert temporaries(target) == [tmp] and not list(target.parent.glob("*.h5"))
        assert not target.exists()  # nothing visible until the block ends
        tmp.write_bytes(b"entry")
    assert target.read_bytes() == b"entry"
    assert not temporaries(target) and sorted(p.name for p in target.parent.iterdir()) == ["entry.h5"]


def test_keep_extension_serves_writers_that_choose_the_format_by_name(tmp_path):
    target = tmp_path / "scan.nii.gz"
    with atomic_path(target, keep_extension=True) as tmp:
        assert tmp.name.startswith(".scan.nii.gz.") and tmp.name.endswith(".tmp.nii.gz")
        assert temporaries(target) == [tmp]
        tmp.write_bytes(b"volume")
    assert target.read_bytes() == b"volume" and not temporaries(target)

    fold = tmp_path / "fold.npz"
    with atomic_path(fold, keep_extension=True) as tmp:
        np.savez_compressed(tmp, values=np.arange(3))  # a name ending in .npz: written as named
    with np.load(fold) as data:
        np.testing.assert_array_equal(data["values"], np.arange(3))
    atomic_write(tmp_path / "other.npz", lambda handle: np.savez_compressed(handle, values=np.arange(2)))
    with np.load(tmp_path / "other.npz") as data:
        np.testing.assert_array_equal(data["values"], np.arange(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fold.npz", "other.npz", "scan.nii.gz"]


def test_an_error_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "index.csv"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError, match="writer died"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert target.read_text() == "old\n"
    assert not temporaries(target) and [p.name for p in tmp_path.iterdir()] == ["index.csv"]


def test_temporaries_are_those_of_one_target_only(tmp_path):
    (tmp_path / ".a.h5.x1.tmp").write_bytes(b"")
    (tmp_path / ".a.h5.x2.tmp.h5").write_bytes(b"")  # keep_extension
    (tmp_path / ".ab.h5.x3.tmp").write_bytes(b"")
    assert [p.name for p in temporaries(tmp_path / "a.h5")] == [".a.h5.x1.tmp", ".a.h5.x2.tmp.h5"]
