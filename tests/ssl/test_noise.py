"""Patch dropout for the noisy teacher: exact counts, reproducibility, zeroing, independence from eval()."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dagman.ssl.masking import count_for_ratio
from dagman.ssl.noise import apply_patch_dropout, patch_dropout_mask


@pytest.mark.parametrize("n", [8, 50, 125, 4096])
@pytest.mark.parametrize("pdr", [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
def test_drop_count_exact(n: int, pdr: float) -> None:
    """Exactly round(pdr * N) tokens are dropped in every image."""
    mask = patch_dropout_mask(5, n, pdr, torch.Generator().manual_seed(0))
    assert mask.shape == (5, n) and mask.dtype == torch.bool
    assert (mask.sum(dim=1) == count_for_ratio(pdr, n)).all()


def test_deterministic_with_seeded_generator() -> None:
    """The same seed gives the same drop mask; images differ from each other."""
    a = patch_dropout_mask(4, 64, 0.7, torch.Generator().manual_seed(3))
    b = patch_dropout_mask(4, 64, 0.7, torch.Generator().manual_seed(3))
    c = patch_dropout_mask(4, 64, 0.7, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len({tuple(r.tolist()) for r in a}) > 1


def test_apply_zeroes_sequence_tokens_only_where_dropped() -> None:
    """(B, N, C) tokens: dropped tokens become 0, kept tokens are unchanged, the input is not modified."""
    tokens = torch.randn(2, 10, 3) + 5.0
    mask = patch_dropout_mask(2, 10, 0.3, torch.Generator().manual_seed(1))
    out = apply_patch_dropout(tokens, mask)
    assert torch.equal(out[mask], torch.zeros(6, 3))
    assert torch.equal(out[~mask], tokens[~mask])
    assert (tokens != 0).all()


def test_apply_zeroes_feature_map_cells() -> None:
    """(B, C, d, h, w) Swin feature maps: the mask indexes the row-major flattened grid."""
    fmap = torch.ones(2, 4, 2, 2, 3)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[1, 5] = True  # cell (0, 1, 2) of image 1
    out = apply_patch_dropout(fmap, mask)
    assert out[1, :, 0, 1, 2].abs().sum() == 0
    assert out.sum() == fmap.sum() - 4
    assert torch.equal(apply_patch_dropout(fmap, mask.reshape(2, 2, 2, 3)), out)


def test_noise_does_not_depend_on_module_mode() -> None:
    """The dropout is applied identically whether the surrounding module is in train or eval mode."""
    model = nn.Linear(3, 3)
    tokens = torch.randn(2, 6, 3)
    mask = patch_dropout_mask(2, 6, 0.5, torch.Generator().manual_seed(0))
    model.eval()
    out_eval = model(apply_patch_dropout(tokens, mask))
    model.train()
    out_train = model(apply_patch_dropout(tokens, mask))
    assert torch.equal(out_eval, out_train)
    assert torch.equal(out_eval[mask], model.bias.expand(6, 3))


def test_shape_errors() -> None:
    """Mismatched masks and non-bool masks fail with a plain message."""
    with pytest.raises(ValueError, match="does not match"):
        apply_patch_dropout(torch.zeros(2, 5, 3), torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        apply_patch_dropout(torch.zeros(2, 5, 3), torch.zeros(2, 5))
