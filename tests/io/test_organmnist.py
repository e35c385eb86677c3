"""OrganMNIST3D files: exact MedMNIST format on write, checks on read, and the synthetic demo file."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from dagman.io import organmnist_demo_cli
from dagman.io.organmnist import ORGAN_CLASSES, SPLITS, OrganSplit, read_organmnist, write_organmnist
from dagman.io.synthetic.organs import organ_volume, synthesize_organmnist


def _splits(side: int = 8, n: int = 3) -> dict[str, OrganSplit]:
    rng = np.random.default_rng(0)
    return {
        s: OrganSplit(
            images=rng.integers(0, 256, size=(n, side, side, side), dtype=np.uint8),
            labels=rng.integers(0, 11, size=n),
        )
        for s in SPLITS
    }


def test_round_trip_keeps_medmnist_keys_shapes_and_dtypes(tmp_path):
    """The written file holds exactly MedMNIST's six keys: N x D^3 uint8 images and N x 1 labels."""
    splits = _splits()
    path = write_organmnist(tmp_path / "organmnist3d.npz", splits)
    with np.load(path) as raw:
        assert sorted(raw.files) == sorted(f"{s}_{k}" for s in SPLITS for k in ("images", "labels"))
        for s in SPLITS:
            assert raw[f"{s}_images"].shape == (3, 8, 8, 8) and raw[f"{s}_images"].dtype == np.uint8
            assert raw[f"{s}_labels"].shape == (3, 1) and raw[f"{s}_labels"].dtype == np.uint8
    back = read_organmnist(path)
    for s in SPLITS:
        np.testing.assert_array_equal(back[s].images, splits[s].images)
        np.testing.assert_array_equal(back[s].labels, splits[s].labels)


def test_read_accepts_a_file_written_by_plain_numpy(tmp_path):
    """A MedMNIST-like file saved with np.savez (labels int64 N x 1) reads back with (N,) labels."""
    arrays = {}
    for s in SPLITS:
        arrays[f"{s}_images"] = np.zeros((2, 4, 4, 4), np.uint8)
        arrays[f"{s}_labels"] = np.array([[0], [10]], dtype=np.int64)
    np.savez(tmp_path / "m.npz", **arrays)
    data = read_organmnist(tmp_path / "m.npz")
    assert data["test"].labels.tolist() == [0, 10]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("val_labels"), "missing key"),
        (lambda a: a.__setitem__("train_images", a["train_images"].astype(np.float32)), "uint8"),
        (lambda a: a.__setitem__("test_labels", np.full((2, 1), 11)), "0..10"),
        (lambda a: a.__setitem__("test_labels", np.zeros((2,), np.int64)), "N x 1"),
    ],
)
def test_read_rejects_a_malformed_file(tmp_path, change, message):
    """Missing keys, wrong dtypes, out-of-range labels and wrong label shapes fail naming the problem."""
    arrays = {f"{s}_images": np.zeros((2, 4, 4, 4), np.uint8) for s in SPLITS}
    arrays.update({f"{s}_labels": np.zeros((2, 1), np.int64) for s in SPLITS})
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        read_organmnist(tmp_path / "bad.npz")


def test_synthetic_volumes_are_seeded_balanced_and_class_specific():
    """Same seed, same volumes; every class present; mirrored pairs differ; values span the uint8 range."""
    a = synthesize_organmnist(size=28, per_class=2, seed=3)
    b = synthesize_organmnist(size=28, per_class=2, seed=3)
    np.testing.assert_array_equal(a["train"].images, b["train"].images)
    assert np.bincount(a["test"].labels, minlength=11).tolist() == [2] * len(ORGAN_CLASSES)
    right = organ_volume(7, 28, np.random.default_rng(0))  # lung-right
    left = organ_volume(8, 28, np.random.default_rng(0))  # lung-left
    assert right.dtype == np.uint8 and right.shape == (28, 28, 28)
    assert not np.array_equal(right, left)
    lung, bone = organ_volume(7, 28, np.random.default_rng(1)), organ_volume(3, 28, np.random.default_rng(1))
    assert lung.mean() < bone.mean()  # dark lung, bright femur


def test_demo_cli_writes_a_readable_file(tmp_path):
    """`dagman organmnist-demo` writes a file read_organmnist accepts, at the asked size."""
    parser = argparse.ArgumentParser()
    organmnist_demo_cli.add_arguments(parser)
    out = tmp_path / "organmnist3d.npz"
    args = parser.parse_args(["--out", str(out), "--size", "28", "--per-class", "1", "--seed", "1"])
    assert organmnist_demo_cli.run(args) == 0
    data = read_organmnist(out)
    assert data["test"].images.shape == (11, 28, 28, 28)
    assert len(data["val"].labels) == 11
