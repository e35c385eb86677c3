"""Tests of the training cache: index.csv, resampled NIfTI and memory-mappable windowed arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from dagman.io.cache import INDEX_COLUMNS, build_cache, load_cached_array
from dagman.io.resample_cli import add_arguments, run


def _write_series_csv(root, shapes):
    """A converter-like OUT folder: tiny int16 NIfTI images and series.csv with relative image paths."""
    (root / "images").mkdir(parents=True)
    rows = []
    for k, (size_z, size_y, size_x) in enumerate(shapes):
        ramp = np.linspace(-1000, 400, size_z * size_y * size_x).reshape(size_z, size_y, size_x)
        image = sitk.GetImageFromArray(ramp.astype(np.int16))
        image.SetSpacing((0.8, 0.8, 2.5))
        image.SetOrigin((-50.0, 20.0, -100.0 + k))
        case_id, series_id = f"case-{9 - k:010x}", f"{k:08x}"
        rel = f"images/{case_id}__{series_id}.nii.gz"
        sitk.WriteImage(image, str(root / rel))
        size = {"size_x": size_x, "size_y": size_y, "size_z": size_z}
        spacing = {"spacing_x": 0.8, "spacing_y": 0.8, "spacing_z": 2.5}
        ids = {"case_id": case_id, "series_id": series_id, "series_uid": f"1.2.{k}"}
        rows.append(
            {**ids, "image": rel, "n_slices": size_z, **size, **spacing, "status": "converted", "reason": ""}
        )
    pd.DataFrame(rows).to_csv(root / "series.csv", index=False)
    return root / "series.csv"


@pytest.mark.parametrize("workers", [1, 2])
def test_build_cache_writes_index_images_and_mmap_arrays(tmp_path, workers):
    """build_cache writes the contract's index columns in sorted order, 2 mm LPS int16 NIfTI and [0,1] float16."""
    series_csv = _write_series_csv(tmp_path / "convert", [(8, 10, 12), (6, 9, 5)])
    cache = tmp_path / "cache"
    index = build_cache(series_csv, cache, spacing=2.0, window=(-175, 250), workers=workers)
    on_disk = pd.read_csv(cache / "index.csv", dtype={"case_id": str, "series_id": str})
    assert list(on_disk.columns) == list(INDEX_COLUMNS)
    assert len(on_disk) == 2
    assert list(on_disk["case_id"]) == sorted(on_disk["case_id"])
    pd.testing.assert_frame_equal(on_disk, index, check_dtype=False)
    for _, row in on_disk.iterrows():
        image = sitk.ReadImage(str(cache / row["image"]))
        assert image.GetPixelID() == sitk.sitkInt16
        assert image.GetSpacing() == pytest.approx((2.0, 2.0, 2.0))
        assert image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
        assert image.GetOrigin() == pytest.approx((row["origin_x"], row["origin_y"], row["origin_z"]))
        array = load_cached_array(cache, row)
        assert isinstance(array, np.memmap)
        assert array.dtype == np.float16
        assert array.shape == (row["size_z"], row["size_y"], row["size_x"])
        assert 0.0 <= float(array.min()) and float(array.max()) <= 1.0
        hu = sitk.GetArrayFromImage(image).astype(np.float32)
        np.testing.assert_allclose(array, np.clip((hu + 175) / 425, 0, 1), atol=1e-3)
    assert not list(cache.rglob(".tmp-*"))  # atomic writes leave no temporaries behind


def test_build_cache_reports_a_missing_image(tmp_path):
    """A series.csv row whose image is missing fails up front, naming the file."""
    series_csv = _write_series_csv(tmp_path / "convert", [(4, 4, 4)])
    missing = next((tmp_path / "convert" / "images").iterdir())
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=missing.name):
        build_cache(series_csv, tmp_path / "cache", workers=1)


def test_resample_cli_runs_build_cache(tmp_path, capsys):
    """`dagman resample --series ... --out ...` parses its options and writes the cache."""
    import argparse

    series_csv = _write_series_csv(tmp_path / "convert", [(5, 6, 7)])
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = f"--series {series_csv} --out {tmp_path / 'cache'} --spacing 3 --window -100 100 --workers 1"
    args = parser.parse_args(argv.split())
    assert run(args) == 0
    index = pd.read_csv(tmp_path / "cache" / "index.csv")
    assert index.loc[0, "spacing"] == 3.0 and index.loc[0, "window_low"] == -100.0


def test_per_series_jobs_then_index_equal_one_batch_run(tmp_path):
    """The workflow's one-job-per-series path (--only, then --index-only) gives the batch run's index."""
    from dagman.io.cache import write_index

    series_csv = _write_series_csv(tmp_path / "convert", [(8, 10, 12), (6, 9, 5)])
    batch = build_cache(series_csv, tmp_path / "batch", workers=1)
    keys = list(batch.case_id + "__" + batch.series_id)
    for key in keys:
        partial = build_cache(series_csv, tmp_path / "jobs", workers=1, only=[key])
        assert len(partial) == 1
        assert not (tmp_path / "jobs" / "index.csv").exists()
    index = write_index(series_csv, tmp_path / "jobs")
    pd.testing.assert_frame_equal(index, batch)
    with pytest.raises(ValueError, match="not listed"):
        build_cache(series_csv, tmp_path / "jobs", only=["nope__0000"])
