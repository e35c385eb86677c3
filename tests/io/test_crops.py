"""Tests of the two-crop training dataset: shapes, padding, determinism and DataLoader workers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from dagman.io.crops import TwoCropDataset


@pytest.fixture
def index_csv(tmp_path):
    """A cache with three float16 volumes, one smaller than the crop along two axes."""
    (tmp_path / "arrays").mkdir()
    rng = np.random.default_rng(0)
    shapes = [(20, 24, 28), (16, 16, 16), (6, 30, 5)]
    rows = []
    for k, shape in enumerate(shapes):
        rel = f"arrays/case-{k}__s.npy"
        np.save(tmp_path / rel, rng.random(shape).astype(np.float16))
        rows.append({"case_id": f"case-{k}", "series_id": "s", "array": rel})
    pd.DataFrame(rows).to_csv(tmp_path / "index.csv", index=False)
    return tmp_path / "index.csv"


def test_items_have_two_crops_of_the_right_shape(index_csv):
    """Each item holds u and v as float32 [1, D, H, W] tensors and its index."""
    dataset = TwoCropDataset(index_csv, crop_size=(8, 12, 10), seed=1)
    assert len(dataset) == 3
    for i in range(len(dataset)):
        item = dataset[i]
        assert item["index"] == i
        for view in ("u", "v"):
            assert item[view].shape == (1, 8, 12, 10) and item[view].dtype == torch.float32


def test_small_volumes_are_padded_with_zero(index_csv):
    """A volume smaller than the crop is copied whole into the crop, the rest being 0."""
    dataset = TwoCropDataset(index_csv, crop_size=(8, 12, 10), seed=1)
    source = np.load(index_csv.parent / "arrays/case-2__s.npy").astype(np.float32)  # (6, 30, 5)
    u = dataset[2]["u"][0].numpy()
    # z and x are padded: exactly 6 * 12 * 5 voxels hold data, and they sum like a 12-row window of the source
    nonzero = np.nonzero(u)
    assert np.ptp(nonzero[0]) + 1 == 6 and np.ptp(nonzero[2]) + 1 == 5
    z0, y0, x0 = (int(a.min()) for a in nonzero)
    block = u[z0 : z0 + 6, :, x0 : x0 + 5]
    starts = [s for s in range(30 - 12 + 1) if np.array_equal(source[:, s : s + 12, :], block)]
    assert starts, "the crop's data block is not a window of the source volume"
    assert np.count_nonzero(u) == block.size


def test_same_seed_epoch_index_gives_identical_crops_and_epochs_differ(index_csv):
    """Crops depend only on (seed, epoch, index): repeatable, and different in another epoch or seed."""
    a = TwoCropDataset(index_csv, crop_size=(8, 8, 8), seed=3)
    b = TwoCropDataset(index_csv, crop_size=(8, 8, 8), seed=3)
    a.set_epoch(5)
    b.set_epoch(5)
    first = a[0]
    torch.testing.assert_close(first["u"], b[0]["u"])
    torch.testing.assert_close(first["v"], b[0]["v"])
    b.set_epoch(6)
    assert not torch.equal(first["u"], b[0]["u"])
    assert not torch.equal(first["u"], TwoCropDataset(index_csv, crop_size=(8, 8, 8), seed=4)[0]["u"])
    assert not torch.equal(first["u"], first["v"])


def test_dataloader_workers_give_the_same_stream_and_see_set_epoch(index_csv):
    """Two persistent workers give exactly the single-process batches, and follow set_epoch between epochs."""
    dataset = TwoCropDataset(index_csv, crop_size=(8, 8, 8), seed=0)

    def epochs(num_workers):
        loader = DataLoader(
            dataset, batch_size=2, num_workers=num_workers, persistent_workers=num_workers > 0
        )
        out = []
        for epoch in (0, 1):
            dataset.set_epoch(epoch)
            out.append(torch.cat([batch["u"] for batch in loader]))
        return out

    serial, parallel = epochs(0), epochs(2)
    for s, p in zip(serial, parallel, strict=True):
        torch.testing.assert_close(s, p)
    assert not torch.equal(parallel[0], parallel[1])


def test_bad_arguments_are_refused(index_csv, tmp_path):
    """A missing index or a malformed crop size fails at construction with a clear error."""
    with pytest.raises(FileNotFoundError, match="index.csv"):
        TwoCropDataset(tmp_path / "nowhere" / "index.csv")
    with pytest.raises(ValueError, match="crop_size"):
        TwoCropDataset(index_csv, crop_size=(8, 8))
