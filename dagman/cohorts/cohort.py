"""A generic labelled cohort (Task 3, DESIGN 2.5): cohort CSV -> 2 mm tumour crops in the LIDC crops layout.

Institutional data arrive as a CSV with one row per case:

- ``case_id``: the case's pseudonymous id (it names the output files; letters, digits, ``.``, ``_``, ``-``);
- ``image``: a DICOM folder (any tree; the CT series with the most slices is used) or a NIfTI file, relative
  to the CSV's folder (absolute paths work too);
- ``label``: 0 or 1;
- optional ``patient_id`` (default: the case id), the group that splits keep whole;
- the tumour location, one of: ``mask`` (a NIfTI label image, any value > 0 is tumour; its centroid is the
  crop centre) or ``center_x``, ``center_y``, ``center_z`` (mm, DICOM patient coordinates, LPS).

:func:`build_cohort_crops` converts DICOM with the project's converter (quarantine rules included), resamples
to ``spacing`` mm (linear for the CT, nearest for the mask), cuts a ``crop_size``^3 cube around the tumour
and writes ``images/<case_id>.nii.gz`` (and ``masks/<case_id>.nii.gz``) plus ``crops.csv`` with the columns
``dagman finetune`` and ``dagman splits`` read for LIDC (:data:`COHORT_CROP_COLUMNS`). A case that cannot be
cropped is kept in crops.csv with ``status`` "skipped" and a plain-language ``reason``; it never stops the
others. Only the case id, label and geometry are written: no DICOM header value reaches the outputs.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dagman.cohorts.lidc import crop_cube, map_scans, write_csv
from dagman.io.atomic import write_image_atomic

__all__ = [
    "COHORT_COLUMNS",
    "COHORT_CROP_COLUMNS",
    "read_cohort",
    "tumour_centre",
    "build_cohort_crops",
]

COHORT_COLUMNS = ["case_id", "image", "label"]
_CENTRE = ["center_x", "center_y", "center_z"]
COHORT_CROP_COLUMNS = [
    "key",
    "patient_id",
    "label",
    "image",
    "mask",
    "mask_voxels",
    "centre_source",
    "center_x",
    "center_y",
    "center_z",
    "status",
    "reason",
]
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == ""


def read_cohort(path: str | Path) -> pd.DataFrame:
    """Read and check a cohort CSV (module docstring); returns it with ``patient_id`` filled.

    Raises:
        FileNotFoundError: the CSV is missing.
        ValueError: a required column is missing, a case id repeats or is unsafe as a file name, a label is not
            0/1, or a centre is given only in part.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cohort CSV {path} is missing")
    cohort = pd.read_csv(path, dtype={"case_id": str, "patient_id": str, "image": str, "mask": str})
    missing = [c for c in COHORT_COLUMNS if c not in cohort.columns]
    if missing:
        raise ValueError(f"cohort CSV {path} lacks the columns {missing} (needs case_id, image, label)")
    bad_ids = [c for c in cohort["case_id"].astype(str) if not _SAFE_ID.match(c)]
    if bad_ids:
        raise ValueError(
            f"cohort CSV {path}: case ids name output files and may hold only letters, digits, '.', '_' and "
            f"'-', got {bad_ids[:3]}"
        )
    if cohort["case_id"].duplicated().any():
        raise ValueError(
            f"cohort CSV {path} repeats case ids, e.g. {cohort.loc[cohort['case_id'].duplicated(), 'case_id'].iloc[0]}"
        )
    labels = pd.to_numeric(cohort["label"], errors="coerce")
    if not labels.isin([0, 1]).all():
        raise ValueError(
            f"cohort CSV {path}: every label must be 0 or 1, got {sorted(set(cohort['label'].astype(str)))[:5]}"
        )
    cohort["label"] = labels.astype(int)
    if "patient_id" not in cohort.columns:
        cohort["patient_id"] = cohort["case_id"]
    cohort["patient_id"] = cohort["patient_id"].where(cohort["patient_id"].notna(), cohort["case_id"])
    for column in ["mask", *_CENTRE]:
        if column not in cohort.columns:
            cohort[column] = None
    partial = cohort[_CENTRE].notna().any(axis=1) & ~cohort[_CENTRE].notna().all(axis=1)
    if partial.any():
        raise ValueError(
            f"cohort CSV {path}: case {cohort.loc[partial, 'case_id'].iloc[0]} gives only part of "
            "center_x/center_y/center_z"
        )
    return cohort


def tumour_centre(mask: Any) -> tuple[float, float, float]:
    """Physical centroid (x, y, z mm) of the voxels > 0 of a SimpleITK label image."""
    import SimpleITK as sitk

    array = sitk.GetArrayViewFromImage(mask)
    zyx = np.argwhere(array > 0)
    if zyx.size == 0:
        raise ValueError("the tumour mask is empty")
    centre = zyx.mean(axis=0)[::-1]
    return tuple(float(v) for v in mask.TransformContinuousIndexToPhysicalPoint(centre.tolist()))  # type: ignore[return-value]


def _read_ct(source: Path, work_dir: Path) -> Any:
    """A CT as a SimpleITK image: a NIfTI read directly, a DICOM folder through ``convert_tree``."""
    import SimpleITK as sitk

    from dagman.io.convert import convert_tree

    if source.is_file():
        return sitk.ReadImage(str(source))
    if not source.is_dir():
        raise FileNotFoundError(f"image {source} does not exist")
    convert_tree(source, work_dir, workers=1, progress=False)
    series = pd.read_csv(work_dir / "series.csv")
    if series.empty:
        quarantine = pd.read_csv(work_dir / "quarantine.csv")
        reasons = "; ".join(quarantine["reason"].astype(str).head(3)) or "no DICOM CT files found"
        raise ValueError(f"no CT series in {source.name} could be converted ({reasons})")
    best = series.sort_values("n_slices", ascending=False, kind="stable").iloc[0]
    return sitk.ReadImage(str(work_dir / best["image"]))


@dataclass(frozen=True)
class _CropTask:
    case: dict[str, Any]
    cohort_dir: Path
    out_dir: Path
    spacing: float
    crop_size: int


def _crop_case(task: _CropTask) -> dict[str, Any]:
    """Pool worker: one case's CT (and mask) resampled and cropped around the tumour; the crops.csv row."""
    import SimpleITK as sitk

    from dagman.io.resample import IMAGE_PAD_HU, resample_to_spacing

    case = task.case
    key = str(case["case_id"])
    row: dict[str, Any] = dict.fromkeys(COHORT_CROP_COLUMNS)
    row.update(key=key, patient_id=str(case["patient_id"]), label=int(case["label"]), status="skipped")
    try:
        with tempfile.TemporaryDirectory(prefix=".convert-", dir=task.out_dir) as work:
            image = _read_ct(task.cohort_dir / str(case["image"]), Path(work))
        mask = None
        if not _blank(case.get("mask")):
            mask_path = task.cohort_dir / str(case["mask"])
            if not mask_path.is_file():
                raise FileNotFoundError(f"mask {case['mask']} does not exist")
            mask = sitk.Cast(sitk.ReadImage(str(mask_path)) > 0, sitk.sitkUInt8)
            centre = tumour_centre(mask)
            row["centre_source"] = "mask"
        elif all(not _blank(case.get(c)) for c in _CENTRE):
            centre = tuple(float(case[c]) for c in _CENTRE)
            row["centre_source"] = "given"
        else:
            raise ValueError("no tumour location: give a mask or center_x/center_y/center_z")
        image_2mm = resample_to_spacing(image, task.spacing, "linear")
        cube = crop_cube(image_2mm, centre, task.crop_size, IMAGE_PAD_HU)
        image_rel = Path("images", f"{key}.nii.gz")
        write_image_atomic(task.out_dir / image_rel, cube)
        row["image"] = image_rel.as_posix()
        if mask is not None:
            mask_cube = crop_cube(
                resample_to_spacing(mask, task.spacing, "nearest"), centre, task.crop_size, 0
            )
            mask_rel = Path("masks", f"{key}.nii.gz")
            write_image_atomic(task.out_dir / mask_rel, mask_cube)
            row["mask"] = mask_rel.as_posix()
            row["mask_voxels"] = int(sitk.GetArrayViewFromImage(mask_cube).sum())
        row["center_x"], row["center_y"], row["center_z"] = (round(float(c), 4) for c in centre)
        row.update(status="cropped", reason="")
    except (OSError, RuntimeError, ValueError) as error:
        row["reason"] = str(error).replace("\n", " ")
    return row


def build_cohort_crops(
    cohort_csv: str | Path,
    out_dir: str | Path,
    *,
    spacing: float = 2.0,
    crop_size: int = 32,
    workers: int | None = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Crop every case of a cohort CSV around its tumour and write ``out_dir/crops.csv`` (module docstring).

    Args:
        cohort_csv: the cohort CSV.
        out_dir: output folder (``images/``, ``masks/``, ``crops.csv``).
        spacing: isotropic spacing of the crops in mm.
        crop_size: crop edge in voxels.
        workers: processes (None = all cores).
        progress: tqdm bar on stderr.

    Returns:
        The crops table (one row per case; ``status`` "cropped" or "skipped" with a reason).
    """
    if crop_size < 1 or spacing <= 0:
        raise ValueError(f"need a positive crop size and spacing, got {crop_size} and {spacing}")
    cohort_csv = Path(cohort_csv)
    cohort = read_cohort(cohort_csv)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = cohort.astype(object).where(cohort.notna(), None).to_dict("records")
    tasks = [
        _CropTask(case, cohort_csv.parent.resolve(), out.resolve(), float(spacing), int(crop_size))
        for case in records
    ]
    rows = map_scans(_crop_case, tasks, workers, "cropping cohort cases", progress)
    crops = pd.DataFrame(rows, columns=COHORT_CROP_COLUMNS)
    crops["mask_voxels"] = crops["mask_voxels"].astype("Int64")
    write_csv(crops, out / "crops.csv")
    return crops
