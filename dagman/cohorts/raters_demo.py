"""A synthetic multi-rater tumour cohort for zero-shot localisation (stand-in for TCIA's 5-rater NSCLC set).

Each case is a chest CT phantom (:func:`~dagman.io.synthetic.phantom.chest_phantom`) with one lobulated lung
tumour (:func:`~dagman.io.synthetic.phantom.add_nodule`, 12-22 mm radius) and one mask per rater. Raters
disagree as real ones do: each rater's contour is the true surface moved by a rater-specific margin (a
systematic dilation or erosion, sd 1.5 mm), a smooth local wobble (sd 1.5 mm) and a small shift (up to 2 mm),
all computed on the signed distance to the true surface in millimetres.

Layout written under OUT:
    OUT/images/<case_id>.nii.gz            CT, int16 HU, LPS axial geometry, anisotropic voxels
    OUT/masks/<case_id>__<rater>.nii.gz    uint8 0/1 on the CT's grid
    OUT/raters.csv                         case_id, rater, image, mask (paths relative to OUT)
Case ids are pseudonyms ``zs-001``...; raters are ``R1``...; nothing identifying is written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from dagman.io.atomic import write_csv_atomic, write_image_atomic
from dagman.io.synthetic.phantom import add_nodule, chest_phantom

__all__ = ["write_rater_demo", "rater_masks", "RATER_COHORT_COLUMNS"]

RATER_COHORT_COLUMNS: tuple[str, ...] = ("case_id", "rater", "image", "mask")


def rater_masks(
    truth: np.ndarray, spacing_zyx: Sequence[float], n_raters: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Jittered expert masks around a true (z, y, x) boolean mask, one per rater (see the module docstring)."""
    if not truth.any():
        raise ValueError("the true tumour mask is empty")
    sampling = tuple(float(s) for s in spacing_zyx)
    # signed distance to the true surface in mm: negative inside, positive outside
    sdf = ndimage.distance_transform_edt(~truth, sampling=sampling) - ndimage.distance_transform_edt(
        truth, sampling=sampling
    )
    masks = []
    for _ in range(n_raters):
        margin = rng.normal(0.0, 1.5)
        wobble = ndimage.gaussian_filter(rng.normal(size=truth.shape), sigma=[4.0 / s for s in sampling])
        wobble *= 1.5 / max(float(wobble.std()), 1e-6)
        shift = rng.uniform(-2.0, 2.0, size=3) / np.asarray(sampling)
        moved = ndimage.shift(sdf, shift, order=1, mode="nearest")
        mask = moved < margin + wobble
        if not mask.any():  # an extreme erosion of a small tumour: keep the rater's core
            mask = moved < 0
        masks.append(mask)
    return masks


def _tumour_centre(hu: np.ndarray, radius_vox: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random voxel (z, y, x) deep enough inside a lung for a tumour of ``radius_vox``."""
    air = ndimage.binary_opening(hu < -500, iterations=1)
    labels, _ = ndimage.label(air)
    # the air around the body touches the in-plane borders; the lungs only the first and last slices
    border = np.unique(np.concatenate([labels[:, [0, -1]].ravel(), labels[:, :, [0, -1]].ravel()]))
    lungs = (labels > 0) & ~np.isin(labels, border)
    depth = ndimage.distance_transform_edt(lungs, sampling=1.0 / radius_vox)  # in tumour radii
    candidates = np.argwhere(depth >= 0.7)
    if len(candidates) == 0:
        candidates = np.argwhere(depth >= 0.5 * depth.max()) if depth.max() > 0 else np.argwhere(lungs)
    if len(candidates) == 0:
        raise ValueError("the phantom has no lung to place a tumour in; use a larger field of view")
    return candidates[rng.integers(len(candidates))].astype(float)


def write_rater_demo(
    out: str | os.PathLike[str],
    n_cases: int = 5,
    n_raters: int = 5,
    seed: int = 0,
    shape: Sequence[int] = (48, 128, 128),
    spacing: Sequence[float] = (1.5, 1.5, 3.0),
) -> pd.DataFrame:
    """Write the multi-rater demo cohort (layout in the module docstring).

    Args:
        out: output folder.
        n_cases: number of CTs (4-6 is the demo's size).
        n_raters: masks per case (the real set has 5).
        seed: seed of anatomy, tumours and rater jitter.
        shape: CT size (z, y, x) in voxels.
        spacing: CT spacing (x, y, z) in mm.

    Returns:
        The raters.csv table.
    """
    if n_cases < 1 or n_raters < 1:
        raise ValueError(f"need at least one case and one rater, got {n_cases} cases and {n_raters} raters")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    spacing_zyx = np.asarray(spacing, dtype=float)[::-1]
    rows = []
    for index in range(n_cases):
        rng = np.random.default_rng([seed, index])
        case_id = f"zs-{index + 1:03d}"
        hu = chest_phantom(shape, spacing, rng)
        radius_vox = rng.uniform(12.0, 22.0) / spacing_zyx
        centre = _tumour_centre(hu, radius_vox, rng)
        truth = add_nodule(hu, centre, radius_vox, rng, lobulated=True)
        origin = (
            -(shape[2] - 1) * spacing[0] / 2.0,
            -(shape[1] - 1) * spacing[1] / 2.0,
            -150.0 - 10.0 * index,
        )
        ct = sitk.GetImageFromArray(hu)
        ct.SetSpacing(tuple(float(s) for s in spacing))
        ct.SetOrigin(origin)
        image_rel = f"images/{case_id}.nii.gz"
        write_image_atomic(out / image_rel, ct)
        for number, mask in enumerate(rater_masks(truth, spacing_zyx, n_raters, rng), start=1):
            rater = f"R{number}"
            image = sitk.GetImageFromArray(mask.astype(np.uint8))
            image.CopyInformation(ct)
            mask_rel = f"masks/{case_id}__{rater}.nii.gz"
            write_image_atomic(out / mask_rel, image)
            rows.append({"case_id": case_id, "rater": rater, "image": image_rel, "mask": mask_rel})
    table = pd.DataFrame(rows, columns=list(RATER_COHORT_COLUMNS))
    write_csv_atomic(out / "raters.csv", table)
    return table
