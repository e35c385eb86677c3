"""Training views: two random 3D crops of one cached CT volume, exactly reproducible from (seed, epoch, index).

Each item memory-maps one cached array (see :mod:`dagman.io.cache`) and copies two crop-sized slices out of it,
so the per-item CPU work is two small reads and a cast, whatever the volume size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

__all__ = ["TwoCropDataset", "random_crop"]


def random_crop(volume: np.ndarray, crop_size: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A random ``crop_size`` float32 crop of a (z, y, x) ``volume``, zero-padded where the volume is smaller.

    Along an axis longer than the crop the start is uniform over every position that fits; along a shorter
    axis the whole extent is placed at a uniform random offset inside the crop and the rest is 0.
    Only the crop region of ``volume`` is read, so a memory-mapped volume is never loaded whole.
    """
    source, target = [], []
    for size, crop in zip(volume.shape, crop_size, strict=True):
        if size >= crop:
            start = int(rng.integers(0, size - crop + 1))
            source.append(slice(start, start + crop))
            target.append(slice(0, crop))
        else:
            offset = int(rng.integers(0, crop - size + 1))
            source.append(slice(0, size))
            target.append(slice(offset, offset + size))
    out = np.zeros(crop_size, dtype=np.float32)
    out[tuple(target)] = volume[tuple(source)]
    return out


class TwoCropDataset(Dataset):
    """Two random 3D crops ``u`` and ``v`` of one cached CT volume per item.

    Item ``i`` is ``dict(u=Tensor[1, D, H, W], v=Tensor[1, D, H, W], index=i)`` (float32, values in [0, 1]).
    Crops come from ``np.random.default_rng([seed, epoch, i])``, so the stream depends on nothing else:
    not on the worker count, the worker that loads the item, or the order in which items are asked for.

    The epoch lives in a shared-memory tensor, so ``set_epoch`` reaches DataLoader workers even when they are
    persistent (``persistent_workers=True``); call it before iterating the loader for that epoch.

    Args:
        index_csv: the cache's index.csv; its ``array`` paths are relative to the CSV's folder.
        crop_size: crop shape (D, H, W) in voxels, along the array's (z, y, x) axes.
        seed: base seed of the crop positions.
    """

    def __init__(
        self, index_csv: str | os.PathLike[str], crop_size: tuple[int, int, int] = (96, 96, 96), seed: int = 0
    ) -> None:
        index_csv = Path(index_csv)
        if not index_csv.is_file():
            raise FileNotFoundError(f"cache index {index_csv} does not exist (run `dagman resample` first)")
        table = pd.read_csv(index_csv, dtype={"case_id": str, "series_id": str, "array": str})
        if "array" not in table.columns:
            raise ValueError(f"cache index {index_csv} has no 'array' column")
        if len(crop_size) != 3 or not all(int(c) == c and c > 0 for c in crop_size):
            raise ValueError(f"crop_size must be three positive integers (D, H, W), got {crop_size!r}")
        if int(seed) < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.crop_size = tuple(int(c) for c in crop_size)
        self.seed = int(seed)
        self.table = table
        self.paths = [str(index_csv.parent / p) for p in table["array"]]
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        """The epoch whose crops the dataset gives."""
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's crops (a non-negative integer); visible to all DataLoader workers."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch}")
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        i = int(i)
        if not 0 <= i < len(self.paths):
            raise IndexError(f"index {i} out of range for {len(self.paths)} cached volumes")
        # opened per item: a header read and an mmap call, and no file handles pile up across a large cohort
        volume = np.load(self.paths[i], mmap_mode="r")
        if volume.ndim != 3:
            raise ValueError(f"cached array {self.paths[i]} has shape {volume.shape}, expected (z, y, x)")
        rng = np.random.default_rng([self.seed, self.epoch, i])
        u = random_crop(volume, self.crop_size, rng)
        v = random_crop(volume, self.crop_size, rng)
        return {"u": torch.from_numpy(u)[None], "v": torch.from_numpy(v)[None], "index": i}
