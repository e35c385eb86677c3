"""Tests of DICOM series discovery and validation (dagman.io.dicom_series).

Header reading runs on real files written with dagman.io.dicom_write; the volume checks run on HeaderInfo
records built directly, so every failure kind is tested quickly and precisely.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from dagman.io.dicom_series import (
    FileIssue,
    HeaderInfo,
    SeriesChecks,
    make_case_id,
    make_series_id,
    plan_series,
    read_header,
)
from dagman.io.dicom_write import derived_uid, write_ct_series, write_non_image

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def headers(
    n: int = 10,
    *,
    step: float = 2.5,
    z: list[float] | None = None,
    iop: tuple[float, ...] = AXIAL,
    shift_per_slice: tuple[float, float] = (0.0, 0.0),
    uid: str = "1.2.3",
) -> list[HeaderInfo]:
    """Headers of an n-slice series; positions follow ``z`` when given, else ``k * step`` along the normal."""
    row, col = np.array(iop[:3]), np.array(iop[3:])
    normal = np.cross(row, col)
    zs = [k * step for k in range(n)] if z is None else z
    out = []
    for k, zk in enumerate(zs):
        ipp = zk * normal + k * shift_per_slice[0] * row + k * shift_per_slice[1] * col
        out.append(
            HeaderInfo(
                path=f"/data/f{k}",
                rel=f"f{k}",
                series_uid=uid,
                patient_id="P1",
                modality="CT",
                sop_uid=f"{uid}.{k}",
                transfer_syntax="1.2.840.10008.1.2.1",
                image_type=("ORIGINAL", "PRIMARY"),
                iop=tuple(iop),
                ipp=tuple(float(v) for v in ipp),
                pixel_spacing=(0.8, 0.7),
                rows=16,
                cols=12,
                n_frames=1,
                slope=1.0,
                intercept=-1024.0,
                instance_number=k + 1,
            )
        )
    return out


def series_code(result: tuple) -> str:
    plan, issues = result
    assert plan is None, "expected the series to be rejected"
    assert issues[-1].level == "series"
    return issues[-1].reason_code


def test_plan_sorts_along_normal_not_by_instance_number() -> None:
    """Slices are ordered by position along the normal, whatever InstanceNumber and file order say."""
    files = headers(10)
    rng = np.random.default_rng(0)
    shuffled = [
        dataclasses.replace(h, instance_number=int(n))
        for h, n in zip(files, rng.permutation(10), strict=True)
    ]
    plan, issues = plan_series(list(reversed(shuffled)))
    assert plan is not None and issues == ()
    assert plan.rels == tuple(f"f{k}" for k in range(10))
    assert plan.spacing == pytest.approx((0.7, 0.8, 2.5))
    assert plan.origin == (0.0, 0.0, 0.0)
    assert plan.direction == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))


def test_plan_descending_oblique_series_origin_is_lowest_position() -> None:
    """For an oblique orientation the origin is the slice with the lowest position along the normal."""
    c, s = math.cos(0.3), math.sin(0.3)
    iop = (c, s, 0.0, 0.0, 0.0, -1.0)
    files = headers(9, iop=iop, z=[-2.0 * k for k in range(9)])
    plan, _ = plan_series(files)
    assert plan is not None
    assert plan.rels[0] == "f8" and plan.spacing[2] == pytest.approx(2.0)
    normal = np.cross(iop[:3], iop[3:])
    assert np.asarray(plan.direction).reshape(3, 3)[:, 2] == pytest.approx(normal)


def test_localizer_by_image_type_and_by_orientation_is_dropped() -> None:
    """A LOCALIZER image and an odd-orientation image inside the series are dropped with file rows."""
    files = headers(10)
    scout = dataclasses.replace(
        files[0],
        rel="scout",
        sop_uid="9.1",
        image_type=("ORIGINAL", "LOCALIZER"),
        iop=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
        rows=64,
    )
    odd = dataclasses.replace(files[0], rel="odd", sop_uid="9.2", iop=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    plan, issues = plan_series([*files, scout, odd])
    assert plan is not None and plan.n_slices == 10
    assert {(i.rel, i.reason_code) for i in issues} == {("scout", "localizer"), ("odd", "localizer")}
    assert plan.note() == "dropped 2 localizer images"


def test_duplicates_are_dropped_and_first_instance_kept() -> None:
    """Two instances at one position: the one with the lower InstanceNumber stays, the other is a file row."""
    files = headers(10)
    dup = dataclasses.replace(files[4], rel="copy", sop_uid="9.9", instance_number=99)
    plan, issues = plan_series([*files, dup])
    assert plan is not None and plan.n_slices == 10 and "f4" in plan.rels
    assert [(i.rel, i.reason_code) for i in issues] == [("copy", "duplicate")]


@pytest.mark.parametrize(
    ("z", "code"),
    [
        ([0, 2.5, 5, 7.5, 12.5, 15, 17.5, 20, 22.5, 25], "missing_slices"),
        ([0, 2.5, 5, 7.5, 10, 13.5, 15, 17.5, 20, 22.5], "nonuniform_spacing"),
    ],
)
def test_spacing_problems_are_reported(z: list[float], code: str) -> None:
    """A gap of two steps is missing_slices; any other irregular step is nonuniform_spacing."""
    assert series_code(plan_series(headers(z=z))) == code


def test_spacing_within_tolerance_converts() -> None:
    """Float noise in positions (well under 1 % of the step) is accepted."""
    z = [k * 2.5 + (0.004 if k % 2 else -0.004) for k in range(10)]
    plan, _ = plan_series(headers(z=z))
    assert plan is not None


def test_gantry_tilt_is_detected() -> None:
    """Slices shifted sideways along the stack (tilted gantry) are rejected as gantry_tilt."""
    shift = 2.5 * math.tan(math.radians(15))
    code = series_code(plan_series(headers(shift_per_slice=(0.0, shift))))
    assert code == "gantry_tilt"


def test_mixed_orientation_pixel_spacing_shape_and_modality() -> None:
    """Each kind of inconsistent series gets its own series-level code."""
    files = headers(10)
    coronal = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
    half = [dataclasses.replace(h, iop=coronal) if k % 2 else h for k, h in enumerate(files)]
    assert series_code(plan_series(half)) == "mixed_orientation"
    spacing = [dataclasses.replace(h, pixel_spacing=(0.9, 0.9)) if k > 6 else h for k, h in enumerate(files)]
    assert series_code(plan_series(spacing)) == "mixed_pixel_spacing"
    shape = [dataclasses.replace(h, rows=20) if k > 6 else h for k, h in enumerate(files)]
    assert series_code(plan_series(shape)) == "mixed_shape"
    mr = [dataclasses.replace(h, modality="MR") for h in files]
    assert series_code(plan_series(mr)) == "not_ct"


def test_too_few_slices_is_configurable() -> None:
    """Five slices are too few by default and enough with min_slices=5."""
    assert series_code(plan_series(headers(5))) == "too_few_slices"
    assert plan_series(headers(5), SeriesChecks(min_slices=5))[0] is not None


def test_case_and_series_ids() -> None:
    """Case ids follow CONTRACTS.md: pseudonym hash by default, the PatientID kept (file-safe) on request."""
    assert make_case_id("LIDC-IDRI-0001") == "case-" + hashlib.sha256(b"LIDC-IDRI-0001").hexdigest()[:10]
    assert make_case_id("LIDC-IDRI-0001", "patient-id") == "LIDC-IDRI-0001"
    assert make_case_id("a/b c", "patient-id") == "a-b-c"
    assert len(make_series_id("1.2.3")) == 8
    with pytest.raises(ValueError, match="case id mode"):
        make_case_id("x", "name")


def test_read_header_rejects_non_dicom_non_image_and_truncated(tmp_path: Path) -> None:
    """Header reading alone tells CT slices from non-DICOM files, non-image objects and truncated files."""
    paths = write_ct_series(
        np.zeros((2, 8, 8)),
        tmp_path / "ct",
        spacing=(1, 1, 1),
        origin=(0, 0, 0),
        study_uid=derived_uid("s"),
        series_uid=derived_uid("ct"),
    )
    info = read_header(str(paths[0]), "ct/1-001.dcm")
    assert isinstance(info, HeaderInfo)
    assert info.rows == 8 and info.ipp == (0.0, 0.0, 0.0) and info.intercept == -1024.0

    data = paths[1].read_bytes()
    truncated = tmp_path / "trunc.dcm"
    truncated.write_bytes(data[:-40])
    issue = read_header(str(truncated), "trunc.dcm")
    assert isinstance(issue, FileIssue) and issue.reason_code == "unreadable"
    assert issue.series_uid == derived_uid("ct")
    header_only = tmp_path / "header_only.dcm"
    header_only.write_bytes(data[:400])
    assert read_header(str(header_only), "header_only.dcm").reason_code == "unreadable"

    text = tmp_path / "notes.xml"
    text.write_text("<?xml version='1.0'?><LidcReadMessage/>")
    assert read_header(str(text), "notes.xml").reason_code == "not_image"
    sr = write_non_image(tmp_path / "sr", study_uid=derived_uid("s"), series_uid=derived_uid("sr"))
    issue = read_header(str(sr), "sr/1-1.dcm")
    assert issue.reason_code == "not_image" and issue.level == "file"
