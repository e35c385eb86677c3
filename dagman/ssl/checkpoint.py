"""Pretraining checkpoints: atomic save and load, RNG states, code version, resume compatibility.

A checkpoint is one ``torch.save``d dict written to a temporary file in the target folder and renamed over
the old one (``os.replace``), so a job killed while writing leaves the previous checkpoint intact. Every
value in it is a tensor, a number, a string or a container of these, so it loads with
``torch.load(weights_only=True)``: the numpy RNG state is stored as a tensor, not as a pickled array.

The engine (``dagman.ssl.pretrain``) decides what goes in; this module only adds the bookkeeping: RNG states,
the code version, the check that a checkpoint belongs to the command that wants to resume it, and moving a stale
run's files aside (never deleting them: a finished checkpoint may be the only copy of days of training).
"""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dagman.io.atomic import atomic_path

__all__ = [
    "code_version",
    "diff_keys",
    "get_rng_state",
    "load_checkpoint",
    "move_aside",
    "resume_conflicts",
    "save_checkpoint",
    "set_rng_state",
]


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``).

    Returns:
        The path written.
    """
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs on load).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a pretraining checkpoint (got {type(state).__name__})")
    return state


def get_rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU and (when present) CUDA RNG states, in a ``weights_only``-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the states saved by :func:`get_rng_state` (CUDA ones only when the device count matches)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = list(state.get("cuda") or [])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def code_version() -> dict[str, str | None]:
    """The package version and, when the package sits in a git checkout, the commit (with "+dirty")."""
    from dagman import __version__

    commit = None
    root = Path(__file__).resolve().parents[2]
    try:
        commit = (
            subprocess.run(
                ["git", "-C", str(root), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            or None
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        if commit and dirty:
            commit += "+dirty"
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"dagman": __version__, "git_commit": commit}


def diff_keys(saved: Mapping[str, Any], current: Mapping[str, Any], ignore: Iterable[str] = ()) -> list[str]:
    """Keys whose values differ between two flat dicts (missing on one side counts), ``ignore`` left out."""
    skip = set(ignore)
    return sorted(
        k
        for k in set(saved) | set(current)
        if k not in skip and saved.get(k, _MISSING) != current.get(k, _MISSING)
    )


_MISSING = object()


def resume_conflicts(
    checkpoint: Mapping[str, Any],
    *,
    method: Mapping[str, Any],
    settings: Mapping[str, Any],
    world_size: int,
    runtime_keys: Iterable[str] = (),
) -> list[str]:
    """Why a checkpoint cannot be resumed by a command: one line per differing method field, setting (both
    values) and process count; empty when it can.

    Args:
        checkpoint: the loaded checkpoint (keys "method", "settings", "world_size").
        method: the command's ``MethodSpec.to_dict()``.
        settings: the command's ``PretrainSettings.to_dict()``.
        world_size: the command's number of processes (the data stream depends on it).
        runtime_keys: settings that may change on resume (workers, checkpoint interval, max steps, ...).
    """
    problems = []
    for label, saved, now, ignore in (
        ("method", checkpoint.get("method", {}), method, ()),
        ("setting", checkpoint.get("settings", {}), settings, runtime_keys),
    ):
        for key in diff_keys(saved, now, ignore):
            problems.append(f"{label} {key!r}: checkpoint {saved.get(key)!r}, command {now.get(key)!r}")
    if int(checkpoint.get("world_size", world_size)) != int(world_size):
        problems.append(f"processes: checkpoint {checkpoint.get('world_size')}, command {world_size}")
    return problems


def move_aside(folder: str | os.PathLike[str], names: Iterable[str], prefix: str = "stale") -> Path | None:
    """Move the entries ``names`` of ``folder`` that exist into a new ``folder/<prefix>-<n>/`` (first free n).

    Returns:
        The new folder, or None when none of the names exists (nothing is created then).
    """
    folder = Path(folder)
    present = [folder / name for name in names if (folder / name).exists()]
    if not present:
        return None
    n = 1
    while True:
        dest = folder / f"{prefix}-{n}"
        try:
            dest.mkdir()  # exclusive: two processes never pick the same folder
            break
        except FileExistsError:
            n += 1
    for path in present:
        os.replace(path, dest / path.name)
    return dest
