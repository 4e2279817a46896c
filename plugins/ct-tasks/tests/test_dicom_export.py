"""A patient folder as an archive exports it (CT series, RTSTRUCT, SEG, scout, SR, RT dose), written with
pydicom and highdicom: the folder source lists one scan named after the folder, with the contoured and
segmented lesions as boxes on the right slices, and `clear-bench data show` draws them."""

from __future__ import annotations

import re
from pathlib import Path

import clear_bench_ct_tasks.plugin
import numpy as np
import pytest
from PIL import Image

from clear_bench.cli import main
from clear_bench.data.dicom import find_series, survey
from clear_bench.errors import DataError
from clear_bench.registry import load_registry

SHAPE = (12, 40, 48)  # slices, rows, columns
SPACING = (2.5, 0.8, 0.7)  # dz, dy, dx
ORIGIN = (-16.0, -20.0, -30.0)
GTV = (4, 7, 10, 15, 18, 24)  # slices 4..6, rows 10..14, columns 18..23 (stop exclusive)
NODULE = (8, 9, 25, 30, 5, 9)  # the SEG's segment: slice 8, rows 25..29, columns 5..8
RAW_IDS = ("MRN-7731", "Doe^Jane", "19610203", "General Hospital")


@pytest.fixture(scope="module")
def registry():
    return load_registry([Path(clear_bench_ct_tasks.plugin.__file__)], installed=False)


def _save(ds, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _base(sop_class: str, modality: str, series_uid: str, study_uid: str, frame_uid: str,
          patient: str = RAW_IDS[0]):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    sop_uid = generate_uid()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, sop_uid, modality
    ds.PatientID, ds.PatientName, ds.PatientBirthDate = patient, RAW_IDS[1], RAW_IDS[2]
    ds.PatientSex, ds.InstitutionName = "F", RAW_IDS[3]
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20200101", "120000", "1", "A1"
    ds.ReferringPhysicianName, ds.SeriesNumber, ds.InstanceNumber = "", 1, 1
    ds.Manufacturer = "tests"
    return ds


def _hu() -> np.ndarray:
    hu = np.full(SHAPE, -1000.0, np.float32)
    hu[:, 5:35, 6:42] = -800.0  # lung
    z0, z1, y0, y1, x0, x1 = GTV
    hu[z0:z1, y0:y1, x0:x1] = 30.0
    return hu


def write_ct(folder: Path, hu: np.ndarray, study_uid: str, frame_uid: str, *, flipped: bool = False,
             series_uid: str | None = None, spacing=SPACING, prefix: str = "ct",
             patient: str = RAW_IDS[0]) -> list:
    """A CT series, one file per slice in shuffled order. ``flipped`` stores the same anatomy with rows
    running towards the patient's right and slices from head to feet."""
    from pydicom.uid import CTImageStorage, generate_uid

    series_uid = series_uid or generate_uid()
    dz, dy, dx = spacing
    row_dir = np.array([-1.0, 0.0, 0.0]) if flipped else np.array([1.0, 0.0, 0.0])
    col_dir = np.array([0.0, 1.0, 0.0])
    datasets = []
    for k in np.random.default_rng(1).permutation(hu.shape[0]):
        plane = hu[k][:, ::-1] if flipped else hu[k]
        z = ORIGIN[2] + k * dz
        first = np.array([ORIGIN[0] + (hu.shape[2] - 1) * dx if flipped else ORIGIN[0], ORIGIN[1], z])
        ds = _base(CTImageStorage, "CT", series_uid, study_uid, frame_uid, patient)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = int(hu.shape[0] - k if flipped else k + 1)
        ds.ImagePositionPatient = [float(v) for v in first]
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing, ds.SliceThickness = [dy, dx], dz
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
        ds.PixelData = np.rint(plane + 1024).astype(np.int16).tobytes()
        _save(ds, folder / f"{prefix}{len(datasets):03d}.dcm")
        datasets.append(ds)
    return datasets


def _mm(z: float, y: float, x: float, spacing=SPACING) -> list[float]:
    """Patient LPS position (mm) of continuous voxel index (z, y, x) of the canonical volume."""
    dz, dy, dx = spacing
    return [ORIGIN[0] + x * dx, ORIGIN[1] + y * dy, ORIGIN[2] + z * dz]


def write_rtstruct(path: Path, ct: list, study_uid: str, frame_uid: str) -> Path:
    """An RT Structure Set: the GTV as a closed rectangle on each of its slices (corners on pixel edges)
    and a lung ROI that is not a lesion."""
    from pydicom.dataset import Dataset
    from pydicom.uid import RTStructureSetStorage, generate_uid

    ds = _base(RTStructureSetStorage, "RTSTRUCT", generate_uid(), study_uid, frame_uid)
    ds.StructureSetLabel, ds.StructureSetDate, ds.StructureSetTime = "GTV", "20200101", "120000"
    by_z = {round(float(c.ImagePositionPatient[2]), 3): c for c in ct}
    frame = Dataset()
    frame.FrameOfReferenceUID = frame_uid
    study = Dataset()
    study.ReferencedSOPClassUID, study.ReferencedSOPInstanceUID = "1.2.840.10008.3.1.2.3.1", study_uid
    series = Dataset()
    series.SeriesInstanceUID = ct[0].SeriesInstanceUID
    series.ContourImageSequence = []
    for c in ct:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = c.SOPClassUID, c.SOPInstanceUID
        series.ContourImageSequence.append(item)
    study.RTReferencedSeriesSequence = [series]
    frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame]
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = [], [], []
    z0, z1, y0, y1, x0, x1 = GTV
    rois = {"GTV-1": [(z, y0 - 0.5, y1 - 0.5, x0 - 0.5, x1 - 0.5) for z in range(z0, z1)],
            "Lung-Left": [(z, 4.5, 34.5, 5.5, 41.5) for z in range(SHAPE[0])]}
    for number, (name, planes) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = number, frame_uid, name
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        contours = Dataset()
        contours.ReferencedROINumber, contours.ROIDisplayColor = number, [255, 0, 0]
        contours.ContourSequence = []
        for z, ya, yb, xa, xb in planes:
            contour = Dataset()
            corners = [_mm(z, ya, xa), _mm(z, ya, xb), _mm(z, yb, xb), _mm(z, yb, xa)]
            contour.ContourGeometricType, contour.NumberOfContourPoints = "CLOSED_PLANAR", 4
            contour.ContourData = [round(v, 4) for p in corners for v in p]
            image = Dataset()
            source = by_z[round(_mm(z, 0, 0)[2], 3)]
            image.ReferencedSOPClassUID, image.ReferencedSOPInstanceUID = (source.SOPClassUID,
                                                                            source.SOPInstanceUID)
            contour.ContourImageSequence = [image]
            contours.ContourSequence.append(contour)
        ds.ROIContourSequence.append(contours)
        observation = Dataset()
        observation.ObservationNumber, observation.ReferencedROINumber = number, number
        observation.RTROIInterpretedType = "GTV" if name.startswith("GTV") else "ORGAN"
        observation.ROIInterpreter = ""
        ds.RTROIObservationsSequence.append(observation)
    return _save(ds, path)


def write_seg(path: Path, ct: list, gtv: bool = False) -> Path:
    """A binary DICOM-SEG (highdicom) of one nodule on the CT's own grid, plus an organ segment; with
    ``gtv``, a third segment repeats the RTSTRUCT's GTV (as archives convert one into the other)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    ordered = sorted(ct, key=lambda c: float(c.ImagePositionPatient[2]))
    flipped = float(ordered[0].ImageOrientationPatient[0]) < 0
    pixels = np.zeros((len(ordered), SHAPE[1], SHAPE[2], 3 if gtv else 2), dtype=bool)
    z0, z1, y0, y1, x0, x1 = NODULE
    pixels[z0:z1, y0:y1, x0:x1, 0] = True
    pixels[:, 5:35, 6:42, 1] = True
    if gtv:
        z0, z1, y0, y1, x0, x1 = GTV
        pixels[z0:z1, y0:y1, x0:x1, 2] = True
    if flipped:
        pixels = pixels[:, :, ::-1]
    segments = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for n, label, kind in ((1, "Nodule-2", codes.SCT.Nodule), (2, "Lung", codes.SCT.Lung),
                               (3, "GTV-1", codes.SCT.Neoplasm))[:pixels.shape[-1]]]
    seg = hd.seg.Segmentation(
        source_images=ordered, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments, series_instance_uid=generate_uid(), series_number=300,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="tests",
        manufacturer_model_name="tests", software_versions="1", device_serial_number="1")
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path


def write_scout(path: Path, study_uid: str, frame_uid: str) -> Path:
    from pydicom.uid import CTImageStorage, generate_uid

    ds = _base(CTImageStorage, "CT", generate_uid(), study_uid, frame_uid)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [-100.0, 0.0, 200.0], [1, 0, 0, 0, 0, -1]
    ds.PixelSpacing, ds.Rows, ds.Columns = [1.0, 1.0], 16, 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = np.zeros((16, 16), np.int16).tobytes()
    return _save(ds, path)


def write_sr(path: Path, study_uid: str, frame_uid: str) -> Path:
    from pydicom.dataset import Dataset
    from pydicom.uid import BasicTextSRStorage, generate_uid

    ds = _base(BasicTextSRStorage, "SR", generate_uid(), study_uid, frame_uid)
    ds.ValueType, ds.CompletionFlag, ds.VerificationFlag = "CONTAINER", "COMPLETE", "UNVERIFIED"
    ds.ContinuityOfContent = "SEPARATE"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = "18748-4", "LN", "Report"
    ds.ConceptNameCodeSequence = [concept]
    text = Dataset()
    text.RelationshipType, text.ValueType, text.TextValue = "CONTAINS", "TEXT", "Spiculated nodule."
    ds.ContentSequence = [text]
    return _save(ds, path)


def write_rtdose(path: Path, study_uid: str, frame_uid: str) -> Path:
    from pydicom.uid import RTDoseStorage, generate_uid

    ds = _base(RTDoseStorage, "RTDOSE", generate_uid(), study_uid, frame_uid)
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"
    return _save(ds, path)


def write_patient(folder: Path, *, flipped: bool = False, extra_series: bool = False,
                  thin_series: bool = False, patient: str = RAW_IDS[0]) -> Path:
    """One patient's export: study / series folders as archives lay them out."""
    from pydicom.uid import generate_uid

    study_uid, frame_uid = generate_uid(), generate_uid()
    study = folder / "01-01-2020-StudyID-NA-12345"
    ct = write_ct(study / "2.000000-CT-0001", _hu(), study_uid, frame_uid, flipped=flipped, patient=patient)
    write_rtstruct(study / "3.000000-RTSTRUCT-0002" / "1-1.dcm", ct, study_uid, frame_uid)
    write_seg(study / "300.000000-Segmentation-0003" / "1-1.dcm", ct)
    write_scout(study / "1.000000-Topogram-0004" / "1-1.dcm", study_uid, frame_uid)
    write_sr(study / "4.000000-Report-0005" / "1-1.dcm", study_uid, frame_uid)
    write_rtdose(study / "5.000000-Dose-0006" / "1-1.dcm", study_uid, frame_uid)
    if extra_series:  # a thick reconstruction of the same study, fewer slices
        write_ct(study / "6.000000-CT-thick", _hu()[::2], study_uid, frame_uid, spacing=(5.0, 0.8, 0.7),
                 prefix="thick")
    if thin_series:  # a thin reconstruction of part of the range: fewer files, closer slices
        write_ct(study / "7.000000-CT-thin", _hu()[:8], study_uid, frame_uid, spacing=(1.25, 0.8, 0.7),
                 prefix="thin")
    return folder


def _boxes(scan) -> list[tuple]:
    return sorted((b.slice_index, b.x0, b.y0, b.x1, b.y1, b.label) for b in scan.lesions)


def _expected(region, label):
    z0, z1, y0, y1, x0, x1 = region
    return [(z, x0, y0, x1, y1, label) for z in range(z0, z1)]


@pytest.mark.parametrize("flipped", [False, True], ids=["lps", "flipped"])
def test_a_patient_export_is_one_scan_with_its_lesion_boxes(registry, tmp_path, flipped, caplog):
    root = tmp_path / "export"
    write_patient(root / "pat_1", flipped=flipped)
    found = survey(root / "pat_1", recursive=True)
    assert len(found.series) == 1 and len(found.series[0].files) == SHAPE[0]
    assert sorted(a.kind.value for a in found.annotations) == ["rtstruct", "seg"]
    assert sorted(found.skipped) == ["1 Basic Text SR Storage file(s): not a CT image series",
                                     "1 CT localizer (scout) file(s): not a CT image series",
                                     "1 RT Dose Storage file(s): not a CT image series"]
    with caplog.at_level("INFO"):
        source = registry.source("folder").build({"root": str(root)})
        assert source.scan_ids() == ["pat_1"]
        scan = source.load("pat_1")
    assert scan.volume.shape == SHAPE and scan.spacing == pytest.approx(SPACING)
    np.testing.assert_allclose(scan.volume, _hu(), atol=0.5)  # canonical orientation whatever the storage
    assert _boxes(scan) == sorted(_expected(GTV, "GTV-1") + _expected(NODULE, "Nodule-2"))
    assert any("RTSTRUCT 1-1.dcm (matched by uid)" in note for note in scan.notes)
    assert any("SEG 1-1.dcm (matched by uid)" in note for note in scan.notes)
    patient = source.patient_id("pat_1")
    assert patient.startswith("pt-") and "MRN" not in patient
    kept = caplog.text + repr({k: v for k, v in vars(scan).items() if k != "volume"}) + repr(vars(source))
    assert not any(raw in kept for raw in RAW_IDS)


def test_lesion_names_filter_rois_and_a_label_overrides_them(registry, tmp_path):
    root = tmp_path / "export"
    write_patient(root / "pat_1")
    lungs = registry.source("folder").build({"root": str(root), "lesion_names": ["lung*"],
                                             "mask_label": "lung"})
    scan = lungs.load("pat_1")
    boxes = _boxes(scan)
    # the Lung-Left ROI and the Lung segment, one region, under the one label given: one box per slice
    assert boxes == [(z, 6, 5, 42, 35, "lung") for z in range(SHAPE[0])]
    assert any(note.startswith(f"{SHAPE[0]} duplicate box(es) merged") for note in scan.notes)
    gtv_only = registry.source("folder").build({"root": str(root), "lesion_names": ["GTV*"]})
    assert _boxes(gtv_only.load("pat_1")) == _expected(GTV, "GTV-1")


def test_a_lesion_in_both_the_rtstruct_and_a_seg_gives_one_box_per_slice(registry, tmp_path):
    root = tmp_path / "export"
    write_patient(root / "pat_1")
    seg = next(root.rglob("300.000000-Segmentation-0003/1-1.dcm"))
    ct = [__import__("pydicom").dcmread(p) for p in sorted(root.rglob("ct*.dcm"))]
    write_seg(seg, ct, gtv=True)
    scan = registry.source("folder").build({"root": str(root), "lesion_names": ["GTV*"]}).load("pat_1")
    assert _boxes(scan) == _expected(GTV, "GTV-1")
    assert "3 duplicate box(es) merged (one lesion in several objects, e.g. an RTSTRUCT and the SEG made " \
           "from it)" in scan.notes


def test_an_rtstruct_without_series_references_is_matched_by_geometry(registry, tmp_path):
    import pydicom

    root = tmp_path / "export"
    write_patient(root / "pat_1")
    path = next(root.rglob("3.000000-RTSTRUCT-0002/1-1.dcm"))
    ds = pydicom.dcmread(path)
    del ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence
    for roi in ds.ROIContourSequence:
        for contour in roi.ContourSequence:
            del contour.ContourImageSequence
    ds.save_as(path)
    scan = registry.source("folder").build({"root": str(root), "lesion_names": ["GTV*"]}).load("pat_1")
    assert _boxes(scan) == _expected(GTV, "GTV-1")
    assert any("matched by geometry" in note for note in scan.notes)
    ds.FrameOfReferenceUID = ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "1.2.3.999"
    ds.save_as(path)  # another frame of reference: nothing ties it to this CT
    scan = registry.source("folder").build({"root": str(root), "lesion_names": ["GTV*"]}).load("pat_1")
    assert scan.lesions == []
    assert "RTSTRUCT 1-1.dcm matches no CT series of its folder (neither by UID nor by frame of " \
           "reference); ignored" in scan.notes


def test_several_ct_series_follow_the_series_policy(registry, tmp_path):
    root = tmp_path / "export"
    write_patient(root / "pat_1", extra_series=True)
    assert [len(s.files) for s in find_series(root / "pat_1", recursive=True)] == [12, 6]
    largest = registry.source("folder").build({"root": str(root)})
    assert largest.scan_ids() == ["pat_1"] and largest.load("pat_1").num_slices == 12
    assert any("2 CT series; series 'largest' read the one of 12 files, 2.50 mm apart (not read: 6 files, "
               "5.00 mm apart)" in note for note in largest.notes("pat_1"))
    every = registry.source("folder").build({"root": str(root), "series": "all"})
    assert every.scan_ids() == ["pat_1-s1", "pat_1-s2"]
    thick = every.load("pat_1-s2")
    assert thick.num_slices == 6 and thick.spacing[0] == pytest.approx(5.0)
    assert thick.lesions == []  # the RTSTRUCT and the SEG reference the thin series
    write_patient(root / "pat_2", extra_series=True, thin_series=True)
    thinnest = registry.source("folder").build({"root": str(root), "series": "thinnest"})
    assert thinnest.scan_ids() == ["pat_1", "pat_2"]
    assert thinnest.load("pat_2").spacing[0] == pytest.approx(1.25)
    assert thinnest.load("pat_1").spacing[0] == pytest.approx(2.5)
    assert registry.source("folder").build({"root": str(root)}).load("pat_2").num_slices == 12
    with pytest.raises(Exception, match="series: expected one of largest, thinnest, all"):
        registry.source("folder").build({"root": str(root), "series": "newest"})


def test_data_show_draws_the_rtstruct_boxes(tmp_path, capsys):
    root = tmp_path / "export"
    write_patient(root / "pat_1")
    out = tmp_path / "pat_1.png"
    code = main(["data", "show", "pat_1", "--source", "folder", "-o", f"root={root}", "-o",
                 "lesion_names=[GTV*]", "--window", "lung", "--slices", "3", "4", "5", "6", "--out",
                 str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "pat_1: 12 slices" in printed and "3 lesion boxes" in printed
    assert not any(raw in printed for raw in RAW_IDS)
    image = np.asarray(Image.open(out).convert("RGB")).astype(int)
    yellow = (image[..., 0] > 200) & (image[..., 1] > 170) & (image[..., 2] < 80)
    columns = np.flatnonzero(yellow.any(axis=0))
    width = image.shape[1] // 4  # four tiles side by side: z3 has no box, z4..z6 one each
    tiles_with_box = sorted({int(c) // width for c in columns})
    assert tiles_with_box == [1, 2, 3]


def test_data_show_reads_an_export_folder_itself(tmp_path, capsys):
    root = tmp_path / "export"
    write_patient(root / "pat_1", flipped=True)
    out = tmp_path / "folder.png"
    assert main(["data", "show", str(root / "pat_1"), "--window", "lung", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "12 slices" in printed and "4 lesion boxes" in printed and out.stat().st_size > 0
    assert not any(raw in printed for raw in RAW_IDS)


def test_seg_voxels_by_volume_and_by_frame_agree(tmp_path):
    import highdicom as hd

    from clear_bench.data.dicom_lesions import _segment_points, _segment_points_by_frame

    root = tmp_path / "export"
    write_patient(root / "pat_1", flipped=True)
    seg = hd.seg.segread(next(root.rglob("300.000000-Segmentation-0003/1-1.dcm")))
    for number in (1, 2):
        by_volume = _segment_points(seg, number, Path("seg.dcm"))
        by_frame = _segment_points_by_frame(seg, number, Path("seg.dcm"))
        assert len(by_volume) == len(by_frame) > 0
        np.testing.assert_allclose(np.unique(np.round(by_volume, 3), axis=0),
                                   np.unique(np.round(by_frame, 3), axis=0))


def test_an_unreadable_file_leaves_its_patient_out_with_the_reason(registry, tmp_path):
    root = tmp_path / "export"
    write_patient(root / "pat_1")
    write_patient(root / "pat_2")
    victim = sorted((root / "pat_2").rglob("ct*.dcm"))[3]
    victim.write_bytes(victim.read_bytes()[:200])  # cut inside the header
    source = registry.source("folder").build({"root": str(root)})
    assert source.scan_ids() == ["pat_1", "pat_2"]
    with pytest.raises(DataError, match=re.escape(victim.name)):
        source.load("pat_2")
    assert source.load("pat_1").num_slices == SHAPE[0]


# --- the NSCLC-Radiomics recipe against a folder laid out as docs/datasets.md says ----------------------

RECIPE = Path(__file__).resolve().parents[3] / "benchmarks" / "nsclc-radiomics.yaml"
NSCLC_COLUMNS = ("PatientID,age,clinical.T.Stage,Clinical.N.Stage,Clinical.M.Stage,Overall.Stage,Histology,"
                 "gender,Survival.time,deadstatus.event")


def test_the_nsclc_radiomics_recipe_checks_and_joins_on_the_documented_layout(registry, tmp_path, capsys):
    from clear_bench.components import load_task
    from clear_bench.config import load_benchmark_with_plugins

    clone = tmp_path / "clone"
    (clone / "benchmarks").mkdir(parents=True)
    (clone / "benchmarks" / RECIPE.name).write_text(RECIPE.read_text())
    data = clone / "data"
    write_patient(data / "NSCLC-Radiomics" / "LUNG1-001", patient="LUNG1-001")
    write_patient(data / "NSCLC-Radiomics" / "LUNG1-002", patient="LUNG1-002", extra_series=True)
    (data / "NSCLC-Radiomics-Lung1.clinical-version3-Oct-2019.csv").write_text(
        NSCLC_COLUMNS + "\n"
        "LUNG1-001,78.75,2,3,0,IIIb,large cell,male,2165,1\n"
        "LUNG1-002,83.8,2,0,0,I,squamous cell carcinoma,male,155,1\n"
        "LUNG1-003,68.2,2,3,0,NA,nos,female,256,1\n"  # no scan here, and no stage
        "LUNG1-004,70.9,2,1,0,II,adenocarcinoma,male,141,1\n")
    config_path = clone / "benchmarks" / RECIPE.name
    assert main(["run", str(config_path), "--check"]) == 0
    assert "OK (2 encoders x 1 tasks x 2 aggregators)" in capsys.readouterr().out

    config, loaded = load_benchmark_with_plugins(config_path, [])
    ref = config.tasks[0]
    task = load_task(loaded, loaded.task(ref.name), ref.options)
    assert task.label_names == ["I", "II", "IIIa", "IIIb"]
    assert {k: int(v[0]) for k, v in task.labels.items()} == {"LUNG1-001": 3, "LUNG1-002": 0}
    patients = task.patient_of
    assert sorted(patients) == ["LUNG1-001", "LUNG1-002"] and len(set(patients.values())) == 2
    assert all(p.startswith("pt-") and "LUNG1" not in p for p in patients.values())
    scan = task.source.load("LUNG1-002")  # the larger of its two CT series, the GTV as lung boxes
    assert scan.num_slices == SHAPE[0]
    assert _boxes(scan) == _expected(GTV, "lung")

    (clone / "benchmarks" / RECIPE.name).write_text(RECIPE.read_text().replace("NSCLC-Radiomics\n",
                                                                               "NSCLC-Radiomic\n"))
    assert main(["run", str(config_path), "--check"]) != 0
    assert "tasks[0].options.source.root: file not found" in capsys.readouterr().err


def test_a_run_over_a_mixed_folder_finishes_and_its_board_lists_what_it_left_out(tmp_path, capsys):
    import nibabel as nib

    root = tmp_path / "scans"
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for k in range(10):
        hu = np.full((8, 32, 32), -1000.0, np.float32) + rng.normal(0, 5, (8, 32, 32)).astype(np.float32)
        if k % 2:
            hu[3:5, 10:20, 10:20] = 60.0
        affine = np.diag([-1.0, -1.0, 3.0, 1.0])
        nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0).astype(np.int16), affine),
                 str(root / f"case{k:02d}.nii.gz"))
        rows.append(f"case{k:02d},{k % 2}")
    write_patient(root / "pat_1")
    rows.append("pat_1,1")
    write_sr(root / "reports" / "sr.dcm", "1.2.3", "1.2.3.4")  # a folder holding only a report
    good = (root / "case00.nii.gz").read_bytes()
    (root / "truncated.nii.gz").write_bytes(good[: len(good) // 2])
    nan = np.full((8, 32, 32), -1000.0, np.float32)
    nan[2, 5:7, 5:7] = np.nan
    nib.save(nib.Nifti1Image(nan.transpose(2, 1, 0), np.diag([-1.0, -1.0, 3.0, 1.0])),
             str(root / "nan.nii.gz"))
    rows += ["truncated,0", "nan,1"]
    (tmp_path / "labels.csv").write_text("image,response\n" + "\n".join(rows) + "\n")
    (tmp_path / "bench.yaml").write_text("""
name: mixed
output_dir: run
cache_dir: cache
leaderboard_dir: boards
preprocessing: {windows: [soft-tissue]}
extraction: {batch_size: 16, num_workers: 0}
encoders: [hu-reference]
tasks:
  - name: csv
    options: {source: {name: folder, root: scans}, csv: labels.csv}
aggregators: [mean-pool]
crossval: {folds: 2, epochs: 2, patience: 1, bootstrap: 20, batch_size: 4, permutations: 1,
           comparison_resamples: 200}
""")
    assert main(["run", str(tmp_path / "bench.yaml"), "--no-progress"]) == 0
    board = (tmp_path / "boards" / "csv.md").read_text()
    assert "hu-reference | mean-pool" in board
    left_out = board.split("## Scans left out", 1)[1]
    assert re.search(r"- truncated.*truncated\.nii\.gz.*(truncated|corrupt)", left_out)
    assert re.search(r"- nan.*nan\.nii\.gz: 4 NaN voxel\(s\) of 8192", left_out)
    assert "pat_1" not in left_out and "case0" not in left_out and "reports" not in left_out
    printed = capsys.readouterr()
    assert re.search(r"\d+ scan extraction\(s\) failed", printed.err)
    # no identifier of the DICOM patient (with its RTSTRUCT and SEG) in any file the run wrote, nor printed
    written = [p for folder in ("run", "cache", "boards") for p in (tmp_path / folder).rglob("*")
               if p.is_file()]
    assert {".h5", ".json", ".csv", ".md", ".png", ".npz"} <= {p.suffix for p in written}
    raw_bytes = [raw.lower().encode() for raw in RAW_IDS]
    assert not [(str(p), raw) for p in written for raw in raw_bytes if raw in p.read_bytes().lower()]
    assert not any(raw in (printed.out + printed.err).lower().encode() for raw in raw_bytes)
