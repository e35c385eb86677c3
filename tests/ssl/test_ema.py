"""EMA teacher: creation without gradients, the update formula, buffers, name matching."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dagman.ssl.ema import ema_update, make_teacher, unwrap_model


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.drop = nn.Dropout(0.5)
        self.register_buffer("count", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.lin(x))


def test_make_teacher_copies_weights_without_grad() -> None:
    """The teacher equals the student, needs no gradients, is in eval mode and shares no storage."""
    student = _Net().train()
    teacher = make_teacher(student)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert not teacher.training and student.training
    for (_, t), (_, s) in zip(teacher.named_parameters(), student.named_parameters(), strict=True):
        assert torch.equal(t, s) and t.data_ptr() != s.data_ptr()


def test_ema_step_equals_formula_and_teacher_gets_no_grad() -> None:
    """theta_t <- m theta_t + (1 - m) theta_s for every parameter; buffers are copied; no grad on teacher."""
    torch.manual_seed(0)
    student = _Net()
    teacher = make_teacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
        student.count.fill_(7)
    before = {n: p.clone() for n, p in teacher.named_parameters()}
    ema_update(teacher, student, 0.996)
    for name, p in teacher.named_parameters():
        expected = 0.996 * before[name] + 0.004 * dict(student.named_parameters())[name]
        assert torch.allclose(p, expected, atol=1e-7)
        assert p.grad is None and not p.requires_grad
    assert teacher.count.item() == 7
    ema_update(teacher, student, 1.0)  # momentum 1 keeps the teacher
    out = teacher(torch.randn(2, 4)).sum()
    assert not out.requires_grad


def test_ema_allows_student_only_parameters_but_not_teacher_only() -> None:
    """Student extras (decoder, mask token) are ignored; a teacher parameter without a student twin fails."""
    student = nn.ModuleDict({"enc": nn.Linear(2, 2), "decoder": nn.Linear(2, 8)})
    teacher = nn.ModuleDict({"enc": nn.Linear(2, 2)}).requires_grad_(False)
    ema_update(teacher, student, 0.0)
    assert torch.equal(teacher["enc"].weight, student["enc"].weight)
    with pytest.raises(ValueError, match="no student counterpart"):
        ema_update(nn.ModuleDict({"head": nn.Linear(2, 2)}), student, 0.9)
    with pytest.raises(ValueError, match="momentum"):
        ema_update(teacher, student, 1.5)


def test_unwrap_model_removes_wrappers() -> None:
    """DataParallel-style wrappers are removed so parameter names match the teacher's."""
    net = _Net()
    assert unwrap_model(nn.DataParallel(net)) is net
    assert unwrap_model(net) is net
