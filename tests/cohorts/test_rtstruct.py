"""Tests of RTSTRUCT discovery, ROI-name matching and rasterisation through rt-utils."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dagman.cohorts.nsclc import gtv_case
from dagman.cohorts.nsclc_demo import tumour_case, write_rtstruct
from dagman.cohorts.rtstruct import (
    GtvError,
    mask_on_grid,
    match_roi_name,
    match_structure_sets,
    rasterise_roi,
    scan_dicom_tree,
)
from dagman.io.convert import convert_tree
from dagman.io.dicom_write import derived_uid, write_ct_series

SHAPE = (20, 64, 64)
SPACING = (3.0, 3.0, 4.0)
ORIGIN = (-96.0, -110.0, -40.0)


def _write_case(root: Path, rois: dict[str, np.ndarray], hu: np.ndarray, descending: bool = False) -> Path:
    """CT series (optionally with descending instance numbers and shuffled names) plus an RTSTRUCT."""
    ct_dir = root / "P1" / "study" / "ct"
    n = hu.shape[0]
    order = list(range(n, 0, -1)) if descending else list(range(1, n + 1))
    write_ct_series(
        hu,
        ct_dir,
        spacing=SPACING,
        origin=ORIGIN,
        patient={"PatientID": "P1"},
        study_uid=str(derived_uid("rt", "study")),
        series_uid=str(derived_uid("rt", "series")),
        instance_numbers=order,
        file_names=[f"x{k:03d}.dcm" for k in order],
    )
    rt = root / "P1" / "study" / "rt" / "1-1.dcm"
    rt.parent.mkdir(parents=True)
    write_rtstruct(ct_dir, rt, rois, (str(derived_uid("rt", "rs")), str(derived_uid("rt", "rsop"))))
    return ct_dir


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("rt") / "dicom"
    hu, tumour, lung = tumour_case(SHAPE, SPACING, np.random.default_rng(3))
    ct_dir = _write_case(root, {"gtv-1": tumour, "Lung_L": lung}, hu, descending=True)
    return {"root": root, "ct_dir": ct_dir, "tumour": tumour}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_rtutils_round_trip_dice(case: dict) -> None:
    """A tumour written as RTSTRUCT contours with rt-utils rasterises back onto the CT with Dice >= 0.99."""
    series, structure_sets = scan_dicom_tree(case["root"], progress=False)
    matched = match_structure_sets(series, structure_sets)
    (uid,) = series
    (rts,) = matched[uid]
    assert rts.roi_names == ("gtv-1", "Lung_L")
    name = match_roi_name(rts.roi_names)
    assert name == "gtv-1"
    mask = rasterise_roi(series[uid].paths, rts.path, name)
    assert mask.GetSize() == SHAPE[::-1]
    np.testing.assert_allclose(mask.GetSpacing(), SPACING)
    np.testing.assert_allclose(mask.GetOrigin(), ORIGIN)
    assert dice(sitk.GetArrayFromImage(mask) > 0, case["tumour"]) >= 0.99


def test_mask_lands_on_converted_image_grid(case: dict, tmp_path: Path) -> None:
    """The rasterised mask, put on the converter's NIfTI grid, covers the painted tumour voxel for voxel
    (slice order on disk is descending, so a mix-up of rt-utils' slice axis would show)."""
    result = convert_tree(case["root"], tmp_path / "conv", workers=1, progress=False)
    image = sitk.ReadImage(str(tmp_path / "conv" / result.series[0]["image"]))
    series, structure_sets = scan_dicom_tree(case["root"], progress=False)
    (uid,) = series
    on_grid = mask_on_grid(rasterise_roi(series[uid].paths, structure_sets[0].path, "gtv-1"), image)
    truth = sitk.GetImageFromArray(case["tumour"].astype(np.uint8))
    truth.SetSpacing(SPACING)
    truth.SetOrigin(ORIGIN)
    truth_on_grid = sitk.GetArrayFromImage(mask_on_grid(truth, image)) > 0
    assert dice(sitk.GetArrayFromImage(on_grid) > 0, truth_on_grid) >= 0.99
    # the tumour is bright soft tissue in the image exactly where the mask says
    hu = sitk.GetArrayFromImage(image)
    assert np.median(hu[truth_on_grid]) > -100


@pytest.mark.parametrize(
    ("names", "variants", "expected"),
    [
        (["Lung_L", "GTV-1"], None, "GTV-1"),
        (["lung", " gtv-primary "], None, " gtv-primary "),
        (["GTV-2", "Lung_L"], None, None),
        (["gtv1", "GTV-1"], None, "GTV-1"),  # variants are tried in priority order
        (["Tumour"], ["tumor", "TUMOUR"], "Tumour"),
    ],
)
def test_match_roi_name(names: list[str], variants: list[str] | None, expected: str | None) -> None:
    """ROI names match the configured variants case-insensitively, first variant first; GTV-2 is not GTV-1."""
    assert (match_roi_name(names) if variants is None else match_roi_name(names, variants)) == expected


def test_case_without_gtv_raises_with_its_reason(tmp_path: Path) -> None:
    """A case whose RTSTRUCT has no tumour ROI fails with code no_gtv and a reason naming the ROIs found;
    a case with no RTSTRUCT fails with no_rtstruct."""
    hu, _, lung = tumour_case(SHAPE, SPACING, np.random.default_rng(5))
    root = tmp_path / "dicom"
    _write_case(root, {"Lung_L": lung}, hu)
    series, structure_sets = scan_dicom_tree(root, progress=False)
    (uid,) = series
    args = (series[uid].paths, tmp_path / "ct.nii.gz", tmp_path / "i.nii.gz", tmp_path / "m.nii.gz")
    with pytest.raises(GtvError, match="its ROIs: Lung_L") as info:
        gtv_case(args[0], match_structure_sets(series, structure_sets)[uid], *args[1:])
    assert info.value.code == "no_gtv"
    with pytest.raises(GtvError) as info:
        gtv_case(args[0], [], *args[1:])
    assert info.value.code == "no_rtstruct"
