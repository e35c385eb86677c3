"""RTSTRUCT tumour contours to masks on the CT grid, through rt-utils (DESIGN 2.5).

- :func:`scan_dicom_tree` reads the headers of a DICOM folder tree once and returns the CT series (their files
  and frame of reference) and every RTSTRUCT (the series, frames and images it references, its ROI names).
- :func:`match_structure_sets` pairs each CT series with the RTSTRUCTs that contour it: by the referenced
  SeriesInstanceUID, else by referenced image SOP UIDs, else by a FrameOfReferenceUID held by one CT series.
- :func:`match_roi_name` picks the tumour ROI among the ROI names by configurable variants (case-insensitive,
  in priority order; default :data:`DEFAULT_GTV_NAMES`).
- :func:`rasterise_roi` rasterises one ROI with rt-utils and returns it as a SimpleITK mask with the geometry
  of the contoured CT slices; :func:`mask_on_grid` puts it on the converted NIfTI's grid.

rt-utils returns masks as (row, column, slice) with slices sorted by position along the slice normal, and
allocates slices as (Columns, Rows) and applies PixelSpacing[0] to the row direction: both are right only for
square slices with square pixels (every clinical CT), so other geometries are refused with a reason instead
of being rasterised wrongly. Problems with one case raise :class:`GtvError`, carrying a reason code and one
plain sentence, so a cohort builder can report the case and go on.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_GTV_NAMES",
    "RTSTRUCT_SOP_CLASS",
    "GtvError",
    "CtSeries",
    "StructureSet",
    "scan_dicom_tree",
    "match_structure_sets",
    "match_roi_name",
    "rasterise_roi",
    "mask_on_grid",
]

#: Tumour ROI names tried in this order (case-insensitive): NSCLC-Radiomics names its primary GTV "GTV-1".
DEFAULT_GTV_NAMES: tuple[str, ...] = ("GTV-1", "GTV1", "GTV-Primary", "gtv-1")
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"

# tags read from every file in the discovery pass (pixel data is never read there)
_HEADER_TAGS = [
    "Modality",
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "ImageType",
]


class GtvError(ValueError):
    """A case whose tumour mask cannot be made; ``code`` is a short reason code, the message one sentence."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class CtSeries:
    """One CT series found in the tree: its files (absolute paths) and identifiers."""

    series_uid: str
    frame_of_reference_uid: str
    paths: list[str] = field(default_factory=list)
    sop_uids: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class StructureSet:
    """One RTSTRUCT file: where it is, whose it is (PatientID, for the case id) and what it references."""

    path: str
    sop_uid: str
    patient_id: str
    series_uids: tuple[str, ...]
    frame_of_reference_uids: tuple[str, ...]
    contour_sop_uids: frozenset[str]
    roi_names: tuple[str, ...]


def _structure_set(path: str, ds: Any) -> StructureSet:
    """Collect references and ROI names of an RTSTRUCT dataset (all of them optional in the standard)."""
    series, frames, sops = [], [], set()
    for frame in getattr(ds, "ReferencedFrameOfReferenceSequence", []) or []:
        if getattr(frame, "FrameOfReferenceUID", None):
            frames.append(str(frame.FrameOfReferenceUID))
        for study in getattr(frame, "RTReferencedStudySequence", []) or []:
            for ref in getattr(study, "RTReferencedSeriesSequence", []) or []:
                if getattr(ref, "SeriesInstanceUID", None):
                    series.append(str(ref.SeriesInstanceUID))
                for image in getattr(ref, "ContourImageSequence", []) or []:
                    sops.add(str(getattr(image, "ReferencedSOPInstanceUID", "")))
    for roi in getattr(ds, "ROIContourSequence", []) or []:
        for contour in getattr(roi, "ContourSequence", []) or []:
            for image in getattr(contour, "ContourImageSequence", []) or []:
                sops.add(str(getattr(image, "ReferencedSOPInstanceUID", "")))
    names = tuple(
        str(getattr(roi, "ROIName", "")) for roi in getattr(ds, "StructureSetROISequence", []) or []
    )
    return StructureSet(
        path=path,
        sop_uid=str(getattr(ds, "SOPInstanceUID", "")),
        patient_id=str(getattr(ds, "PatientID", "")),
        series_uids=tuple(dict.fromkeys(series)),
        frame_of_reference_uids=tuple(dict.fromkeys(frames)),
        contour_sop_uids=frozenset(sops - {""}),
        roi_names=names,
    )


def scan_dicom_tree(
    root: str | os.PathLike[str], progress: bool = True
) -> tuple[dict[str, CtSeries], list[StructureSet]]:
    """Read the headers of every file under ``root``; return the CT series and the RTSTRUCTs.

    Files that are not DICOM are skipped silently (the converter reports them). Only RTSTRUCT files are read
    in full; for every other file a few header tags are read and pixel data never is.

    Args:
        root: any DICOM folder tree (TCIA layout or flat).
        progress: show a tqdm bar on stderr.

    Returns:
        ``(series, structure_sets)``: CT series by SeriesInstanceUID, and the RTSTRUCTs in path order.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from tqdm import tqdm

    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"DICOM root {root} does not exist or is not a folder")
    paths = sorted(str(p) for p in base.rglob("*") if p.is_file())
    series: dict[str, CtSeries] = {}
    structure_sets: list[StructureSet] = []
    for path in tqdm(paths, desc="reading headers", unit="file", disable=not progress, dynamic_ncols=True):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        modality = str(getattr(ds, "Modality", ""))
        if modality == "RTSTRUCT" or str(getattr(ds, "SOPClassUID", "")) == RTSTRUCT_SOP_CLASS:
            try:
                structure_sets.append(_structure_set(path, pydicom.dcmread(path, stop_before_pixels=True)))
            except (InvalidDicomError, OSError, ValueError, EOFError):
                continue
        elif modality == "CT" and getattr(ds, "SeriesInstanceUID", None):
            uid = str(ds.SeriesInstanceUID)
            entry = series.setdefault(uid, CtSeries(uid, str(getattr(ds, "FrameOfReferenceUID", ""))))
            entry.paths.append(path)
            entry.sop_uids.add(str(getattr(ds, "SOPInstanceUID", "")))
    return series, structure_sets


def match_structure_sets(
    series: dict[str, CtSeries], structure_sets: Iterable[StructureSet]
) -> dict[str, list[StructureSet]]:
    """The RTSTRUCTs that contour each CT series.

    An RTSTRUCT belongs to the series it names in RTReferencedSeriesSequence; failing that, to the series
    holding the images its contours reference; failing that, to the one CT series with its
    FrameOfReferenceUID (a frame shared by several series is ambiguous and matches none).

    Returns:
        ``{series_uid: [structure sets]}`` for every series in ``series`` (empty lists included).
    """
    matched: dict[str, list[StructureSet]] = {uid: [] for uid in series}
    by_frame: dict[str, list[str]] = defaultdict(list)
    for uid, entry in series.items():
        if entry.frame_of_reference_uid:
            by_frame[entry.frame_of_reference_uid].append(uid)
    for rts in structure_sets:
        targets = [uid for uid in rts.series_uids if uid in series]
        if not targets and rts.contour_sop_uids:
            targets = [uid for uid, entry in series.items() if entry.sop_uids & rts.contour_sop_uids]
        if not targets:
            for frame in rts.frame_of_reference_uids:
                if len(by_frame.get(frame, [])) == 1:
                    targets.append(by_frame[frame][0])
        for uid in dict.fromkeys(targets):
            matched[uid].append(rts)
    return matched


def match_roi_name(roi_names: Sequence[str], variants: Sequence[str] = DEFAULT_GTV_NAMES) -> str | None:
    """The first ROI name equal to a variant (case- and surrounding-space-insensitive), variants in order.

    Returns:
        The ROI name exactly as the RTSTRUCT spells it, or None when no variant is present.
    """
    if not variants:
        raise ValueError("need at least one tumour ROI name variant")
    by_key: dict[str, str] = {}
    for name in roi_names:
        by_key.setdefault(name.strip().casefold(), name)
    for variant in variants:
        hit = by_key.get(variant.strip().casefold())
        if hit is not None:
            return hit
    return None


def _slices(paths: Sequence[str]) -> list[Any]:
    """Headers of the series' axial image slices as rt-utils wants them: localizers and slices of another
    orientation dropped, one slice per position, sorted by position along the slice normal."""
    import pydicom
    from rt_utils import image_helper

    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    headers = [
        h
        for h in headers
        if getattr(h, "ImageOrientationPatient", None) is not None
        and getattr(h, "ImagePositionPatient", None) is not None
        and "LOCALIZER" not in [str(t).upper() for t in (getattr(h, "ImageType", None) or [])]
    ]
    if not headers:
        raise GtvError(
            "unsupported_geometry", "the CT series has no image slice with position and orientation"
        )
    orientation = Counter(tuple(round(float(v), 4) for v in h.ImageOrientationPatient) for h in headers)
    majority = orientation.most_common(1)[0][0]
    headers = [h for h in headers if tuple(round(float(v), 4) for v in h.ImageOrientationPatient) == majority]
    headers.sort(key=lambda h: (float(image_helper.get_slice_position(h)), str(h.SOPInstanceUID)))
    unique, last = [], None
    for h in headers:
        position = round(float(image_helper.get_slice_position(h)), 3)
        if position != last:
            unique.append(h)
            last = position
    return unique


def rasterise_roi(ct_paths: Sequence[str], rtstruct_path: str, roi_name: str) -> Any:
    """Rasterise one RTSTRUCT ROI onto its CT slices with rt-utils.

    Args:
        ct_paths: the CT series' files.
        rtstruct_path: the RTSTRUCT file.
        roi_name: the ROI's exact name (see :func:`match_roi_name`).

    Returns:
        A uint8 SimpleITK image (1 inside the ROI) whose grid is the CT slices' (origin at the first slice
        along the normal, direction columns = row cosine, column cosine, normal).

    Raises:
        GtvError: ``unsupported_geometry`` (non-square slices or pixels, which rt-utils rasterises wrongly),
            ``rasterise_failed`` (rt-utils could not read the contours) or ``empty_gtv`` (no voxel inside).
    """
    import pydicom
    import SimpleITK as sitk
    from rt_utils import image_helper
    from rt_utils.rtstruct import RTStruct

    slices = _slices(ct_paths)
    first = slices[0]
    rows, cols = int(first.Rows), int(first.Columns)
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    if rows != cols or not np.isclose(row_spacing, col_spacing, rtol=1e-4):
        raise GtvError(
            "unsupported_geometry",
            f"rt-utils rasterises only square slices with square pixels; this series has {rows} x {cols} "
            f"pixels of {row_spacing:g} x {col_spacing:g} mm",
        )
    try:
        ds = pydicom.dcmread(rtstruct_path)
        # rt-utils' own loader would decode every file under a folder; hand it the clean, sorted headers
        mask = RTStruct(slices, ds).get_roi_mask_by_name(roi_name)
    except GtvError:
        raise
    except Exception as exc:  # rt-utils raises bare Exceptions and AttributeErrors on incomplete contour sets
        raise GtvError(
            "rasterise_failed", f"rt-utils could not rasterise ROI '{roi_name}': {type(exc).__name__}: {exc}"
        ) from exc
    # rt-utils: (row, column, slice) with slices in the order of ``slices``; the project: (z, y, x)
    array = np.ascontiguousarray(np.transpose(mask, (2, 0, 1))).astype(np.uint8)
    if not array.any():
        raise GtvError("empty_gtv", f"ROI '{roi_name}' has no contour on the images of this CT series")
    row_dir, col_dir, normal = image_helper.get_slice_directions(first)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((col_spacing, row_spacing, float(image_helper.get_spacing_between_slices(slices))))
    image.SetOrigin(tuple(float(v) for v in first.ImagePositionPatient))
    image.SetDirection(tuple(float(v) for v in np.stack([row_dir, col_dir, normal], axis=1).ravel()))
    return image


def mask_on_grid(mask: Any, reference: Any) -> Any:
    """Put ``mask`` on ``reference``'s voxel grid (nearest neighbour, physical-space alignment).

    Where both grids coincide (a mask from :func:`rasterise_roi` and the converter's NIfTI of the same series)
    this is an exact copy whatever the slice order of either; elsewhere it is nearest-neighbour resampling.
    """
    import SimpleITK as sitk

    return sitk.Resample(mask, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
