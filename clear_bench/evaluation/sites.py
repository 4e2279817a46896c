"""Site-held-out evaluation: train on every acquisition site but one, test on the one left out.

A K-fold split mixes sites in training and test, so a head can score by recognising the scanner (a site
shortcut) when labels differ between sites. Leave-one-site-out folds test each site on heads that never saw
it. A patient belongs to one site (the site of its first scan, by id), so no patient is on both sides; the
patients of the other sites are split into training and validation patients by the stratified order of
:func:`~clear_bench.evaluation.fractions.nested_order`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from clear_bench.evaluation.fractions import nested_order, patient_strata
from clear_bench.evaluation.splits import Fold, Splits, assignment_fingerprint
from clear_bench.specs import stable_hash

METHOD = "leave-one-site-out-v1"


def patient_sites(site_of: Mapping[str, str], patient_of: Mapping[str, str]) -> dict[str, str]:
    """The site of each patient: the site of its first scan (by id)."""
    sites: dict[str, str] = {}
    for scan_id in sorted(site_of):
        sites.setdefault(patient_of.get(scan_id, scan_id), site_of[scan_id])
    return sites


def site_splits(splits: Splits, labels: Mapping[str, np.ndarray], label_type: str,
                site_of: Mapping[str, str], *, seed: int = 0) -> Splits | None:
    """One fold per site over the scans of ``splits``: its patients are the test set, the others train
    (and validate, ``splits.val_fraction`` of them); ``None`` with fewer than two sites."""
    ids = splits.scan_ids
    patient_of = {i: splits.patient_of.get(i, i) for i in ids}
    site_of_patient = patient_sites({i: site_of[i] for i in ids}, patient_of)
    sites = sorted(set(site_of_patient.values()))
    if len(sites) < 2:
        return None
    strata = patient_strata(labels, label_type, patient_of)
    folds = []
    for index, site in enumerate(sites):
        held_out = {p for p, s in site_of_patient.items() if s == site}
        others = sorted(set(patient_of.values()) - held_out)
        rng = np.random.default_rng(int(stable_hash([METHOD, splits.fingerprint, site, seed]), 16) % 2**32)
        order = nested_order(others, strata, rng)
        n_val = min(len(others) - 1, max(1, math.ceil(splits.val_fraction * len(others))))
        val = set(order[:n_val])
        part = {"train": [], "val": [], "test": []}
        for scan_id in ids:
            patient = patient_of[scan_id]
            part["test" if patient in held_out else "val" if patient in val else "train"].append(scan_id)
        folds.append(Fold(index, part["train"], part["val"], part["test"]))
    return Splits(assignment_fingerprint(folds, splits.patient_of), len(sites), seed, splits.val_fraction,
                  METHOD, folds, splits.patient_of, stable_hash([splits.request, METHOD, sites, seed]))


def site_labels(site_of: Mapping[str, str], patient_of: Mapping[str, str],
                sites: list[str]) -> dict[str, np.ndarray]:
    """Each scan's patient's site as a one-element class index into ``sites`` (the target of the
    site-shortcut probe)."""
    by_patient = patient_sites(site_of, patient_of)
    return {i: np.array([sites.index(by_patient[patient_of.get(i, i)])], dtype=np.float32) for i in site_of}
