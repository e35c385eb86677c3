"""Zero-shot tumour localisation from pretrained attention (DESIGN 4; EXPERIMENTS D5; preprint section V-E).

Per case: the encoder's attention map over the CT (see :mod:`dagman.tasks.attention_map`: resampled to the
pretraining spacing, training-size windows, SATT relative to uniform), thresholded at its 90th percentile
(voxels strictly above it are foreground) on the working grid, upsampled to the CT grid with nearest
neighbour, and compared with each expert's mask by Dice. No label is used to make the prediction with
``region="whole"`` (the default: sliding windows over the whole CT, percentile over the whole CT). With
``region="mask-centre"`` one training-size window is centred on the centroid of the union of the raters' masks
(the tumour-centred crop of the classification tasks) and the percentile is taken inside it; the Dice is still
computed over the whole CT.

Cohort file (``raters.csv``, written by :mod:`dagman.cohorts.raters_demo` or by hand): one row per case and
rater, columns ``case_id, rater, image, mask``; ``image`` (the CT, any SimpleITK-readable file or a DICOM
folder) and ``mask`` (a binary mask, nonzero = tumour) are paths relative to the CSV's folder or absolute.
A mask on another grid than its CT is brought onto the CT grid with nearest neighbour.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm import tqdm

from dagman.io.atomic import write_csv_atomic, write_json_atomic

__all__ = [
    "RATER_COLUMNS",
    "DICE_COLUMNS",
    "REGIONS",
    "dice",
    "threshold_percentile",
    "read_rater_cohort",
    "run_zeroshot",
]

RATER_COLUMNS: tuple[str, ...] = ("case_id", "rater", "image", "mask")
DICE_COLUMNS: tuple[str, ...] = ("method", "case_id", "rater", "dice", "predicted_voxels", "rater_voxels")
REGIONS: tuple[str, ...] = ("whole", "mask-centre")


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice coefficient 2|A∩B| / (|A| + |B|) of two boolean arrays; NaN when both are empty (undefined)."""
    a, b = np.asarray(prediction, dtype=bool), np.asarray(reference, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"dice needs arrays of one shape, got {a.shape} and {b.shape}")
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def threshold_percentile(
    values: np.ndarray, region: np.ndarray | None = None, percentile: float = 90.0
) -> np.ndarray:
    """Boolean map of the voxels strictly above the ``percentile``-th percentile of ``values`` (within ``region``).

    Voxels outside ``region`` are never foreground.
    """
    if not 0.0 <= percentile < 100.0:
        raise ValueError(f"percentile must lie in [0, 100), got {percentile}")
    inside = np.ones(values.shape, dtype=bool) if region is None else np.asarray(region, dtype=bool)
    if not inside.any():
        raise ValueError("the thresholding region is empty")
    level = np.percentile(values[inside], percentile)
    return (values > level) & inside


def read_rater_cohort(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and check a ``raters.csv``; ``image`` and ``mask`` come back as absolute path strings."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"rater cohort file not found: {path}")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in RATER_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {', '.join(missing)}; needs {', '.join(RATER_COLUMNS)}")
    if table.empty:
        raise ValueError(f"{path} lists no case")
    duplicated = table.duplicated(["case_id", "rater"])
    if duplicated.any():
        first = table[duplicated].iloc[0]
        raise ValueError(f"{path}: case {first.case_id!r} lists rater {first.rater!r} twice")
    for column in ("image", "mask"):
        table[column] = [str(p if Path(p).is_absolute() else (path.parent / p)) for p in table[column]]
    images = table.groupby("case_id")["image"].nunique()
    if (images > 1).any():
        raise ValueError(f"{path}: case {images[images > 1].index[0]!r} names more than one CT image")
    return table


def _mask_on_grid(mask_path: str, ct: sitk.Image) -> np.ndarray:
    """A rater's mask as a (z, y, x) boolean array on the CT's grid."""
    from dagman.tasks.attention_map import to_reference_grid

    if not Path(mask_path).is_file():
        raise FileNotFoundError(f"rater mask not found: {mask_path}")
    mask = sitk.ReadImage(mask_path)
    same = (
        mask.GetSize() == ct.GetSize()
        and np.allclose(mask.GetSpacing(), ct.GetSpacing(), atol=1e-4)
        and np.allclose(mask.GetOrigin(), ct.GetOrigin(), atol=1e-3)
        and np.allclose(mask.GetDirection(), ct.GetDirection(), atol=1e-5)
    )
    if not same:
        mask = to_reference_grid(sitk.Cast(mask != 0, sitk.sitkUInt8), ct, "nearest")
    return sitk.GetArrayFromImage(mask) != 0


def _centre_start(
    masks: Sequence[np.ndarray], ct: sitk.Image, work: sitk.Image, size: Sequence[int]
) -> tuple:
    """Start (z, y, x) on the working grid of a ``size`` window centred on the raters' union centroid."""
    union = np.logical_or.reduce(list(masks))
    if not union.any():
        raise ValueError("region 'mask-centre' needs at least one non-empty rater mask")
    zyx = np.argwhere(union).mean(axis=0)
    point = ct.TransformContinuousIndexToPhysicalPoint([float(v) for v in zyx[::-1]])
    centre = np.asarray(work.TransformPhysicalPointToContinuousIndex(point))[::-1]
    return tuple(int(round(c - n / 2.0)) for c, n in zip(centre, size, strict=True))


def run_zeroshot(
    cohort_csv: str | os.PathLike[str],
    encoder_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    spacing: float = 2.0,
    window: Sequence[float] = (-175.0, 250.0),
    percentile: float = 90.0,
    region: str = "whole",
    overlap: float = 0.5,
    input_size: int | None = None,
    method: str | None = None,
) -> pd.DataFrame:
    """Zero-shot localisation Dice of one encoder against every rater of every case.

    Writes to ``out_dir``:
        dice.csv            ``DICE_COLUMNS``, one row per (case, rater)
        summary.json        mean ± sd of Dice over cases (each case's mean over raters) and over all
                            (case, rater) pairs, with the settings
        masks/<case>.nii.gz the predicted mask on the CT grid (uint8)

    Returns:
        The dice table.
    """
    from dagman.tasks.attention_map import (
        attention_volume,
        prepare_ct,
        read_ct,
        to_reference_grid,
        write_image,
    )
    from dagman.tasks.embeddings import load_pretrained_encoder

    if region not in REGIONS:
        raise ValueError(f"region must be one of {', '.join(REGIONS)}, got {region!r}")
    cohort = read_rater_cohort(cohort_csv)
    encoder = load_pretrained_encoder(encoder_dir, input_size=input_size, method=method)
    out = Path(out_dir)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    cases = list(cohort.groupby("case_id", sort=True))
    for case_id, group in tqdm(cases, desc=f"zero-shot {encoder.method}", unit="case"):
        ct = read_ct(group["image"].iloc[0])
        masks = [_mask_on_grid(p, ct) for p in group["mask"]]
        work, volume = prepare_ct(ct, spacing, window)
        starts = None
        if region == "mask-centre":
            starts = [_centre_start(masks, ct, work, encoder.input_size)]
        attention = attention_volume(encoder, volume, work, starts=starts, overlap=overlap)
        predicted = threshold_percentile(attention.values, attention.covered, percentile)
        predicted_image = sitk.GetImageFromArray(predicted.astype(np.uint8))
        predicted_image.CopyInformation(work)
        on_ct = to_reference_grid(predicted_image, ct, "nearest")
        write_image(on_ct, out / "masks" / f"{case_id}.nii.gz")
        prediction = sitk.GetArrayViewFromImage(on_ct) != 0
        for rater, mask in zip(group["rater"], masks, strict=True):
            rows.append(
                {
                    "method": encoder.method,
                    "case_id": case_id,
                    "rater": rater,
                    "dice": dice(prediction, mask),
                    "predicted_voxels": int(prediction.sum()),
                    "rater_voxels": int(mask.sum()),
                }
            )
    table = pd.DataFrame(rows, columns=list(DICE_COLUMNS))
    write_csv_atomic(out / "dice.csv", table)
    per_case = table.groupby("case_id")["dice"].mean().dropna()
    pairs = table["dice"].dropna()
    summary = {
        "method": encoder.method,
        "n_cases": int(table["case_id"].nunique()),
        "n_pairs": int(len(table)),
        "dice_mean": float(per_case.mean()) if len(per_case) else float("nan"),
        "dice_sd": float(per_case.std(ddof=1)) if len(per_case) > 1 else 0.0,
        "dice_pairs_mean": float(pairs.mean()) if len(pairs) else float("nan"),
        "dice_pairs_sd": float(pairs.std(ddof=1)) if len(pairs) > 1 else 0.0,
        "percentile": percentile,
        "region": region,
        "spacing_mm": spacing,
        "window": list(window),
        "input_size": list(encoder.input_size),
        "overlap": overlap,
    }
    write_json_atomic(out / "summary.json", summary)
    return table
