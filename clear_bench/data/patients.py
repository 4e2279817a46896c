"""Pseudonymous patient ids: whose scan it is, without ever carrying a raw identifier.

A patient id that a source derives from a field of the data (a DICOM ``PatientID``, DeepLesion's patient
index) is ``pt-`` followed by the first 16 hex digits of HMAC-SHA256 keyed with a salt over that field:

    pseudonymous_patient("MRN-0042", salt) == "pt-" + hmac_sha256(salt, "MRN-0042")[:16]

The same field and salt always give the same id (so the splits of a task are reproducible), and the raw
value is dropped as soon as it is hashed: it never reaches a scan id, a cache key, a log line or an output.

The salt is a source option (``patient_salt``); when it is not given, ``$CLEAR_BENCH_PATIENT_SALT``, else
:data:`DEFAULT_PATIENT_SALT`. The default is public: anyone who holds a list of PatientIDs can hash them
with it and find their patients in a split file. Set a secret salt of your own (the environment variable
keeps it out of the benchmark YAML) before split files or boards leave your site; a different salt gives
different patient ids, hence different split fingerprints.
"""

from __future__ import annotations

import hashlib
import hmac
import os

DEFAULT_PATIENT_SALT = "clear-bench-patients-v1"
SALT_ENV = "CLEAR_BENCH_PATIENT_SALT"
PREFIX = "pt-"

PLACEHOLDER_PATIENT_IDS = frozenset({
    "", "-", "0", "anon", "anonymous", "anonymized", "anonymised", "unknown", "none", "null", "n/a", "na",
    "removed", "deidentified", "de-identified",
})
"""PatientID values that anonymisers write for every patient alike: they say nothing about who it is, so a
series carrying one has an unknown patient (rather than one patient for the whole folder)."""


def patient_salt(given: str | None = None) -> str:
    """The salt in force: ``given``, else ``$CLEAR_BENCH_PATIENT_SALT``, else the public default."""
    return given or os.environ.get(SALT_ENV) or DEFAULT_PATIENT_SALT


def pseudonymous_patient(raw: str | None, salt: str | None = None) -> str | None:
    """``pt-`` + 16 hex digits of HMAC-SHA256(salt, raw); ``None`` for an empty value."""
    text = (raw or "").strip()
    if not text:
        return None
    digest = hmac.new(patient_salt(salt).encode(), text.encode(), hashlib.sha256).hexdigest()
    return PREFIX + digest[:16]


def dicom_patient(patient_id: str | None, salt: str | None = None) -> str | None:
    """The pseudonymous patient of a DICOM ``PatientID``; ``None`` when it is empty or a placeholder."""
    text = (patient_id or "").strip()
    if text.lower() in PLACEHOLDER_PATIENT_IDS:
        return None
    return pseudonymous_patient(text, salt)


SITE_PREFIX = "site-"


def dicom_site(institution: str, manufacturer: str, model: str, salt: str | None = None) -> str | None:
    """The pseudonymous acquisition site of a DICOM series: ``site-`` + 12 hex digits of HMAC-SHA256(salt,
    institution | manufacturer | model); ``None`` when all three are empty. The institution's name never
    leaves this function."""
    fields = [value.strip() for value in (institution, manufacturer, model)]
    if not any(fields):
        return None
    digest = hmac.new(patient_salt(salt).encode(), "|".join(fields).encode(), hashlib.sha256).hexdigest()
    return SITE_PREFIX + digest[:12]
