"""Tests of the nnU-Net baseline: raw-layout conversion (no nnunetv2 needed), planning and a tiny real run."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from dagman.tasks import nnunet_cli
from dagman.tasks.nnunet import NnUNetSettings, convert_to_nnunet_raw
from dagman.tasks.segmentation import DICE_COLUMNS, read_cases

HAVE_NNUNET = importlib.util.find_spec("nnunetv2") is not None
needs_nnunet = pytest.mark.skipif(
    not HAVE_NNUNET, reason="nnunetv2 is not installed (pip install dagman[nnunet]); layout tests still run"
)


def _write_case(root: Path, name: str, rng: np.random.Generator) -> tuple[str, str]:
    """A 2 mm volume (z 24, y 32, x 32) of noise with a soft-tissue ball, and its mask."""
    z, y, x = np.mgrid[:24, :32, :32]
    centre = rng.uniform([9, 12, 12], [15, 20, 20])
    ball = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= rng.uniform(4, 6) ** 2
    hu = rng.normal(-800, 40, size=ball.shape)
    hu[ball] = rng.normal(40, 20, size=int(ball.sum()))
    paths = []
    for kind, array in (("images", hu.astype(np.int16)), ("masks", ball.astype(np.uint8))):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((2.0, 2.0, 2.0))
        (root / kind).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(root / kind / f"{name}.nii.gz"))
        paths.append(f"{kind}/{name}.nii.gz")
    return paths[0], paths[1]


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("nnunet-data")
    rng = np.random.default_rng(0)
    rows = [
        dict(zip(("image", "mask"), _write_case(root, f"t{i}", rng), strict=True), case_id=f"t{i}")
        for i in range(5)
    ]
    rows.append({"case_id": "nogtv", "image": "", "mask": ""})
    pd.DataFrame(rows).to_csv(root / "cases.csv", index=False)
    test = [
        dict(zip(("image", "mask"), _write_case(root, f"n{i}", rng), strict=True), key=f"n{i}")
        for i in range(2)
    ]
    pd.DataFrame(test).to_csv(root / "seg_test.csv", index=False)
    return root / "cases.csv", root / "seg_test.csv"


def test_conversion_writes_nnunet_raw_layout(tables: tuple[Path, Path], tmp_path: Path) -> None:
    """dataset.json, imagesTr/<id>_0000, labelsTr/<id> (0/1, the image's geometry) and imagesTs/<id>_0000."""
    train = read_cases(tables[0])
    tests = {"lidc seg": read_cases(tables[1])}
    settings = NnUNetSettings(dataset_id=7, dataset_name="Demo")
    table = convert_to_nnunet_raw(train, tests, tmp_path, settings)
    folder = tmp_path / "Dataset007_Demo"
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["numTraining"] == 5 and dataset["labels"] == {"background": 0, "tumour": 1}
    assert dataset["channel_names"] == {"0": "CT"} and dataset["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        f"train_{i:04d}_0000.nii.gz" for i in range(5)
    ]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == [
        f"train_{i:04d}.nii.gz" for i in range(5)
    ]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == [
        "lidc-seg_0000_0000.nii.gz",
        "lidc-seg_0001_0000.nii.gz",
    ]
    label = sitk.ReadImage(str(folder / "labelsTr" / "train_0000.nii.gz"))
    image = sitk.ReadImage(str(folder / "imagesTr" / "train_0000_0000.nii.gz"))
    assert label.GetSpacing() == image.GetSpacing() and label.GetOrigin() == image.GetOrigin()
    assert set(np.unique(sitk.GetArrayFromImage(label))) == {0, 1}
    assert list(table["split"]) == ["train"] * 5 + ["test"] * 2
    assert list(table.loc[table["split"] == "test", "name"]) == ["n0", "n1"]


def test_settings_refuse_unknown_keys_and_folds() -> None:
    """A typo in a setting, or a fold other than the project's split or 'all', fails with a clear message."""
    with pytest.raises(ValueError, match="unknown nnU-Net settings"):
        NnUNetSettings.from_mapping({"trainr": "x"})
    with pytest.raises(ValueError, match="fold"):
        NnUNetSettings(fold="3")


@needs_nnunet
@pytest.mark.slow
def test_tiny_nnunet_run_writes_dice_csv(tables: tuple[Path, Path], tmp_path: Path) -> None:
    """`dagman nnunet` runs the real nnU-Net pipeline (fingerprint, plan, preprocess, one short training
    epoch on the project's split, prediction) and writes dice.csv in dagman segment's format."""
    settings = dict(
        dataset_id=9,
        dataset_name="Tiny",
        epochs=1,
        iterations_per_epoch=2,
        val_iterations_per_epoch=1,
        validate=False,
        num_processes=1,
        n_proc_da=0,
        n_val=1,
        use_mirroring=False,
        device="cpu",
    )
    parser = argparse.ArgumentParser()
    nnunet_cli.add_arguments(parser)
    args = parser.parse_args(
        ["--train", str(tables[0]), "--test", f"lidc={tables[1]}", "--out", str(tmp_path)]
        + ["--settings", json.dumps(settings), "--quiet"]
    )
    assert nnunet_cli.run(args) == 0
    dice = pd.read_csv(tmp_path / "dice.csv")
    assert tuple(dice.columns) == DICE_COLUMNS and list(dice["case_id"]) == ["n0", "n1"]
    assert dice["dice"].between(0, 1).all()
    split = json.loads(
        (tmp_path / "nnUNet_preprocessed" / "Dataset009_Tiny" / "splits_final.json").read_text()
    )
    assert len(split) == 1 and len(split[0]["train"]) == 4 and len(split[0]["val"]) == 1
