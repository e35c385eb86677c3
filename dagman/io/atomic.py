"""Atomic file writes: every result file is written under a temporary name in its folder, then renamed over.

A job killed mid-write (pre-emption, time limit, out of memory) so leaves either the previous file or none,
never a truncated one that a later stage would read as complete. The temporary name is hidden, starts with
``.tmp-`` (the converter removes stale ones) and ends with the target's own name, so writers that pick the
format from the suffix (SimpleITK's ``.nii.gz``, rt-utils' ``.dcm``, numpy's ``.npy``) behave as for the
target; it is created by the writer itself, so the file gets the usual permissions (umask), not 0600.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import SimpleITK as sitk

__all__ = [
    "TMP_PREFIX",
    "atomic_path",
    "write_text_atomic",
    "write_json_atomic",
    "write_csv_atomic",
    "write_rows_atomic",
    "write_image_atomic",
]

#: Start of every temporary name (hidden; recognisable for clean-up of files left by killed jobs).
TMP_PREFIX = ".tmp-"


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, rename it over ``path``.

    The parent folder is created. On an exception the temporary file is removed and ``path`` is untouched.

    Example::

        with atomic_path(out / "model.pt") as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], payload: Any, *, sort_keys: bool = False) -> Path:
    """Write ``payload`` as JSON (indent 2, trailing newline) to ``path`` atomically; returns ``path``."""
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=sort_keys) + "\n")


def write_csv_atomic(path: str | os.PathLike[str], frame: pd.DataFrame, **to_csv: Any) -> Path:
    """Write a DataFrame as CSV to ``path`` atomically; returns ``path``.

    Args:
        path: destination.
        frame: the table.
        **to_csv: keyword arguments of ``DataFrame.to_csv`` (``index`` defaults to False).
    """
    to_csv.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **to_csv)
    return Path(path)


def write_rows_atomic(
    path: str | os.PathLike[str],
    columns: Sequence[str],
    rows: Iterable[Mapping[str, Any]],
    **dict_writer: Any,
) -> Path:
    """Write dict rows as CSV (header = ``columns``) to ``path`` atomically with :class:`csv.DictWriter`.

    Args:
        path: destination.
        columns: field names, in order.
        rows: one mapping per row; missing fields are written empty.
        **dict_writer: keyword arguments of ``csv.DictWriter`` (``lineterminator`` defaults to "\\n").
    """
    dict_writer.setdefault("lineterminator", "\n")
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), **dict_writer)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def write_image_atomic(path: str | os.PathLike[str], image: sitk.Image, compress: bool = True) -> Path:
    """Write a SimpleITK image atomically (the suffix of ``path`` picks the format); returns ``path``."""
    import SimpleITK as sitk

    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    return Path(path)
