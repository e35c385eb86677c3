"""End-to-end tests of `dagman convert` (dagman.io.convert) on small DICOM trees written with dicom_write."""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import JPEG2000Lossless, RLELossless

import dagman.io.convert as convert_module
from dagman.cli import main as dagman_main
from dagman.io.convert import convert_tree
from dagman.io.dicom_series import make_case_id, make_series_id
from dagman.io.dicom_write import derived_uid, write_ct_series, write_localizer, write_non_image

FAKE = {
    "PatientName": "Fakename^Testpatient",
    "PatientBirthDate": "19450217",
    "AccessionNumber": "ACCFAKE98765",
    "InstitutionName": "Fake General Hospital",
}
SHAPE = (10, 12, 14)  # z, y, x


def phantom(seed: int, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """Random HU volume with a clear structure, so slice order and flips show up in comparisons."""
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1000, 1500, size=shape).astype(np.int16)
    hu[:, 0, 0] = np.arange(shape[0]) * 10  # slice index is readable from one voxel
    return hu


def write(
    root: Path,
    name: str,
    hu: np.ndarray,
    *,
    patient_id: str = "DEMO-0001",
    spacing=(0.7, 0.8, 2.5),
    origin=(-20.0, -30.0, 100.0),
    **kwargs,
) -> list[Path]:
    """Write one CT series under root/<patient>/<study>/<name>/ with fake identifying tags."""
    kwargs.setdefault("series_uid", derived_uid(name))
    return write_ct_series(
        hu,
        root / patient_id / "study" / name,
        spacing=spacing,
        origin=origin,
        patient={"PatientID": patient_id, **FAKE},
        study_uid=derived_uid(patient_id, "study"),
        **kwargs,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def load(out: Path, row: dict) -> sitk.Image:
    return sitk.ReadImage(str(out / row["image"]))


def test_geometry_and_values_match_simpleitk_series_reader(tmp_path: Path) -> None:
    """On a clean oblique series the NIfTI has SimpleITK's own DICOM geometry and the exact HU values."""
    c, s = math.cos(math.radians(20)), math.sin(math.radians(20))
    hu = phantom(1)
    write(tmp_path / "in", "oblique", hu, row_direction=(c, s, 0.0), column_direction=(0.0, 0.0, -1.0))
    result = convert_tree(tmp_path / "in", tmp_path / "out", workers=1, progress=False)
    assert len(result.series) == 1 and result.quarantine == []
    ours = load(tmp_path / "out", result.series[0])

    folder = tmp_path / "in" / "DEMO-0001" / "study" / "oblique"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    ref = reader.Execute()
    assert ours.GetSize() == ref.GetSize() == (14, 12, 10)
    assert ours.GetPixelID() == sitk.sitkInt16
    np.testing.assert_allclose(ours.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ours.GetSpacing(), ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(ours.GetDirection(), ref.GetDirection(), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(ref))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), hu)
    row = result.series[0]
    assert (row["size_x"], row["size_y"], row["size_z"], row["n_slices"]) == (14, 12, 10, 10)
    assert (row["spacing_x"], row["spacing_y"], row["spacing_z"]) == pytest.approx((0.7, 0.8, 2.5))


def test_renamed_and_shuffled_files_give_identical_volume(tmp_path: Path) -> None:
    """File names and InstanceNumbers do not matter: shuffled, renamed, flat files give the same volume."""
    hu = phantom(2)
    write(tmp_path / "a", "s", hu)
    rng = np.random.default_rng(5)
    order = rng.permutation(SHAPE[0])
    write(
        tmp_path / "b",
        "s",
        hu,
        file_names=[f"IMG{int(k):05d}" for k in order],
        instance_numbers=[int(k) + 1 for k in order],
    )
    ra = convert_tree(tmp_path / "a", tmp_path / "oa", workers=1, progress=False)
    rb = convert_tree(tmp_path / "b", tmp_path / "ob", workers=1, progress=False)
    a, b = load(tmp_path / "oa", ra.series[0]), load(tmp_path / "ob", rb.series[0])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    assert a.GetOrigin() == b.GetOrigin() and a.GetSpacing() == b.GetSpacing()
    assert a.GetDirection() == b.GetDirection()
    assert ra.series == rb.series


def test_slope_and_intercept_apply_per_slice(tmp_path: Path) -> None:
    """Each slice's own RescaleSlope/RescaleIntercept is applied; output is int16 HU."""
    hu = (phantom(3) // 2) * 2  # even values, exact with slope 2
    uid = derived_uid("rescale")
    for k in range(SHAPE[0]):
        slope, intercept = ((1.0, -1024.0), (2.0, -2000.0), (0.5, -1000.0))[k % 3]
        write(
            tmp_path / "in",
            "rescale",
            hu[k : k + 1],
            origin=(0.0, 0.0, 2.5 * k),
            series_uid=uid,
            sop_uids=[derived_uid(uid, k)],
            file_names=[f"s{k}.dcm"],
            rescale_slope=slope,
            rescale_intercept=intercept,
        )
    result = convert_tree(tmp_path / "in", tmp_path / "out", workers=1, progress=False)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(load(tmp_path / "out", result.series[0])), hu)


def test_hu_beyond_int16_is_clipped(tmp_path: Path) -> None:
    """Stored values whose HU exceed the int16 range are clipped, not wrapped around."""
    hu = phantom(11).astype(np.int32)
    hu[:, 5, 5] = 40000
    write(tmp_path / "in", "bright", hu)
    result = convert_tree(tmp_path / "in", tmp_path / "out", workers=1, progress=False)
    out = sitk.GetArrayFromImage(load(tmp_path / "out", result.series[0]))
    assert (out[:, 5, 5] == 32767).all()
    np.testing.assert_array_equal(out[:, :5], hu[:, :5])


def test_series_are_grouped_by_uid_not_by_folder(tmp_path: Path) -> None:
    """A series split over two folders is one volume; two series in one folder are two volumes."""
    hu = phantom(12)
    uid = derived_uid("split")
    sops = [derived_uid(uid, k) for k in range(SHAPE[0])]
    write(tmp_path / "in" / "a", "x", hu[:5], series_uid=uid, sop_uids=sops[:5])
    write(tmp_path / "in" / "b", "y", hu[5:], series_uid=uid, sop_uids=sops[5:], origin=(-20.0, -30.0, 112.5))
    write(
        tmp_path / "in",
        "shared",
        phantom(13),
        series_uid=derived_uid("one"),
        file_names=[f"a{k}" for k in range(10)],
    )
    write(
        tmp_path / "in",
        "shared",
        phantom(14),
        series_uid=derived_uid("two"),
        file_names=[f"b{k}" for k in range(10)],
    )
    result = convert_tree(tmp_path / "in", tmp_path / "out", workers=1, progress=False)
    assert result.quarantine == []
    by_uid = {row["series_uid"]: row for row in result.series}
    assert set(by_uid) == {uid, derived_uid("one"), derived_uid("two")}
    np.testing.assert_array_equal(sitk.GetArrayFromImage(load(tmp_path / "out", by_uid[uid])), hu)


def test_rle_lossless_decodes_to_same_hu(tmp_path: Path) -> None:
    """A compressed (RLE Lossless) series decodes through pydicom's handlers to the same HU."""
    hu = phantom(4)
    write(tmp_path / "in", "rle", hu, transfer_syntax=RLELossless)
    result = convert_tree(tmp_path / "in", tmp_path / "out", workers=1, progress=False)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(load(tmp_path / "out", result.series[0])), hu)


def build_mixed_tree(root: Path) -> dict[str, str]:
    """A tree holding one good series and one of each problem; returns {series name: series_uid}."""
    uids = {}
    hu = phantom(6)

    def add(name: str, volume: np.ndarray = hu, **kwargs) -> list[Path]:
        uids[name] = derived_uid(name)
        return write(root, name, volume, series_uid=uids[name], **kwargs)

    add("good")
    add("scout")
    write_localizer(
        np.zeros((16, 14)),
        root / "DEMO-0001" / "study" / "scout",
        pixel_spacing=(1.0, 1.0),
        origin=(-20, 0, 130),
        patient={"PatientID": "DEMO-0001", **FAKE},
        study_uid=derived_uid("DEMO-0001", "study"),
        series_uid=uids["scout"],
    )
    add("dups")
    write(
        root,
        "dups",
        hu[3:5],
        origin=(-20.0, -30.0, 107.5),
        series_uid=uids["dups"],
        sop_uids=[derived_uid("dup", k) for k in range(2)],
        file_names=["x1.dcm", "x2.dcm"],
        instance_numbers=[11, 12],
    )
    add("gap", slice_z=[100 + 2.5 * k + (5 if k > 4 else 0) for k in range(SHAPE[0])])
    add("uneven", slice_z=[100 + 2.5 * k + (1.0 if k == 4 else 0) for k in range(SHAPE[0])])
    add("spacing", hu[:5])
    write(
        root,
        "spacing",
        hu[5:],
        spacing=(0.9, 0.9, 2.5),
        origin=(-20.0, -30.0, 112.5),
        series_uid=uids["spacing"],
        sop_uids=[derived_uid("sp", k) for k in range(5)],
        file_names=[f"y{k}.dcm" for k in range(5)],
    )
    add("short", hu[:4])
    add("mr", extra_tags={"Modality": "MR"})
    paths = add("truncated", patient_id="DEMO-0002")
    paths[4].write_bytes(paths[4].read_bytes()[:-100])
    paths = add("tilt")
    for k, path in enumerate(paths):  # shift each slice sideways along y: a 20 degree tilt
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient[1] = -30.0 + 2.5 * k * math.tan(math.radians(20))
        ds.save_as(path, enforce_file_format=True)
    paths = add("badcodec", patient_id="DEMO-0002", transfer_syntax=RLELossless)
    ds = pydicom.dcmread(paths[2])
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless  # RLE bytes labelled JPEG 2000: undecodable
    ds.save_as(paths[2], enforce_file_format=True)
    write_non_image(
        root / "DEMO-0002" / "study" / "sr",
        patient={"PatientID": "DEMO-0002", **FAKE},
        study_uid=derived_uid("DEMO-0002", "study"),
        series_uid=derived_uid("sr"),
    )
    (root / "DEMO-0002" / "readme.txt").write_text("not dicom")
    return uids


def test_every_problem_is_reported_and_good_series_convert(tmp_path: Path) -> None:
    """One tree with every failure kind: each gets its code, the good ones convert, nothing crashes."""
    uids = build_mixed_tree(tmp_path / "in")
    result = convert_tree(tmp_path / "in", tmp_path / "out", workers=1, progress=False)
    by_uid = {row["series_uid"]: row for row in result.series}
    assert set(by_uid) == {uids["good"], uids["scout"], uids["dups"]}
    assert by_uid[uids["scout"]]["reason"] == "dropped 1 localizer image"
    assert by_uid[uids["dups"]]["reason"] == "dropped 2 duplicate instances"
    assert all(row["n_slices"] == 10 for row in result.series)

    series_codes = {
        row["series_uid"]: row["reason_code"] for row in result.quarantine if row["level"] == "series"
    }
    assert series_codes == {
        uids["gap"]: "missing_slices",
        uids["uneven"]: "nonuniform_spacing",
        uids["spacing"]: "mixed_pixel_spacing",
        uids["short"]: "too_few_slices",
        uids["mr"]: "not_ct",
        uids["truncated"]: "missing_slices",
        uids["tilt"]: "gantry_tilt",
        uids["badcodec"]: "decode_failed",
    }
    file_codes = {row["file"]: row["reason_code"] for row in result.quarantine if row["level"] == "file"}
    assert file_codes == {
        "DEMO-0001/study/scout/scout.dcm": "localizer",
        "DEMO-0001/study/dups/x1.dcm": "duplicate",
        "DEMO-0001/study/dups/x2.dcm": "duplicate",
        "DEMO-0002/study/truncated/1-005.dcm": "unreadable",
        "DEMO-0002/study/sr/1-1.dcm": "not_image",
        "DEMO-0002/readme.txt": "not_image",
    }
    badcodec = next(r for r in result.quarantine if r["series_uid"] == uids["badcodec"])
    assert "JPEG 2000" in badcodec["reason"]

    # the tables on disk are what the function returned, sorted by case_id, series_id
    rows = read_csv(result.series_csv)
    assert [r["series_uid"] for r in rows] == [r["series_uid"] for r in result.series]
    keys = [(r["case_id"], r["series_id"]) for r in rows]
    assert keys == sorted(keys)
    assert rows[0]["case_id"] == make_case_id("DEMO-0001")
    assert len(read_csv(result.quarantine_csv)) == len(result.quarantine)
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == sorted(
        Path(r["image"]).name for r in rows
    )

    # no identifying value in any output file, compressed images included
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            for value in FAKE.values():
                assert value.encode() not in data, f"{value} found in {path}"


def test_unexpected_error_becomes_quarantine_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected exception while converting one series is a conversion_failed row; others convert."""
    write(tmp_path / "in", "ok", phantom(7))
    write(tmp_path / "in", "boom", phantom(8), patient_id="DEMO-0009")
    real = convert_module.stack_series

    def flaky(plan):
        if plan.patient_id == "DEMO-0009":
            raise RuntimeError("disk on fire")
        return real(plan)

    monkeypatch.setattr(convert_module, "stack_series", flaky)
    result = convert_tree(tmp_path / "in", tmp_path / "out", workers=1, progress=False)
    assert [r["series_uid"] for r in result.series] == [derived_uid("ok")]
    [row] = result.quarantine
    assert row["reason_code"] == "conversion_failed" and "disk on fire" in row["reason"]
    assert row["case_id"] == make_case_id("DEMO-0009") and row["series_id"] == make_series_id(
        derived_uid("boom")
    )


def test_rerun_replaces_previous_results(tmp_path: Path) -> None:
    """Converting again into the same folder removes images of series that are gone from the input."""
    write(tmp_path / "in", "keep", phantom(9))
    gone = write(tmp_path / "in", "gone", phantom(10))
    first = convert_tree(tmp_path / "in", tmp_path / "out", workers=1, progress=False)
    assert len(list((tmp_path / "out" / "images").iterdir())) == 2
    for path in gone:
        path.unlink()
    second = convert_tree(tmp_path / "in", tmp_path / "out", workers=1, progress=False)
    assert len(first.series) == 2 and len(second.series) == 1
    assert [p.name for p in (tmp_path / "out" / "images").iterdir()] == [Path(second.series[0]["image"]).name]
    assert len(read_csv(second.series_csv)) == 1


def test_cli_with_process_pool_and_patient_id_case_ids(tmp_path: Path) -> None:
    """`dagman convert` with two worker processes gives the same tables as the in-process run."""
    for k in range(8):  # 80 files: more than one header chunk, so the pool is used
        write(tmp_path / "in", f"s{k}", phantom(20 + k), patient_id=f"LIDC-IDRI-{k:04d}")
    code = dagman_main(
        [
            "convert",
            str(tmp_path / "in"),
            "--out",
            str(tmp_path / "pool"),
            "--workers",
            "2",
            "--case-ids",
            "patient-id",
            "--no-progress",
        ]
    )
    assert code == 0
    serial = convert_tree(
        tmp_path / "in", tmp_path / "serial", case_ids="patient-id", workers=1, progress=False
    )
    pooled = read_csv(tmp_path / "pool" / "series.csv")
    assert [r["case_id"] for r in pooled] == [f"LIDC-IDRI-{k:04d}" for k in range(8)]
    assert pooled == read_csv(serial.series_csv)
    for row in pooled:
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pool" / row["image"])))
        np.testing.assert_array_equal(
            a, sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "serial" / row["image"])))
        )


def test_missing_input_folder_fails_plainly(tmp_path: Path) -> None:
    """A missing input folder is a FileNotFoundError naming it."""
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_tree(tmp_path / "nope", tmp_path / "out", progress=False)
