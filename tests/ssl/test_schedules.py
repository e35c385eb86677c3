"""Schedules: DINO-style arrays per global iteration, exact end points, warm-ups."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dagman.ssl.schedules import build_training_schedules, cosine_schedule, warmup_constant_schedule


def test_momentum_rises_from_0996_to_exactly_one() -> None:
    """EMA momentum starts at 0.996, ends exactly at 1.0 on the last global step, and never falls."""
    m = cosine_schedule(0.996, 1.0, 1000)
    assert len(m) == 1000 and m[0] == pytest.approx(0.996, abs=1e-15) and m[-1] == 1.0
    assert (np.diff(m) >= 0).all()


def test_lr_warmup_linear_then_cosine() -> None:
    """lr ramps linearly over the warm-up, peaks at the first cosine step, then follows the cosine to min."""
    base, final, total, warm = 8e-4, 1e-6, 100, 10
    lr = cosine_schedule(base, final, total, warmup_iters=warm, warmup_start=0.0)
    assert len(lr) == total
    np.testing.assert_allclose(lr[:warm], base * np.arange(warm) / warm)
    assert lr[warm] == pytest.approx(base) and lr[-1] == pytest.approx(final)
    c = total - warm
    j = 37
    expected = final + 0.5 * (base - final) * (1 + math.cos(math.pi * j / (c - 1)))
    assert lr[warm + j] == pytest.approx(expected)
    assert (np.diff(lr[warm:]) <= 0).all()


def test_weight_decay_cosine_rises() -> None:
    """iBOT-style weight decay goes from 0.04 to 0.4."""
    wd = cosine_schedule(0.04, 0.4, 50)
    assert wd[0] == pytest.approx(0.04) and wd[-1] == pytest.approx(0.4)


def test_teacher_temperature_warmup_then_constant() -> None:
    """Teacher temperature ramps 0.04 -> 0.07 linearly, then stays at 0.07; long warm-ups truncate."""
    t = warmup_constant_schedule(0.04, 0.07, 20, 10)
    np.testing.assert_allclose(t[:10], 0.04 + 0.03 * np.arange(10) / 10)
    assert (t[10:] == 0.07).all()
    short = warmup_constant_schedule(0.04, 0.07, 5, 10)
    assert len(short) == 5 and short[-1] < 0.07


def test_bad_arguments() -> None:
    """A warm-up as long as the run, or an empty run, is an error."""
    with pytest.raises(ValueError, match="warmup_iters"):
        cosine_schedule(1.0, 0.0, 10, warmup_iters=10)
    with pytest.raises(ValueError, match="total_iters"):
        cosine_schedule(1.0, 0.0, 0)


def test_build_training_schedules_indexed_by_global_step() -> None:
    """All arrays cover epochs * iters_per_epoch steps; the momentum is indexed globally, not per epoch."""
    s = build_training_schedules(epochs=4, iters_per_epoch=5, warmup_epochs=1, teacher_temp_warmup_epochs=2)
    assert s.total_iters == 20
    for arr in (s.lr, s.weight_decay, s.momentum, s.teacher_temp):
        assert len(arr) == 20
    v0, v_last = s.at(0), s.at(19)
    assert v0.momentum == pytest.approx(0.996) and v_last.momentum == 1.0
    assert v0.lr == 0.0 and s.at(5).lr == pytest.approx(8e-4) and v_last.lr == pytest.approx(1e-6)
    assert v0.teacher_temp == pytest.approx(0.04) and s.at(10).teacher_temp == pytest.approx(0.07)
    assert v0.weight_decay == pytest.approx(0.04) and v_last.weight_decay == pytest.approx(0.4)
    assert s.momentum[5] > s.momentum[4]  # keeps rising across the epoch boundary (SMIT's bug reset it)
    with pytest.raises(ValueError, match="outside"):
        s.at(20)
    with pytest.raises(ValueError, match="warmup_epochs"):
        build_training_schedules(epochs=2, iters_per_epoch=3, warmup_epochs=2)
    const = build_training_schedules(epochs=1, iters_per_epoch=4, warmup_epochs=0, weight_decay_end=None)
    assert (const.weight_decay == 0.04).all()
