"""Writing real DICOM files: CT image series, scout (localizer) images and non-image objects.

The demo cohorts (``dagman demo``, ``dagman lidc-demo``) and the converter's tests use these writers to make
files that SimpleITK, dcm2niix, pylidc and pydicom read like scanner output: CT Image Storage with file meta,
the full geometry module (ImagePositionPatient, ImageOrientationPatient, PixelSpacing, SliceThickness),
rescale tags, and the usual patient/study/series/equipment tags.

Conventions: arrays are (z, y, x) C-order; vectors given as (x, y, z) are in DICOM patient (LPS) millimetres;
stored pixel values are ``round((hu - intercept) / slope)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    generate_uid,
)

from dagman.io.atomic import atomic_path

__all__ = [
    "CT_IMAGE_STORAGE",
    "BASIC_TEXT_SR_STORAGE",
    "RT_STRUCTURE_SET_STORAGE",
    "derived_uid",
    "write_ct_series",
    "write_localizer",
    "write_non_image",
]

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
BASIC_TEXT_SR_STORAGE = UID("1.2.840.10008.5.1.4.1.1.88.11")
RT_STRUCTURE_SET_STORAGE = UID("1.2.840.10008.5.1.4.1.1.481.3")

_AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))


def derived_uid(*parts: object) -> UID:
    """A UID that depends only on ``parts`` (so the same inputs always give byte-identical files)."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _ds(value: float) -> str:
    """A DICOM decimal string (DS, at most 16 characters) for ``value``.

    Uses the most significant digits that fit (12 at most), so real scanner positions such as -123.456789
    survive exactly while float noise such as 8.100000000000001 is written as 8.1.
    """
    value = float(value)
    for digits in range(12, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return "0" if text == "-0" else text
    raise ValueError(f"{value} cannot be written as a DICOM decimal string")


def _check_unit(vector: Sequence[float], name: str) -> np.ndarray:
    v = np.asarray(vector, dtype=float)
    if v.shape != (3,) or not np.isclose(np.linalg.norm(v), 1.0, atol=1e-4):
        raise ValueError(f"{name} must be a unit 3-vector (x, y, z), got {tuple(vector)}")
    return v


def _set_keywords(ds: Dataset, tags: Mapping[str, object] | None, what: str) -> None:
    """Copy ``{keyword: value}`` onto ``ds``; unknown keywords fail loudly instead of being dropped."""
    for keyword, value in (tags or {}).items():
        if tag_for_keyword(keyword) is None:
            raise ValueError(f"{what}: {keyword!r} is not a DICOM keyword")
        setattr(ds, keyword, value)


def _file_meta(sop_class: str, sop_uid: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _base_dataset(
    *,
    sop_class: str,
    sop_uid: str,
    modality: str,
    patient: Mapping[str, object] | None,
    study_uid: str,
    series_uid: str,
    series_number: int,
    series_description: str,
    study_date: str,
    transfer_syntax: str,
) -> Dataset:
    """Patient, study, series and SOP common modules shared by every object written here."""
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_uid, transfer_syntax)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study_date
    ds.SeriesDate = study_date
    ds.ContentDate = study_date
    ds.StudyTime = "120000"
    ds.SeriesTime = "120500"
    ds.ContentTime = "120500"
    ds.Modality = modality
    ds.Manufacturer = "DAGMaN Synthetic"
    ds.StudyDescription = "CT CHEST"
    ds.SeriesDescription = series_description
    ds.PatientID = "ANONYMOUS"
    ds.PatientName = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    _set_keywords(ds, patient, "patient tags")
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = int(series_number)
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    """Save with a valid file meta group, atomically (temp name in the same folder, then rename)."""
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


def _stored_values(hu: np.ndarray, slope: float, intercept: float) -> tuple[np.ndarray, int]:
    """Stored pixel values and PixelRepresentation (0 unsigned, 1 signed) that hold ``hu`` exactly."""
    if slope <= 0:
        raise ValueError(f"rescale_slope must be positive, got {slope}")
    stored = np.rint((hu.astype(np.float64) - intercept) / slope)
    lo, hi = float(stored.min()), float(stored.max())
    if lo >= 0 and hi <= 65535:
        return stored.astype("<u2"), 0
    if lo >= -32768 and hi <= 32767:
        return stored.astype("<i2"), 1
    raise ValueError(
        f"HU range [{hu.min()}, {hu.max()}] does not fit 16-bit stored values with slope {slope} "
        f"and intercept {intercept}"
    )


def write_ct_series(
    hu: np.ndarray,
    out_dir: str | os.PathLike[str],
    *,
    spacing: Sequence[float],
    origin: Sequence[float],
    row_direction: Sequence[float] = _AXIAL[0],
    column_direction: Sequence[float] = _AXIAL[1],
    patient: Mapping[str, object] | None = None,
    study_uid: str,
    series_uid: str,
    sop_uids: Sequence[str] | None = None,
    slice_z: Sequence[float] | None = None,
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    file_names: Sequence[str] | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    instance_numbers: Sequence[int] | None = None,
    series_number: int = 2,
    series_description: str = "CHEST 2.5mm",
    study_date: str = "20200101",
    frame_of_reference_uid: str | None = None,
    extra_tags: Mapping[str, object] | None = None,
) -> list[Path]:
    """Write a CT volume as one DICOM series, one CT Image Storage file per slice.

    Slice ``k`` (``hu[k]``) is written at ``origin + k * spacing_z * normal`` where ``normal`` is
    ``row_direction x column_direction``; with ``slice_z`` given (axial orientation only) it is written at
    ``(origin_x, origin_y, slice_z[k])`` instead, so callers can reproduce a real scan's exact z positions
    (including uneven or descending ones). Files are written in slice order, so ``sop_uids``, ``file_names``
    and ``instance_numbers`` index slices too; passing other file names or instance numbers is how a caller
    shuffles a series on disk. Calling this twice with the same ``series_uid`` and different ``sop_uids`` and
    ``file_names`` adds instances to one series (duplicates, mixed tags).

    Args:
        hu: (z, y, x) Hounsfield units, any integer or float dtype; values are stored as
            ``round((hu - rescale_intercept) / rescale_slope)`` in uint16 (PixelRepresentation 0) when they fit,
            else int16 (PixelRepresentation 1).
        out_dir: folder for the files (created if missing).
        spacing: (x, y, z) mm: column spacing, row spacing, slice spacing (also SliceThickness).
        origin: (x, y, z) mm, ImagePositionPatient of the first slice (centre of its first voxel).
        row_direction, column_direction: ImageOrientationPatient unit vectors (default axial, identity).
        patient: patient-level (or any other) tags as ``{keyword: value}``, e.g. PatientID, PatientName,
            PatientBirthDate, PatientSex, AccessionNumber; unknown keywords raise ValueError.
        study_uid, series_uid: StudyInstanceUID and SeriesInstanceUID.
        sop_uids: one SOPInstanceUID per slice; default derived from ``series_uid`` and the slice index.
        slice_z: explicit z position (mm) of each slice, overriding ``origin_z + k * spacing_z``.
        rescale_slope, rescale_intercept: RescaleSlope / RescaleIntercept (HU = stored * slope + intercept).
        file_names: one file name per slice; default ``"1-%03d.dcm"`` by instance number (TCIA style).
        transfer_syntax: ExplicitVRLittleEndian (default), ImplicitVRLittleEndian, or a compressed syntax
            pydicom can encode here (RLELossless natively; JPEG 2000 / JPEG-LS with pylibjpeg encoders).
        instance_numbers: InstanceNumber per slice; default 1..n in slice order.
        series_number, series_description, study_date: SeriesNumber, SeriesDescription and the study,
            series and content dates (YYYYMMDD).
        frame_of_reference_uid: default derived from ``study_uid`` (one frame of reference per study).
        extra_tags: further ``{keyword: value}`` tags applied to every slice last (they win).

    Returns:
        The written file paths, in slice order.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3 or min(hu.shape) < 1:
        raise ValueError(f"hu must be a non-empty (z, y, x) array, got shape {hu.shape}")
    n_slices, rows, cols = hu.shape
    sx, sy, sz = (float(s) for s in spacing)
    if min(sx, sy, sz) <= 0:
        raise ValueError(f"spacing must be positive (x, y, z) mm, got {tuple(spacing)}")
    row_dir = _check_unit(row_direction, "row_direction")
    col_dir = _check_unit(column_direction, "column_direction")
    if abs(float(row_dir @ col_dir)) > 1e-4:
        raise ValueError("row_direction and column_direction must be orthogonal")
    normal = np.cross(row_dir, col_dir)
    origin_v = np.asarray(origin, dtype=float)
    if origin_v.shape != (3,):
        raise ValueError(f"origin must be (x, y, z) mm, got {tuple(origin)}")

    if slice_z is not None:
        if len(slice_z) != n_slices:
            raise ValueError(f"slice_z has {len(slice_z)} values for {n_slices} slices")
        if not np.allclose(normal, (0.0, 0.0, 1.0), atol=1e-4):
            raise ValueError("slice_z needs the axial orientation (row (1,0,0), column (0,1,0))")
        positions = np.repeat(origin_v[None, :], n_slices, axis=0)
        positions[:, 2] = np.asarray(slice_z, dtype=float)
    else:
        positions = origin_v[None, :] + np.arange(n_slices)[:, None] * sz * normal[None, :]

    numbers = list(range(1, n_slices + 1)) if instance_numbers is None else [int(n) for n in instance_numbers]
    sops = (
        [derived_uid(series_uid, "sop", k) for k in range(n_slices)] if sop_uids is None else list(sop_uids)
    )
    names = [f"1-{n:03d}.dcm" for n in numbers] if file_names is None else list(file_names)
    for label, values in (("instance_numbers", numbers), ("sop_uids", sops), ("file_names", names)):
        if len(values) != n_slices:
            raise ValueError(f"{label} has {len(values)} entries for {n_slices} slices")

    stored, pixel_representation = _stored_values(hu, float(rescale_slope), float(rescale_intercept))
    transfer_syntax = UID(transfer_syntax)
    frame_uid = frame_of_reference_uid or derived_uid(study_uid, "frame-of-reference")
    orientation = [_ds(v) for v in (*row_dir, *col_dir)]
    pixel_spacing = [_ds(sy), _ds(sx)]  # DICOM order: row spacing (y), then column spacing (x)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for k in range(n_slices):
        ds = _base_dataset(
            sop_class=CT_IMAGE_STORAGE,
            sop_uid=sops[k],
            modality="CT",
            patient=patient,
            study_uid=study_uid,
            series_uid=series_uid,
            series_number=series_number,
            series_description=series_description,
            study_date=study_date,
            transfer_syntax=ExplicitVRLittleEndian if transfer_syntax.is_compressed else transfer_syntax,
        )
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ManufacturerModelName = "Phantom CT 64"
        ds.StationName = "CT01"
        ds.BodyPartExamined = "CHEST"
        ds.KVP = "120"
        ds.XRayTubeCurrent = 200
        ds.ExposureTime = 500
        ds.ConvolutionKernel = "STANDARD"
        ds.SliceThickness = _ds(sz)
        ds.SpacingBetweenSlices = _ds(sz)
        ds.PatientPosition = "HFS"
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = numbers[k]
        ds.ImagePositionPatient = [_ds(v) for v in positions[k]]
        ds.ImageOrientationPatient = orientation
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(float(positions[k] @ normal))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = cols
        ds.PixelSpacing = pixel_spacing
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = pixel_representation
        ds.WindowCenter = ["40", "-600"]
        ds.WindowWidth = ["400", "1500"]
        ds.WindowCenterWidthExplanation = ["MEDIASTINUM", "LUNG"]
        ds.RescaleIntercept = _ds(rescale_intercept)
        ds.RescaleSlope = _ds(rescale_slope)
        ds.RescaleType = "HU"
        _set_keywords(ds, extra_tags, "extra_tags")
        ds.PixelData = stored[k].tobytes()
        if transfer_syntax.is_compressed:
            # pydicom encodes and encapsulates; keep the given SOPInstanceUID (the default makes a new one)
            ds.compress(transfer_syntax, stored[k], generate_instance_uid=False)
        paths.append(_save(ds, out / names[k]))
    return paths


def write_localizer(
    image: np.ndarray,
    out_dir: str | os.PathLike[str],
    *,
    pixel_spacing: Sequence[float],
    origin: Sequence[float],
    patient: Mapping[str, object] | None = None,
    study_uid: str,
    series_uid: str,
    sop_uid: str | None = None,
    instance_number: int = 1,
    file_name: str = "scout.dcm",
    series_number: int = 2,
    study_date: str = "20200101",
    frame_of_reference_uid: str | None = None,
) -> Path:
    """Write one coronal scout (localizer) CT image, as scanners put at the start of a chest series.

    The image is ImageType ``ORIGINAL\\PRIMARY\\LOCALIZER`` with coronal orientation (rows run patient
    left, columns run inferior), so a converter can recognise it by either the type or the orientation.

    Args:
        image: (rows, columns) values in HU-like units (a projection of a volume works well); stored with
            intercept -1024 and slope 1, so values must lie in [-1024, 64511].
        out_dir: folder for the file (use the series' folder to put the scout inside a series).
        pixel_spacing: (x, z) mm, i.e. column spacing then row spacing of the scout.
        origin: (x, y, z) mm of the top-left pixel.
        patient, study_uid, series_uid: as for :func:`write_ct_series`; pass the CT series' UID to put the
            scout inside that series.
        sop_uid: SOPInstanceUID; default derived from ``series_uid``, ``"localizer"`` and ``instance_number``.
        instance_number, file_name, series_number, study_date, frame_of_reference_uid: the usual tags.

    Returns:
        The written path.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"localizer image must be 2-D (rows, columns), got shape {image.shape}")
    stored, pixel_representation = _stored_values(image, 1.0, -1024.0)
    sop = sop_uid or derived_uid(series_uid, "localizer", instance_number)
    ds = _base_dataset(
        sop_class=CT_IMAGE_STORAGE,
        sop_uid=sop,
        modality="CT",
        patient=patient,
        study_uid=study_uid,
        series_uid=series_uid,
        series_number=series_number,
        series_description="TOPOGRAM",
        study_date=study_date,
        transfer_syntax=ExplicitVRLittleEndian,
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ManufacturerModelName = "Phantom CT 64"
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    ds.SliceThickness = "1"
    ds.PatientPosition = "HFS"
    ds.InstanceNumber = int(instance_number)
    ds.ImagePositionPatient = [_ds(v) for v in origin]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
    ds.FrameOfReferenceUID = frame_of_reference_uid or derived_uid(study_uid, "frame-of-reference")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.PixelSpacing = [_ds(pixel_spacing[1]), _ds(pixel_spacing[0])]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = pixel_representation
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.PixelData = stored.tobytes()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _save(ds, out / file_name)


def write_non_image(
    out_dir: str | os.PathLike[str],
    *,
    kind: str = "sr",
    patient: Mapping[str, object] | None = None,
    study_uid: str,
    series_uid: str,
    sop_uid: str | None = None,
    file_name: str = "1-1.dcm",
    text: str = "Synthetic report: no acute findings.",
    study_date: str = "20200101",
) -> Path:
    """Write one DICOM object without pixel data, as found next to CT series in real exports.

    Args:
        out_dir: folder for the file.
        kind: ``"sr"`` (a Basic Text Structured Report holding ``text``) or ``"rtstruct"`` (an RT Structure
            Set with no ROIs).
        patient, study_uid, series_uid: as for :func:`write_ct_series`.
        sop_uid: SOPInstanceUID; default derived from ``series_uid`` and ``kind``.
        file_name, text, study_date: the file's name, the report text (SR only) and the dates.

    Returns:
        The written path.
    """
    sop = sop_uid or derived_uid(series_uid, kind)
    if kind == "sr":
        ds = _base_dataset(
            sop_class=BASIC_TEXT_SR_STORAGE,
            sop_uid=sop,
            modality="SR",
            patient=patient,
            study_uid=study_uid,
            series_uid=series_uid,
            series_number=900,
            series_description="REPORT",
            study_date=study_date,
            transfer_syntax=ExplicitVRLittleEndian,
        )
        ds.InstanceNumber = 1
        ds.ValueType = "CONTAINER"
        ds.ContinuityOfContent = "SEPARATE"
        ds.CompletionFlag = "COMPLETE"
        ds.VerificationFlag = "UNVERIFIED"
        title = Dataset()
        title.CodeValue = "18748-4"
        title.CodingSchemeDesignator = "LN"
        title.CodeMeaning = "Diagnostic imaging report"
        ds.ConceptNameCodeSequence = DicomSequence([title])
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "TEXT"
        concept = Dataset()
        concept.CodeValue = "121071"
        concept.CodingSchemeDesignator = "DCM"
        concept.CodeMeaning = "Finding"
        item.ConceptNameCodeSequence = DicomSequence([concept])
        item.TextValue = text
        ds.ContentSequence = DicomSequence([item])
    elif kind == "rtstruct":
        ds = _base_dataset(
            sop_class=RT_STRUCTURE_SET_STORAGE,
            sop_uid=sop,
            modality="RTSTRUCT",
            patient=patient,
            study_uid=study_uid,
            series_uid=series_uid,
            series_number=901,
            series_description="RTSTRUCT",
            study_date=study_date,
            transfer_syntax=ExplicitVRLittleEndian,
        )
        ds.InstanceNumber = 1
        ds.StructureSetLabel = "EMPTY"
        ds.StructureSetDate = study_date
        ds.StructureSetTime = "120000"
        ds.StructureSetROISequence = DicomSequence([])
        ds.ROIContourSequence = DicomSequence([])
        ds.RTROIObservationsSequence = DicomSequence([])
    else:
        raise ValueError(f"kind must be 'sr' or 'rtstruct', got {kind!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _save(ds, out / file_name)
