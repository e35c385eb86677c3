"""DICOM series discovery, grouping, validation and stacking for CT conversion.

The converter (:mod:`dagman.io.convert`) works in three steps, all here:

1. :func:`read_header` reads one file's header only (pydicom, ``stop_before_pixels`` and only the tags
   needed), so that non-DICOM files, non-image objects (RTSTRUCT, SR, DICOMDIR) and truncated files are
   rejected without decoding pixels.
2. :func:`plan_series` takes the headers of one SeriesInstanceUID (files are grouped by UID, never by
   folder), drops localizers and duplicate instances, sorts slices along the slice normal (never by file name
   or InstanceNumber) and checks that they form one regular volume. It returns either a :class:`SeriesPlan`
   or a :class:`FileIssue` at series level with one plain-language reason.
3. :func:`stack_series` reads each planned file once, applies RescaleSlope/RescaleIntercept per slice and
   returns the int16 HU volume (z, y, x).

Reason codes (CONTRACTS.md): file level ``unreadable``, ``not_image``, ``localizer``, ``duplicate``; series
level ``not_ct``, ``missing_slices``, ``nonuniform_spacing``, ``gantry_tilt``, ``mixed_orientation``,
``mixed_pixel_spacing``, ``mixed_shape``, ``too_few_slices``, ``decode_failed`` and ``conversion_failed`` (an
unexpected error while converting one series). Nothing here reads or returns identifying tags other than
PatientID, which only feeds :func:`make_case_id`.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.uid import UID

__all__ = [
    "FILE_REASON_CODES",
    "SERIES_REASON_CODES",
    "CASE_ID_MODES",
    "HeaderInfo",
    "FileIssue",
    "SeriesChecks",
    "SeriesPlan",
    "SeriesDecodeError",
    "make_case_id",
    "make_series_id",
    "read_header",
    "plan_series",
    "stack_series",
]

FILE_REASON_CODES = ("unreadable", "not_image", "localizer", "duplicate")
SERIES_REASON_CODES = (
    "not_ct",
    "missing_slices",
    "nonuniform_spacing",
    "gantry_tilt",
    "mixed_orientation",
    "mixed_pixel_spacing",
    "mixed_shape",
    "too_few_slices",
    "decode_failed",
    "conversion_failed",
)
CASE_ID_MODES = ("pseudonym", "patient-id")

# Only these tags are parsed in the header pass; identifying tags are never read.
_HEADER_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "Modality",
    "ImageType",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "BitsAllocated",
    "SamplesPerPixel",
    "NumberOfFrames",
    "RescaleSlope",
    "RescaleIntercept",
    "InstanceNumber",
]
# The pixel pass parses only what pydicom's decoders need, so no other value is ever decoded.
_PIXEL_TAGS = [
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "PixelData",
]
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class HeaderInfo:
    """What the converter needs from one readable image file (picklable, no identifying tags but PatientID).

    Vectors are DICOM patient (LPS) millimetres; ``iop``/``ipp``/``pixel_spacing`` are None when absent.
    """

    path: str
    rel: str
    series_uid: str
    patient_id: str
    modality: str
    sop_uid: str
    transfer_syntax: str
    image_type: tuple[str, ...]
    iop: tuple[float, ...] | None
    ipp: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None
    rows: int
    cols: int
    n_frames: int
    slope: float
    intercept: float
    instance_number: int | None


@dataclass(frozen=True)
class FileIssue:
    """One quarantine row: a rejected file (``rel`` set) or a rejected series (``rel`` empty)."""

    level: str
    reason_code: str
    reason: str
    rel: str = ""
    series_uid: str = ""
    patient_id: str = ""


@dataclass(frozen=True)
class SeriesChecks:
    """Thresholds of the volume checks; defaults suit clinical CT.

    Args:
        min_slices: fewer slices than this (after dropping localizers and duplicates) is ``too_few_slices``.
        spacing_rel_tol: a slice step may differ from the median step by this fraction ...
        spacing_abs_tol_mm: ... or by this many mm, whichever is larger; also the distance under which two
            slices count as the same position (duplicates).
        tilt_tol_deg: largest angle (degrees) between the slice normal and the line through the slice positions
            before the series counts as gantry-tilted.
        orientation_tol: largest difference of any ImageOrientationPatient component within one orientation.
        pixel_spacing_tol_mm: largest PixelSpacing difference within one series.
        localizer_max_fraction: files whose orientation differs from the series majority are dropped as
            localizers when they are at most this fraction of the series (or at most 3 files); more than that
            is ``mixed_orientation``.
    """

    min_slices: int = 8
    spacing_rel_tol: float = 0.01
    spacing_abs_tol_mm: float = 0.01
    tilt_tol_deg: float = 0.1
    orientation_tol: float = 1e-3
    pixel_spacing_tol_mm: float = 1e-3
    localizer_max_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.min_slices < 2:
            raise ValueError(f"min_slices must be at least 2, got {self.min_slices}")
        for name in (
            "spacing_rel_tol",
            "spacing_abs_tol_mm",
            "tilt_tol_deg",
            "orientation_tol",
            "pixel_spacing_tol_mm",
            "localizer_max_fraction",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")


@dataclass(frozen=True)
class SeriesPlan:
    """A validated series: files in slice order and the volume's geometry (SimpleITK conventions).

    ``spacing`` is (column spacing, row spacing, slice step) mm; ``origin`` the IPP of the first slice;
    ``direction`` the 3x3 matrix, row-major, whose columns are the row cosine, column cosine and normal.
    """

    series_uid: str
    patient_id: str
    paths: tuple[str, ...]
    rels: tuple[str, ...]
    slopes: tuple[float, ...]
    intercepts: tuple[float, ...]
    transfer_syntaxes: tuple[str, ...]
    rows: int
    cols: int
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    file_issues: tuple[FileIssue, ...] = field(default_factory=tuple)

    @property
    def n_slices(self) -> int:
        """Number of slices in the volume."""
        return len(self.paths)

    def note(self) -> str:
        """Plain-language note of what was dropped (empty when nothing was), for the series table."""
        counts = Counter(issue.reason_code for issue in self.file_issues)
        words = {
            "localizer": "localizer image",
            "duplicate": "duplicate instance",
            "unreadable": "unreadable file",
            "not_image": "non-image file",
        }
        parts = [f"dropped {n} {words[code]}{'s' if n > 1 else ''}" for code, n in sorted(counts.items())]
        return "; ".join(parts)


class SeriesDecodeError(ValueError):
    """The pixel data of a file in a planned series could not be decoded into the expected slice."""


def make_case_id(patient_id: str, mode: str = "pseudonym") -> str:
    """The case id of a patient (CONTRACTS.md).

    Args:
        patient_id: the DICOM PatientID (may be empty).
        mode: ``pseudonym`` gives ``"case-"`` + the first 10 hex digits of sha256(PatientID); ``patient-id``
            keeps the PatientID (for public anonymised sets such as LIDC-IDRI-0001), with characters that are
            unsafe in file names replaced by ``-``.

    Returns:
        The case id, safe to use in file names.
    """
    if mode == "pseudonym":
        return "case-" + hashlib.sha256(patient_id.encode("utf-8")).hexdigest()[:10]
    if mode == "patient-id":
        safe = _SAFE_ID.sub("-", patient_id.strip()).strip("-.")
        return safe or "no-patient-id"
    raise ValueError(f"case id mode must be one of {CASE_ID_MODES}, got {mode!r}")


def make_series_id(series_uid: str) -> str:
    """The series id: first 8 hex digits of sha1(SeriesInstanceUID)."""
    return hashlib.sha1(series_uid.encode("utf-8")).hexdigest()[:8]


def _floats(value: object, n: int) -> tuple[float, ...] | None:
    """``value`` as a tuple of ``n`` finite floats, or None when absent or malformed."""
    if value is None:
        return None
    try:
        items = tuple(
            float(v)
            for v in (value if isinstance(value, Sequence) and not isinstance(value, str) else [value])
        )
    except (TypeError, ValueError):
        return None
    if len(items) != n or not all(math.isfinite(v) for v in items):
        return None
    return items


def _number(value: object, default: float) -> float:
    """A DS/IS value as float, ``default`` when absent or malformed (e.g. a missing RescaleSlope is 1)."""
    if value is None or value == "":
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def _int(value: object) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def read_header(path: str, rel: str) -> HeaderInfo | FileIssue:
    """Read one file's header and decide whether it can be a CT slice.

    Only the tags in ``_HEADER_TAGS`` are parsed and pixel data is not read. The file position where
    pydicom stopped tells whether pixel data follows, and (for uncompressed transfer syntaxes) whether all of
    it is present, so truncated files are caught here.

    Args:
        path: the file's path.
        rel: the path relative to the input folder (used in reasons and quarantine rows).

    Returns:
        A :class:`HeaderInfo` for a file with pixel data, else a file-level :class:`FileIssue`
        (``not_image`` for non-DICOM files and non-image objects, ``unreadable`` for broken or truncated ones).
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fp:
            is_dicom = fp.read(132)[128:132] == b"DICM"
            fp.seek(0)
            try:
                # pydicom's value warnings could quote a tag value; none may reach a log
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(
                        fp, stop_before_pixels=True, specific_tags=_HEADER_TAGS, force=not is_dicom
                    )
                pixel_offset = fp.tell()
            except Exception as exc:  # pydicom raises many types on garbage; the file is rejected either way
                if is_dicom:
                    return FileIssue(
                        "file",
                        "unreadable",
                        f"The DICOM header could not be parsed ({type(exc).__name__}).",
                        rel,
                    )
                return FileIssue("file", "not_image", "The file is not a DICOM file.", rel)
    except OSError as exc:
        return FileIssue("file", "unreadable", f"The file could not be opened ({type(exc).__name__}).", rel)

    series_uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    patient_id = str(ds.get("PatientID", "") or "").strip()
    if not is_dicom and not series_uid and "SOPClassUID" not in ds:
        return FileIssue("file", "not_image", "The file is not a DICOM file.", rel)

    def issue(code: str, reason: str) -> FileIssue:
        return FileIssue("file", code, reason, rel, series_uid, patient_id)

    rows, cols = _int(ds.get("Rows")), _int(ds.get("Columns"))
    sop_class = UID(
        str(ds.get("SOPClassUID", "") or getattr(ds.file_meta, "MediaStorageSOPClassUID", "") or "")
    )
    if pixel_offset >= size:  # pydicom read to the end without meeting pixel data
        if (rows and cols) or "Image Storage" in sop_class.name:
            return issue(
                "unreadable", "The file has image attributes but no pixel data; it is probably truncated."
            )
        return issue(
            "not_image",
            "The file is a DICOM object without pixel data (for example a structure "
            "set, report or DICOMDIR).",
        )
    if not series_uid:
        return issue(
            "unreadable", "The file has no SeriesInstanceUID, so it cannot be grouped into a series."
        )
    if not (rows and cols):
        return issue("unreadable", "The file has pixel data but no valid Rows/Columns.")
    n_frames = _int(ds.get("NumberOfFrames")) or 1
    samples = _int(ds.get("SamplesPerPixel")) or 1
    bits = _int(ds.get("BitsAllocated")) or 16
    transfer_syntax = UID(str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "1.2.840.10008.1.2"))
    if not transfer_syntax.is_compressed and bits % 8 == 0:
        # Uncompressed pixel data has a known length; the element header itself is 8 or 12 bytes.
        expected = rows * cols * (bits // 8) * samples * n_frames
        if size - pixel_offset < expected + 8:
            return issue(
                "unreadable",
                f"The pixel data is truncated ({size - pixel_offset} bytes left in the "
                f"file, {expected} expected).",
            )
    return HeaderInfo(
        path=path,
        rel=rel,
        series_uid=series_uid,
        patient_id=patient_id,
        modality=str(ds.get("Modality", "") or "").strip().upper(),
        sop_uid=str(ds.get("SOPInstanceUID", "") or ""),
        transfer_syntax=str(transfer_syntax),
        image_type=tuple(str(v).strip().upper() for v in (ds.get("ImageType") or [])),
        iop=_floats(ds.get("ImageOrientationPatient"), 6),
        ipp=_floats(ds.get("ImagePositionPatient"), 3),
        pixel_spacing=_floats(ds.get("PixelSpacing"), 2),
        rows=rows,
        cols=cols,
        n_frames=n_frames,
        slope=_number(ds.get("RescaleSlope"), 1.0),
        intercept=_number(ds.get("RescaleIntercept"), 0.0),
        instance_number=_int(ds.get("InstanceNumber")),
    )


def _cluster(values: list[tuple[float, ...]], tol: float) -> list[int]:
    """Label each vector with a cluster index: a vector joins the first cluster whose seed is within ``tol``
    in every component. Clusters are numbered in order of first appearance."""
    seeds: list[np.ndarray] = []
    labels: list[int] = []
    for value in values:
        v = np.asarray(value)
        for k, seed in enumerate(seeds):
            if np.max(np.abs(v - seed)) <= tol:
                labels.append(k)
                break
        else:
            seeds.append(v)
            labels.append(len(seeds) - 1)
    return labels


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def plan_series(
    headers: Sequence[HeaderInfo], checks: SeriesChecks | None = None
) -> tuple[SeriesPlan | None, tuple[FileIssue, ...]]:
    """Validate one series and put its slices in order.

    Args:
        headers: the readable image files of one SeriesInstanceUID (any order).
        checks: thresholds; default :class:`SeriesChecks()`.

    Returns:
        ``(plan, issues)``: ``issues`` holds the file-level rows of dropped files (localizers, duplicates,
        files without geometry). When the files cannot form one correct volume ``plan`` is None and ``issues``
        ends with one series-level row whose reason says why; otherwise ``plan.file_issues == issues``.
    """
    checks = checks or SeriesChecks()
    if not headers:
        raise ValueError("plan_series needs at least one file")
    # Deterministic regardless of file names: order by SOP instance first, path only as a tie-break.
    files = sorted(headers, key=lambda h: (h.sop_uid, h.rel))
    series_uid, patient_id = files[0].series_uid, files[0].patient_id
    dropped: list[FileIssue] = []

    def drop(h: HeaderInfo, code: str, reason: str) -> None:
        dropped.append(FileIssue("file", code, reason, h.rel, series_uid, patient_id))

    def reject(code: str, reason: str) -> tuple[None, tuple[FileIssue, ...]]:
        row = FileIssue("series", code, reason, "", series_uid, patient_id)
        return None, (*sorted(dropped, key=lambda d: d.rel), row)

    modality = Counter(h.modality for h in files).most_common(1)[0][0]
    if modality != "CT":
        return reject("not_ct", f"The series modality is {modality or 'missing'}, not CT.")

    kept: list[HeaderInfo] = []
    for h in files:
        if h.n_frames > 1:
            drop(
                h,
                "not_image",
                f"The file is a multi-frame image ({h.n_frames} frames, e.g. Enhanced CT), "
                "which is not stacked as slices.",
            )
        elif h.iop is None or h.ipp is None or h.pixel_spacing is None:
            drop(
                h,
                "not_image",
                "The file lacks ImagePositionPatient, ImageOrientationPatient or "
                "PixelSpacing, so it is not a slice of a volume (e.g. a screen capture).",
            )
        elif "LOCALIZER" in h.image_type:
            drop(h, "localizer", "The image is a localizer (ImageType contains LOCALIZER).")
        else:
            kept.append(h)
    if not kept:
        return reject("too_few_slices", "The series has no CT slices with position and orientation.")

    # Orientation: the majority orientation is the volume; a few odd ones are scouts, many mean mixed series.
    labels = _cluster([h.iop for h in kept], checks.orientation_tol)
    counts = Counter(labels)
    major, n_major = counts.most_common(1)[0]
    n_minor = len(kept) - n_major
    if n_minor:
        if n_minor >= n_major or (n_minor > 3 and n_minor > checks.localizer_max_fraction * len(kept)):
            return reject(
                "mixed_orientation",
                f"The slices have {len(counts)} different orientations "
                f"({n_major} and {n_minor} other slices).",
            )
        for h, label in zip(kept, labels, strict=True):
            if label != major:
                drop(
                    h,
                    "localizer",
                    "The image's orientation differs from the rest of the series, so it is "
                    "treated as a localizer.",
                )
        kept = [h for h, label in zip(kept, labels, strict=True) if label == major]

    spacings = np.array([h.pixel_spacing for h in kept])
    if np.ptp(spacings, axis=0).max() > checks.pixel_spacing_tol_mm:
        return reject(
            "mixed_pixel_spacing",
            f"The slices have different pixel spacings (row spacing "
            f"{_fmt(spacings[:, 0].min())} to {_fmt(spacings[:, 0].max())} mm, column spacing "
            f"{_fmt(spacings[:, 1].min())} to {_fmt(spacings[:, 1].max())} mm).",
        )
    shapes = Counter((h.rows, h.cols) for h in kept)
    if len(shapes) > 1:
        listed = ", ".join(f"{r}x{c}" for r, c in sorted(shapes))
        return reject("mixed_shape", f"The slices have different sizes (rows x columns: {listed}).")

    iop = np.mean([h.iop for h in kept], axis=0)
    row_cos, col_cos = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row_cos, col_cos)
    normal /= np.linalg.norm(normal)
    ipp = np.array([h.ipp for h in kept])
    position = ipp @ normal

    # Sort along the normal; ties (same position) keep the lowest InstanceNumber, then SOP UID.
    order = sorted(
        range(len(kept)),
        key=lambda i: (position[i], kept[i].instance_number or 0, kept[i].sop_uid, kept[i].rel),
    )
    unique: list[int] = []
    for i in order:
        if unique and position[i] - position[unique[-1]] <= checks.spacing_abs_tol_mm:
            same = (
                "the same SOP instance stored twice"
                if kept[i].sop_uid == kept[unique[-1]].sop_uid
                else ("another instance at the same position")
            )
            drop(kept[i], "duplicate", f"The slice duplicates {kept[unique[-1]].rel} ({same}).")
        else:
            unique.append(i)
    kept = [kept[i] for i in unique]
    position = position[unique]
    ipp = ipp[unique]

    if len(kept) < checks.min_slices:
        return reject(
            "too_few_slices",
            f"The series has {len(kept)} usable slices; at least "
            f"{checks.min_slices} are needed for a volume.",
        )

    span = ipp[-1] - ipp[0]
    along = float(span @ normal)
    across = float(np.linalg.norm(span - along * normal))
    tilt = math.degrees(math.atan2(across, along))
    if across > checks.spacing_abs_tol_mm and tilt > checks.tilt_tol_deg:
        return reject(
            "gantry_tilt",
            f"The slice positions drift {_fmt(across)} mm sideways over "
            f"{_fmt(along)} mm, a gantry tilt of about {tilt:.1f} degrees.",
        )

    steps = np.diff(position)
    median = float(np.median(steps))
    tol = max(checks.spacing_rel_tol * median, checks.spacing_abs_tol_mm)
    bad = np.flatnonzero(np.abs(steps - median) > tol)
    if bad.size:
        multiples = np.rint(steps[bad] / median)
        is_gap = (multiples >= 2) & (np.abs(steps[bad] - multiples * median) <= tol * multiples)
        if is_gap.all():
            missing = int((multiples - 1).sum())
            first = int(bad[0])
            return reject(
                "missing_slices",
                f"{missing} slice{'s are' if missing > 1 else ' is'} missing: "
                f"{bad.size} gap{'s' if bad.size > 1 else ''} in the slice positions (the first of "
                f"{_fmt(steps[first])} mm after position {_fmt(position[first])} mm) where the step "
                f"is {_fmt(median)} mm.",
            )
        return reject(
            "nonuniform_spacing",
            f"The slice steps range from {_fmt(steps.min())} to "
            f"{_fmt(steps.max())} mm around a median of {_fmt(median)} mm, more than the "
            f"{_fmt(tol)} mm tolerance.",
        )

    direction = np.column_stack([row_cos, col_cos, normal])
    pixel_spacing = np.median(spacings, axis=0)
    issues = tuple(sorted(dropped, key=lambda d: d.rel))
    plan = SeriesPlan(
        series_uid=series_uid,
        patient_id=patient_id,
        paths=tuple(h.path for h in kept),
        rels=tuple(h.rel for h in kept),
        slopes=tuple(h.slope for h in kept),
        intercepts=tuple(h.intercept for h in kept),
        transfer_syntaxes=tuple(h.transfer_syntax for h in kept),
        rows=kept[0].rows,
        cols=kept[0].cols,
        # PixelSpacing is (row spacing, column spacing); SimpleITK wants x (columns) first
        spacing=(float(pixel_spacing[1]), float(pixel_spacing[0]), median),
        origin=tuple(float(v) for v in ipp[0]),
        direction=tuple(float(v) for v in direction.ravel()),
        file_issues=issues,
    )
    return plan, issues


def stack_series(plan: SeriesPlan) -> np.ndarray:
    """Read each planned file once and stack the slices into an int16 HU volume.

    HU = stored value * RescaleSlope + RescaleIntercept of that slice, rounded and clipped to the int16 range.
    Compressed transfer syntaxes decode through pydicom's pixel-data handlers (RLE natively; JPEG, JPEG-LS
    and JPEG 2000 through pylibjpeg).

    Args:
        plan: a validated series from :func:`plan_series`.

    Returns:
        (z, y, x) int16 array in the plan's slice order.

    Raises:
        SeriesDecodeError: a file's pixel data could not be decoded or has the wrong size; the message names
            the file (relative path) and the transfer syntax.
    """
    info = np.iinfo(np.int16)
    volume = np.empty((plan.n_slices, plan.rows, plan.cols), dtype=np.int16)
    for k, (path, rel) in enumerate(zip(plan.paths, plan.rels, strict=True)):
        syntax = UID(plan.transfer_syntaxes[k])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stored = pydicom.dcmread(path, force=True, specific_tags=_PIXEL_TAGS).pixel_array
        except Exception as exc:  # any decoder failure makes the series unusable, with the reason kept
            raise SeriesDecodeError(
                f"The pixel data of {rel} ({syntax.name}) could not be decoded: {type(exc).__name__}: {exc}"
            ) from exc
        if stored.shape != (plan.rows, plan.cols):
            raise SeriesDecodeError(
                f"The pixel data of {rel} ({syntax.name}) decoded to shape {stored.shape}, "
                f"not {plan.rows}x{plan.cols}."
            )
        slope, intercept = plan.slopes[k], plan.intercepts[k]
        if slope == 1.0 and float(intercept).is_integer():
            hu = stored.astype(np.int32) + int(intercept)  # exact integer path, the common case
        else:
            hu = np.rint(stored.astype(np.float64) * slope + intercept)
        np.clip(hu, info.min, info.max, out=hu)
        volume[k] = hu
    return volume
