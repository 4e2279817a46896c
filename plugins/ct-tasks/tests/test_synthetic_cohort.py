"""The synthetic cohort: determinism, labels that agree with the inserted findings, caching."""

import numpy as np
import pytest
from clear_bench_ct_tasks.synthetic.config import CohortConfig
from clear_bench_ct_tasks.synthetic.plan import LUNG_DISEASES, STAGES, plan_patient
from clear_bench_ct_tasks.synthetic.render import render
from clear_bench_ct_tasks.synthetic.source import SyntheticSource

from clear_bench.data.annotations import LESION_TYPES

SMALL = {"patients": 12, "slices": 14, "matrix": 64}


def test_same_seed_gives_byte_identical_scans(tmp_path):
    a = SyntheticSource(CohortConfig(**SMALL, seed=7))
    b = SyntheticSource(CohortConfig(**SMALL, seed=7), cache_dir=tmp_path)
    other = SyntheticSource(CohortConfig(**SMALL, seed=8))
    for scan_id in a.scan_ids()[:4]:
        sa, sb = a.load(scan_id), b.load(scan_id)
        assert sa.volume.tobytes() == sb.volume.tobytes()
        assert sa.spacing == sb.spacing and sa.lesions == sb.lesions
        assert a.fingerprint(scan_id) == b.fingerprint(scan_id)
    cached = b.load(a.scan_ids()[0])  # now read back from the .npz cache
    assert cached.volume.tobytes() == a.load(a.scan_ids()[0]).volume.tobytes()
    assert cached.lesions == a.load(a.scan_ids()[0]).lesions
    assert a.load(a.scan_ids()[0]).volume.tobytes() != other.load(other.scan_ids()[0]).volume.tobytes()


def test_patient_does_not_depend_on_cohort_size():
    small = SyntheticSource(CohortConfig(**{**SMALL, "patients": 3}))
    large = SyntheticSource(CohortConfig(**{**SMALL, "patients": 9}))
    scan_id = small.scan_ids()[2]
    assert small.fingerprint(scan_id) == large.fingerprint(scan_id)
    assert small.load(scan_id).volume.tobytes() == large.load(scan_id).volume.tobytes()
    hard = SyntheticSource(CohortConfig(**SMALL, preset="hard"))
    assert small.fingerprint(scan_id) != hard.fingerprint(scan_id)


def test_volume_is_ct_like():
    source = SyntheticSource(CohortConfig(**SMALL))
    scan = source.load(source.scan_ids()[0])
    assert scan.volume.dtype == np.float32 and scan.volume.ndim == 3
    assert scan.volume.min() < -950  # air
    assert np.percentile(scan.volume, 99.9) > 400  # bone
    assert scan.spacing[0] > scan.spacing[1]  # thick axial slices


@pytest.mark.parametrize(("preset", "visible_share"), [("default", 0.9), ("hard", 0.5)])
def test_every_lesion_is_drawn_and_boxed_in_its_organ(preset, visible_share):
    config = CohortConfig(**SMALL, preset=preset)
    best_contrast = []
    for index in range(SMALL["patients"]):
        plan = plan_patient(config, index)
        with_lesions = render(plan, noise=False, disease=False)
        without = render(plan, noise=False, disease=False, lesions=False)
        assert without.boxes == []
        labelled = {LESION_TYPES[i] for i in np.flatnonzero(plan.location_labels())}
        assert {box.label for box in with_lesions.boxes} == labelled
        assert set(with_lesions.owners) == set(range(len(plan.lesions)))  # every lesion has a box
        diff = np.abs(with_lesions.volume.astype(np.float32) - without.volume)
        for owner, lesion in enumerate(plan.lesions):
            boxes = [b for b, o in zip(with_lesions.boxes, with_lesions.owners, strict=True) if o == owner]
            assert all(b.label == lesion.organ for b in boxes)
            best = max(float(diff[b.slice_index, int(b.y0):int(b.y1), int(b.x0):int(b.x1)].max())
                       for b in boxes)
            assert best > 0, (index, lesion)
            best_contrast.append(best)
        untouched = [k for k in range(plan.n_slices) if k not in {b.slice_index for b in with_lesions.boxes}]
        assert diff[untouched].max(initial=0) == 0  # lesions only where the boxes say
    assert np.mean(np.array(best_contrast) > 30) >= visible_share


def test_lung_disease_patterns_change_the_lungs_only_when_labelled():
    config = CohortConfig(**SMALL)
    seen = set()
    for index in range(SMALL["patients"]):
        plan = plan_patient(config, index)
        labels = dict(zip(LUNG_DISEASES, plan.lung_disease_labels(), strict=True))
        with_disease = render(plan, noise=False, lesions=False).volume.astype(np.float32)
        without = render(plan, noise=False, lesions=False, disease=False).volume.astype(np.float32)
        changed = np.abs(with_disease - without)
        patterns = labels["emphysema"] + labels["consolidation"] + labels["effusion"]
        if patterns == 0:
            assert changed.max() == 0
        else:
            assert (changed > 50).sum() > 10
        if labels["effusion"] or labels["consolidation"]:
            assert ((with_disease > -100) & (without < -700)).sum() > 5  # lung replaced by fluid or tissue
        if labels["emphysema"]:
            assert ((without - with_disease > 80) & (with_disease < -900)).sum() > 5  # low attenuation
        seen.update(k for k, v in labels.items() if v)
    assert seen == {"emphysema", "nodule", "consolidation", "effusion"}


def test_stage_follows_primary_nodes_and_metastases():
    config = CohortConfig(patients=200)
    lo, hi = config.difficulty.lesion_diameter_mm
    counts = np.zeros(4, int)
    for index in range(200):
        plan = plan_patient(config, index)
        roles = [lesion.role for lesion in plan.lesions]
        primary = next(lesion for lesion in plan.lesions if lesion.role == "primary")
        assert roles.count("primary") == 1
        stage = STAGES[plan.stage]
        counts[plan.stage] += 1
        assert ("metastasis" in roles) == (stage == "IV")
        if stage == "III":
            assert "node" in roles
        if stage in ("I", "II"):
            assert "node" not in roles
            small = 2 * primary.rx <= lo + 0.4 * (hi - lo) + 1e-6
            assert small == (stage == "I")
    assert counts.min() >= 35  # roughly balanced classes


def test_label_prevalence_supports_confidence_intervals():
    source = SyntheticSource(CohortConfig(patients=100))
    for task in ("lesion-location", "lung-disease"):
        names, labels = source.task_labels(task)
        rate = np.stack(list(labels.values())).mean(0)
        assert rate.min() >= 0.28 and rate.max() <= 0.65, dict(zip(names, rate, strict=True))


def test_damaged_cache_entry_is_regenerated(tmp_path):
    source = SyntheticSource(CohortConfig(**SMALL), cache_dir=tmp_path)
    scan_id = source.scan_ids()[1]
    first = source.load(scan_id)
    (entry,) = tmp_path.glob("*.npz")
    entry.write_bytes(b"not an npz")
    again = source.load(scan_id)
    assert again.volume.tobytes() == first.volume.tobytes()
    assert entry.stat().st_size > 1000
