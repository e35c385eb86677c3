"""Synthetic organ volumes in the OrganMNIST3D format: the demo's stand-in for MedMNIST's file (DESIGN 2.7).

Each volume is a cube centred on one organ, as OrganMNIST3D's crops are, with surrounding soft tissue. The 11
classes differ in shape (ellipsoids, a bean with a hilum, a bone shaft with cortex and marrow, a crescent, a
thin lobulated tube, a lung with vessels and a flat mediastinal side), in intensity and in texture; the
left/right pairs (kidneys, femurs, lungs) are mirror images, so they differ only by which side the hilum,
femoral head or mediastinum lies on, as in the real data. Every case draws its own size, rotation about the
long axis, position, intensity, noise and texture scale, so classes overlap enough that clustering is a test
of the features, not a lookup.

Axes: arrays are (z, y, x); the normalised coordinates run from -1 to 1 across the cube.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from dagman.io.organmnist import ORGAN_CLASSES, SPLITS, OrganSplit

__all__ = ["organ_volume", "synthesize_organmnist"]

Coords = tuple[np.ndarray, np.ndarray, np.ndarray]


def _ellipsoid(z: np.ndarray, y: np.ndarray, x: np.ndarray, radii: tuple[float, float, float]) -> np.ndarray:
    """Normalised ellipsoid radius (< 1 inside) for radii (rz, ry, rx)."""
    return np.sqrt((z / radii[0]) ** 2 + (y / radii[1]) ** 2 + (x / radii[2]) ** 2)


def _liver(c: Coords, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = c
    body = (_ellipsoid(z, y, x, (0.65, 0.7, 0.85)) < 1) & (x + 0.5 * z < 0.55)  # wedge cut on the left
    return body, np.where(body, 150.0, 0.0)


def _kidney(c: Coords, rng: np.random.Generator, side: float) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = c
    r = _ellipsoid(z, y, x, (0.75, 0.45, 0.38))
    hilum = _ellipsoid(z, y, x - side * 0.38, (0.3, 0.2, 0.22)) < 1  # notch on the medial side
    body = (r < 1) & ~hilum
    value = np.where(r > 0.7, 185.0, 140.0)  # bright cortex around a darker medulla
    return body, np.where(body, value, 0.0)


def _femur(c: Coords, rng: np.random.Generator, side: float) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = c
    shaft = np.sqrt((y / 0.28) ** 2 + (x / 0.28) ** 2)
    head = _ellipsoid(z - 0.55, y, x - side * 0.45, (0.3, 0.3, 0.3))  # femoral head towards the pelvis
    neck = (np.abs(z - 0.45) < 0.15) & (side * x > 0) & (side * x < 0.45) & (np.abs(y) < 0.15)
    body = (shaft < 1) | (head < 1) | neck
    marrow = ((shaft < 0.6) & (z < 0.3)) | (head < 0.7)
    return body, np.where(body, np.where(marrow, 150.0, 240.0), 0.0)


def _bladder(c: Coords, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = c
    r = _ellipsoid(z, y, x, (0.5, 0.55, 0.6))
    body = r < 1
    return body, np.where(body, np.where(r > 0.88, 140.0, 85.0), 0.0)  # fluid with a thin wall


def _heart(c: Coords, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = c
    body = _ellipsoid(z, y, x, (0.7, 0.75, 0.8)) < 1
    left = _ellipsoid(z, y + 0.1, x - 0.3, (0.45, 0.35, 0.28)) < 1
    right = _ellipsoid(z, y - 0.2, x + 0.3, (0.4, 0.3, 0.25)) < 1
    value = np.where(left | right, 200.0, 150.0)  # contrast-filled chambers in myocardium
    return body, np.where(body, value, 0.0)


def _lung(c: Coords, rng: np.random.Generator, side: float) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = c
    body = (_ellipsoid(z, y, x, (0.9, 0.8, 0.75)) < 1) & (side * x > -0.45)  # flat mediastinal side
    vessels = np.zeros_like(body)
    for _ in range(6):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        start = np.array([0.0, 0.0, -side * 0.4])
        p = np.stack([z - start[0], y - start[1], x - start[2]], axis=-1)
        along = p @ direction
        perp = np.linalg.norm(p - along[..., None] * direction, axis=-1)
        vessels |= (perp < 0.05 * (1.2 - np.clip(along, 0, 1))) & (along > 0)
    value = np.where(vessels, 160.0, 25.0)
    return body, np.where(body, value, 0.0)


def _spleen(c: Coords, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = c
    outer = _ellipsoid(z, y, x, (0.7, 0.55, 0.6)) < 1
    inner = _ellipsoid(z, y, x + 0.55, (0.6, 0.45, 0.5)) < 1  # concave hilar side: a crescent
    body = outer & ~inner
    return body, np.where(body, 160.0, 0.0)


def _pancreas(c: Coords, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = c
    centre_y = 0.2 * np.sin(2.5 * x)  # a gently curved tube along x
    radius = 0.18 + 0.05 * np.cos(9 * x)  # lobulated outline
    body = (np.sqrt((z / 1.2) ** 2 + (y - centre_y) ** 2) < radius) & (np.abs(x) < 0.85)
    return body, np.where(body, 145.0, 0.0)


#: class index -> (shape function, texture amplitude, texture smoothness in voxels at 28^3)
_ORGANS: dict[
    int, tuple[Callable[[Coords, np.random.Generator], tuple[np.ndarray, np.ndarray]], float, float]
] = {
    0: (_liver, 10.0, 1.5),
    1: (lambda c, r: _kidney(c, r, 1.0), 8.0, 1.0),
    2: (lambda c, r: _kidney(c, r, -1.0), 8.0, 1.0),
    3: (lambda c, r: _femur(c, r, 1.0), 6.0, 0.8),
    4: (lambda c, r: _femur(c, r, -1.0), 6.0, 0.8),
    5: (_bladder, 4.0, 2.0),
    6: (_heart, 12.0, 1.2),
    7: (lambda c, r: _lung(c, r, 1.0), 10.0, 0.7),
    8: (lambda c, r: _lung(c, r, -1.0), 10.0, 0.7),
    9: (_spleen, 9.0, 1.3),
    10: (_pancreas, 10.0, 0.6),
}


def organ_volume(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic organ volume of class ``label`` (see ``ORGAN_CLASSES``).

    Args:
        label: class index 0-10.
        size: cube side in voxels (28 or 64 as in MedMNIST; any side >= 8 works).
        rng: the source of all randomness (size, rotation, offset, intensity, texture, noise).

    Returns:
        (size, size, size) uint8 volume.
    """
    if label not in _ORGANS:
        raise ValueError(f"label must be 0..{len(ORGAN_CLASSES) - 1}, got {label}")
    if size < 8:
        raise ValueError(f"size must be at least 8 voxels, got {size}")
    shape_fn, texture_amp, texture_sigma = _ORGANS[label]
    axis = np.linspace(-1.0, 1.0, size)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    # per-case size, in-plane rotation (about z, so left/right stays left/right) and offset
    scale = rng.uniform(0.8, 1.2, size=3)
    angle = rng.uniform(-0.3, 0.3)
    cos, sin = np.cos(angle), np.sin(angle)
    offset = rng.uniform(-0.1, 0.1, size=3)
    zr = (z - offset[0]) / scale[0]
    yr = ((y - offset[1]) * cos - (x - offset[2]) * sin) / scale[1]
    xr = ((y - offset[1]) * sin + (x - offset[2]) * cos) / scale[2]
    body, value = shape_fn((zr, yr, xr), rng)
    smooth = texture_sigma * size / 28.0
    background = 100.0 + rng.uniform(-10, 10) + 12.0 * _smooth_noise(size, 2.5 * size / 28.0, rng)
    texture = texture_amp * _smooth_noise(size, smooth, rng)
    organ = value + rng.uniform(-15, 15) + texture
    volume = np.where(body, organ, background)
    volume = ndimage.gaussian_filter(volume, 0.6 * size / 28.0)  # partial-volume blur, as in resized crops
    volume += rng.normal(0.0, rng.uniform(4, 10), size=volume.shape)
    return np.clip(np.rint(volume), 0, 255).astype(np.uint8)


def _smooth_noise(size: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation."""
    field = ndimage.gaussian_filter(rng.normal(size=(size,) * 3), max(sigma, 0.3))
    return field / max(float(field.std()), 1e-6)


def synthesize_organmnist(
    size: int = 28, per_class: int = 20, seed: int = 0, val_fraction: float = 0.25
) -> dict[str, OrganSplit]:
    """Synthetic OrganMNIST3D splits: ``per_class`` volumes per class in train and test, fewer in val.

    Args:
        size: cube side (28 or 64 for the two MedMNIST files).
        per_class: volumes per class in the train and test splits.
        seed: seed of everything; the same seed gives the same file.
        val_fraction: val holds ``max(1, round(val_fraction * per_class))`` volumes per class.

    Returns:
        ``{"train", "val", "test"}`` -> :class:`OrganSplit` with shuffled order.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    counts = {"train": per_class, "val": max(1, round(val_fraction * per_class)), "test": per_class}
    out = {}
    for index, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, index])
        labels = np.repeat(np.arange(len(ORGAN_CLASSES)), counts[split])
        labels = labels[rng.permutation(len(labels))]
        images = np.stack([organ_volume(int(label), size, rng) for label in labels])
        out[split] = OrganSplit(images=images, labels=labels.astype(np.int64))
    return out
