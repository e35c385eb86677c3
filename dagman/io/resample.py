"""Resampling of CT images and masks to isotropic spacing in one orientation, and intensity windowing.

Every output lies on an identity-direction (LPS) grid, so arrays from different scanners and series share one
axis convention: array axis 0 (z) runs inferior to superior, axis 1 (y) anterior to posterior, axis 2 (x)
right to left. The new grid covers the same physical extent as the input and shares its physical centre.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import SimpleITK as sitk

__all__ = ["resample_to_spacing", "window_to_unit", "IMAGE_PAD_HU"]

# value outside the field of view: air, so padding looks like the scanner's surroundings
IMAGE_PAD_HU = -1024.0

_INT16_MIN, _INT16_MAX = np.iinfo(np.int16).min, np.iinfo(np.int16).max


def _spacing_triplet(spacing: float | tuple[float, float, float]) -> tuple[float, float, float]:
    """Return ``spacing`` as three positive floats (x, y, z) in mm."""
    values = (float(spacing),) * 3 if np.isscalar(spacing) else tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must be one positive number or three (x, y, z), got {spacing!r}")
    return values  # type: ignore[return-value]


def _output_grid(
    image: sitk.Image, spacing: tuple[float, float, float]
) -> tuple[list[int], tuple[float, ...]]:
    """Size and origin of the identity-direction grid at ``spacing`` covering ``image``'s physical extent.

    The extent is the bounding box of the voxel edges (index -0.5 to n-0.5), so an image with n voxels of
    spacing s spans n*s mm. The new grid has round(extent / spacing) voxels and the same physical centre.
    """
    size = np.asarray(image.GetSize(), dtype=float)
    # all 8 corners of the voxel-edge box, mapped to physical space (handles any residual obliquity)
    corners = np.array(np.meshgrid(*[(-0.5, n - 0.5) for n in size], indexing="ij")).reshape(3, -1).T
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    physical = (corners * np.asarray(image.GetSpacing())) @ direction.T + np.asarray(image.GetOrigin())
    low, high = physical.min(axis=0), physical.max(axis=0)
    new_spacing = np.asarray(spacing)
    new_size = np.maximum(1, np.round((high - low) / new_spacing).astype(int))
    centre = (low + high) / 2.0
    origin = centre - (new_size - 1) * new_spacing / 2.0
    return [int(n) for n in new_size], tuple(float(o) for o in origin)


def resample_to_spacing(
    image: sitk.Image,
    spacing: float | tuple[float, float, float] = 2.0,
    interpolator: Literal["linear", "nearest"] = "linear",
    default_value: float | None = None,
) -> sitk.Image:
    """Resample ``image`` to ``spacing`` mm on an identity-direction (LPS) grid.

    The image is first reoriented to LPS (a lossless axis permutation and flip), then resampled onto a grid
    that covers the same physical extent with the same centre.

    Args:
        image: a 3D SimpleITK image (CT in HU, or an integer label mask).
        spacing: the new spacing in mm, one number (isotropic) or (x, y, z).
        interpolator: ``"linear"`` for images (output int16, rounded and clipped to the int16 range) or
            ``"nearest"`` for masks (output uint8; labels must lie in 0..255).
        default_value: value outside the input's field of view; -1024 HU for images and 0 for masks if None.

    Returns:
        The resampled image with identity direction.
    """
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f"resample_to_spacing needs a 3D scalar image, got dimension {image.GetDimension()} with "
            f"{image.GetNumberOfComponentsPerPixel()} components per pixel"
        )
    if interpolator not in ("linear", "nearest"):
        raise ValueError(f"interpolator must be 'linear' or 'nearest', got {interpolator!r}")
    new_spacing = _spacing_triplet(spacing)
    is_mask = interpolator == "nearest"
    if is_mask:
        stats = sitk.MinimumMaximumImageFilter()
        stats.Execute(image)
        if stats.GetMinimum() < 0 or stats.GetMaximum() > 255:
            raise ValueError(
                f"a mask resampled with 'nearest' must hold labels in 0..255, got values from "
                f"{stats.GetMinimum()} to {stats.GetMaximum()}"
            )
    pad = (0.0 if is_mask else IMAGE_PAD_HU) if default_value is None else float(default_value)

    oriented = sitk.DICOMOrient(image, "LPS")
    size, origin = _output_grid(oriented, new_spacing)
    resampled = sitk.Resample(
        oriented,
        size,
        sitk.Transform(),
        sitk.sitkNearestNeighbor if is_mask else sitk.sitkLinear,
        origin,
        new_spacing,
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        pad,
        sitk.sitkUInt8 if is_mask else sitk.sitkFloat32,
    )
    if is_mask:
        return resampled
    # linear interpolation gives fractional HU: round to nearest, clip to int16 and cast, all in place
    values = sitk.GetArrayFromImage(resampled)
    np.rint(values, out=values)
    np.clip(values, _INT16_MIN, _INT16_MAX, out=values)
    out = sitk.GetImageFromArray(values.astype(np.int16))
    out.CopyInformation(resampled)
    return out


def window_to_unit(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip ``array`` to [low, high] and scale it linearly to [0, 1] as float16.

    ``low`` maps to exactly 0 and ``high`` to exactly 1 (SMIT's CT window is low=-175, high=250 HU).
    """
    if not high > low:
        raise ValueError(f"window high ({high}) must be greater than low ({low})")
    scaled = np.clip(array, low, high).astype(np.float32, copy=False)
    scaled -= np.float32(low)
    scaled *= np.float32(1.0 / (high - low))
    # float32 rounding can leave 1 + eps at the top; keep the range exact
    np.clip(scaled, 0.0, 1.0, out=scaled)
    return scaled.astype(np.float16)
