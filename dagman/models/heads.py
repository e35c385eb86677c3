"""Heads of the DAGMaN network: the iBOT/DINO projection head and the SimMIM-style reconstruction head.

- :class:`ProjectionHead`: MLP (GELU) -> bottleneck -> L2 normalisation -> weight-normalised linear layer to K
  outputs, whose weight-norm gain is fixed to 1 by default (DINO's ``norm_last_layer``); used for the [CLS]
  (AITD), global (GITD) and patch-token (AMPD) distributions (DESIGN 3.5).
- :class:`ReconstructionHead`: one 1x1x1 convolution to ``stride**3 * out_chans`` channels followed by a voxel
  shuffle back to the input size (DESIGN 3.5, AMIP: "one linear layer plus voxel shuffle").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers import trunc_normal_
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["ProjectionHead", "ReconstructionHead", "voxel_shuffle", "voxel_unshuffle"]


class ProjectionHead(nn.Module):
    """iBOT/DINO projection head, applied to the last dimension of (B, C) or (B, N, C) inputs.

    Args:
        in_dim: input width.
        out_dim: number of prototypes K (8192 in the paper's family; small in tests).
        hidden_dim: MLP hidden width.
        bottleneck_dim: width before the last layer.
        nlayers: MLP layers (the last one maps to ``bottleneck_dim``); at least 1.
        norm_last_layer: fix the last layer's weight-norm gain to 1 (not trained), as DINO does by default
            for stability.

    The last layer is ``torch.nn.utils.parametrizations.weight_norm``; its gain and direction are the
    parameters ``last_layer.parametrizations.weight.original0`` and ``...original1``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 8192,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"nlayers must be at least 1, got {nlayers}")
        widths = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for index, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if index < nlayers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        gain = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            gain.fill_(1.0)
        gain.requires_grad = not norm_last_layer
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project (..., in_dim) to (..., out_dim) logits."""
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"ProjectionHead expects last dimension {self.in_dim}, got {tuple(x.shape)}")
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


def voxel_shuffle(x: torch.Tensor, factor: int) -> torch.Tensor:
    """3D pixel shuffle: (B, C*r^3, D, H, W) -> (B, C, D*r, H*r, W*r).

    Channel ``c*r^3 + (i*r + j)*r + k`` lands at offset (i, j, k) inside each r^3 block, the 3D analogue of
    ``torch.nn.functional.pixel_shuffle``.
    """
    b, channels, d, h, w = x.shape
    r = int(factor)
    if channels % r**3 != 0:
        raise ValueError(f"voxel_shuffle needs channels divisible by {r}^3 = {r**3}, got {channels}")
    c = channels // r**3
    x = x.reshape(b, c, r, r, r, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, d * r, h * r, w * r)


def voxel_unshuffle(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Inverse of :func:`voxel_shuffle`: (B, C, D*r, H*r, W*r) -> (B, C*r^3, D, H, W)."""
    b, c, dr, hr, wr = x.shape
    r = int(factor)
    if dr % r or hr % r or wr % r:
        raise ValueError(f"voxel_unshuffle needs sides divisible by {r}, got {(dr, hr, wr)}")
    d, h, w = dr // r, hr // r, wr // r
    x = x.reshape(b, c, d, r, h, r, w, r).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * r**3, d, h, w)


class ReconstructionHead(nn.Module):
    """One linear layer (1x1x1 conv) plus voxel shuffle: feature map at ``stride`` -> image (SimMIM, AMIP).

    Args:
        in_dim: channels of the feature map.
        stride: voxels per feature cell side (32 for the Swin's final map with patch 2 and 4 stages).
        out_chans: image channels.
    """

    def __init__(self, in_dim: int, stride: int, out_chans: int = 1) -> None:
        super().__init__()
        self.stride, self.out_chans = int(stride), int(out_chans)
        self.proj = nn.Conv3d(in_dim, self.stride**3 * self.out_chans, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, in_dim, d, h, w) -> (B, out_chans, d*stride, h*stride, w*stride)."""
        return voxel_shuffle(self.proj(features), self.stride)
