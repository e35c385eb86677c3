"""Tests of the atomic writers every stage uses for its result files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from dagman.io.atomic import (
    TMP_PREFIX,
    atomic_path,
    write_csv_atomic,
    write_image_atomic,
    write_json_atomic,
    write_rows_atomic,
    write_text_atomic,
)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(TMP_PREFIX))


def test_writers_produce_the_expected_bytes_and_leave_no_temporary_file(tmp_path: Path) -> None:
    """Text, JSON (indent 2, newline), CSV (no index) and dict rows; parent folders are created."""
    out = tmp_path / "a" / "b"
    assert write_text_atomic(out / "t.txt", "héllo\n").read_text(encoding="utf-8") == "héllo\n"
    write_json_atomic(out / "s.json", {"b": 1, "a": [1.5]}, sort_keys=True)
    assert (out / "s.json").read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    write_csv_atomic(out / "f.csv", pd.DataFrame({"x": [1, 2], "y": ["p", "q"]}))
    assert (out / "f.csv").read_text() == "x,y\n1,p\n2,q\n"
    write_rows_atomic(out / "r.csv", ["step", "loss"], [{"step": 1, "loss": 0.5}, {"step": 2}])
    assert (out / "r.csv").read_bytes() == b"step,loss\n1,0.5\n2,\n"
    write_rows_atomic(
        out / "crlf.csv", ["a"], [{"a": 1, "extra": 2}], extrasaction="ignore", lineterminator="\r\n"
    )
    assert (out / "crlf.csv").read_bytes() == b"a\r\n1\r\n"
    assert json.loads((out / "s.json").read_text()) == {"a": [1.5], "b": 1}
    assert _leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    """An exception inside the block leaves the old content and removes the temporary file."""
    target = write_text_atomic(tmp_path / "metrics.json", "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half a fil")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n" and _leftovers(tmp_path) == []


def test_temporary_name_keeps_the_suffix_and_files_get_umask_permissions(tmp_path: Path) -> None:
    """Suffix-driven writers (SimpleITK .nii.gz, numpy .npy) work; the result is not 0600 like mkstemp's."""
    image = sitk.GetImageFromArray(np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    image.SetSpacing((2.0, 2.0, 2.0))
    previous = os.umask(0o022)
    try:
        path = write_image_atomic(tmp_path / "ct.nii.gz", image)
    finally:
        os.umask(previous)
    with open(path, "rb") as handle:
        assert handle.read(2) == b"\x1f\x8b"  # gzip: the compressed NIfTI writer was chosen
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), sitk.GetArrayFromImage(image))
    assert path.stat().st_mode & 0o777 == 0o644
    with atomic_path(tmp_path / "e.npy") as tmp:
        assert tmp.name.startswith(TMP_PREFIX) and tmp.name.endswith("-e.npy")
        np.save(tmp, np.ones(3))
    assert np.load(tmp_path / "e.npy").tolist() == [1.0, 1.0, 1.0] and _leftovers(tmp_path) == []
