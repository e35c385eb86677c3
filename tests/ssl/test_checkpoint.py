"""Checkpoint bookkeeping: atomic writes keep the old file, RNG states round-trip, mismatches are named."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from dagman.ssl import checkpoint as ckpt_mod
from dagman.ssl.checkpoint import (
    code_version,
    diff_keys,
    get_rng_state,
    load_checkpoint,
    move_aside,
    resume_conflicts,
    save_checkpoint,
    set_rng_state,
)


def test_save_is_atomic_and_loads_weights_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing write leaves the previous checkpoint intact and no temporary file; RNG states load safely."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3), "rng": get_rng_state()}, path)

    def broken_save(obj, f):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_state_round_trip(tmp_path: Path) -> None:
    """Restoring a saved (and reloaded) RNG state repeats python, numpy and torch draws exactly."""
    save_checkpoint({"rng": get_rng_state()}, tmp_path / "c.pt")
    first = (random.random(), np.random.rand(), torch.rand(2))
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


def test_resume_conflicts_names_differences() -> None:
    """Differing method fields, settings and process counts are all named; runtime keys are ignored."""
    saved = {
        "method": {"name": "dagman", "pdr": 0.7},
        "settings": {"lr": 8e-4, "max_steps": 5},
        "world_size": 1,
    }
    same = resume_conflicts(
        saved,
        method={"name": "dagman", "pdr": 0.7},
        settings={"lr": 8e-4, "max_steps": 9},
        world_size=1,
        runtime_keys={"max_steps"},
    )
    assert same == []
    problems = resume_conflicts(
        saved,
        method={"name": "dagman", "pdr": 0.5},
        settings={"lr": 1e-3, "max_steps": 5},
        world_size=2,
    )
    assert problems == [
        "method 'pdr': checkpoint 0.7, command 0.5",
        "setting 'lr': checkpoint 0.0008, command 0.001",
        "processes: checkpoint 1, command 2",
    ]
    assert diff_keys({"a": 1, "b": 2}, {"a": 1, "c": 3}) == ["b", "c"]


def test_code_version_has_package_version() -> None:
    """The code version always names the package version (the git commit only inside a checkout)."""
    version = code_version()
    assert version["dagman"] and "git_commit" in version


def test_move_aside_uses_the_next_free_folder_and_keeps_everything(tmp_path: Path) -> None:
    """Existing names move into stale-1, then stale-2; absent names are skipped; with none, nothing happens."""
    (tmp_path / "checkpoint.pt").write_text("a")
    (tmp_path / "board").mkdir()
    (tmp_path / "board" / "events").write_text("e")
    (tmp_path / "keep.txt").write_text("k")
    first = move_aside(tmp_path, ["checkpoint.pt", "board", "missing.csv"])
    assert first == tmp_path / "stale-1"
    assert sorted(p.name for p in first.iterdir()) == ["board", "checkpoint.pt"]
    assert (first / "board" / "events").read_text() == "e" and (tmp_path / "keep.txt").exists()
    assert move_aside(tmp_path, ["checkpoint.pt"]) is None
    (tmp_path / "checkpoint.pt").write_text("b")
    assert move_aside(tmp_path, ["checkpoint.pt"]) == tmp_path / "stale-2"
    assert (tmp_path / "stale-2" / "checkpoint.pt").read_text() == "b"
