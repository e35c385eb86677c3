"""The EMA teacher: make it from the student, update it after each optimiser step (DESIGN 3.4).

``theta_t <- m * theta_t + (1 - m) * theta_s`` with ``m`` from the momentum schedule indexed by the global
step (``schedules.build_training_schedules``). Buffers are copied from the student.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ema_update", "make_teacher", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module under DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def make_teacher(student: nn.Module) -> nn.Module:
    """A teacher with the student's architecture and weights that never receives gradients.

    The copy is put in eval mode so the student's stochastic depth and dropout do not act on it; the
    teacher's noise is patch dropout, applied explicitly (``dagman.ssl.noise``), not through module modes.

    Args:
        student: the student network (wrappers are removed first).

    Returns:
        A deep copy with ``requires_grad=False`` on every parameter, in eval mode.
    """
    teacher = copy.deepcopy(unwrap_model(student))
    teacher.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """One EMA step: every teacher parameter moves towards the student's parameter of the same name.

    The student may hold parameters the teacher lacks (the AMIP decoder, the mask token); a teacher
    parameter with no student counterpart, or with another shape, is an error (it would never be
    trained). Matching buffers are copied from the student.

    Args:
        teacher: the EMA network.
        student: the trained network (DDP/compile wrappers are removed).
        momentum: m in [0, 1]; 1 leaves the teacher unchanged.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must lie in [0, 1], got {momentum}")
    teacher, student = unwrap_model(teacher), unwrap_model(student)
    s_params = dict(student.named_parameters())
    t_names, t_list, s_list = [], [], []
    for name, p in teacher.named_parameters():
        t_names.append(name)
        t_list.append(p)
        s_list.append(s_params.get(name))
    missing = [n for n, s in zip(t_names, s_list, strict=True) if s is None]
    if missing:
        raise ValueError(
            f"{len(missing)} teacher parameter(s) have no student counterpart, e.g. {', '.join(missing[:5])}"
        )
    bad = [n for n, t, s in zip(t_names, t_list, s_list, strict=True) if t.shape != s.shape]
    if bad:
        raise ValueError(f"teacher and student parameter shapes differ for {', '.join(bad[:5])}")
    if t_list:
        # Fused multi-tensor ops (as DINOv2 does): one kernel launch per op instead of one per parameter.
        torch._foreach_mul_(t_list, momentum)
        torch._foreach_add_(
            t_list,
            [s.detach().to(t.dtype) for s, t in zip(s_list, t_list, strict=True)],
            alpha=1.0 - momentum,
        )
    s_buffers = dict(student.named_buffers())
    for name, buf in teacher.named_buffers():
        src = s_buffers.get(name)
        if src is not None and src.shape == buf.shape:
            buf.copy_(src)
