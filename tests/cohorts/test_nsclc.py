"""Tests of the NSCLC-style cohort builder on the NSCLC-like demo (CT + RTSTRUCT as real DICOM)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from dagman.cohorts import nsclc_cli, nsclc_demo_cli
from dagman.cohorts.nsclc import CASE_COLUMNS, REPORT_COLUMNS, build_nsclc_cohort
from dagman.io.synthetic import FAKE_IDENTIFIERS

SHAPE = (24, 64, 64)
SPACING = (3.0, 3.0, 4.0)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nsclc-demo")
    parser = argparse.ArgumentParser()
    nsclc_demo_cli.add_arguments(parser)
    args = parser.parse_args(
        ["--out", str(out), "--cases", "3", "--seed", "1", "--shape", *map(str, SHAPE)]
        + ["--spacing", *map(str, SPACING)]
    )
    assert nsclc_demo_cli.run(args) == 0
    return out


@pytest.fixture(scope="module")
def cohort(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nsclc")
    parser = argparse.ArgumentParser()
    nsclc_cli.add_arguments(parser)
    args = parser.parse_args(["--dicom-root", str(demo / "dicom"), "--out", str(out), "--workers", "1"])
    assert nsclc_cli.run(args) == 0
    return out


def test_demo_manifest_has_one_case_without_gtv(demo: Path) -> None:
    """The demo writes an RTSTRUCT per case, the last one without a tumour ROI."""
    manifest = pd.read_csv(demo / "manifest.csv", keep_default_na=False)
    assert list(manifest["expected"]) == ["ok", "ok", "no_gtv"]
    assert list(manifest["gtv_roi"]) == ["GTV-1", "GTV1", ""]
    assert all((demo / f).is_file() for f in manifest["rtstruct_file"])


def test_cases_and_report(cohort: Path, demo: Path) -> None:
    """Cases with a GTV get 2 mm image + mask of the tumour's volume; the case without one is in the report
    with its reason, and does not stop the others."""
    cases = pd.read_csv(cohort / "cases.csv", keep_default_na=False)
    report = pd.read_csv(cohort / "report.csv", keep_default_na=False)
    assert tuple(cases.columns) == CASE_COLUMNS and tuple(report.columns) == REPORT_COLUMNS
    assert sorted(cases["status"]) == ["no_gtv", "ok", "ok"]
    (bad,) = report.itertuples()
    assert bad.reason_code == "no_gtv" and "Lung_L" in bad.reason
    manifest = pd.read_csv(demo / "manifest.csv", keep_default_na=False)
    truth_mm3 = dict(zip(manifest["series_uid"], manifest["tumour_voxels"] * np.prod(SPACING), strict=True))
    for row in cases[cases["status"] == "ok"].itertuples():
        image = sitk.ReadImage(str(cohort / row.image))
        mask = sitk.ReadImage(str(cohort / row.mask))
        assert image.GetSpacing() == (2.0, 2.0, 2.0) and mask.GetSpacing() == (2.0, 2.0, 2.0)
        assert image.GetSize() == mask.GetSize() and image.GetOrigin() == mask.GetOrigin()
        voxels = int(sitk.GetArrayFromImage(mask).sum())
        assert voxels == row.mask_voxels
        assert voxels * 8.0 == pytest.approx(truth_mm3[row.series_uid], rel=0.15)
        hu = sitk.GetArrayFromImage(image)
        assert np.median(hu[sitk.GetArrayFromImage(mask) > 0]) > -100  # the mask sits on the tumour


def test_no_identifiers_in_outputs(cohort: Path) -> None:
    """Fake patient names, birth dates etc. of the demo reach no output file or file name."""
    for path in cohort.rglob("*"):
        assert not any(v in path.name for v in FAKE_IDENTIFIERS)
        if path.suffix == ".csv":
            text = path.read_text()
            assert not any(v in text for v in FAKE_IDENTIFIERS), path


def test_rtstruct_without_ct_series_is_reported(demo: Path, tmp_path: Path) -> None:
    """An RTSTRUCT whose CT series is absent lands in the report as no_ct_series."""
    root = tmp_path / "dicom"
    shutil.copytree(demo / "dicom", root)
    manifest = pd.read_csv(demo / "manifest.csv", keep_default_na=False)
    first = manifest.iloc[0]
    (ct_dir,) = [p for p in root.rglob(first["series_uid"]) if p.is_dir()]
    shutil.rmtree(ct_dir)
    _, report = build_nsclc_cohort(root, tmp_path / "out", workers=1, progress=False)
    assert sorted(report["reason_code"]) == ["no_ct_series", "no_gtv"]
