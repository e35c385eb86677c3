"""Tests of isotropic resampling (geometry, interpolation, mask labels) and intensity windowing."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from dagman.io.resample import resample_to_spacing, window_to_unit

# x flipped and y/z swapped: a direction that DICOMOrient must undo
FLIPPED = (-1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0)


def _image(array: np.ndarray, spacing, direction=FLIPPED, origin=(10.0, -20.0, 30.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    image.SetOrigin(origin)
    return image


def _centre(image: sitk.Image) -> np.ndarray:
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))


def test_resample_gives_identity_direction_iso_grid_with_same_centre_and_extent():
    """Output is LPS (identity direction), 2 mm, same physical centre and extent as the input."""
    image = _image(np.zeros((20, 30, 40), np.int16), spacing=(0.5, 1.0, 3.0))  # size (40, 30, 20)
    out = resample_to_spacing(image, 2.0)
    assert out.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert out.GetSpacing() == pytest.approx((2.0, 2.0, 2.0))
    # extents along physical x, y, z: x = 40 * 0.5, y (image axis z) = 20 * 3, z (image axis y) = 30 * 1
    assert out.GetSize() == (10, 30, 15)
    np.testing.assert_allclose(_centre(out), _centre(image), atol=1e-6)
    assert out.GetPixelID() == sitk.sitkInt16


def test_linear_interpolation_preserves_a_linear_ramp():
    """A ramp linear in physical position keeps its values at the new voxel centres (inside the field of view)."""
    size_x, size_y, size_z = 24, 16, 12
    spacing = (1.5, 1.0, 2.5)
    # ramp in physical coordinates of the (flipped) input grid, rounded to int16 HU
    ix, iy, iz = np.meshgrid(np.arange(size_x), np.arange(size_y), np.arange(size_z), indexing="ij")
    probe = _image(np.zeros((size_z, size_y, size_x), np.int16), spacing)
    direction = np.asarray(FLIPPED).reshape(3, 3)
    index = np.stack([ix, iy, iz], -1).reshape(-1, 3) * np.asarray(spacing)
    physical = index @ direction.T + np.asarray(probe.GetOrigin())

    def ramp(p: np.ndarray) -> np.ndarray:
        return 10.0 * p[:, 0] - 4.0 * p[:, 1] + 6.0 * p[:, 2]

    values = ramp(physical).reshape(size_x, size_y, size_z).transpose(2, 1, 0)
    image = _image(values.astype(np.int16), spacing)
    out = resample_to_spacing(image, 2.0, "linear")
    result = sitk.GetArrayFromImage(out).astype(float)
    oz, oy, ox = np.meshgrid(*[np.arange(n) for n in result.shape], indexing="ij")
    centres = np.stack([ox, oy, oz], -1).reshape(-1, 3) * 2.0 + np.asarray(out.GetOrigin())
    # voxel centres inside the input's voxel-centre hull interpolate without touching the padding
    lo, hi = physical.min(0), physical.max(0)
    inside = np.all((centres >= lo - 1e-6) & (centres <= hi + 1e-6), axis=1)
    assert inside.sum() > 100
    np.testing.assert_allclose(result.reshape(-1)[inside], ramp(centres[inside]), atol=1.0)


def test_padding_value_outside_the_field_of_view():
    """Grid corners outside an oblique input get -1024 HU for images, or the given default_value."""
    c = np.sqrt(0.5)
    rotated = (c, -c, 0.0, c, c, 0.0, 0.0, 0.0, 1.0)  # 45 degrees about z: the bounding box has empty corners
    image = _image(np.full((8, 8, 8), 100, np.int16), spacing=(1.0, 1.0, 1.0), direction=rotated)
    out = resample_to_spacing(image, 1.0)
    assert out.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    values = sitk.GetArrayViewFromImage(out)
    assert values.min() == -1024 and values.max() == 100
    padded = sitk.GetArrayFromImage(resample_to_spacing(image, 1.0, default_value=-5))
    assert padded.min() == -5 and padded.max() == 100


def test_nearest_keeps_mask_labels_exactly():
    """Nearest-neighbour resampling of a label mask creates no new label values and outputs uint8."""
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([0, 1, 2, 7], np.uint8), size=(9, 11, 13))
    mask = _image(labels, spacing=(0.7, 0.7, 2.5))
    out = resample_to_spacing(mask, 2.0, "nearest")
    assert out.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayViewFromImage(out))) <= {0, 1, 2, 7}


def test_nearest_rejects_labels_outside_uint8():
    """A 'mask' with negative values (a CT passed by mistake) is refused with a clear error."""
    image = _image(np.full((4, 4, 4), -1000, np.int16), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="0..255"):
        resample_to_spacing(image, 2.0, "nearest")


def test_window_to_unit_is_exact_at_the_bounds_and_clips():
    """low maps to exactly 0, high to exactly 1, values beyond are clipped; output is float16."""
    array = np.array([-2000, -175, 37, 250, 3000], dtype=np.int16)
    out = window_to_unit(array, -175, 250)
    assert out.dtype == np.float16
    assert out[0] == 0 and out[1] == 0 and out[3] == 1 and out[4] == 1
    assert out[2] == pytest.approx((37 + 175) / 425, abs=1e-3)
    with pytest.raises(ValueError):
        window_to_unit(array, 10, 10)
