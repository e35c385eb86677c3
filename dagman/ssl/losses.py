"""DAGMaN's pretraining losses (DESIGN 3.5; preprint eqs. 2-6).

- ``TokenDistillationLoss``: DINO-style cross-view distillation of one vector per view; used twice,
  for AITD (the SA [CLS] token) and GITD (the global average of the last stage), each with its own centre.
- ``PatchDistillationLoss``: iBOT-style same-view distillation of stage-3 patch tokens at the student's
  masked cells (AMPD), with its own centre.
- ``amip_loss``: L1 reconstruction over masked voxels (AMIP).
- ``total_loss``: the weighted sum AMIP + 0.1 AMPD + 0.1 AITD + 0.1 GITD, each term switchable off.

Teacher outputs are centred (the centre is a registered buffer, the EMA of the teacher batch mean with
momentum 0.9, all-reduced across processes when torch.distributed is initialised) and sharpened with the
teacher temperature; the student uses temperature 0.1. Softmax and log-softmax run in float32 so bf16
autocast is safe. Each distillation loss also returns the teacher's mean entropy: an entropy (and loss)
stuck at ln K means the uniform collapse, an entropy near 0 the one-hot collapse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DEFAULT_LOSS_WEIGHTS",
    "LOSS_NAMES",
    "DistillationResult",
    "PatchDistillationLoss",
    "TokenDistillationLoss",
    "amip_loss",
    "enabled_losses",
    "total_loss",
]

LOSS_NAMES: tuple[str, ...] = ("amip", "ampd", "aitd", "gitd")
DEFAULT_LOSS_WEIGHTS: Mapping[str, float] = {"amip": 1.0, "ampd": 0.1, "aitd": 0.1, "gitd": 0.1}


class DistillationResult(NamedTuple):
    """Output of a distillation loss.

    Attributes:
        loss: scalar float32 loss with gradient towards the student.
        teacher_entropy: detached mean entropy (nats) of the centred, sharpened teacher distribution.
    """

    loss: torch.Tensor
    teacher_entropy: torch.Tensor


def _views(x: torch.Tensor | Sequence[torch.Tensor], what: str) -> list[torch.Tensor]:
    views = [x] if isinstance(x, torch.Tensor) else list(x)
    if not views:
        raise ValueError(f"{what}: no views given")
    return views


class _CentredDistillation(nn.Module):
    """Shared state of the distillation losses: the centre buffer, temperatures and the centre update."""

    center: torch.Tensor

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        if out_dim < 1:
            raise ValueError(f"out_dim must be positive, got {out_dim}")
        if student_temp <= 0:
            raise ValueError(f"student_temp must be positive, got {student_temp}")
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum must lie in [0, 1], got {center_momentum}")
        self.out_dim = out_dim
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        # A buffer, so checkpoints carry it and .to(device) moves it; float32 whatever the autocast dtype.
        self.register_buffer("center", torch.zeros(1, out_dim, dtype=torch.float32))

    @property
    def uniform_entropy(self) -> float:
        """ln K: the loss and teacher entropy of a collapsed (uniform) teacher."""
        return math.log(self.out_dim)

    def _check_dim(self, x: torch.Tensor, what: str) -> None:
        if x.shape[-1] != self.out_dim:
            raise ValueError(f"{what} has {x.shape[-1]} outputs per token, expected out_dim={self.out_dim}")

    def teacher_log_probs(self, teacher: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """Centred, sharpened teacher log-probabilities in float32, detached."""
        if teacher_temp <= 0:
            raise ValueError(f"teacher_temp must be positive, got {teacher_temp}")
        return F.log_softmax((teacher.detach().float() - self.center) / teacher_temp, dim=-1)

    def student_log_probs(self, student: torch.Tensor) -> torch.Tensor:
        """Student log-probabilities in float32."""
        return F.log_softmax(student.float() / self.student_temp, dim=-1)

    @torch.no_grad()
    def update_center(self, teacher: Sequence[torch.Tensor]) -> None:
        """center <- m * center + (1 - m) * mean of all teacher rows (all views, images, tokens, ranks).

        Args:
            teacher: raw teacher outputs, each (..., K).
        """
        rows = [t.detach().float().reshape(-1, self.out_dim) for t in teacher]
        stats = torch.cat(
            [
                torch.stack([r.sum(dim=0) for r in rows]).sum(dim=0),
                torch.tensor([float(sum(r.shape[0] for r in rows))], device=rows[0].device),
            ]
        )
        # SMIT left this all-reduce commented out, so each GPU drifted to its own centre.
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        batch_center = (stats[:-1] / stats[-1].clamp(min=1.0)).unsqueeze(0)
        self.center.mul_(self.center_momentum).add_(batch_center * (1.0 - self.center_momentum))


def _entropy(log_p: torch.Tensor) -> torch.Tensor:
    return -(log_p.exp() * log_p).sum(dim=-1)


class TokenDistillationLoss(_CentredDistillation):
    """Cross-view distillation of one token per view (AITD on the [CLS], GITD on the global average).

    For teacher views ``t_i`` and student views ``s_j`` the loss averages, over all pairs with ``i != j``,
    the batch mean of ``-sum_k P_t(t_i)_k log P_s(s_j)_k``. With two views this is
    ``(H(t_v, s_u) + H(t_u, s_v)) / 2`` (teacher v^ vs student u~ and teacher u^ vs student v~).

    Args:
        out_dim: head output size K.
        student_temp: student temperature (0.1).
        center_momentum: centre EMA momentum (0.9).
    """

    def forward(
        self,
        student: torch.Tensor | Sequence[torch.Tensor],
        teacher: torch.Tensor | Sequence[torch.Tensor],
        teacher_temp: float,
        update_center: bool = True,
    ) -> DistillationResult:
        """Compute the loss, then (by default) update the centre with this batch's teacher outputs.

        Args:
            student: student head outputs per view, each (B, K); list index = view.
            teacher: teacher head outputs per view, each (B, K), same view order.
            teacher_temp: teacher temperature for this step (the schedule's value).
            update_center: update the centre after the loss (False for evaluation).

        Returns:
            ``DistillationResult(loss, teacher_entropy)``.
        """
        s_views, t_views = _views(student, "student"), _views(teacher, "teacher")
        for x in (*s_views, *t_views):
            if x.ndim != 2:
                raise ValueError(f"token outputs must be (B, K), got shape {tuple(x.shape)}")
            self._check_dim(x, "token output")
        t_logp = [self.teacher_log_probs(t, teacher_temp) for t in t_views]
        s_logp = [self.student_log_probs(s) for s in s_views]
        terms = [
            -(t.exp() * s).sum(dim=-1).mean()
            for i, t in enumerate(t_logp)
            for j, s in enumerate(s_logp)
            if i != j
        ]
        if not terms:
            raise ValueError("cross-view distillation needs at least two views (teacher and student differ)")
        entropy = torch.stack([_entropy(t).mean() for t in t_logp]).mean()
        if update_center:
            self.update_center(t_views)
        return DistillationResult(torch.stack(terms).mean(), entropy.detach())


class PatchDistillationLoss(_CentredDistillation):
    """Same-view masked patch-token distillation (AMPD), iBOT style.

    For each view, the per-token cross-entropy between teacher (on u^) and student (on u~) is summed over
    the student's masked cells, divided by the image's masked-cell count (at least 1), averaged over
    images and then over views. The centre is the EMA of the mean over all teacher patch tokens.

    Args:
        out_dim: patch head output size K.
        student_temp: student temperature (0.1).
        center_momentum: centre EMA momentum (0.9).
    """

    def forward(
        self,
        student: torch.Tensor | Sequence[torch.Tensor],
        teacher: torch.Tensor | Sequence[torch.Tensor],
        masks: torch.Tensor | Sequence[torch.Tensor],
        teacher_temp: float,
        update_center: bool = True,
    ) -> DistillationResult:
        """Compute the loss, then (by default) update the centre.

        Args:
            student: student patch outputs per view, each (B, N, K).
            teacher: teacher patch outputs per view (same views, same cells), each (B, N, K).
            masks: the student's masks per view, each bool (B, N) (or (B, d, h, w)); True = masked.
            teacher_temp: teacher temperature for this step.
            update_center: update the centre after the loss.

        Returns:
            ``DistillationResult(loss, teacher_entropy)``; the entropy is over all teacher tokens.
        """
        s_views, t_views, m_views = (
            _views(student, "student"),
            _views(teacher, "teacher"),
            _views(masks, "masks"),
        )
        if not len(s_views) == len(t_views) == len(m_views):
            raise ValueError(
                f"patch distillation pairs views: got {len(s_views)} student, {len(t_views)} teacher and "
                f"{len(m_views)} mask views"
            )
        terms, entropies = [], []
        for s, t, m in zip(s_views, t_views, m_views, strict=True):
            if s.ndim != 3 or s.shape != t.shape:
                raise ValueError(
                    f"patch outputs must be (B, N, K) and equal in shape, got student {tuple(s.shape)} "
                    f"and teacher {tuple(t.shape)}"
                )
            self._check_dim(s, "patch output")
            m = m.reshape(m.shape[0], -1)
            if m.shape != s.shape[:2]:
                raise ValueError(
                    f"mask of shape {tuple(m.shape)} does not match patch outputs {tuple(s.shape)}"
                )
            t_logp = self.teacher_log_probs(t, teacher_temp)
            per_token = -(t_logp.exp() * self.student_log_probs(s)).sum(dim=-1)
            m = m.to(per_token.dtype)
            terms.append(((per_token * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)).mean())
            entropies.append(_entropy(t_logp).mean())
        if update_center:
            self.update_center(t_views)
        return DistillationResult(torch.stack(terms).mean(), torch.stack(entropies).mean().detach())


def amip_loss(recon: torch.Tensor, target: torch.Tensor, voxel_mask: torch.Tensor) -> torch.Tensor:
    """AMIP: mean absolute error over the masked voxels of the whole batch (as SMIT normalises it).

    ``sum(|recon - target| * mask) / (C * number of masked voxels)``, summed over the batch before
    dividing, so every masked voxel weighs the same whatever image it belongs to (with exact-count masks
    this equals the mean of per-image means). Unmasked voxels do not contribute. Computed in float32; an
    all-visible batch gives 0 (with a gradient path).

    Args:
        recon: student reconstruction (B, C, D, H, W).
        target: original crop, same shape.
        voxel_mask: (B, D, H, W) or (B, 1, D, H, W); True/1 = masked voxel (``upsample_mask`` by 8 for
            the Swin stage-3 grid at patch size 2).

    Returns:
        Scalar float32 loss.
    """
    if recon.shape != target.shape or recon.ndim != 5:
        raise ValueError(
            f"recon and target must both be (B, C, D, H, W), got {tuple(recon.shape)} and {tuple(target.shape)}"
        )
    b, c, d, h, w = recon.shape
    if voxel_mask.numel() != b * d * h * w or voxel_mask.shape[0] != b:
        raise ValueError(
            f"voxel mask of shape {tuple(voxel_mask.shape)} does not match images {tuple(recon.shape)}"
        )
    m = voxel_mask.reshape(b, 1, d, h, w).float()
    err = (recon.float() - target.float()).abs()
    return (err * m).sum() / (m.sum() * c).clamp(min=1.0)


def enabled_losses(weights: Mapping[str, float]) -> tuple[str, ...]:
    """Names of the losses with a positive weight, in ``LOSS_NAMES`` order (the loop computes only these)."""
    unknown = sorted(set(weights) - set(LOSS_NAMES))
    if unknown:
        raise ValueError(f"unknown loss name(s) {', '.join(unknown)}; valid: {', '.join(LOSS_NAMES)}")
    for name, w in weights.items():
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"loss weight for {name!r} must be a finite non-negative number, got {w}")
    return tuple(name for name in LOSS_NAMES if weights.get(name, 0.0) > 0)


def total_loss(
    parts: Mapping[str, torch.Tensor], weights: Mapping[str, float] = DEFAULT_LOSS_WEIGHTS
) -> torch.Tensor:
    """Weighted sum of the enabled losses; disabled ones (weight 0 or absent) may be missing from ``parts``.

    Args:
        parts: loss name -> scalar tensor (``DistillationResult.loss`` or ``amip_loss``).
        weights: loss name -> weight; default AMIP 1, AMPD 0.1, AITD 0.1, GITD 0.1.

    Returns:
        Scalar tensor.
    """
    names = enabled_losses(weights)
    if not names:
        raise ValueError("every loss is switched off: give at least one positive weight")
    missing = [n for n in names if n not in parts]
    if missing:
        raise ValueError(f"loss(es) {', '.join(missing)} are enabled in the weights but were not computed")
    return torch.stack([parts[n].float() * float(weights[n]) for n in names]).sum()
