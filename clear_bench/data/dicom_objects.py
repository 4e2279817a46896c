"""What a DICOM file is: a CT image, a scout, a lesion annotation, or an object that is never a scan.

Archives and hospital exports put more than images in a patient's folder: RTSTRUCT contours, DICOM-SEG
segmentations, structured reports, RT plans and doses, presentation states, key-object notes, secondary
captures. The SOP Class UID says which is which; a CT image whose ``ImageType`` says ``LOCALIZER`` (a
scout or topogram) is an image but not a volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(str, Enum):
    """The role of a DICOM file in a scan folder."""

    CT = "ct"  # a slice (or a multi-frame volume) of a CT image series: part of a scan
    LOCALIZER = "localizer"  # a scout / topogram: skipped with a note
    RTSTRUCT = "rtstruct"  # contours: lesion annotations
    SEG = "seg"  # DICOM-SEG segments: lesion annotations
    OTHER = "other"  # SR, RT plan / dose, presentation state, MR, secondary capture...: never a scan


CT_IMAGE_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
})
RTSTRUCT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


@dataclass(frozen=True)
class Classified:
    """A file's kind and a short human name of its SOP class (e.g. ``Comprehensive SR Storage``)."""

    kind: Kind
    what: str


def sop_class_name(uid: str) -> str:
    """The SOP class name pydicom's dictionary gives ``uid``, else the UID itself."""
    from pydicom.uid import UID

    name = UID(uid).name if uid else ""
    return name if name and name != uid else (f"SOP class {uid}" if uid else "no SOP class")


def classify(sop_class: str, modality: str = "", image_type: tuple[str, ...] = ()) -> Classified:
    """The kind of a file from its ``SOPClassUID``, ``Modality`` and ``ImageType`` values.

    A file without a SOP class counts as a CT image when its modality is CT (old exports omit it); any
    other SOP class, images of other modalities included, is :attr:`Kind.OTHER`."""
    sop_class = (sop_class or "").strip()
    if sop_class == RTSTRUCT_CLASS:
        return Classified(Kind.RTSTRUCT, "RT Structure Set")
    if sop_class == SEG_CLASS:
        return Classified(Kind.SEG, "Segmentation")
    if sop_class in CT_IMAGE_CLASSES or (not sop_class and modality.upper() == "CT"):
        if any(value.strip().upper() == "LOCALIZER" for value in image_type):
            return Classified(Kind.LOCALIZER, "CT localizer (scout)")
        return Classified(Kind.CT, sop_class_name(sop_class) if sop_class else "CT image")
    return Classified(Kind.OTHER, sop_class_name(sop_class))
