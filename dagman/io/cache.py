"""The training cache: converted series resampled to isotropic spacing, as NIfTI and as windowed arrays.

Layout (see CONTRACTS.md):
    CACHE/images/<case_id>__<series_id>.nii.gz   int16 HU, identity direction (LPS), isotropic spacing
    CACHE/arrays/<case_id>__<series_id>.npy      float16 in [0, 1], (z, y, x) C-order, for np.load(mmap_mode="r")
    CACHE/index.csv                              one row per series, sorted by (case_id, series_id)

The arrays let a data loader take a crop with one memory-mapped slice and a cast, with no decompression.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm import tqdm

from dagman.io.atomic import atomic_path, write_csv_atomic, write_image_atomic
from dagman.io.resample import resample_to_spacing, window_to_unit

__all__ = ["build_cache", "write_index", "load_cached_array", "INDEX_COLUMNS", "SERIES_COLUMNS"]

# columns of the converter's series.csv that this stage reads
SERIES_COLUMNS = ("case_id", "series_id", "image")
INDEX_COLUMNS = (
    "case_id",
    "series_id",
    "image",
    "array",
    "size_x",
    "size_y",
    "size_z",
    "spacing",
    "origin_x",
    "origin_y",
    "origin_z",
    "window_low",
    "window_high",
)


def _atomic_write_array(array: np.ndarray, path: Path) -> None:
    """Save ``array`` as .npy at ``path`` atomically."""
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)


def _cache_one(
    source: str,
    case_id: str,
    series_id: str,
    out_dir: str,
    spacing: float,
    window: tuple[float, float],
    threads: int,
) -> dict[str, Any]:
    """Resample one converted series, write its NIfTI and array, and return its index row."""
    if threads > 0:
        # one SimpleITK thread per worker process: the pool already uses every core
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    try:
        image = sitk.ReadImage(source)
        resampled = resample_to_spacing(image, spacing, "linear")
    except RuntimeError as exc:  # SimpleITK reports read failures as RuntimeError
        raise ValueError(f"could not read or resample {source}: {exc}") from exc
    name = f"{case_id}__{series_id}"
    out = Path(out_dir)
    write_image_atomic(out / f"images/{name}.nii.gz", resampled)
    _atomic_write_array(
        window_to_unit(sitk.GetArrayViewFromImage(resampled), *window), out / f"arrays/{name}.npy"
    )
    return _index_row(out, case_id, series_id, spacing, window)


def _index_row(
    out: Path, case_id: str, series_id: str, spacing: float, window: tuple[float, float]
) -> dict[str, Any]:
    """The index row of one cached series, read from its NIfTI header (no voxel data is loaded)."""
    name = f"{case_id}__{series_id}"
    image_rel, array_rel = f"images/{name}.nii.gz", f"arrays/{name}.npy"
    if not (out / array_rel).is_file():
        raise FileNotFoundError(f"cached array {out / array_rel} does not exist (resample {name} first)")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(out / image_rel))
    reader.ReadImageInformation()
    size, origin = reader.GetSize(), reader.GetOrigin()
    return {
        "case_id": case_id,
        "series_id": series_id,
        "image": image_rel,
        "array": array_rel,
        "size_x": size[0],
        "size_y": size[1],
        "size_z": size[2],
        "spacing": float(spacing),
        "origin_x": origin[0],
        "origin_y": origin[1],
        "origin_z": origin[2],
        "window_low": float(window[0]),
        "window_high": float(window[1]),
    }


def _read_series_table(series_csv: Path) -> pd.DataFrame:
    """Read and check the converter's series.csv; keep the converted rows."""
    if not series_csv.is_file():
        raise FileNotFoundError(f"series table {series_csv} does not exist (run `dagman convert` first)")
    table = pd.read_csv(series_csv, dtype=str, keep_default_na=False)
    missing = [c for c in SERIES_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"series table {series_csv} lacks the column(s) {', '.join(missing)}")
    if "status" in table.columns:
        table = table[table["status"] == "converted"]
    duplicated = table.duplicated(["case_id", "series_id"])
    if duplicated.any():
        first = table[duplicated].iloc[0]
        raise ValueError(
            f"series table {series_csv} lists {first['case_id']}__{first['series_id']} more than once"
        )
    for image in table["image"]:
        if not (series_csv.parent / image).is_file():
            raise FileNotFoundError(f"image {image} listed in {series_csv} does not exist")
    return table


def build_cache(
    series_csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    spacing: float = 2.0,
    window: tuple[float, float] = (-175.0, 250.0),
    workers: int | None = None,
    only: list[str] | None = None,
) -> pd.DataFrame:
    """Resample every converted series listed in ``series_csv`` and write the training cache to ``out_dir``.

    Args:
        series_csv: the converter's series.csv; its ``image`` paths are relative to the CSV's folder.
        out_dir: the cache folder (created if needed); existing entries of the same name are replaced.
        spacing: isotropic output spacing in mm.
        window: HU window (low, high) mapped to [0, 1] in the arrays.
        workers: number of processes; None uses every CPU core, 1 runs in this process.
        only: resample just these ``<case_id>__<series_id>`` keys and leave index.csv alone (the workflow
            runs one job per series, then :func:`write_index` once).

    Returns:
        The index table (written to ``out_dir/index.csv`` unless ``only`` is given), sorted by
        (case_id, series_id).
    """
    series_csv = Path(series_csv)
    out = Path(out_dir)
    spacing = float(spacing)
    if not (np.isfinite(spacing) and spacing > 0):
        raise ValueError(f"spacing must be a positive number of mm, got {spacing}")
    low, high = (float(w) for w in window)
    if not high > low:
        raise ValueError(f"window high ({high}) must be greater than low ({low})")
    table = _read_series_table(series_csv)
    if only is not None:
        keys = table["case_id"] + "__" + table["series_id"]
        unknown = sorted(set(only) - set(keys))
        if unknown:
            raise ValueError(f"series {', '.join(unknown)} not listed in {series_csv}")
        table = table[keys.isin(only)]
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "arrays").mkdir(parents=True, exist_ok=True)

    jobs = [
        (str(series_csv.parent / row.image), row.case_id, row.series_id, str(out), spacing, (low, high))
        for row in table.itertuples(index=False)
    ]
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    rows: list[dict[str, Any]] = []
    with tqdm(total=len(jobs), desc="resample", unit="series") as progress:
        if n_workers == 1:
            for job in jobs:
                rows.append(_cache_one(*job, threads=0))
                progress.update()
        else:
            with ProcessPoolExecutor(max_workers=n_workers) as pool:
                futures = [pool.submit(_cache_one, *job, threads=1) for job in jobs]
                for future in as_completed(futures):
                    rows.append(future.result())
                    progress.update()

    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    index = index.sort_values(["case_id", "series_id"], kind="stable").reset_index(drop=True)
    if only is None:
        write_csv_atomic(out / "index.csv", index)
    return index


def write_index(
    series_csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    spacing: float = 2.0,
    window: tuple[float, float] = (-175.0, 250.0),
) -> pd.DataFrame:
    """Write ``out_dir/index.csv`` for series already cached one by one (``build_cache(..., only=...)``)."""
    out = Path(out_dir)
    table = _read_series_table(Path(series_csv))
    low, high = (float(w) for w in window)
    rows = [_index_row(out, r.case_id, r.series_id, float(spacing), (low, high)) for r in table.itertuples()]
    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    index = index.sort_values(["case_id", "series_id"], kind="stable").reset_index(drop=True)
    write_csv_atomic(out / "index.csv", index)
    return index


def load_cached_array(cache_dir: str | os.PathLike[str], row: Mapping[str, Any]) -> np.memmap:
    """Memory-map the windowed (z, y, x) float16 array of one index row (a dict or a pandas row)."""
    path = Path(cache_dir) / str(row["array"])
    if not path.is_file():
        raise FileNotFoundError(
            f"cached array {path} does not exist (rebuild the cache with `dagman resample`)"
        )
    return np.load(path, mmap_mode="r")
