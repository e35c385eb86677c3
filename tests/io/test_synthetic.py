"""Tests of the DICOM writers, the chest phantom and the demo cohort (dagman.io.dicom_write, dagman.io.synthetic).

They protect what the converter and the PHI checks rely on: files that pydicom and SimpleITK read back to the
written HU and geometry, a deterministic cohort, every broken kind present as the manifest says, and fake
identifying tags really present in the headers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from dagman.cli import main
from dagman.io.dicom_write import (
    BASIC_TEXT_SR_STORAGE,
    CT_IMAGE_STORAGE,
    RT_STRUCTURE_SET_STORAGE,
    write_ct_series,
    write_localizer,
    write_non_image,
)
from dagman.io.synthetic import (
    BROKEN_KINDS,
    FAKE_IDENTIFIERS,
    HU,
    MANIFEST_COLUMNS,
    add_nodule,
    chest_phantom,
    demo_case_volume,
    write_demo_cohort,
)

SHAPE = (24, 48, 48)
SPACING = (2.7, 2.7, 2.5)
N_CASES = 5  # covers every good-case file flavour (TCIA, hex names, signed, RLE, implicit VR)


def _hu_of(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _read_sitk(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _series_dir(root: Path, patient_id: str) -> Path:
    (folder,) = (root / "dicom" / patient_id).glob("*/*")
    return folder


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("demo")
    write_demo_cohort(root, seed=3, n_cases=N_CASES, shape=SHAPE, spacing=SPACING)
    return root, pd.read_csv(root / "manifest.csv", keep_default_na=False)


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(0).integers(-1024, 2500, size=(6, 10, 12)).astype(np.int16)


# ---------------------------------------------------------------- write_ct_series


@pytest.mark.parametrize(
    ("slope", "intercept", "representation"),
    [(1.0, -1024.0, 0), (1.0, 0.0, 1), (0.5, -1024.0, 0)],
)
def test_ct_series_pixels_read_back_as_written_hu(tmp_path, volume, slope, intercept, representation):
    """Stored values are (hu - intercept) / slope with a PixelRepresentation that holds them exactly."""
    paths = write_ct_series(
        volume,
        tmp_path,
        spacing=(0.7, 0.8, 2.5),
        origin=(-10, -20, -30),
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        rescale_slope=slope,
        rescale_intercept=intercept,
    )
    assert len(paths) == volume.shape[0]
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert ds.PixelRepresentation == representation
        np.testing.assert_array_equal(_hu_of(ds), volume[k])


def test_ct_series_geometry_and_required_tags(tmp_path, volume):
    """Every tag the converter and pylidc read is there, with DICOM's (row, column) PixelSpacing order."""
    paths = write_ct_series(
        volume,
        tmp_path,
        spacing=(0.7, 0.8, 2.5),
        origin=(-10, -20, -30),
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        patient={"PatientID": "P1", "PatientName": "TEST^NAME"},
    )
    with open(paths[0], "rb") as f:
        assert f.read(132)[128:] == b"DICM"  # preamble and file meta: a real Part 10 file
    sops = set()
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.MediaStorageSOPClassUID == CT_IMAGE_STORAGE == ds.SOPClassUID
        assert ds.Modality == "CT" and list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
        assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx([-10, -20, -30 + 2.5 * k])
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.PixelSpacing] == [0.8, 0.7]
        assert float(ds.SliceThickness) == 2.5 and float(ds.SliceLocation) == pytest.approx(-30 + 2.5 * k)
        assert (ds.Rows, ds.Columns, ds.BitsAllocated, ds.PhotometricInterpretation) == (
            10,
            12,
            16,
            "MONOCHROME2",
        )
        assert (
            ds.InstanceNumber == k + 1
            and ds.SeriesInstanceUID == "1.2.3.4"
            and ds.StudyInstanceUID == "1.2.3"
        )
        assert ds.PatientName == "TEST^NAME" and ds.FrameOfReferenceUID and ds.Manufacturer and ds.KVP
        sops.add(ds.SOPInstanceUID)
    assert len(sops) == len(paths)


def test_simpleitk_reads_series_to_written_volume_and_geometry(tmp_path, volume):
    """SimpleITK's series reader gives the written array, spacing (x, y, z), origin and identity direction."""
    write_ct_series(
        volume,
        tmp_path,
        spacing=(0.7, 0.8, 2.5),
        origin=(-10, -20, -30),
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        file_names=[f"{k:02x}.dcm" for k in (5, 1, 3, 0, 4, 2)],  # names out of slice order
    )
    image = _read_sitk(tmp_path)
    assert image.GetSize() == (12, 10, 6)
    assert image.GetSpacing() == pytest.approx((0.7, 0.8, 2.5))
    assert image.GetOrigin() == pytest.approx((-10, -20, -30))
    assert image.GetDirection() == pytest.approx(np.eye(3).ravel())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), volume)


def test_slice_z_keeps_a_real_scans_exact_positions(tmp_path, volume):
    """Explicit z positions (uneven, many digits) are written exactly, for LIDC-geometry cohorts."""
    z = [-123.456789, -120.956789, -118.5, -116.0, -113.25, -111.0]
    paths = write_ct_series(
        volume,
        tmp_path,
        spacing=(0.7, 0.7, 2.5),
        origin=(-180.123456, -170.5, 0),
        slice_z=z,
        study_uid="1.2.3",
        series_uid="1.2.3.4",
    )
    for k, path in enumerate(paths):
        position = pydicom.dcmread(path).ImagePositionPatient
        assert [float(v) for v in position] == [-180.123456, -170.5, z[k]]


@pytest.mark.parametrize("syntax", [RLELossless, ImplicitVRLittleEndian])
def test_other_transfer_syntaxes_read_back_exactly(tmp_path, volume, syntax):
    """RLE-compressed and implicit-VR files decode to the written HU and keep the given SOP UIDs."""
    paths = write_ct_series(
        volume,
        tmp_path,
        spacing=(1, 1, 1),
        origin=(0, 0, 0),
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        sop_uids=[f"1.2.3.4.{k + 1}" for k in range(6)],
        transfer_syntax=syntax,
    )
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == syntax and ds.SOPInstanceUID == f"1.2.3.4.{k + 1}"
        np.testing.assert_array_equal(_hu_of(ds), volume[k])


def test_localizer_and_non_image_objects(tmp_path):
    """The scout is a coronal LOCALIZER CT image; SR and RTSTRUCT objects carry no pixel data."""
    scout = write_localizer(
        np.zeros((30, 40)),
        tmp_path,
        pixel_spacing=(1.0, 2.0),
        origin=(0, 0, 0),
        study_uid="1.2",
        series_uid="1.2.3",
    )
    ds = pydicom.dcmread(scout)
    assert "LOCALIZER" in ds.ImageType and (ds.Rows, ds.Columns) == (30, 40)
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 0, -1]
    for kind, sop_class, modality in (
        ("sr", BASIC_TEXT_SR_STORAGE, "SR"),
        ("rtstruct", RT_STRUCTURE_SET_STORAGE, "RTSTRUCT"),
    ):
        ds = pydicom.dcmread(
            write_non_image(tmp_path, kind=kind, study_uid="1.2", series_uid="1.2.9", file_name=kind)
        )
        assert ds.SOPClassUID == sop_class and ds.Modality == modality and "PixelData" not in ds


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hu": np.zeros((4, 4))}, "shape"),
        ({"file_names": ["a.dcm"]}, "file_names"),
        ({"patient": {"PatientNmae": "x"}}, "PatientNmae"),
        ({"hu": np.full((2, 4, 4), 70000)}, "16-bit"),
        ({"spacing": (1, 0, 1)}, "spacing"),
    ],
)
def test_ct_series_rejects_bad_input_with_a_plain_message(tmp_path, kwargs, message):
    """Bad arrays, lengths, keywords and ranges fail up front, naming what is wrong."""
    args = {"hu": np.zeros((2, 4, 4), np.int16), "spacing": (1, 1, 1), "origin": (0, 0, 0)} | kwargs
    hu = args.pop("hu")
    with pytest.raises(ValueError, match=message):
        write_ct_series(hu, tmp_path, study_uid="1.2", series_uid="1.2.3", **args)


# ---------------------------------------------------------------- phantom


def test_chest_phantom_is_a_plausible_deterministic_chest():
    """Air outside, lungs, soft tissue and bone in sensible amounts; same rng seed, same volume."""
    hu = chest_phantom((48, 64, 64), SPACING, np.random.default_rng(1))
    assert hu.dtype == np.int16 and hu.shape == (48, 64, 64)
    assert hu.min() >= -1024 and hu.max() <= 3071
    assert np.all(hu[:, :3, :3] < -900)  # corners are air
    lung = (hu > -950) & (hu < -700)
    assert 0.05 < lung.mean() < 0.4
    assert (np.abs(hu - HU["soft_tissue"]) < 60).mean() > 0.1
    assert (hu > 400).sum() > 100  # spine and ribs
    np.testing.assert_array_equal(hu, chest_phantom((48, 64, 64), SPACING, np.random.default_rng(1)))
    assert not np.array_equal(hu, chest_phantom((48, 64, 64), SPACING, np.random.default_rng(2)))


@pytest.mark.parametrize("spiculated", [False, True])
def test_add_nodule_paints_soft_tissue_and_returns_its_mask(spiculated):
    """The nodule is soft tissue inside the lung; spicules reach beyond the nominal radius."""
    hu = np.full((40, 40, 40), -850, np.int16)
    mask = add_nodule(hu, (20, 20, 20), 5, np.random.default_rng(0), spiculated=spiculated)
    assert mask.dtype == bool and mask[20, 20, 20]
    assert abs(float(hu[mask].mean()) - HU["nodule"]) < 15
    assert np.all(hu[~mask] == -850)
    zz, yy, xx = np.nonzero(mask)
    reach = np.sqrt((zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2).max()
    assert reach > 7 if spiculated else reach < 6.5


def test_add_nodule_outside_the_volume_paints_nothing():
    hu = np.zeros((10, 10, 10), np.int16)
    assert not add_nodule(hu, (50, 50, 50), 3, np.random.default_rng(0)).any() and not hu.any()


# ---------------------------------------------------------------- demo cohort


def test_manifest_lists_good_and_every_broken_kind(cohort):
    """One row per series with the contract's columns; each broken kind once, with its expected outcome."""
    root, manifest = cohort
    assert tuple(manifest.columns) == MANIFEST_COLUMNS
    assert (manifest["kind"] == "good").sum() == N_CASES
    assert (manifest.loc[manifest["kind"] == "good", "expected"] == "convert").all()
    broken = manifest[manifest["kind"] != "good"].set_index("kind")
    assert set(broken.index) == set(BROKEN_KINDS)
    for kind, (expected, code) in BROKEN_KINDS.items():
        assert (broken.loc[kind, "expected"], broken.loc[kind, "expected_reason_code"]) == (expected, code)
    assert manifest["patient_id"].is_unique and manifest["series_uid"].is_unique
    for row in manifest.itertuples():
        folder = _series_dir(root, row.patient_id)
        assert folder.name == row.series_uid and len(list(folder.iterdir())) == row.n_files


def test_good_series_match_demo_case_volume(cohort):
    """Each good series reads (SimpleITK) to exactly the volume and geometry demo_case_volume returns."""
    root, manifest = cohort
    good = manifest[manifest["kind"] == "good"]
    for index, row in enumerate(good.itertuples()):
        hu, geometry = demo_case_volume(3, index, SHAPE, SPACING)
        assert geometry["series_uid"] == row.series_uid and geometry["patient_id"] == row.patient_id
        image = _read_sitk(_series_dir(root, row.patient_id))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), hu)
        assert image.GetSpacing() == pytest.approx(geometry["spacing"])
        assert image.GetOrigin() == pytest.approx(geometry["origin"])
        assert image.GetDirection() == pytest.approx(geometry["direction"])


def test_good_series_vary_file_names_and_encodings(cohort):
    """At least one good series has shuffled hex names, and several storage flavours occur."""
    root, manifest = cohort
    syntaxes, representations, hex_named = set(), set(), False
    for row in manifest[manifest["kind"] == "good"].itertuples():
        files = sorted(_series_dir(root, row.patient_id).iterdir())
        hex_named |= all(not f.name.startswith("1-") and len(f.stem) == 12 for f in files)
        ds = pydicom.dcmread(files[0])
        syntaxes.add(ds.file_meta.TransferSyntaxUID)
        representations.add(ds.PixelRepresentation)
    assert hex_named and RLELossless in syntaxes and ImplicitVRLittleEndian in syntaxes
    assert representations == {0, 1}


def _positions(folder: Path) -> tuple[list[float], list[pydicom.Dataset]]:
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.iterdir())]
    axial = [ds for ds in datasets if "LOCALIZER" not in ds.get("ImageType", [])]
    return sorted(float(ds.ImagePositionPatient[2]) for ds in axial), datasets


def test_broken_series_are_broken_as_the_manifest_says(cohort):
    """Scout, gap, duplicates, truncated file, non-image object and mixed pixel spacing are really there."""
    root, manifest = cohort
    folders = {row.kind: _series_dir(root, row.patient_id) for row in manifest.itertuples()}
    step = SPACING[2]

    z, datasets = _positions(folders["scout_inside"])
    scouts = [ds for ds in datasets if "LOCALIZER" in ds.ImageType]
    assert len(scouts) == 1 and (scouts[0].Rows, scouts[0].Columns) != (SHAPE[1], SHAPE[2])
    assert scouts[0].SeriesInstanceUID == datasets[0].SeriesInstanceUID and len(z) == SHAPE[0]

    z, _ = _positions(folders["missing_slice"])
    gaps = np.diff(z)
    assert (
        len(z) == SHAPE[0] - 1
        and np.isclose(gaps.max(), 2 * step)
        and (np.isclose(gaps, step)).sum() == len(z) - 2
    )

    z, datasets = _positions(folders["duplicate_instances"])
    assert len(set(z)) == SHAPE[0] < len(z)
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)

    files = sorted(folders["truncated_file"].iterdir())
    broken = []
    for path in files:
        try:
            _ = pydicom.dcmread(path).pixel_array  # decoding is the check
        except Exception:  # any failure to read or decode is what this file is for
            broken.append(path)
    assert len(broken) == 1 and broken[0] not in (files[0], files[-1])

    (item,) = folders["non_image"].iterdir()
    ds = pydicom.dcmread(item)
    assert "PixelData" not in ds and ds.Modality != "CT"

    spacings = {
        tuple(float(v) for v in pydicom.dcmread(f, stop_before_pixels=True).PixelSpacing)
        for f in folders["mixed_pixel_spacing"].iterdir()
    }
    assert len(spacings) == 2


def test_fake_identifiers_are_in_the_headers(cohort):
    """Every demo file carries fake identifying tags from FAKE_IDENTIFIERS, so PHI tests can grep for them."""
    root, manifest = cohort
    seen = set()
    for row in manifest.itertuples():
        path = next(_series_dir(root, row.patient_id).iterdir())
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in (
            "PatientName",
            "PatientBirthDate",
            "AccessionNumber",
            "InstitutionName",
            "ReferringPhysicianName",
            "OtherPatientIDs",
        ):
            value = str(ds.data_element(keyword).value)
            assert value in FAKE_IDENTIFIERS, (keyword, row.kind)
            assert value.encode() in path.read_bytes()
            seen.add(value)
        assert ds.PatientID == row.patient_id
    assert len(seen) >= 10


def test_same_seed_gives_identical_files_and_rerun_replaces_cleanly(cohort, tmp_path):
    """Same seed: byte-identical tree and manifest. A rerun in a used folder leaves no stale series."""
    root, manifest = cohort
    other = tmp_path / "again"
    write_demo_cohort(other, seed=4, n_cases=N_CASES + 1, shape=(8, 24, 24), spacing=SPACING)  # stale, other
    again = write_demo_cohort(other, seed=3, n_cases=N_CASES, shape=SHAPE, spacing=SPACING)
    pd.testing.assert_frame_equal(again, manifest)
    assert _tree_digest(other / "dicom") == _tree_digest(root / "dicom")
    assert (other / "manifest.csv").read_bytes() == (root / "manifest.csv").read_bytes()
    assert sorted(p.name for p in other.iterdir()) == ["dicom", "manifest.csv"]


def test_other_seed_gives_other_uids_and_pixels(tmp_path):
    """Cohorts from different seeds share no UIDs and no pixel data."""
    small = (8, 24, 24)
    a = write_demo_cohort(tmp_path / "a", seed=0, n_cases=1, shape=small, spacing=SPACING)
    b = write_demo_cohort(tmp_path / "b", seed=1, n_cases=1, shape=small, spacing=SPACING)
    assert set(a["series_uid"]).isdisjoint(b["series_uid"])
    assert not np.array_equal(
        demo_case_volume(0, 0, small, SPACING)[0], demo_case_volume(1, 0, small, SPACING)[0]
    )


def test_demo_cli_writes_cohort_and_prints_summary(tmp_path, capsys):
    """`dagman demo` writes the tree and manifest and prints one summary line."""
    code = main(["demo", "--out", str(tmp_path), "--cases", "1", "--shape", "8", "24", "24", "--seed", "5"])
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "7 series" in out[0]
    manifest = pd.read_csv(tmp_path / "manifest.csv", keep_default_na=False)
    assert len(manifest) == 1 + len(BROKEN_KINDS)
    assert all((tmp_path / "dicom" / pid).is_dir() for pid in manifest["patient_id"])
