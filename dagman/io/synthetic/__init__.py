"""Synthetic cohorts written as real DICOM: chest CT phantoms, nodules and the demo cohort.

``FAKE_IDENTIFIERS`` lists every fake identifying value (names, birth dates, accession numbers, other
patient ids, institution, referring physician) the demo writes into DICOM headers, so PHI tests can grep
every pipeline output for them.
"""

from __future__ import annotations

from dagman.io.synthetic.demo import (
    BROKEN_KINDS,
    FAKE_IDENTIFIERS,
    MANIFEST_COLUMNS,
    demo_case_volume,
    demo_patient_tags,
    write_demo_cohort,
)
from dagman.io.synthetic.phantom import HU, add_nodule, chest_phantom

__all__ = [
    "BROKEN_KINDS",
    "FAKE_IDENTIFIERS",
    "HU",
    "MANIFEST_COLUMNS",
    "add_nodule",
    "chest_phantom",
    "demo_case_volume",
    "demo_patient_tags",
    "write_demo_cohort",
]
