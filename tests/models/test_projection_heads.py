"""Tests of the projection head (weight norm, shapes) and the reconstruction head (voxel shuffle)."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from dagman.models.heads import ProjectionHead, ReconstructionHead, voxel_shuffle, voxel_unshuffle


@pytest.mark.parametrize("shape", [(3, 16), (2, 5, 16)])
def test_projection_head_accepts_cls_and_token_inputs(shape: tuple[int, ...]) -> None:
    """(B, C) -> (B, K) and (B, N, C) -> (B, N, K)."""
    head = ProjectionHead(16, out_dim=10, hidden_dim=32, bottleneck_dim=8)
    assert head(torch.randn(*shape)).shape == (*shape[:-1], 10)


def test_last_layer_is_weight_normalised_with_frozen_unit_gain() -> None:
    """Logits are the L2-normalised bottleneck times unit-norm prototype rows; the gain is 1 and not trained."""
    head = ProjectionHead(16, out_dim=10, hidden_dim=32, bottleneck_dim=8)
    gain = head.last_layer.parametrizations.weight.original0
    assert not gain.requires_grad
    torch.testing.assert_close(gain, torch.ones_like(gain))
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(10))
    x = torch.randn(4, 16)
    bottleneck = torch.nn.functional.normalize(head.mlp(x), dim=-1)
    torch.testing.assert_close(head(x), bottleneck @ head.last_layer.weight.T)
    assert ProjectionHead(
        16, out_dim=10, norm_last_layer=False
    ).last_layer.parametrizations.weight.original0.requires_grad


def test_projection_head_deep_copies_for_the_teacher() -> None:
    """The EMA teacher is a deep copy: the copy gives the same output and owns its parameters."""
    head = ProjectionHead(16, out_dim=10, hidden_dim=32, bottleneck_dim=8)
    twin = copy.deepcopy(head)
    x = torch.randn(2, 16)
    torch.testing.assert_close(twin(x), head(x))
    assert all(
        a.data_ptr() != b.data_ptr() for a, b in zip(head.parameters(), twin.parameters(), strict=True)
    )


def test_voxel_shuffle_follows_the_pixel_shuffle_index_rule() -> None:
    """Channel c*r^3 + (i*r + j)*r + k of cell (d, h, w) lands at voxel (d*r + i, h*r + j, w*r + k)."""
    r, c = 2, 2
    x = torch.randn(1, c * r**3, 2, 3, 2)
    out = voxel_shuffle(x, r)
    assert out.shape == (1, c, 4, 6, 4)
    for ch, d, h, w, i, j, k in itertools.product(
        range(c), range(2), range(3), range(2), range(r), range(r), range(r)
    ):
        assert out[0, ch, d * r + i, h * r + j, w * r + k] == x[0, ch * r**3 + (i * r + j) * r + k, d, h, w]
    torch.testing.assert_close(voxel_unshuffle(out, r), x)


def test_reconstruction_head_with_identity_weights_rebuilds_the_input() -> None:
    """A linear layer set to the identity on unshuffled voxels reconstructs the image exactly."""
    stride = 4
    head = ReconstructionHead(in_dim=stride**3, stride=stride)
    with torch.no_grad():
        head.proj.weight.copy_(torch.eye(stride**3).view(stride**3, stride**3, 1, 1, 1))
        head.proj.bias.zero_()
    image = torch.randn(2, 1, 8, 12, 16)
    torch.testing.assert_close(head(voxel_unshuffle(image, stride)), image)
