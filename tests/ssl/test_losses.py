"""Losses: each equals its closed form on hand-made tensors; centring, masking and switches behave."""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dagman.ssl.losses import (
    DEFAULT_LOSS_WEIGHTS,
    PatchDistillationLoss,
    TokenDistillationLoss,
    amip_loss,
    enabled_losses,
    total_loss,
)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _ce(teacher: np.ndarray, student: np.ndarray, center: np.ndarray, tt: float, st: float) -> np.ndarray:
    """Per-row -sum_k P_t log P_s with centring and sharpening, in numpy float64."""
    p_t = _softmax((teacher - center) / tt)
    log_p_s = np.log(_softmax(student / st))
    return -(p_t * log_p_s).sum(axis=-1)


def test_token_loss_closed_form_cross_view() -> None:
    """AITD/GITD = ((CE(t_v, s_u) + CE(t_u, s_v)) / 2), batch-averaged, with the current centre."""
    g = torch.Generator().manual_seed(0)
    s_u, s_v, t_u, t_v = (torch.randn(3, 5, generator=g) for _ in range(4))
    loss_fn = TokenDistillationLoss(5, student_temp=0.1, center_momentum=0.9)
    c0 = torch.randn(1, 5, generator=g)
    loss_fn.center.copy_(c0)
    out = loss_fn([s_u, s_v], [t_u, t_v], teacher_temp=0.04)
    n = lambda x: x.double().numpy()  # noqa: E731
    expected = 0.5 * (
        _ce(n(t_v), n(s_u), n(c0), 0.04, 0.1).mean() + _ce(n(t_u), n(s_v), n(c0), 0.04, 0.1).mean()
    )
    assert out.loss.dtype == torch.float32
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    p_t = np.concatenate([_softmax((n(t) - n(c0)) / 0.04) for t in (t_u, t_v)])
    entropy = -(p_t * np.log(p_t)).sum(-1).mean()
    assert out.teacher_entropy.item() == pytest.approx(entropy, rel=1e-4)


def test_center_update_formula() -> None:
    """center <- 0.9 * center + 0.1 * mean over all teacher rows of all views (after the loss uses the old one)."""
    loss_fn = TokenDistillationLoss(4)
    c0 = torch.tensor([[1.0, -1.0, 0.5, 0.0]])
    loss_fn.center.copy_(c0)
    t_u, t_v = torch.arange(8.0).reshape(2, 4), -torch.arange(8.0).reshape(2, 4) * 2
    loss_fn([torch.zeros(2, 4), torch.zeros(2, 4)], [t_u, t_v], teacher_temp=0.07)
    expected = 0.9 * c0 + 0.1 * torch.cat([t_u, t_v]).mean(dim=0, keepdim=True)
    assert torch.allclose(loss_fn.center, expected)
    loss_fn([torch.zeros(2, 4), torch.zeros(2, 4)], [t_u, t_v], teacher_temp=0.07, update_center=False)
    assert torch.allclose(loss_fn.center, expected)
    assert "center" in loss_fn.state_dict()


def test_collapse_gives_ln_k() -> None:
    """A constant teacher gives a uniform distribution: entropy and loss (against a constant student) are ln K."""
    k = 16
    loss_fn = TokenDistillationLoss(k)
    const = torch.ones(4, k)
    out = loss_fn([const, const], [const, const], teacher_temp=0.04)
    assert out.teacher_entropy.item() == pytest.approx(math.log(k), rel=1e-6)
    assert out.loss.item() == pytest.approx(math.log(k), rel=1e-6)
    assert loss_fn.uniform_entropy == pytest.approx(math.log(k))


def test_token_loss_gradient_only_to_student() -> None:
    """The teacher output gets no gradient; the student does."""
    s = [torch.randn(2, 6, requires_grad=True) for _ in range(2)]
    t = [torch.randn(2, 6, requires_grad=True) for _ in range(2)]
    TokenDistillationLoss(6)(s, t, teacher_temp=0.04).loss.backward()
    assert s[0].grad is not None and s[1].grad is not None
    assert t[0].grad is None and t[1].grad is None


def test_token_loss_bf16_inputs_computed_in_float32() -> None:
    """bf16 head outputs give a finite float32 loss close to the float32 result."""
    g = torch.Generator().manual_seed(1)
    s = [torch.randn(4, 32, generator=g) * 20 for _ in range(2)]
    t = [torch.randn(4, 32, generator=g) * 20 for _ in range(2)]
    ref = TokenDistillationLoss(32)(
        [x.bfloat16().float() for x in s], [x.bfloat16().float() for x in t], 0.04
    )
    out = TokenDistillationLoss(32)([x.bfloat16() for x in s], [x.bfloat16() for x in t], 0.04)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=1e-6)


def test_token_loss_needs_two_views() -> None:
    """A single view has no cross-view pair: plain error."""
    with pytest.raises(ValueError, match="two views"):
        TokenDistillationLoss(3)(torch.zeros(2, 3), torch.zeros(2, 3), 0.04)
    with pytest.raises(ValueError, match="out_dim"):
        TokenDistillationLoss(3)([torch.zeros(2, 4)] * 2, [torch.zeros(2, 4)] * 2, 0.04)


def test_patch_loss_closed_form_masked_cells_only() -> None:
    """AMPD = mean over images of (sum over masked cells of CE) / (masked cells of that image), same view."""
    g = torch.Generator().manual_seed(2)
    b, n, k = 2, 6, 5
    s, t = torch.randn(b, n, k, generator=g), torch.randn(b, n, k, generator=g)
    mask = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 1, 0, 0, 0, 0]], dtype=torch.bool)
    loss_fn = PatchDistillationLoss(k)
    c0 = torch.randn(1, k, generator=g)
    loss_fn.center.copy_(c0)
    out = loss_fn(s, t, mask, teacher_temp=0.05)
    ce = _ce(t.double().numpy(), s.double().numpy(), c0.double().numpy(), 0.05, 0.1)  # (b, n)
    expected = np.mean([ce[0, [0, 2, 5]].mean(), ce[1, [1]].mean()])
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    # Changing the student at unmasked cells does not change the loss.
    s2 = s.clone()
    s2[~mask] = torch.randn(int((~mask).sum()), k, generator=g) * 10
    out2 = PatchDistillationLoss(k).to(torch.float32)
    out2.center.copy_(c0)
    assert out2(s2, t, mask, teacher_temp=0.05).loss.item() == pytest.approx(out.loss.item(), rel=1e-6)
    # The patch centre is the EMA of the mean over all teacher tokens.
    assert torch.allclose(loss_fn.center, 0.9 * c0 + 0.1 * t.reshape(-1, k).mean(0, keepdim=True))


def test_patch_loss_averages_views() -> None:
    """With two views the patch loss is the mean of the per-view losses (teacher u^ vs student u~)."""
    g = torch.Generator().manual_seed(3)
    s = [torch.randn(2, 4, 3, generator=g) for _ in range(2)]
    t = [torch.randn(2, 4, 3, generator=g) for _ in range(2)]
    m = [torch.rand(2, 4, generator=g) > 0.5 for _ in range(2)]
    both = PatchDistillationLoss(3)(s, t, m, 0.04, update_center=False).loss
    one = [PatchDistillationLoss(3)(s[i], t[i], m[i], 0.04, update_center=False).loss for i in range(2)]
    assert both.item() == pytest.approx((one[0].item() + one[1].item()) / 2, rel=1e-6)


def test_amip_closed_form_and_unmasked_voxels_ignored() -> None:
    """AMIP = sum |recon - target| over masked voxels / (C * masked voxels); unmasked voxels do not count."""
    g = torch.Generator().manual_seed(4)
    recon, target = torch.randn(2, 1, 4, 4, 4, generator=g), torch.randn(2, 1, 4, 4, 4, generator=g)
    mask = torch.rand(2, 4, 4, 4, generator=g) > 0.6
    got = amip_loss(recon, target, mask)
    diff = (recon - target).abs()[:, 0].numpy()
    assert got.item() == pytest.approx(diff[mask.numpy()].mean(), rel=1e-6)
    changed = recon.clone()
    changed[:, 0][~mask] += 100.0
    assert amip_loss(changed, target, mask).item() == pytest.approx(got.item(), rel=1e-6)
    assert amip_loss(recon, target, mask.unsqueeze(1)).item() == pytest.approx(got.item())
    assert amip_loss(recon, target, torch.zeros_like(mask)).item() == 0.0
    two_ch = torch.cat([recon, recon], 1)
    assert amip_loss(two_ch, torch.cat([target, target], 1), mask).item() == pytest.approx(
        got.item(), rel=1e-6
    )


def test_total_loss_weights_and_switches() -> None:
    """Total = AMIP + 0.1 (AMPD + AITD + GITD); disabled losses need not be computed."""
    parts = {name: torch.tensor(float(i + 1)) for i, name in enumerate(("amip", "ampd", "aitd", "gitd"))}
    assert total_loss(parts).item() == pytest.approx(1 + 0.1 * (2 + 3 + 4))
    weights = {"amip": 1.0, "ampd": 0.1, "aitd": 0.0, "gitd": 0.0}
    assert enabled_losses(weights) == ("amip", "ampd")
    assert total_loss({"amip": parts["amip"], "ampd": parts["ampd"]}, weights).item() == pytest.approx(1.2)
    with pytest.raises(ValueError, match="not computed"):
        total_loss({"amip": parts["amip"]}, DEFAULT_LOSS_WEIGHTS)
    with pytest.raises(ValueError, match="unknown loss"):
        total_loss(parts, {"amip": 1.0, "mim": 1.0})
    with pytest.raises(ValueError, match="switched off"):
        total_loss(parts, {"amip": 0.0})


def _reduce_worker(rank: int, world: int, tmp: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=world)
    try:
        loss_fn = TokenDistillationLoss(3)
        teacher = torch.full((2, 3), float(rank + 1))  # rank 0 rows are 1, rank 1 rows are 2
        loss_fn.update_center([teacher, teacher])
        torch.save(loss_fn.center.clone(), os.path.join(tmp, f"center{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_center_all_reduced_across_processes() -> None:
    """With torch.distributed initialised every process gets the centre of the global batch mean."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_reduce_worker, args=(2, tmp), nprocs=2, start_method="spawn")
        centers = [torch.load(os.path.join(tmp, f"center{r}.pt")) for r in range(2)]
    expected = torch.full((1, 3), 0.1 * 1.5)
    assert torch.allclose(centers[0], expected) and torch.allclose(centers[1], expected)
