"""LIDC nodule cohort through pylidc: shims, DICOM-root override, label rules, nodule table, crops."""

from __future__ import annotations

import argparse
import os

import numpy as np
import pandas as pd
import pytest

from dagman.cohorts import lidc_cli
from dagman.cohorts.lidc import (
    NODULE_COLUMNS,
    LabelRule,
    build_nodule_table,
    crop_cube,
    round_half_up,
    write_csv,
)
from dagman.cohorts.pylidc_compat import apply_shims, import_pylidc, pylidc_dicom_root

PATIENTS = ["LIDC-IDRI-0001", "LIDC-IDRI-0002", "LIDC-IDRI-0003"]


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return build_nodule_table(PATIENTS, workers=1, progress=False)


def test_shims_make_pylidc_geometry_work_on_numpy2() -> None:
    """After the shims, the numpy-alias-dependent parts of pylidc (centroid, volume, clustering) run."""
    apply_shims()
    apply_shims()  # idempotent
    pl = import_pylidc()
    scan = pl.query(pl.Scan).filter(pl.Scan.patient_id == "LIDC-IDRI-0001").one()
    clusters = scan.cluster_annotations(verbose=False)
    assert len(clusters) == 1 and len(clusters[0]) == 4
    assert clusters[0][0].volume > 0 and clusters[0][0].centroid.shape == (3,)
    assert np.__version__.split(".")[0] >= "2"


def test_shims_cover_a_stack_without_pkg_resources_or_safeconfigparser() -> None:
    """Where setuptools >= 81 / Python 3.12+ lack pkg_resources and SafeConfigParser, pylidc still imports."""
    import subprocess
    import sys

    code = """
import configparser, importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "pkg_resources":
            raise ModuleNotFoundError("No module named 'pkg_resources'")
        return None
sys.meta_path.insert(0, Block())
del configparser.SafeConfigParser
from dagman.cohorts.pylidc_compat import import_pylidc
pl = import_pylidc()
assert sys.modules["pkg_resources"].__doc__.startswith("Minimal stand-in")
print(pl.query(pl.Scan).count())
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1018"


def test_dicom_root_override_never_touches_home(tmp_path, monkeypatch) -> None:
    """pylidc looks in the configured root and neither reads nor writes ~/.pylidcrc."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    root = tmp_path / "lidc"
    (root / "LIDC-IDRI-0001").mkdir(parents=True)
    with pylidc_dicom_root(root) as pl:
        scan = pl.query(pl.Scan).filter(pl.Scan.patient_id == "LIDC-IDRI-0001").one()
        with pytest.raises(OSError, match="Couldn't find DICOM files"):
            scan.get_path_to_dicom_files()
        other = pl.query(pl.Scan).filter(pl.Scan.patient_id == "LIDC-IDRI-0002").one()
        with pytest.raises(RuntimeError, match=str(root)):
            other.get_path_to_dicom_files()
    assert list(home.iterdir()) == []


def test_missing_dicom_root_fails_naming_it(tmp_path) -> None:
    """An unset or wrong LIDC root fails at the start with the path in the message."""
    with pytest.raises(FileNotFoundError, match="nowhere"):
        with pylidc_dicom_root(tmp_path / "nowhere"):
            pass


@pytest.mark.parametrize(("value", "expected"), [(3.5, 4), (2.5, 3), (3.49, 3), (4.0, 4), (1.5, 2)])
def test_round_half_up(value: float, expected: int) -> None:
    """Halves round up (Python's round would give 2 for 2.5)."""
    assert round_half_up(value) == expected


@pytest.mark.parametrize(
    ("rule", "ratings", "label"),
    [
        (LabelRule(), [3, 4], 1),  # median 3.5 -> 4: malignant
        (LabelRule(), [3, 3, 4], 0),
        (LabelRule(), [5, 5, 5, 4], 1),
        (LabelRule(), [1, 2, 3, 3], 0),  # median 2.5 -> 3: benign
        (LabelRule(), [2, 3, 4, 5], 1),  # median 3.5 -> 4
        (LabelRule(aggregate="mean"), [2, 3, 4, 4], 0),  # mean 3.25 -> 3
        (LabelRule(aggregate="mean"), [3, 3, 4, 5], 1),  # mean 3.75 -> 4
        (LabelRule(exclude_scores=(3,)), [3, 3, 2], None),
        (LabelRule(exclude_scores=(3,)), [2, 2], 0),
        (LabelRule(min_annotators=3), [5, 5], None),
        (LabelRule(malignant_from=3), [3], 1),
    ],
)
def test_label_rules(rule: LabelRule, ratings: list[int], label: int | None) -> None:
    """Default median-rounded-half-up 1-3 benign / 4-5 malignant, and the configurable alternatives."""
    assert rule.label(ratings) == label


def test_bad_label_rule_raises() -> None:
    with pytest.raises(ValueError, match="aggregate"):
        LabelRule(aggregate="mode")


def test_nodule_table_from_annotations_only(table: pd.DataFrame) -> None:
    """One row per pylidc cluster with ratings, label, size and centroid; patient x/y need images."""
    assert list(table.columns) == NODULE_COLUMNS
    assert table["key"].is_unique
    assert set(table["patient_id"]) == set(PATIENTS)
    first = table[table["patient_id"] == "LIDC-IDRI-0001"].iloc[0]
    assert first["n_annotators"] == 4
    assert first["malignancy_ratings"] == "5;5;5;4"
    assert (first["label"], first["label_name"]) == (1, "malignant")
    assert 30 < first["diameter_mm"] < 35 and first["consensus_volume_mm3"] > 3000
    assert pd.isna(first["centroid_x_mm"]) and pd.isna(first["centroid_y_mm"])
    pl = import_pylidc()
    zvals = pl.query(pl.Scan).filter(pl.Scan.patient_id == "LIDC-IDRI-0001").one().slice_zvals
    assert zvals.min() <= first["centroid_z_mm"] <= zvals.max()
    # label column follows the rule on every row
    for ratings, label in zip(table["malignancy_ratings"], table["label"], strict=True):
        assert LabelRule().label([int(r) for r in ratings.split(";")]) == label


def test_unknown_patient_is_an_error() -> None:
    with pytest.raises(ValueError, match="LIDC-IDRI-9999"):
        build_nodule_table(["LIDC-IDRI-9999"], workers=1, progress=False)


@pytest.mark.slow
def test_parallel_run_gives_byte_identical_table(table: pd.DataFrame, tmp_path) -> None:
    """Clustering over a process pool writes exactly the bytes of the in-process run."""
    parallel = build_nodule_table(PATIENTS, workers=2, progress=False)
    a, b = write_csv(table, tmp_path / "a.csv"), write_csv(parallel, tmp_path / "b.csv")
    assert a.read_bytes() == b.read_bytes()


def test_cli_annotations_only(tmp_path) -> None:
    """`dagman lidc-nodules --annotations-only --patients ...` writes the table (no images, no config)."""
    parser = argparse.ArgumentParser()
    lidc_cli.add_arguments(parser)
    out = tmp_path / "nodules.csv"
    args = parser.parse_args(
        [
            "--out",
            str(out),
            "--annotations-only",
            "--patients",
            "LIDC-IDRI-0001",
            "--workers",
            "1",
            "--exclude-score",
            "3",
        ]
    )
    assert lidc_cli.run(args) == 0
    written = pd.read_csv(out)
    assert len(written) == 1 and written.loc[0, "label"] == 1
    assert not any(name.startswith(".") for name in os.listdir(tmp_path))


def test_crop_cube_centres_and_pads() -> None:
    """A crop is centred on the physical point, keeps geometry, and pads outside the image."""
    import SimpleITK as sitk

    array = np.arange(10 * 12 * 14, dtype=np.int16).reshape(10, 12, 14)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 2.0, 2.0))
    image.SetOrigin((-10.0, 5.0, 100.0))
    centre = image.TransformIndexToPhysicalPoint((3, 4, 5))
    cube = crop_cube(image, centre, 4, pad_value=-1024)
    out = sitk.GetArrayFromImage(cube)
    assert out.shape == (4, 4, 4)
    assert out[2, 2, 2] == array[5, 4, 3]
    assert cube.TransformIndexToPhysicalPoint((2, 2, 2)) == centre
    edge = crop_cube(image, image.TransformIndexToPhysicalPoint((0, 0, 0)), 4, pad_value=-1024)
    edge_array = sitk.GetArrayFromImage(edge)
    assert edge_array[0, 0, 0] == -1024 and edge_array[2, 2, 2] == array[0, 0, 0]
