"""Reading and writing MedMNIST's OrganMNIST3D ``.npz`` files, in exactly MedMNIST's format (DESIGN 2.5).

The file (``organmnist3d.npz`` at 28^3, ``organmnist3d_64.npz`` at 64^3) holds six arrays:
``{train,val,test}_images`` of shape (N, D, D, D) and dtype uint8, and ``{train,val,test}_labels`` of shape
(N, 1) with integer class indices 0-10 (``ORGAN_CLASSES``). It is read with numpy alone: MedMNIST's dataset
class asserts its exact sample counts and wants its own download folder, so a user-supplied or synthetic file
would not load through it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dagman.io.atomic import atomic_path

__all__ = ["ORGAN_CLASSES", "SPLITS", "OrganSplit", "read_organmnist", "write_organmnist"]

#: Class index -> organ name, in MedMNIST's order.
ORGAN_CLASSES: tuple[str, ...] = (
    "liver",
    "kidney-right",
    "kidney-left",
    "femur-right",
    "femur-left",
    "bladder",
    "heart",
    "lung-right",
    "lung-left",
    "spleen",
    "pancreas",
)
#: The three splits of every MedMNIST file.
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass
class OrganSplit:
    """One split of an OrganMNIST3D file.

    Attributes:
        images: (N, D, D, D) uint8 volumes.
        labels: (N,) int64 class indices (the file stores them as (N, 1)).
    """

    images: np.ndarray
    labels: np.ndarray


def _check_split(name: str, images: np.ndarray, labels: np.ndarray, source: str) -> None:
    """Raise a ValueError unless ``images``/``labels`` have OrganMNIST3D's shapes, dtype and label range."""
    if images.ndim != 4 or len(set(images.shape[1:])) != 1:
        raise ValueError(f"{source}: {name}_images must be N x D x D x D, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"{source}: {name}_images must be uint8, got {images.dtype}")
    if labels.ndim != 2 or labels.shape[1] != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{source}: {name}_labels must be N x 1 with N = {images.shape[0]} images, got shape {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{source}: {name}_labels must be integers, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(ORGAN_CLASSES)):
        raise ValueError(
            f"{source}: {name}_labels must lie in 0..{len(ORGAN_CLASSES) - 1}, "
            f"got {labels.min()}..{labels.max()}"
        )


def read_organmnist(path: str | os.PathLike[str]) -> dict[str, OrganSplit]:
    """Read an OrganMNIST3D ``.npz`` file and check its format.

    Args:
        path: ``organmnist3d.npz``, ``organmnist3d_64.npz`` or a file in the same format.

    Returns:
        ``{"train": OrganSplit, "val": ..., "test": ...}``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a key is missing or an array has the wrong shape, dtype or label range.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"OrganMNIST3D file not found: {path}")
    with np.load(path, allow_pickle=False) as data:
        missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in data.files]
        if missing:
            raise ValueError(
                f"{path} is not an OrganMNIST3D file: missing key(s) {', '.join(missing)} "
                f"(found {', '.join(sorted(data.files))})"
            )
        out = {}
        for split in SPLITS:
            images, labels = data[f"{split}_images"], data[f"{split}_labels"]
            _check_split(split, images, labels, str(path))
            out[split] = OrganSplit(images=images, labels=labels[:, 0].astype(np.int64))
    sides = {s.images.shape[1] for s in out.values() if len(s.images)}
    if len(sides) > 1:
        raise ValueError(f"{path}: the splits have different volume sides {sorted(sides)}")
    return out


def write_organmnist(path: str | os.PathLike[str], splits: Mapping[str, OrganSplit]) -> Path:
    """Write ``splits`` as an OrganMNIST3D ``.npz`` (compressed, as MedMNIST ships it), atomically.

    Args:
        path: output file; ``.npz`` is appended by numpy if missing, so give it with the suffix.
        splits: ``{"train", "val", "test"}`` -> :class:`OrganSplit` (labels as (N,) or (N, 1)).

    Returns:
        The written path.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"OrganMNIST3D files end in .npz, got {path}")
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise ValueError(f"cannot write {path}: split(s) {', '.join(missing)} missing")
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        images = np.asarray(splits[split].images)
        labels = np.asarray(splits[split].labels).reshape(-1, 1)
        _check_split(split, images, labels, str(path))
        arrays[f"{split}_images"] = images
        # MedMNIST stores labels as uint8 (N, 1); keep that so the file is byte-for-byte its format
        arrays[f"{split}_labels"] = labels.astype(np.uint8)
    # through an open file: numpy would append .npz to a name without it
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path
