"""Convert every CT series found in a DICOM folder tree to NIfTI, with a series table and a quarantine table.

:func:`convert_tree` is the typed entry point behind ``dagman convert``. It reads headers of all files (in
parallel), groups them by SeriesInstanceUID, validates each series (:mod:`dagman.io.dicom_series`), and
converts the good ones in a process pool, one series per task. Outputs (CONTRACTS.md):

- ``OUT/images/<case_id>__<series_id>.nii.gz``: int16 HU, LPS geometry as DICOM states it, written by
  SimpleITK so 3D Slicer and ITK-SNAP open it in the right place;
- ``OUT/series.csv``: one row per converted series;
- ``OUT/quarantine.csv``: one row per rejected series or file, with a reason code and one plain sentence.

A series that fails (bad geometry, decode error, or any unexpected error) becomes a quarantine row and
never stops the others. Every output is written atomically, and a rerun into the same folder replaces the
previous run's results, stale images included. No identifying tag is ever written: case ids are pseudonyms
(or the dataset's own anonymised PatientID when asked), file paths are relative to the input folder.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagman.io.atomic import TMP_PREFIX, write_image_atomic, write_rows_atomic
from dagman.io.dicom_series import (
    CASE_ID_MODES,
    FileIssue,
    HeaderInfo,
    SeriesChecks,
    SeriesDecodeError,
    SeriesPlan,
    make_case_id,
    make_series_id,
    plan_series,
    read_header,
    stack_series,
)

__all__ = ["SERIES_COLUMNS", "QUARANTINE_COLUMNS", "ConversionResult", "convert_tree", "write_series_image"]

SERIES_COLUMNS = (
    "case_id",
    "series_id",
    "series_uid",
    "image",
    "n_slices",
    "size_x",
    "size_y",
    "size_z",
    "spacing_x",
    "spacing_y",
    "spacing_z",
    "status",
    "reason",
)
QUARANTINE_COLUMNS = ("level", "case_id", "series_id", "series_uid", "file", "reason_code", "reason")
_IMAGE_SUFFIX = ".nii.gz"
_TMP_MARK = TMP_PREFIX  # temporary files of atomic writes; stale ones are removed
_HEADER_CHUNK = 64  # files per header task: large enough to amortise inter-process overhead


@dataclass(frozen=True)
class ConversionResult:
    """What one conversion run wrote: the table rows (as written) and the table paths."""

    series: list[dict[str, Any]]
    quarantine: list[dict[str, Any]]
    series_csv: Path
    quarantine_csv: Path


def _worker_init() -> None:
    """One ITK thread per worker process: parallelism comes from the pool, not from oversubscribed threads."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _usable_cores() -> int:
    """Cores this process may run on (respects CPU affinity, e.g. a SLURM allocation, where available)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _read_headers(items: Sequence[tuple[str, str]]) -> list[HeaderInfo | FileIssue]:
    return [read_header(path, rel) for path, rel in items]


def write_series_image(volume: Any, plan: SeriesPlan, path: Path) -> None:
    """Write an int16 (z, y, x) volume as NIfTI with the plan's DICOM geometry, atomically.

    The image is built with SimpleITK (spacing = column, row spacing and slice step; origin = IPP of the first
    slice; direction columns = row cosine, column cosine, slice normal) exactly as SimpleITK's own DICOM
    reader would, so the file lands in the right place in any ITK-based viewer.

    Args:
        volume: (z, y, x) int16 array from :func:`dagman.io.dicom_series.stack_series`.
        plan: the series plan holding the geometry.
        path: destination ``.nii.gz`` path.
    """
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(plan.spacing)
    image.SetOrigin(plan.origin)
    image.SetDirection(plan.direction)
    write_image_atomic(path, image)


def _convert_series(plan: SeriesPlan, image_path: str) -> tuple[str, str]:
    """Stack and write one series in a worker. Never raises: returns ``("converted", note)`` or
    ``(reason_code, reason)`` so one bad series cannot stop the run."""
    try:
        volume = stack_series(plan)
        write_series_image(volume, plan, Path(image_path))
    except SeriesDecodeError as exc:
        return "decode_failed", str(exc)
    except Exception as exc:  # an unexpected failure of one series must not end the whole conversion
        return "conversion_failed", f"Conversion failed unexpectedly: {type(exc).__name__}: {exc}"
    return "converted", plan.note()


def _walk(input_dir: Path, skip: Path) -> list[tuple[str, str]]:
    """All regular files under ``input_dir`` as (path, posix path relative to input_dir), sorted; the
    output folder is skipped when it lies inside the input, and so are hidden files and folders (".*": tool
    bookkeeping such as Snakemake's timestamps or macOS's ._ files, never DICOM)."""
    found: list[tuple[str, str]] = []
    for root, dirs, names in os.walk(input_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and Path(root, d).resolve() != skip)
        for name in sorted(n for n in names if not n.startswith(".")):
            path = Path(root, name)
            if path.is_file():
                found.append((str(path), path.relative_to(input_dir).as_posix()))
    return found


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _progress(iterable: Iterable[Any], total: int, desc: str, unit: str, enabled: bool) -> Iterable[Any]:
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Write a CSV atomically (temp file in the same folder, then rename)."""
    write_rows_atomic(path, columns, rows)


def _map(
    executor: Executor | None, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]]
) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, fn(*args[index]))`` as results arrive (in order when run in-process)."""
    if executor is None:
        for i, a in enumerate(args):
            yield i, fn(*a)
        return
    from concurrent.futures import as_completed

    futures = {executor.submit(fn, *a): i for i, a in enumerate(args)}
    for future in as_completed(futures):
        yield futures[future], future.result()


def convert_tree(
    input_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    case_ids: str = "pseudonym",
    workers: int | None = None,
    checks: SeriesChecks | None = None,
    progress: bool = True,
) -> ConversionResult:
    """Discover the CT series in a DICOM folder tree and convert each valid one to NIfTI.

    Args:
        input_dir: any folder tree of DICOM files (any names, with or without ``.dcm``; mixed studies).
        out_dir: output folder; ``images/``, ``series.csv`` and ``quarantine.csv`` are (re)written there.
        case_ids: ``pseudonym`` (default; ``case-`` + sha256 of PatientID) or ``patient-id`` (keep the
            PatientID, for public anonymised datasets).
        workers: processes for reading and converting (default: all usable cores; 1 runs in-process).
        checks: thresholds of the volume checks (default :class:`SeriesChecks()`).
        progress: show tqdm progress bars on stderr.

    Returns:
        The rows written to both tables and their paths.

    Raises:
        FileNotFoundError: ``input_dir`` does not exist or is not a folder.
        ValueError: unknown ``case_ids`` mode or ``workers`` < 1.
    """
    source = Path(input_dir).resolve()
    if not source.is_dir():
        raise FileNotFoundError(f"DICOM input folder {input_dir} does not exist or is not a folder")
    if case_ids not in CASE_ID_MODES:
        raise ValueError(f"case_ids must be one of {CASE_ID_MODES}, got {case_ids!r}")
    n_workers = workers if workers is not None else _usable_cores()
    if n_workers < 1:
        raise ValueError(f"workers must be at least 1, got {n_workers}")
    checks = checks or SeriesChecks()
    out = Path(out_dir).resolve()
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)

    files = _walk(source, out)
    issues: list[FileIssue] = []
    series_files: dict[str, list[HeaderInfo]] = defaultdict(list)
    # A pool pays off only beyond one header chunk; spawn (not fork) keeps ITK's threads out of the children.
    executor: Executor | None = None
    if n_workers > 1 and len(files) > _HEADER_CHUNK:
        executor = ProcessPoolExecutor(
            n_workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init
        )
    try:
        chunks = [(chunk,) for chunk in _chunks(files, _HEADER_CHUNK)]
        bar = _progress(None, len(files), "reading headers", "file", progress)
        for _, headers in _map(executor, _read_headers, chunks):
            for header in headers:
                if isinstance(header, HeaderInfo):
                    series_files[header.series_uid].append(header)
                else:
                    issues.append(header)
            bar.update(len(headers))
        bar.close()

        plans: list[SeriesPlan] = []
        for uid in sorted(series_files):
            plan, found = plan_series(series_files[uid], checks)
            issues.extend(found)
            if plan is not None:
                plans.append(plan)

        def name(plan: SeriesPlan) -> str:
            return (
                f"{make_case_id(plan.patient_id, case_ids)}__{make_series_id(plan.series_uid)}{_IMAGE_SUFFIX}"
            )

        # Largest series first keeps the pool busy to the end.
        plans.sort(key=lambda p: (-p.n_slices * p.rows * p.cols, p.series_uid))
        tasks = [(plan, str(images / name(plan))) for plan in plans]
        outcomes: dict[int, tuple[str, str]] = {}
        for i, outcome in _progress(
            _map(executor, _convert_series, tasks), len(tasks), "converting series", "series", progress
        ):
            outcomes[i] = outcome
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)

    series_rows: list[dict[str, Any]] = []
    for i, plan in enumerate(plans):
        status, text = outcomes[i]
        if status != "converted":
            issues.append(FileIssue("series", status, text, "", plan.series_uid, plan.patient_id))
            continue
        image = images / name(plan)
        series_rows.append(
            {
                "case_id": make_case_id(plan.patient_id, case_ids),
                "series_id": make_series_id(plan.series_uid),
                "series_uid": plan.series_uid,
                "image": image.relative_to(out).as_posix(),
                "n_slices": plan.n_slices,
                "size_x": plan.cols,
                "size_y": plan.rows,
                "size_z": plan.n_slices,
                "spacing_x": plan.spacing[0],
                "spacing_y": plan.spacing[1],
                "spacing_z": plan.spacing[2],
                "status": "converted",
                "reason": text,
            }
        )
    series_rows.sort(key=lambda r: (r["case_id"], r["series_id"]))

    quarantine_rows = [
        {
            "level": issue.level,
            "case_id": make_case_id(issue.patient_id, case_ids) if issue.series_uid else "",
            "series_id": make_series_id(issue.series_uid) if issue.series_uid else "",
            "series_uid": issue.series_uid,
            "file": issue.rel,
            "reason_code": issue.reason_code,
            "reason": issue.reason,
        }
        for issue in issues
    ]
    # Series rows before the file rows of the same series, files in path order.
    quarantine_rows.sort(key=lambda r: (r["case_id"], r["series_id"], r["level"] != "series", r["file"]))

    # Replace the previous run's results: images this run did not write are stale.
    keep = {Path(row["image"]).name for row in series_rows}
    for path in images.iterdir():
        if path.is_file() and (
            path.name.startswith(_TMP_MARK) or (path.name.endswith(_IMAGE_SUFFIX) and path.name not in keep)
        ):
            path.unlink()
    series_csv, quarantine_csv = out / "series.csv", out / "quarantine.csv"
    _write_csv(series_csv, SERIES_COLUMNS, series_rows)
    _write_csv(quarantine_csv, QUARANTINE_COLUMNS, quarantine_rows)
    return ConversionResult(series_rows, quarantine_rows, series_csv, quarantine_csv)
