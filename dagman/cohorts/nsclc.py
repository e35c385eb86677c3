"""The NSCLC-style cohort (CT + RTSTRUCT) as 2 mm images with tumour masks, for Task 2 training (DESIGN 2.5).

:func:`build_nsclc_cohort` is the typed entry point behind ``dagman nsclc``:

1. converts every CT series under the DICOM root with :func:`dagman.io.convert.convert_tree`
   (``OUT/converted/``: NIfTI, series.csv, quarantine.csv; RTSTRUCT files appear there as ``not_image``);
2. finds the RTSTRUCT(s) contouring each converted series and its tumour ROI by name variants
   (:mod:`dagman.cohorts.rtstruct`), rasterises it with rt-utils and puts it on the converted image's grid;
3. resamples image (linear) and mask (nearest) to ``spacing`` mm with :func:`dagman.io.resample.resample_to_spacing`
   and writes ``OUT/images/<case>__<series>.nii.gz`` and ``OUT/masks/<case>__<series>.nii.gz``;
4. writes ``OUT/cases.csv`` (one row per converted series, :data:`CASE_COLUMNS`, status ``ok`` or the reason
   code) and ``OUT/report.csv`` (:data:`REPORT_COLUMNS`): every case without a usable GTV, with its reason,
   including RTSTRUCTs whose CT series was quarantined or not found.

A case without a usable GTV is reported, never fatal. Paths in both tables are relative to ``OUT``.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from dagman.cohorts.rtstruct import (
    DEFAULT_GTV_NAMES,
    CtSeries,
    GtvError,
    StructureSet,
    mask_on_grid,
    match_roi_name,
    match_structure_sets,
    rasterise_roi,
    scan_dicom_tree,
)
from dagman.io.atomic import write_csv_atomic, write_image_atomic

__all__ = ["CASE_COLUMNS", "REPORT_COLUMNS", "build_nsclc_cohort", "gtv_case"]

CASE_COLUMNS = (
    "case_id",
    "series_id",
    "series_uid",
    "image",
    "mask",
    "roi_name",
    "mask_voxels",
    "status",
    "reason",
)
REPORT_COLUMNS = ("case_id", "series_id", "series_uid", "reason_code", "reason")


def _find_gtv(structure_sets: Sequence[StructureSet], variants: Sequence[str]) -> tuple[StructureSet, str]:
    """The first RTSTRUCT (in path order) holding a tumour ROI, and that ROI's name."""
    if not structure_sets:
        raise GtvError("no_rtstruct", "no RTSTRUCT references this CT series")
    for rts in structure_sets:
        name = match_roi_name(rts.roi_names, variants)
        if name is not None:
            return rts, name
    found = sorted({n for rts in structure_sets for n in rts.roi_names})
    raise GtvError(
        "no_gtv",
        f"no ROI named {' / '.join(variants)} (case-insensitive) in the RTSTRUCT; its ROIs: "
        + (", ".join(found) or "none"),
    )


def gtv_case(
    ct_paths: Sequence[str],
    structure_sets: Sequence[StructureSet],
    image_path: str | os.PathLike[str],
    image_out: str | os.PathLike[str],
    mask_out: str | os.PathLike[str],
    *,
    variants: Sequence[str] = DEFAULT_GTV_NAMES,
    spacing: float = 2.0,
) -> tuple[str, int]:
    """Make one case's 2 mm image and tumour mask.

    Args:
        ct_paths: the CT series' DICOM files.
        structure_sets: the RTSTRUCTs that contour the series (:func:`match_structure_sets`).
        image_path: the converter's NIfTI of the series (the mask is aligned to its grid).
        image_out, mask_out: where to write the resampled image and mask (``.nii.gz``).
        variants: tumour ROI names in priority order.
        spacing: output spacing in mm.

    Returns:
        ``(roi_name, mask_voxels)`` of the written mask.

    Raises:
        GtvError: no RTSTRUCT, no tumour ROI, a geometry rt-utils cannot rasterise, unreadable contours, or a
            mask that is empty on the image or vanishes at ``spacing`` mm.
    """
    import numpy as np
    import SimpleITK as sitk

    from dagman.io.resample import resample_to_spacing

    rts, roi_name = _find_gtv(structure_sets, variants)
    image = sitk.ReadImage(str(image_path))
    native = mask_on_grid(rasterise_roi(ct_paths, rts.path, roi_name), image)
    if not sitk.GetArrayViewFromImage(native).any():
        raise GtvError("empty_gtv", f"ROI '{roi_name}' lies outside the converted CT volume")
    mask = resample_to_spacing(native, spacing, "nearest")
    voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    if voxels == 0:
        raise GtvError("gtv_too_small", f"ROI '{roi_name}' has no voxel left at {spacing:g} mm")
    resampled = resample_to_spacing(image, spacing, "linear")
    write_image_atomic(image_out, resampled)
    write_image_atomic(mask_out, mask)
    return roi_name, voxels


def _case_worker(task: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`gtv_case` for one series; never raises, so one bad case cannot stop the cohort."""
    row = dict(task["row"])
    try:
        roi_name, voxels = gtv_case(
            task["ct_paths"],
            task["structure_sets"],
            task["image_path"],
            task["image_out"],
            task["mask_out"],
            variants=task["variants"],
            spacing=task["spacing"],
        )
    except GtvError as exc:
        return dict(row, status=exc.code, reason=exc.reason)
    except Exception as exc:  # an unexpected failure of one case is reported like the others
        return dict(row, status="failed", reason=f"unexpected error: {type(exc).__name__}: {exc}")
    return dict(
        row,
        image=task["image_rel"],
        mask=task["mask_rel"],
        roi_name=roi_name,
        mask_voxels=voxels,
        status="ok",
        reason="",
    )


def build_nsclc_cohort(
    dicom_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    roi_names: Sequence[str] = DEFAULT_GTV_NAMES,
    spacing: float = 2.0,
    case_ids: str = "pseudonym",
    workers: int | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build the cohort: 2 mm images and tumour masks, ``cases.csv`` and ``report.csv`` under ``out_dir``.

    Args:
        dicom_root: DICOM folder tree with CT series and RTSTRUCTs (NSCLC-Radiomics layout or any other).
        out_dir: output folder.
        roi_names: tumour ROI name variants, in priority order, matched case-insensitively.
        spacing: isotropic output spacing in mm.
        case_ids: ``pseudonym`` or ``patient-id`` (as for ``dagman convert``).
        workers: processes for conversion and per-case work (default: all usable cores).
        progress: show tqdm bars on stderr.

    Returns:
        ``(cases, report)`` as written.
    """
    from tqdm import tqdm

    from dagman.io.convert import convert_tree
    from dagman.io.dicom_series import make_case_id, make_series_id

    if not roi_names:
        raise ValueError("roi_names must hold at least one tumour ROI name")
    if not spacing > 0:
        raise ValueError(f"spacing must be positive, got {spacing}")
    out = Path(out_dir)
    conversion = convert_tree(
        dicom_root, out / "converted", case_ids=case_ids, workers=workers, progress=progress
    )
    series, structure_sets = scan_dicom_tree(dicom_root, progress=progress)
    matched = match_structure_sets(series, structure_sets)

    tasks = []
    for row in conversion.series:
        uid, stem = row["series_uid"], f"{row['case_id']}__{row['series_id']}.nii.gz"
        entry: CtSeries | None = series.get(uid)
        tasks.append(
            {
                "row": {
                    "case_id": row["case_id"],
                    "series_id": row["series_id"],
                    "series_uid": uid,
                    "image": "",
                    "mask": "",
                    "roi_name": "",
                    "mask_voxels": 0,
                },
                "ct_paths": sorted(entry.paths) if entry else [],
                "structure_sets": matched.get(uid, []),
                "image_path": str(out / "converted" / row["image"]),
                "image_rel": f"images/{stem}",
                "mask_rel": f"masks/{stem}",
                "image_out": str(out / "images" / stem),
                "mask_out": str(out / "masks" / stem),
                "variants": tuple(roi_names),
                "spacing": float(spacing),
            }
        )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n_workers = min(workers or cores, max(len(tasks), 1))
    bar = dict(total=len(tasks), desc="NSCLC masks", unit="case", disable=not progress, dynamic_ncols=True)
    if n_workers > 1:
        with ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = list(tqdm(pool.map(_case_worker, tasks), **bar))
    else:
        rows = [_case_worker(task) for task in tqdm(tasks, **bar)]

    report = [
        {k: r[k] for k in ("case_id", "series_id", "series_uid")}
        | {"reason_code": r["status"], "reason": r["reason"]}
        for r in rows
        if r["status"] != "ok"
    ]
    # RTSTRUCTs whose CT series never became a case: quarantined by the converter, or absent from the tree
    converted = {r["series_uid"] for r in conversion.series}
    quarantined = {q["series_uid"]: q for q in conversion.quarantine if q["level"] == "series"}
    for rts in structure_sets:
        targets = [uid for uid, found in matched.items() if rts in found]
        if any(uid in converted for uid in targets):
            continue
        uid = next((u for u in (*targets, *rts.series_uids) if u), "")
        if uid in quarantined:
            code = "series_quarantined"
            reason = f"the contoured CT series was quarantined: {quarantined[uid]['reason']}"
        else:
            code, reason = "no_ct_series", "no CT series in the tree matches this RTSTRUCT's references"
        report.append(
            {
                "case_id": make_case_id(rts.patient_id, case_ids),
                "series_id": make_series_id(uid) if uid else "",
                "series_uid": uid,
                "reason_code": code,
                "reason": reason,
            }
        )
    cases = pd.DataFrame(rows, columns=list(CASE_COLUMNS)).sort_values(["case_id", "series_id"])
    report_frame = pd.DataFrame(report, columns=list(REPORT_COLUMNS)).sort_values(["case_id", "series_id"])
    write_csv_atomic(out / "cases.csv", cases)
    write_csv_atomic(out / "report.csv", report_frame)
    return cases.reset_index(drop=True), report_frame.reset_index(drop=True)
