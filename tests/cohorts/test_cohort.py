"""Tests of the generic labelled cohort (cohort CSV -> tumour crops) and the demo outcome cohort."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from dagman.cohorts import cohort_cli, outcome_demo_cli
from dagman.cohorts.cohort import build_cohort_crops, read_cohort
from dagman.cohorts.splits import make_splits
from dagman.io.synthetic import FAKE_IDENTIFIERS


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A six-case outcome demo written through the CLI."""
    out = tmp_path_factory.mktemp("outcome")
    parser = argparse.ArgumentParser()
    outcome_demo_cli.add_arguments(parser)
    assert outcome_demo_cli.run(parser.parse_args(["--out", str(out), "--cases", "6", "--quiet"])) == 0
    return out


@pytest.fixture(scope="module")
def crops_dir(demo: Path) -> Path:
    out = demo / "crops"
    parser = argparse.ArgumentParser()
    cohort_cli.add_arguments(parser)
    assert (
        cohort_cli.run(
            parser.parse_args(["--cohort", str(demo / "cohort.csv"), "--out", str(out), "--quiet"])
        )
        == 0
    )
    return out


def test_outcome_demo_labels_follow_tumour_appearance(demo: Path) -> None:
    """Label-1 tumours are spiculated and heterogeneous, label-0 ones are not; masks and centres both occur."""
    truth = pd.read_csv(demo / "truth.csv")
    cohort = pd.read_csv(demo / "cohort.csv")
    assert len(cohort) == 6 and set(cohort["label"]) == {0, 1}
    assert (truth["spiculated"] == truth["label"]).all()
    assert (
        truth.loc[truth["label"] == 1, "noise_hu"] > truth.loc[truth["label"] == 0, "noise_hu"].max()
    ).all()
    assert cohort["mask"].notna().sum() == 3 and cohort["center_x"].notna().sum() == 3
    assert all((demo / image).is_dir() for image in cohort["image"])


def test_cohort_crops_are_centred_on_the_tumour(crops_dir: Path) -> None:
    """Every case is cropped to 32^3 at 2 mm with tumour tissue at the centre, from a mask or a given centre."""
    crops = pd.read_csv(crops_dir / "crops.csv")
    assert (crops["status"] == "cropped").all()
    assert set(crops["centre_source"]) == {"mask", "given"}
    for _, row in crops.iterrows():
        image = sitk.ReadImage(str(crops_dir / row["image"]))
        assert image.GetSize() == (32, 32, 32) and image.GetSpacing() == pytest.approx((2.0, 2.0, 2.0))
        centre = sitk.GetArrayFromImage(image)[14:19, 14:19, 14:19]
        assert centre.max() > -300, f"{row['key']}: no tumour tissue at the crop centre"
        if row["centre_source"] == "mask":
            mask = sitk.GetArrayFromImage(sitk.ReadImage(str(crops_dir / row["mask"])))
            assert mask.sum() == row["mask_voxels"] > 0


def test_cohort_outputs_hold_no_identifying_values(demo: Path, crops_dir: Path) -> None:
    """The fake names, birth dates and accession numbers in the DICOM headers reach no output file."""
    texts = [
        (crops_dir / "crops.csv").read_text(),
        (demo / "cohort.csv").read_text(),
        (demo / "truth.csv").read_text(),
    ]
    names = " ".join(str(p.relative_to(demo)) for p in demo.rglob("*") if "dicom" not in p.parts)
    for value in FAKE_IDENTIFIERS:
        assert all(value not in text for text in texts) and value not in names


def test_crops_table_feeds_the_splits(crops_dir: Path) -> None:
    """crops.csv carries the key, patient and label columns `dagman splits` and `dagman finetune` read."""
    crops = pd.read_csv(crops_dir / "crops.csv")
    splits = make_splits(crops, test_size=2, n_folds=2, fractions=(0.5,), seed=0)
    assert set(splits["key"]) == set(crops["key"])


def test_unusable_cases_are_skipped_with_a_reason(tmp_path: Path) -> None:
    """A missing image or a case without a tumour location is skipped and explained; the others still crop."""
    hu = np.full((20, 20, 20), -850, dtype=np.int16)
    hu[8:12, 8:12, 8:12] = 40
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((2.5, 2.5, 2.5))
    sitk.WriteImage(image, str(tmp_path / "ct.nii.gz"))
    pd.DataFrame(
        {
            "case_id": ["good", "nolocation", "noimage"],
            "image": ["ct.nii.gz", "ct.nii.gz", "absent.nii.gz"],
            "label": [1, 0, 1],
            "center_x": [24.0, None, 1.0],
            "center_y": [24.0, None, 1.0],
            "center_z": [24.0, None, 1.0],
        }
    ).to_csv(tmp_path / "cohort.csv", index=False)
    crops = build_cohort_crops(
        tmp_path / "cohort.csv", tmp_path / "out", crop_size=16, progress=False
    ).set_index("key")
    assert crops.loc["good", "status"] == "cropped"
    assert "no tumour location" in crops.loc["nolocation", "reason"]
    assert "does not exist" in crops.loc["noimage", "reason"]
    cube = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / crops.loc["good", "image"])))
    assert cube[8, 8, 8] == 40  # the crop centre voxel lies in the 40 HU block


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ({"case_id": ["a"], "image": ["x"]}, "lacks the columns"),
        ({"case_id": ["a"], "image": ["x"], "label": [2]}, "0 or 1"),
        ({"case_id": ["a/b"], "image": ["x"], "label": [1]}, "case ids name output files"),
        ({"case_id": ["a", "a"], "image": ["x", "y"], "label": [1, 0]}, "repeats case ids"),
        ({"case_id": ["a"], "image": ["x"], "label": [1], "center_x": [1.0]}, "only part"),
    ],
)
def test_cohort_csv_errors_are_plain(tmp_path: Path, frame: dict, message: str) -> None:
    """A malformed cohort CSV fails at the start with a message naming the problem."""
    pd.DataFrame(frame).to_csv(tmp_path / "cohort.csv", index=False)
    with pytest.raises(ValueError, match=message):
        read_cohort(tmp_path / "cohort.csv")
