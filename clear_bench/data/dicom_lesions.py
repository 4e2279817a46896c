"""Lesion boxes from DICOM annotation objects: RTSTRUCT contours and DICOM-SEG segments.

Both become per-slice :class:`~clear_bench.specs.LesionBox` on the grid of the scan they annotate, with
the ROI name or segment label as the box label (or a label the source is given). The geometry is the
patient's: contour points and segment voxels are placed in LPS millimetres and mapped into the scan's
voxel grid with its origin, spacing and direction, so a flipped or reoriented series still gets its
boxes on the right slices.

Which series an object annotates: the series it references by ``SeriesInstanceUID`` (RTSTRUCT: its
referenced frame of reference's series, or the SOP instances of its contour images; SEG: its referenced
series), else, when it references no series of the folder, any series sharing its
``FrameOfReferenceUID`` whose volume holds its points (matched by geometry).

RTSTRUCT files are read with pydicom (an RT Structure Set is plain nested sequences of planar contours in
patient coordinates); SEG files with highdicom, which decodes the bit-packed frames and the per-frame
functional groups of the standard.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clear_bench.data.annotations import boxes_from_mask
from clear_bench.data.dicom import Annotation, SeriesInfo
from clear_bench.data.dicom_objects import Kind
from clear_bench.data.scan import Scan
from clear_bench.errors import DataError
from clear_bench.specs import LesionBox

log = logging.getLogger(__name__)

DEFAULT_LESION_NAMES: tuple[str, ...] = ("GTV*", "*tumor*", "*tumour*", "*lesion*", "*nodule*")
"""ROI names / segment labels taken as lesions unless a source names its own (case-insensitive globs);
organs at risk (lungs, heart, spinal cord) are not lesions."""


@dataclass
class References:
    """What an annotation object points at: series UIDs, SOP instance UIDs and its frame of reference."""

    series: set[str] = field(default_factory=set)
    instances: set[str] = field(default_factory=set)
    frame_of_reference: str = ""


def name_matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether ``name`` matches one of the case-insensitive glob ``patterns``."""
    return any(fnmatch.fnmatchcase(name.lower(), p.lower()) for p in patterns)


def references(annotation: Annotation) -> References:
    """The references of an RTSTRUCT or SEG file (its header only)."""
    import pydicom

    try:
        ds = pydicom.dcmread(annotation.path, stop_before_pixels=True)
    except Exception as exc:
        raise DataError(f"{annotation.path}: unreadable {annotation.kind.value.upper()} ({exc})") from exc
    refs = References(frame_of_reference=str(ds.get("FrameOfReferenceUID", "") or ""))
    if annotation.kind is Kind.RTSTRUCT:
        for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
            refs.frame_of_reference = refs.frame_of_reference or str(frame.get("FrameOfReferenceUID", ""))
            for study in frame.get("RTReferencedStudySequence", []):
                for series in study.get("RTReferencedSeriesSequence", []):
                    refs.series.add(str(series.get("SeriesInstanceUID", "")))
                    for image in series.get("ContourImageSequence", []):
                        refs.instances.add(str(image.get("ReferencedSOPInstanceUID", "")))
        for roi in ds.get("ROIContourSequence", []):
            for contour in roi.get("ContourSequence", []):
                for image in contour.get("ContourImageSequence", []):
                    refs.instances.add(str(image.get("ReferencedSOPInstanceUID", "")))
    else:
        for series in ds.get("ReferencedSeriesSequence", []):
            refs.series.add(str(series.get("SeriesInstanceUID", "")))
            for image in series.get("ReferencedInstanceSequence", []):
                refs.instances.add(str(image.get("ReferencedSOPInstanceUID", "")))
    refs.series.discard("")
    refs.instances.discard("")
    return refs


def annotates(refs: References, series: SeriesInfo, folder_series: Sequence[SeriesInfo]) -> str | None:
    """How ``refs`` match ``series``: ``"uid"``, ``"geometry"`` (same frame of reference, no series of the
    folder referenced; the points are checked when rasterised) or ``None``."""
    if series.uid in refs.series or refs.instances & series.instance_uids:
        return "uid"
    known = {s.uid for s in folder_series}
    instances = set().union(*(s.instance_uids for s in folder_series)) if folder_series else set()
    if refs.series & known or refs.instances & instances:
        return None  # it annotates another series of this folder
    if refs.frame_of_reference and refs.frame_of_reference == series.frame_of_reference:
        return "geometry"
    return None


def lesion_boxes(annotations: Sequence[Annotation], series: SeriesInfo, folder_series: Sequence[SeriesInfo],
                 scan: Scan, names: Sequence[str] = DEFAULT_LESION_NAMES,
                 label: str | None = None) -> list[LesionBox]:
    """The boxes of every annotation object that annotates ``series`` (read as ``scan``); what did not
    match, or fell outside the volume, is noted on ``scan.notes``."""
    boxes: list[LesionBox] = []
    for annotation in annotations:
        refs = references(annotation)
        how = annotates(refs, series, folder_series)
        if how is None:
            if not any(annotates(refs, other, folder_series) for other in folder_series):
                scan.notes.append(f"{annotation.kind.value.upper()} {annotation.path.name} matches no CT "
                                  "series of its folder (neither by UID nor by frame of reference); ignored")
            continue
        if annotation.kind is Kind.RTSTRUCT:
            found = rtstruct_boxes(annotation.path, scan, names, label)
        else:
            found = seg_boxes(annotation.path, scan, names, label)
        if how == "geometry" and not found:
            continue  # same frame of reference, but its points lie in another series' volume
        boxes.extend(found)
        scan.notes.append(f"{len(found)} lesion box(es) from {annotation.kind.value.upper()} "
                          f"{annotation.path.name} (matched by {how})")
    unique = merge_duplicates(boxes)
    if len(unique) < len(boxes):
        scan.notes.append(f"{len(boxes) - len(unique)} duplicate box(es) merged (one lesion in several "
                          "objects, e.g. an RTSTRUCT and the SEG made from it)")
    return unique


def merge_duplicates(boxes: Sequence[LesionBox], min_iou: float = 0.5) -> list[LesionBox]:
    """``boxes`` without repeats: a box on the same slice, with the same label and an intersection over
    union of at least ``min_iou`` with an earlier one is dropped."""
    kept: list[LesionBox] = []
    for box in boxes:
        if not any(k.slice_index == box.slice_index and k.label == box.label and _iou(k, box) >= min_iou
                   for k in kept):
            kept.append(box)
    return kept


def _iou(a: LesionBox, b: LesionBox) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter
    return inter / union if union > 0 else 0.0


# --- RTSTRUCT -------------------------------------------------------------------------------------------


def rtstruct_boxes(path: Path, scan: Scan, names: Sequence[str] = DEFAULT_LESION_NAMES,
                   label: str | None = None) -> list[LesionBox]:
    """Boxes of the closed planar contours of the ROIs whose name matches ``names``: each ROI's contours
    are filled on the slice they lie on (nested contours cut holes), then one box per connected region."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise DataError(f"{path}: unreadable RTSTRUCT ({exc})") from exc
    roi_names = {int(roi.ROINumber): str(roi.get("ROIName", "") or f"ROI {roi.ROINumber}")
                 for roi in ds.get("StructureSetROISequence", [])}
    boxes: list[LesionBox] = []
    outside = 0
    for roi in ds.get("ROIContourSequence", []):
        number = int(roi.get("ReferencedROINumber", -1))
        name = roi_names.get(number, f"ROI {number}")
        if not name_matches(name, names):
            continue
        mask = np.zeros(scan.volume.shape, dtype=bool)
        for contour in roi.get("ContourSequence", []):
            kind = str(contour.get("ContourGeometricType", "CLOSED_PLANAR")).upper()
            data = np.asarray([float(v) for v in contour.get("ContourData", [])], dtype=np.float64)
            if len(data) < 3 or len(data) % 3:
                raise DataError(f"{path}: ROI '{name}': ContourData of {len(data)} values is not x,y,z "
                                "triplets")
            index = scan.index_of(data.reshape(-1, 3))
            if not _fill_contour(mask, index, kind):
                outside += 1
        boxes.extend(boxes_from_mask(mask, label or name))
    if outside:
        scan.notes.append(f"{path.name}: {outside} contour(s) outside the volume of {scan.scan_id}, ignored")
    return boxes


def _fill_contour(mask: np.ndarray, index: np.ndarray, kind: str) -> bool:
    """XOR-fill one contour (``[n, 3]`` continuous ``z, y, x``) into ``mask``; False when it lies outside."""
    from matplotlib.path import Path as Polygon

    z = round(float(np.mean(index[:, 0])))
    if not 0 <= z < mask.shape[0]:
        return False
    ys, xs = index[:, 1], index[:, 2]
    height, width = mask.shape[1:]
    y0, y1 = max(0, int(np.floor(ys.min()))), min(height - 1, int(np.ceil(ys.max())))
    x0, x1 = max(0, int(np.floor(xs.min()))), min(width - 1, int(np.ceil(xs.max())))
    if y0 > y1 or x0 > x1:
        return False
    region = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=bool)
    if kind == "CLOSED_PLANAR" and len(index) >= 3:
        grid_y, grid_x = np.mgrid[y0:y1 + 1, x0:x1 + 1]
        centres = np.column_stack([grid_x.ravel(), grid_y.ravel()])
        inside = Polygon(np.column_stack([xs, ys])).contains_points(centres, radius=1e-9)
        region |= inside.reshape(region.shape)
    if not region.any():  # a point, an open line or a contour thinner than a pixel: its vertices' pixels
        vy = np.clip(np.rint(ys).astype(int), y0, y1) - y0
        vx = np.clip(np.rint(xs).astype(int), x0, x1) - x0
        region[vy, vx] = True
    mask[z, y0:y1 + 1, x0:x1 + 1] ^= region
    return True


# --- DICOM-SEG ------------------------------------------------------------------------------------------


def seg_boxes(path: Path, scan: Scan, names: Sequence[str] = DEFAULT_LESION_NAMES,
              label: str | None = None) -> list[LesionBox]:
    """Boxes of the segments whose label matches ``names``: each segment's voxels are placed in the
    scan's grid (nearest voxel), then one box per connected region of each slice."""
    import highdicom as hd

    try:
        seg = hd.seg.segread(path)
    except Exception as exc:
        raise DataError(f"{path}: unreadable DICOM-SEG ({exc})") from exc
    boxes: list[LesionBox] = []
    for number in seg.get_segment_numbers():
        name = str(seg.get_segment_description(number).segment_label)
        if not name_matches(name, names):
            continue
        points = _segment_points(seg, number, path)
        mask = np.zeros(scan.volume.shape, dtype=bool)
        if len(points):
            index = np.rint(scan.index_of(points)).astype(int)
            keep = np.all((index >= 0) & (index < np.array(scan.volume.shape)), axis=1)
            if not keep.all():
                scan.notes.append(f"{path.name}: segment '{name}': {int((~keep).sum())} voxel(s) outside "
                                  f"the volume of {scan.scan_id}, ignored")
            index = index[keep]
            mask[index[:, 0], index[:, 1], index[:, 2]] = True
        boxes.extend(boxes_from_mask(mask, label or name))
    return boxes


def _segment_points(seg, number: int, path: Path) -> np.ndarray:
    """LPS positions (mm) of the voxel centres of segment ``number``: highdicom's volume of the segment
    (regularly spaced frames), else frame by frame from the per-frame plane positions."""
    try:
        volume = seg.get_volume(segment_numbers=[number], combine_segments=True)
    except Exception:  # frames that do not form a regular volume (one frame, uneven gaps)
        return _segment_points_by_frame(seg, number, path)
    array = np.asarray(volume.array)
    while array.ndim > 3:
        array = array[..., 0]
    indices = np.argwhere(array > 0)
    if not len(indices):
        return np.zeros((0, 3))
    return np.asarray(volume.map_indices_to_reference(indices), dtype=np.float64)


def _segment_points_by_frame(seg, number: int, path: Path) -> np.ndarray:
    shared = seg.SharedFunctionalGroupsSequence[0]
    try:
        orientation = np.asarray([float(v) for v in
                                  shared.PlaneOrientationSequence[0].ImageOrientationPatient])
        dy, dx = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    except (AttributeError, IndexError) as exc:
        raise DataError(f"{path}: DICOM-SEG without a shared plane orientation and pixel spacing") from exc
    row, col = orientation[:3], orientation[3:]
    frames = np.asarray(seg.pixel_array)
    if frames.ndim == 2:
        frames = frames[None]
    out = []
    for k, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        if int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber) != number:
            continue
        position = np.asarray([float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient])
        rc = np.argwhere(frames[k] > 0)
        out.append(position + rc[:, 1:2] * dx * row + rc[:, 0:1] * dy * col)
    return np.concatenate(out) if out else np.zeros((0, 3))
