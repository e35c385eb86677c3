"""Per-iteration schedules for pretraining, precomputed as arrays indexed by the GLOBAL step (DINO style).

The loop reads ``schedules.at(step)`` (or indexes the arrays) each iteration, so a resumed run continues
exactly where it stopped. Indexing by the global step, not the step within an epoch, is what makes the EMA
momentum rise from 0.996 to exactly 1.0 at the last step (SMIT indexed by the step within the epoch, so its
momentum never rose).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = [
    "ScheduleValues",
    "TrainingSchedules",
    "build_training_schedules",
    "cosine_schedule",
    "warmup_constant_schedule",
]


def cosine_schedule(
    base: float, final: float, total_iters: int, warmup_iters: int = 0, warmup_start: float = 0.0
) -> np.ndarray:
    """Linear warm-up then a half-cosine from ``base`` to ``final``.

    Step ``i < warmup_iters`` takes ``warmup_start + (base - warmup_start) * i / warmup_iters``, so the ramp
    reaches ``base`` at step ``warmup_iters``, the first cosine step. The cosine part runs over the
    remaining ``C`` steps as ``final + (base - final) * (1 + cos(pi * j / (C - 1))) / 2`` and therefore
    ends exactly at ``final`` on the last step (DINO's version stops one step short); with ``C == 1`` the
    single value is ``base``.

    Args:
        base: value at the end of warm-up (peak lr, starting momentum, ...).
        final: value at the last step.
        total_iters: number of iterations (epochs times iterations per epoch).
        warmup_iters: iterations of linear warm-up, at most ``total_iters - 1``.
        warmup_start: value at step 0 during warm-up.

    Returns:
        float64 array of length ``total_iters``.
    """
    if total_iters < 1:
        raise ValueError(f"total_iters must be at least 1, got {total_iters}")
    if not 0 <= warmup_iters < total_iters:
        raise ValueError(
            f"warmup_iters must lie in [0, total_iters) = [0, {total_iters}), got {warmup_iters}: "
            "the warm-up would leave no iteration for the cosine part"
        )
    warm = warmup_start + (base - warmup_start) * np.arange(warmup_iters) / max(warmup_iters, 1)
    c = total_iters - warmup_iters
    if c == 1:
        cos = np.array([base], dtype=np.float64)
    else:
        cos = final + 0.5 * (base - final) * (1.0 + np.cos(np.pi * np.arange(c) / (c - 1)))
    return np.concatenate([warm, cos]).astype(np.float64)


def warmup_constant_schedule(start: float, end: float, total_iters: int, warmup_iters: int) -> np.ndarray:
    """Linear ramp from ``start`` (step 0) reaching ``end`` at step ``warmup_iters``, then constant.

    Used for the teacher temperature (0.04 -> 0.07). A warm-up longer than the run is truncated (a short
    demo run simply ends inside the ramp).

    Returns:
        float64 array of length ``total_iters``.
    """
    if total_iters < 1:
        raise ValueError(f"total_iters must be at least 1, got {total_iters}")
    if warmup_iters < 0:
        raise ValueError(f"warmup_iters must be non-negative, got {warmup_iters}")
    steps = np.arange(total_iters, dtype=np.float64)
    ramp = start + (end - start) * steps / max(warmup_iters, 1)
    return np.where(steps < warmup_iters, ramp, end).astype(np.float64)


class ScheduleValues(NamedTuple):
    """The scheduled values for one global step."""

    lr: float
    weight_decay: float
    momentum: float
    teacher_temp: float


@dataclass(frozen=True)
class TrainingSchedules:
    """Precomputed per-iteration arrays (all of length ``total_iters``)."""

    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray

    @property
    def total_iters(self) -> int:
        """Number of iterations the schedules cover."""
        return len(self.lr)

    def at(self, step: int) -> ScheduleValues:
        """Values at a global step (0-based); a step past the end is an error, not a silent clamp."""
        if not 0 <= step < self.total_iters:
            raise ValueError(f"step {step} outside the schedules' range [0, {self.total_iters})")
        return ScheduleValues(
            float(self.lr[step]),
            float(self.weight_decay[step]),
            float(self.momentum[step]),
            float(self.teacher_temp[step]),
        )


def build_training_schedules(
    *,
    epochs: int,
    iters_per_epoch: int,
    warmup_epochs: float,
    lr: float = 8e-4,
    min_lr: float = 1e-6,
    weight_decay: float = 0.04,
    weight_decay_end: float | None = 0.4,
    momentum_base: float = 0.996,
    momentum_final: float = 1.0,
    teacher_temp_start: float = 0.04,
    teacher_temp: float = 0.07,
    teacher_temp_warmup_epochs: float = 30,
) -> TrainingSchedules:
    """All pretraining schedules from the run's settings.

    Args:
        epochs: training epochs (paper: 800).
        iters_per_epoch: optimiser steps per epoch.
        warmup_epochs: lr warm-up epochs (paper: 80); may be fractional.
        lr: peak learning rate after warm-up (paper: 8e-4; not scaled by batch size).
        min_lr: learning rate at the last step.
        weight_decay: weight decay at step 0 (iBOT: 0.04).
        weight_decay_end: weight decay at the last step (iBOT: 0.4); None keeps it constant.
        momentum_base: EMA momentum at step 0 (0.996; raise it, e.g. 0.9995, for very small batches).
        momentum_final: EMA momentum at the last step (1.0).
        teacher_temp_start: teacher temperature at step 0 (0.04).
        teacher_temp: teacher temperature after warm-up (0.07).
        teacher_temp_warmup_epochs: teacher temperature warm-up epochs (DINO/iBOT: 30), truncated to the run.

    Returns:
        ``TrainingSchedules`` with arrays of length ``epochs * iters_per_epoch``.
    """
    if epochs < 1 or iters_per_epoch < 1:
        raise ValueError(f"epochs and iters_per_epoch must be positive, got {epochs} and {iters_per_epoch}")
    total = epochs * iters_per_epoch
    warmup = int(round(warmup_epochs * iters_per_epoch))
    if warmup >= total:
        raise ValueError(f"warmup_epochs={warmup_epochs} covers the whole run of {epochs} epochs; shorten it")
    wd_end = weight_decay if weight_decay_end is None else weight_decay_end
    temp_warmup = int(math.ceil(teacher_temp_warmup_epochs * iters_per_epoch))
    return TrainingSchedules(
        lr=cosine_schedule(lr, min_lr, total, warmup_iters=warmup, warmup_start=0.0),
        weight_decay=cosine_schedule(weight_decay, wd_end, total),
        momentum=cosine_schedule(momentum_base, momentum_final, total),
        teacher_temp=warmup_constant_schedule(teacher_temp_start, teacher_temp, total, temp_warmup),
    )
