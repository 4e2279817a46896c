"""Lesion mimics: drawn with a lesion's HU, elongated, never boxed, never labelled; malignant lesions
carry an enhancing rim."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from clear_bench_ct_tasks.synthetic.config import DIFFICULTY_PRESETS, CohortConfig
from clear_bench_ct_tasks.synthetic.plan import plan_patient
from clear_bench_ct_tasks.synthetic.render import render

from clear_bench.data.annotations import LESION_TYPES

SMALL = {"patients": 40, "slices": 14, "matrix": 64}


def test_mimics_change_pixels_but_not_labels_or_boxes() -> None:
    config = CohortConfig(**SMALL)
    with_mimics = [plan_patient(config, i) for i in range(SMALL["patients"])]
    assert sum(len(p.mimics) for p in with_mimics) >= 10
    changed = 0
    for plan in with_mimics[:12]:
        bare = replace(plan, mimics=())
        assert (plan.location_labels() == bare.location_labels()).all()
        assert (plan.lung_disease_labels() == bare.lung_disease_labels()).all()
        drawn, plain = render(plan, noise=False), render(bare, noise=False)
        assert drawn.boxes == plain.boxes and drawn.owners == plain.owners
        if plan.mimics:
            changed += int((np.abs(drawn.volume.astype(np.float32) - plain.volume) > 30).sum() > 5)
        else:
            assert drawn.volume.tobytes() == plain.volume.tobytes()
    assert changed >= 3


def test_mimics_copy_lesion_hu_but_are_elongated() -> None:
    config = CohortConfig(**SMALL)
    aspect = config.difficulty.mimic_aspect
    lesion_hu: dict[str, set[float]] = {}
    for index in range(300):  # plans only: every (organ, benign or malignant) HU occurs
        for lesion in plan_patient(config, index).lesions:
            lesion_hu.setdefault(lesion.organ, set()).add(round(lesion.hu, 3))
    for index in range(SMALL["patients"]):
        for mimic in plan_patient(config, index).mimics:
            assert mimic.role == "mimic" and mimic.organ in LESION_TYPES
            assert round(mimic.hu, 3) in lesion_hu[mimic.organ]
            assert max(mimic.rx, mimic.ry) / min(mimic.rx, mimic.ry) >= aspect - 1e-6


def test_malignant_lesions_have_a_rim_benign_ones_do_not() -> None:
    rim = DIFFICULTY_PRESETS["default"].rim_hu
    assert rim > 0
    seen = set()
    for index in range(20):
        for lesion in plan_patient(CohortConfig(**SMALL), index).lesions:
            assert lesion.rim_hu == (0.0 if lesion.role == "benign" else rim)
            seen.add(lesion.role)
    assert {"benign", "primary"} <= seen
