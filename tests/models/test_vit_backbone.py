"""Tests of the 3D ViT backbone: shapes, input checks, mask token, token noise and [CLS] attention."""

from __future__ import annotations

import pytest
import torch

from dagman.models.semantic_attention import satt_from_cls_attention
from dagman.models.vit import ViTBackbone


@pytest.fixture(scope="module")
def vit() -> ViTBackbone:
    torch.manual_seed(0)
    return ViTBackbone(img_size=32, patch_size=8, embed_dim=24, depth=2, num_heads=3).eval()


@pytest.mark.parametrize("size", [(32, 32, 32), (64, 32, 48)])
def test_shapes_and_satt(vit: ViTBackbone, size: tuple[int, int, int]) -> None:
    """[CLS] (B, C), tokens (B, N, C) on the patch grid, SATT a distribution over the N tokens."""
    with torch.no_grad():
        feats = vit(torch.randn(2, 1, *size))
    grid = tuple(s // 8 for s in size)
    n = grid[0] * grid[1] * grid[2]
    assert feats.grid == grid
    assert feats.cls.shape == (2, 24)
    assert feats.tokens.shape == (2, n, 24)
    assert feats.satt.shape == (2, n)
    assert bool((feats.satt >= 0).all())
    torch.testing.assert_close(feats.satt.sum(dim=1), torch.ones(2))


def test_satt_is_the_last_blocks_cls_attention(vit: ViTBackbone) -> None:
    """SATT equals the explicit [CLS] softmax row of the last block's input, averaged over heads."""
    x = torch.randn(1, 1, 32, 32, 32)
    captured = {}
    handle = vit.blocks[-1].register_forward_pre_hook(lambda module, args: captured.setdefault("z", args[0]))
    try:
        with torch.no_grad():
            feats = vit(x)
    finally:
        handle.remove()
    attn = vit.blocks[-1].attn
    with torch.no_grad():
        z = vit.blocks[-1].norm1(captured["z"])
        q, k, _ = attn.qkv(z).reshape(1, 65, 3, 3, 8).permute(2, 0, 3, 1, 4)
        row = (q[:, :, :1] @ k.transpose(-2, -1) / 8**0.5).softmax(-1)[:, :, 0]
    torch.testing.assert_close(feats.satt, satt_from_cls_attention(row))


def test_bad_size_raises(vit: ViTBackbone) -> None:
    """Sides must be multiples of the patch size."""
    with pytest.raises(ValueError, match="multiple of 8"):
        vit(torch.zeros(1, 1, 36, 32, 32))


@pytest.mark.parametrize("training", [True, False])
def test_mask_token_and_noise(vit: ViTBackbone, training: bool) -> None:
    """Masked embeddings become the mask token, dropped ones zero, the rest unchanged, in train and eval."""
    x = torch.randn(1, 1, 32, 32, 32)
    mask = torch.zeros(1, 4, 4, 4, dtype=torch.bool)
    mask[0, 0, 0, :2] = True
    drop = torch.zeros_like(mask)
    drop[0, 3, 3, 3] = True
    vit.train(training)
    try:
        with torch.no_grad():
            plain, out = vit.embed(x), vit.embed(x, mask=mask, drop=drop)
    finally:
        vit.eval()
    torch.testing.assert_close(out[0, :, 0, 0, 0], vit.mask_token.detach())
    assert torch.count_nonzero(out[0, :, 3, 3, 3]) == 0
    keep = ~(mask | drop).unsqueeze(1).expand_as(plain)
    assert torch.equal(out[keep], plain[keep])
