"""Tests of the Swin backbone wrapper: stage shapes, input checks, mask token, token noise and the stage hook."""

from __future__ import annotations

import pytest
import torch

from dagman.models.swin import SwinBackbone, expand_grid_mask

TINY = dict(embed_dim=12, depths=(2, 2, 2, 2), num_heads=(3, 3, 3, 3))


@pytest.fixture(scope="module")
def backbone() -> SwinBackbone:
    torch.manual_seed(0)
    return SwinBackbone(**TINY).eval()


@pytest.mark.parametrize("size", [(32, 32, 32), (64, 32, 32), (32, 64, 96)])
def test_stage_outputs_have_pre_and_post_merge_shapes(
    backbone: SwinBackbone, size: tuple[int, int, int]
) -> None:
    """Stage s is embed*2^(s-1) wide at stride 2^s before merging and twice as wide at stride 2^(s+1) after."""
    x = torch.randn(1, 1, *size)
    with torch.no_grad():
        feats = backbone(x)
    assert feats.embedding.shape == (1, 12, *[s // 2 for s in size])
    for index, (pre, post) in enumerate(zip(feats.stages, feats.merged, strict=True)):
        stride = 2 ** (index + 1)
        assert pre.shape == (1, 12 * 2**index, *[s // stride for s in size])
        assert post.shape == (1, 12 * 2 ** (index + 1), *[s // (2 * stride) for s in size])
        assert tuple(pre.shape[2:]) == backbone.grid(size, index + 1)
    assert feats.hook_out is None


@pytest.mark.parametrize("size", [(48, 32, 32), (32, 32, 16), (30, 32, 32)])
def test_bad_input_size_raises_naming_size_and_multiple(
    backbone: SwinBackbone, size: tuple[int, int, int]
) -> None:
    """Sizes that are not multiples of 32 fail up front with a plain message, not deep in window attention."""
    with pytest.raises(ValueError, match=r"multiple of 32") as info:
        backbone(torch.zeros(1, 1, *size))
    assert str(size) in str(info.value)


def test_wrong_channel_count_raises(backbone: SwinBackbone) -> None:
    """A two-channel input is refused before the convolution."""
    with pytest.raises(ValueError, match="input must have shape"):
        backbone(torch.zeros(1, 2, 32, 32, 32))


def test_mask_token_replaces_exactly_the_masked_patch_embeddings(backbone: SwinBackbone) -> None:
    """Masked cells hold the mask token; every other patch embedding is untouched."""
    x = torch.randn(2, 1, 32, 32, 32)
    mask = torch.rand(2, 16, 16, 16) < 0.4
    with torch.no_grad():
        plain = backbone.embed(x)
        masked = backbone.embed(x, mask=mask)
    sel = mask.unsqueeze(1).expand_as(plain)
    assert torch.equal(masked[~sel], plain[~sel])
    expected = backbone.mask_token.detach().view(1, -1, 1, 1, 1).expand_as(plain)
    assert torch.equal(masked[sel], expected[sel])


def test_mask_token_gradient_flows_only_through_masked_positions(backbone: SwinBackbone) -> None:
    """d(sum(w * tokens))/d(mask_token) is the sum of w over masked cells: no leak from visible cells."""
    x = torch.randn(1, 1, 32, 32, 32)
    mask = torch.rand(1, 16, 16, 16) < 0.3
    weights = torch.randn(1, 12, 16, 16, 16)
    backbone.zero_grad()
    (backbone.embed(x, mask=mask) * weights).sum().backward()
    expected = (weights * mask.unsqueeze(1)).sum(dim=(0, 2, 3, 4))
    torch.testing.assert_close(backbone.mask_token.grad, expected)
    backbone.zero_grad()
    (backbone.embed(x) * weights).sum().backward()
    assert backbone.mask_token.grad is None or torch.count_nonzero(backbone.mask_token.grad) == 0


def test_mask_on_a_stage_grid_is_broadcast_to_the_patch_grid(backbone: SwinBackbone) -> None:
    """A mask on the stage-3 grid (4^3 at 32^3) equals the same mask repeated 4x per side on the patch grid."""
    coarse = torch.rand(1, 4, 4, 4) < 0.5
    fine = expand_grid_mask(coarse, (16, 16, 16), batch=1)
    assert fine.shape == (1, 16, 16, 16)
    assert torch.equal(fine[:, ::4, ::4, ::4], coarse)
    assert torch.equal(fine, coarse.repeat_interleave(4, 1).repeat_interleave(4, 2).repeat_interleave(4, 3))
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(backbone.embed(x, mask=coarse), backbone.embed(x, mask=fine))


@pytest.mark.parametrize("mask", [torch.zeros(1, 5, 16, 16, dtype=torch.bool), torch.zeros(1, 16, 16, 16)])
def test_bad_masks_raise(backbone: SwinBackbone, mask: torch.Tensor) -> None:
    """A grid that does not divide the patch grid, or a non-boolean mask, is refused."""
    with pytest.raises(ValueError, match="mask"):
        backbone.embed(torch.zeros(1, 1, 32, 32, 32), mask=mask)


@pytest.mark.parametrize("training", [True, False])
def test_drop_zeroes_exactly_the_chosen_tokens_in_train_and_eval(
    backbone: SwinBackbone, training: bool
) -> None:
    """Teacher noise is applied explicitly: the same tokens are zeroed whatever the training flag."""
    x = torch.randn(2, 1, 32, 32, 32)
    drop = torch.rand(2, 16, 16, 16) < 0.7
    backbone.train(training)
    try:
        with torch.no_grad():
            plain = backbone.embed(x)
            noisy = backbone.embed(x, drop=drop)
            feats = backbone(x, drop=drop)
    finally:
        backbone.eval()
    sel = drop.unsqueeze(1).expand_as(plain)
    assert torch.count_nonzero(noisy[sel]) == 0
    assert torch.equal(noisy[~sel], plain[~sel])
    assert torch.count_nonzero(feats.embedding[sel]) == 0


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_hook_sees_the_pre_merge_map_and_its_output_continues(backbone: SwinBackbone, stage: int) -> None:
    """The hook gets the raw pre-merge map of its stage; what it returns feeds the merging and later stages."""
    x = torch.randn(1, 1, 32, 32, 32)
    seen = {}

    def zero_hook(stage_map: torch.Tensor) -> tuple[torch.Tensor, str]:
        seen["shape"] = tuple(stage_map.shape)
        return torch.zeros_like(stage_map), "side"

    with torch.no_grad():
        plain = backbone(x)
        hooked = backbone(x, hook=zero_hook, hook_stage=stage)
    assert seen["shape"] == (1, 12 * 2 ** (stage - 1), *backbone.grid((32, 32, 32), stage))
    assert hooked.hook_out == "side"
    for index in range(stage):
        torch.testing.assert_close(hooked.stages[index], plain.stages[index])
    assert not torch.allclose(hooked.merged[stage - 1], plain.merged[stage - 1])


def test_hook_without_stage_raises(backbone: SwinBackbone) -> None:
    """A hook must say where it goes."""
    with pytest.raises(ValueError, match="hook_stage"):
        backbone(torch.zeros(1, 1, 32, 32, 32), hook=lambda m: (m, None))
