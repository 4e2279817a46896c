"""The synthetic cohort as a scan source: plans on demand, volumes rendered once and cached as ``.npz``."""

from __future__ import annotations

import io
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from clear_bench.atomic import atomic_write
from clear_bench.data.annotations import LESION_TYPES
from clear_bench.data.scan import Scan
from clear_bench.errors import DataError
from clear_bench.specs import LesionBox, stable_hash
from clear_bench_ct_tasks.synthetic.config import GENERATOR_VERSION, SITES, CohortConfig
from clear_bench_ct_tasks.synthetic.plan import LUNG_DISEASES, STAGES, PatientPlan, plan_patient, scan_id_of
from clear_bench_ct_tasks.synthetic.render import render

log = logging.getLogger(__name__)


class SyntheticSource:
    """``patients`` procedural CT scans. Patient ``i`` depends only on (seed, i, generator parameters), so a
    larger cohort extends a smaller one with the same seed.

    One scan per patient: the patient of a scan is the scan itself, ``patient_id(scan_id) == scan_id``
    (a :class:`~clear_bench.specs.PatientSource` that says so, so that boards are patient-level). Each
    patient is scanned at one of ``sites`` simulated scanner sites (a
    :class:`~clear_bench.specs.SiteSource`)."""

    name = "synthetic"

    def __init__(self, config: CohortConfig, cache_dir: str | Path | None = None) -> None:
        self.config = config
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._ids = [scan_id_of(config, i) for i in range(config.patients)]
        self._index = {scan_id: i for i, scan_id in enumerate(self._ids)}
        self._plans: dict[int, PatientPlan] = {}  # a plain dict keeps the source picklable

    def scan_ids(self) -> list[str]:
        return list(self._ids)

    def patient_id(self, scan_id: str) -> str:
        """``scan_id`` itself: every synthetic patient has exactly one scan."""
        self._lookup(scan_id)
        return scan_id

    def site_id(self, scan_id: str) -> str:
        """The simulated scanner site of the scan (a :class:`~clear_bench.specs.SiteSource`)."""
        return self.plan(scan_id).site.name

    def plan(self, scan_id: str) -> PatientPlan:
        """The clinical story and geometry of one patient (cheap: no pixels)."""
        index = self._lookup(scan_id)
        if index not in self._plans:
            self._plans[index] = plan_patient(self.config, index)
        return self._plans[index]

    def task_labels(self, task: str) -> tuple[list[str], dict[str, np.ndarray]]:
        """Label names and per-scan labels of ``lesion-location``, ``lung-disease`` or ``staging``."""
        if task == "lesion-location":
            return list(LESION_TYPES), {s: self.plan(s).location_labels() for s in self._ids}
        if task == "lung-disease":
            return list(LUNG_DISEASES), {s: self.plan(s).lung_disease_labels() for s in self._ids}
        if task == "staging":
            return list(STAGES), {s: self.plan(s).stage_label() for s in self._ids}
        raise KeyError(f"the synthetic cohort has no labels for task '{task}'")

    def fingerprint(self, scan_id: str) -> str:
        index = self._lookup(scan_id)
        config = asdict(self.config)
        config.pop("patients")  # a patient does not depend on the cohort size
        return stable_hash({"generator": GENERATOR_VERSION, "config": config,
                            "difficulty": asdict(self.config.difficulty),
                            "sites": [asdict(s) for s in SITES[: self.config.sites]], "index": index}, 32)

    def load(self, scan_id: str) -> Scan:
        plan = self.plan(scan_id)
        path = self._cache_path(scan_id)
        volume = boxes = None
        if path is not None and path.exists():
            try:
                volume, boxes = _read_cached(path)
            except Exception as exc:  # a damaged entry is regenerated, never served
                log.warning("synthetic cache entry %s unreadable (%s); regenerating", path, exc)
        if volume is None or boxes is None:
            rendered = render(plan)
            volume, boxes = rendered.volume, rendered.boxes
            if path is not None:
                _write_cached(path, volume, boxes)
        return Scan(scan_id, volume.astype(np.float32), (plan.thickness_mm, plan.pixel_mm, plan.pixel_mm),
                    lesions=list(boxes))

    def _lookup(self, scan_id: str) -> int:
        if scan_id not in self._index:
            raise DataError(f"synthetic cohort (seed {self.config.seed}, {self.config.patients} patients) "
                            f"has no scan '{scan_id}'")
        return self._index[scan_id]

    def _cache_path(self, scan_id: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{self.fingerprint(scan_id)}.npz"


def _write_cached(path: Path, volume: np.ndarray, boxes: list[LesionBox]) -> None:
    rows = [[b.slice_index, b.x0, b.y0, b.x1, b.y1] for b in boxes]
    table = np.array(rows, dtype=np.float64).reshape(-1, 5)
    labels = np.array([b.label or "" for b in boxes], dtype=str)
    buffer = io.BytesIO()
    np.savez(buffer, volume=volume, boxes=table, labels=labels)
    atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def _read_cached(path: Path) -> tuple[np.ndarray, list[LesionBox]]:
    with np.load(path, allow_pickle=False) as data:
        volume = data["volume"]
        table = data["boxes"]
        labels = data["labels"]
    if volume.ndim != 3 or volume.dtype != np.int16 or table.shape[1:] != (5,) or len(labels) != len(table):
        raise ValueError("unexpected array shapes")
    boxes = [LesionBox(int(row[0]), float(row[1]), float(row[2]), float(row[3]), float(row[4]), label or None)
             for row, label in zip(table, labels.tolist(), strict=True)]
    return volume, boxes
