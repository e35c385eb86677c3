"""Tests of the semantic-attention module: SATT exactness and normalisation, layout, position embedding."""

from __future__ import annotations

import pytest
import torch

from dagman.models.semantic_attention import Attention, SemanticAttention, ViTBlock, satt_from_cls_attention


@pytest.fixture(scope="module")
def sa() -> SemanticAttention:
    torch.manual_seed(0)
    return SemanticAttention(dim=24, num_heads=3, grid_size=(4, 4, 4)).eval()


def test_outputs_keep_the_stage_layout_and_satt_is_a_distribution(sa: SemanticAttention) -> None:
    """Tokens come back in (B, C, d, h, w); SATT has one non-negative value per token and sums to 1."""
    x = torch.randn(2, 24, 4, 4, 4)
    with torch.no_grad():
        out = sa(x)
    assert out.tokens.shape == x.shape
    assert out.cls.shape == (2, 24)
    assert out.satt.shape == (2, 64)
    assert bool((out.satt >= 0).all())
    torch.testing.assert_close(out.satt.sum(dim=1), torch.ones(2))


def test_attention_cls_row_matches_an_explicit_softmax() -> None:
    """The SDPA output and the separately computed [CLS] row equal the textbook attention (paper eq. 1)."""
    torch.manual_seed(1)
    attn = Attention(dim=12, num_heads=3)
    x = torch.randn(2, 9, 12)
    with torch.no_grad():
        out, row = attn(x, cls_attention=True)
        q, k, v = attn.qkv(x).reshape(2, 9, 3, 3, 4).permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1) / 4**0.5).softmax(dim=-1)
        expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 9, 12))
    torch.testing.assert_close(row, weights[:, :, 0])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_satt_drops_the_cls_key_averages_heads_and_renormalises() -> None:
    """SATT of a known row: mean over heads of the patch keys, divided by their sum."""
    row = torch.tensor([[[0.5, 0.25, 0.25], [0.0, 0.5, 0.5]]])
    torch.testing.assert_close(satt_from_cls_attention(row), torch.tensor([[0.5, 0.5]]))
    row = torch.tensor([[[0.2, 0.6, 0.2]]])
    torch.testing.assert_close(satt_from_cls_attention(row), torch.tensor([[0.75, 0.25]]))


def test_other_grids_interpolate_the_position_embedding(sa: SemanticAttention) -> None:
    """A fine-tuning crop with a different stage grid still runs (trilinear position embedding)."""
    with torch.no_grad():
        out = sa(torch.randn(1, 24, 2, 4, 6))
    assert out.tokens.shape == (1, 24, 2, 4, 6)
    assert out.satt.shape == (1, 48)


def test_layerscale_starts_at_the_chosen_value() -> None:
    """Both residual branches of every block carry LayerScale at its initial value."""
    module = SemanticAttention(dim=12, num_heads=3, grid_size=2, layerscale_init=0.1)
    for block in module.blocks:
        assert isinstance(block, ViTBlock)
        torch.testing.assert_close(block.ls1.gamma, torch.full((12,), 0.1))
        torch.testing.assert_close(block.ls2.gamma, torch.full((12,), 0.1))


def test_checkpointing_gives_the_same_result(sa: SemanticAttention) -> None:
    """Activation checkpointing changes memory, not values."""
    x = torch.randn(1, 24, 4, 4, 4, requires_grad=True)
    plain = sa(x)
    sa.use_checkpoint = True
    try:
        checked = sa(x)
    finally:
        sa.use_checkpoint = False
    torch.testing.assert_close(checked.tokens, plain.tokens)
    torch.testing.assert_close(checked.satt, plain.satt)


def test_wrong_width_raises(sa: SemanticAttention) -> None:
    """A map of the wrong stage width is refused with the expected shape in the message."""
    with pytest.raises(ValueError, match=r"\(B, 24, d, h, w\)"):
        sa(torch.zeros(1, 12, 4, 4, 4))


def test_satt_stays_float32_under_bf16_autocast(sa: SemanticAttention) -> None:
    """Attention-guided masking ranks SATT, so it is computed in float32 even inside bf16 autocast."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = sa(torch.randn(1, 24, 4, 4, 4))
    assert out.satt.dtype == torch.float32
    torch.testing.assert_close(out.satt.sum(dim=1), torch.ones(1))
