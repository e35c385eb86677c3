"""The synthetic demo cohort: chest CT phantoms and deliberately broken inputs, written as real DICOM.

``write_demo_cohort`` lays out a TCIA-like tree ``DIR/dicom/<PatientID>/<StudyUID>/<SeriesUID>/*.dcm`` and a
manifest ``DIR/manifest.csv`` saying what the converter must do with each series (convert or quarantine, and
which reason code it must report). Everything is a function of the seed: UIDs, anatomy, noise, file names and
dates, so the same seed gives byte-identical files.

Good cases vary the way real exports do (TCIA names, shuffled hex names, SOP-UID names, signed and unsigned
storage, descending instance numbers, RLE compression, implicit VR), so the converter is exercised on more
than one file flavour. Every identifying tag carries a fake value listed in ``FAKE_IDENTIFIERS``, so tests
can prove that none reaches an output.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from dagman.io.atomic import write_csv_atomic
from dagman.io.dicom_write import derived_uid, write_ct_series, write_localizer, write_non_image
from dagman.io.synthetic.phantom import chest_phantom

__all__ = [
    "BROKEN_KINDS",
    "FAKE_IDENTIFIERS",
    "MANIFEST_COLUMNS",
    "demo_case_volume",
    "demo_patient_tags",
    "write_demo_cohort",
]

MANIFEST_COLUMNS = ("series_uid", "patient_id", "kind", "expected", "expected_reason_code", "n_files")

# kind -> (expected outcome, reason code the converter must report), in the order the cases are written
BROKEN_KINDS: dict[str, tuple[str, str]] = {
    "scout_inside": ("convert", "localizer"),
    "missing_slice": ("quarantine", "missing_slices"),
    "duplicate_instances": ("convert", "duplicate"),
    "truncated_file": ("quarantine", "missing_slices"),
    "non_image": ("quarantine", "not_image"),
    "mixed_pixel_spacing": ("quarantine", "mixed_pixel_spacing"),
}

# Fake identities, cycled over the demo patients. Values are distinctive so a grep cannot hit by chance.
_NAMES = ("DOE^JANE", "ROE^RICHARD", "MUSTERMANN^ERIKA", "DUPONT^JEANNE", "ROSSI^MARIO", "TANAKA^HANAKO")
_BIRTH_DATES = ("19480317", "19521109", "19560622", "19610204", "19390828", "19670513")
_ACCESSIONS = (
    "FAKEACC482913",
    "FAKEACC573024",
    "FAKEACC664135",
    "FAKEACC755246",
    "FAKEACC846357",
    "FAKEACC937468",
)
_OTHER_IDS = ("MRN-7730148", "MRN-7730259", "MRN-7730360", "MRN-7730471", "MRN-7730582", "MRN-7730693")
_INSTITUTION = "SPRINGFIELD GENERAL HOSPITAL"
_REFERRER = "HOUSE^GREGORY"

FAKE_IDENTIFIERS: tuple[str, ...] = (
    *_NAMES,
    *_BIRTH_DATES,
    *_ACCESSIONS,
    *_OTHER_IDS,
    _INSTITUTION,
    _REFERRER,
)

# How good case i is written (cycled): file naming, storage and transfer syntax, as different exports do.
_GOOD_VARIANTS: tuple[dict[str, Any], ...] = (
    {"names": "tcia", "intercept": -1024.0, "syntax": ExplicitVRLittleEndian, "descending": False},
    {"names": "hex", "intercept": -1024.0, "syntax": ExplicitVRLittleEndian, "descending": False},
    {"names": "tcia", "intercept": 0.0, "syntax": ExplicitVRLittleEndian, "descending": True},
    {"names": "tcia", "intercept": -1024.0, "syntax": RLELossless, "descending": False},
    {"names": "sop", "intercept": -1024.0, "syntax": ImplicitVRLittleEndian, "descending": False},
)
_STUDY_DATE = "20200101"


def demo_patient_tags(seed: int, index: int) -> dict[str, object]:
    """Patient- and study-level tags of demo patient ``index`` (0-based), with fake identifying values."""
    k = (seed + index) % len(_NAMES)
    return {
        "PatientID": f"DEMO-{index + 1:04d}",
        "PatientName": _NAMES[k],
        "PatientBirthDate": _BIRTH_DATES[k],
        "PatientSex": "F" if k % 2 == 0 else "M",
        "PatientAge": f"{2020 - int(_BIRTH_DATES[k][:4]):03d}Y",
        "OtherPatientIDs": _OTHER_IDS[k],
        "AccessionNumber": _ACCESSIONS[k],
        "InstitutionName": _INSTITUTION,
        "ReferringPhysicianName": _REFERRER,
    }


def _uids(seed: int, index: int) -> tuple[str, str]:
    """(StudyInstanceUID, SeriesInstanceUID) of demo case ``index``, fixed by the seed."""
    return (
        str(derived_uid("dagman-demo", seed, index, "study")),
        str(derived_uid("dagman-demo", seed, index, "series")),
    )


def demo_case_volume(
    seed: int,
    case_index: int,
    shape: Sequence[int] = (96, 128, 128),
    spacing: Sequence[float] = (2.7, 2.7, 2.5),
) -> tuple[np.ndarray, dict[str, Any]]:
    """The exact volume and geometry written for demo case ``case_index``.

    Good cases are indices ``0 .. n_cases - 1``; the broken cases that follow reuse this function with the
    next indices. Tests compare converter output against what this returns.

    Args:
        seed, case_index: which case.
        shape: (z, y, x) voxels; spacing: (x, y, z) mm (as given to :func:`write_demo_cohort`).

    Returns:
        ``(hu, geometry)``: ``hu`` is (z, y, x) int16 in increasing z (slice 0 is the most inferior), and
        ``geometry`` holds ``spacing`` and ``origin`` as (x, y, z) mm, ``direction`` (9 values, row-major,
        identity), ``patient_id``, ``study_uid`` and ``series_uid``.
    """
    nz, ny, nx = (int(s) for s in shape)
    sx, sy, sz = (float(s) for s in spacing)
    rng = np.random.default_rng([seed, case_index])
    # centred in x/y with a small table offset, z wherever the scan started (rounded as a scanner would)
    origin = (
        round(-(nx - 1) * sx / 2 + rng.uniform(-10, 10), 2),
        round(-(ny - 1) * sy / 2 + rng.uniform(-10, 10), 2),
        round(rng.uniform(-350, -150), 2),
    )
    hu = chest_phantom((nz, ny, nx), (sx, sy, sz), rng)
    study_uid, series_uid = _uids(seed, case_index)
    geometry = {
        "spacing": (sx, sy, sz),
        "origin": origin,
        "direction": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        "patient_id": f"DEMO-{case_index + 1:04d}",
        "study_uid": study_uid,
        "series_uid": series_uid,
    }
    return hu, geometry


def _write_good(
    hu: np.ndarray,
    geometry: dict[str, Any],
    series_dir: Path,
    patient: dict[str, object],
    variant: dict[str, Any],
    name_seed: Sequence[int],
) -> list[Path]:
    """Write one good case the way ``variant`` says."""
    n = hu.shape[0]
    numbers = list(range(n, 0, -1)) if variant["descending"] else list(range(1, n + 1))
    sops = [str(derived_uid(geometry["series_uid"], "sop", k)) for k in range(n)]
    if variant["names"] == "hex":
        # random hex names: directory order says nothing about slice order
        name_rng = np.random.default_rng(list(name_seed))
        names = [f"{name_rng.integers(0, 2**48):012x}.dcm" for _ in range(n)]
    elif variant["names"] == "sop":
        names = [f"{sop}.dcm" for sop in sops]
    else:
        names = None
    return write_ct_series(
        hu,
        series_dir,
        spacing=geometry["spacing"],
        origin=geometry["origin"],
        patient=patient,
        study_uid=geometry["study_uid"],
        series_uid=geometry["series_uid"],
        sop_uids=sops,
        rescale_intercept=variant["intercept"],
        file_names=names,
        transfer_syntax=variant["syntax"],
        instance_numbers=numbers,
        study_date=_STUDY_DATE,
    )


def _write_broken(
    kind: str, hu: np.ndarray, geometry: dict[str, Any], series_dir: Path, patient: dict[str, object]
) -> int:
    """Write one deliberately broken series; returns the number of files left in its folder."""
    n = hu.shape[0]
    sx, sy, sz = geometry["spacing"]
    common = {
        "patient": patient,
        "study_uid": geometry["study_uid"],
        "series_uid": geometry["series_uid"],
        "study_date": _STUDY_DATE,
    }
    if kind == "non_image":
        write_non_image(series_dir, kind="sr", **common)
        return 1
    if kind == "scout_inside":
        # scanners number the topogram first: scout is instance 1, the axial slices 2..n+1
        write_ct_series(
            hu,
            series_dir,
            spacing=geometry["spacing"],
            origin=geometry["origin"],
            instance_numbers=range(2, n + 2),
            **common,
        )
        # coronal projection over y, top row superior, wider than the axial field of view
        pad = 16
        scout = np.pad(hu.mean(axis=1)[::-1], ((0, 0), (pad, pad)), constant_values=-1024)
        ox, oy, oz = geometry["origin"]
        write_localizer(
            np.rint(scout).astype(np.int16),
            series_dir,
            pixel_spacing=(sx, sz),
            origin=(ox - pad * sx, oy + hu.shape[1] * sy / 2, oz + (n - 1) * sz),
            instance_number=1,
            file_name="1-001.dcm",
            **common,
        )
        return n + 1
    if kind == "mixed_pixel_spacing":
        # the upper part of the series claims a 10 % larger pixel spacing than the lower part
        split = n // 2
        z = [geometry["origin"][2] + k * sz for k in range(n)]
        for lo, hi, scale in ((0, split, 1.0), (split, n, 1.1)):
            write_ct_series(
                hu[lo:hi],
                series_dir,
                spacing=(sx * scale, sy * scale, sz),
                origin=geometry["origin"],
                slice_z=z[lo:hi],
                sop_uids=[str(derived_uid(geometry["series_uid"], "sop", k)) for k in range(lo, hi)],
                instance_numbers=range(lo + 1, hi + 1),
                **common,
            )
        return n
    paths = write_ct_series(hu, series_dir, spacing=geometry["spacing"], origin=geometry["origin"], **common)
    middle = n // 2
    if kind == "missing_slice":
        paths[middle].unlink()
        return n - 1
    if kind == "truncated_file":
        # cut in half: the header survives, the pixel data ends early
        data = paths[middle].read_bytes()
        paths[middle].write_bytes(data[: len(data) // 2])
        return n
    if kind == "duplicate_instances":
        # a quarter of the slices sent twice: same positions and pixels, new SOP UIDs and file names
        dup = range(middle, middle + max(1, n // 4))
        write_ct_series(
            hu[dup.start : dup.stop],
            series_dir,
            spacing=geometry["spacing"],
            origin=geometry["origin"],
            slice_z=[geometry["origin"][2] + k * sz for k in dup],
            sop_uids=[str(derived_uid(geometry["series_uid"], "resent", k)) for k in dup],
            instance_numbers=range(n + 1, n + 1 + len(dup)),
            file_names=[f"2-{k + 1:03d}.dcm" for k in dup],
            **common,
        )
        return n + len(dup)
    raise ValueError(f"unknown broken kind {kind!r}; valid kinds: {', '.join(BROKEN_KINDS)}")


def write_demo_cohort(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_cases: int = 6,
    shape: Sequence[int] = (96, 128, 128),
    spacing: Sequence[float] = (2.7, 2.7, 2.5),
    progress: bool = False,
) -> pd.DataFrame:
    """Write the demo cohort under ``out_dir`` and return its manifest.

    Writes ``n_cases`` good chest CT series and one series per kind in ``BROKEN_KINDS``, each broken one for
    its own patient. ``out_dir/dicom`` is built in a temporary folder and swapped in at the end, so a rerun
    replaces the previous cohort cleanly and an interrupted run leaves the old one intact.

    Args:
        out_dir: cohort folder; receives ``dicom/`` and ``manifest.csv``.
        seed: fixes every UID, anatomy, noise and file name (same seed, byte-identical files).
        n_cases: number of good series (at least 1).
        shape: (z, y, x) voxels of each series; spacing: (x, y, z) mm.
        progress: show a tqdm bar on stderr.

    Returns:
        The manifest (also written to ``out_dir/manifest.csv``), columns ``MANIFEST_COLUMNS``, one row per
        series; ``expected_reason_code`` is empty for good series (read the CSV with
        ``keep_default_na=False`` to keep it a string).
    """
    from tqdm import tqdm

    if n_cases < 1:
        raise ValueError(f"n_cases must be at least 1, got {n_cases}")
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"shape must be (z, y, x) with at least 4 voxels per axis, got {tuple(shape)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".dicom.partial"
    if staging.exists():
        shutil.rmtree(staging)

    jobs = [("good", i) for i in range(n_cases)] + [
        (kind, n_cases + j) for j, kind in enumerate(BROKEN_KINDS)
    ]
    rows = []
    for kind, index in tqdm(jobs, desc="demo cohort", unit="series", disable=not progress):
        hu, geometry = demo_case_volume(seed, index, shape, spacing)
        patient = demo_patient_tags(seed, index)
        series_dir = staging / geometry["patient_id"] / geometry["study_uid"] / geometry["series_uid"]
        if kind == "good":
            variant = _GOOD_VARIANTS[index % len(_GOOD_VARIANTS)]
            n_files = len(_write_good(hu, geometry, series_dir, patient, variant, (seed, index, 7919)))
            expected, code = "convert", ""
        else:
            n_files = _write_broken(kind, hu, geometry, series_dir, patient)
            expected, code = BROKEN_KINDS[kind]
        rows.append((geometry["series_uid"], geometry["patient_id"], kind, expected, code, n_files))

    final = out / "dicom"
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    write_csv_atomic(out / "manifest.csv", manifest)
    return manifest
