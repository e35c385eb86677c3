"""3D ViT backbone for the ViT experiments and the AttMask / MST / dagman-vit methods (DESIGN 3.1, 3.6).

A Conv3d patch embedding, a learnable [CLS] token, a learnable position embedding (interpolated for other
input sizes), pre-norm ViT blocks and a final LayerNorm. Like the Swin backbone it takes a student mask
(mask token replaces patch embeddings) and a teacher noise mask (patch embeddings zeroed, independent of
``train()``/``eval()``), and it returns the last block's [CLS]-to-patch attention (SATT) for attention-guided
masking. MONAI's ``TransformerBlock`` has no LayerScale or stochastic depth and its ``save_attn`` keeps the
whole (N+1)^2 matrix, so the blocks are the compact :class:`~dagman.models.semantic_attention.ViTBlock`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.networks.layers import trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from dagman.models.semantic_attention import (
    ViTBlock,
    init_vit_weights,
    resize_pos_embed,
    satt_from_cls_attention,
)
from dagman.models.swin import expand_grid_mask

__all__ = ["ViTBackbone", "ViTFeatures"]


@dataclass
class ViTFeatures:
    """What one forward pass of :class:`ViTBackbone` returns.

    Attributes:
        cls: normalised [CLS] embedding (B, C).
        tokens: normalised patch tokens (B, N, C), N = d*h*w of ``grid`` in C order.
        satt: (B, N) last block's [CLS]-to-patch attention, averaged over heads, renormalised to sum to 1.
        grid: the patch grid (d, h, w).
    """

    cls: torch.Tensor
    tokens: torch.Tensor
    satt: torch.Tensor
    grid: tuple[int, int, int]


class ViTBackbone(nn.Module):
    """3D vision transformer with [CLS], mask token and token noise.

    Args:
        in_chans: input channels.
        img_size: input side (or sides) the position embedding is built for (128 -> 8^3 tokens at patch 16).
        patch_size: patch side in voxels.
        embed_dim: token width (768).
        depth: number of blocks (12).
        num_heads: attention heads (8).
        mlp_ratio: MLP width relative to ``embed_dim``.
        drop_path_rate: stochastic depth, rising linearly over the blocks.
        use_checkpoint: activation checkpointing per block.
    """

    def __init__(
        self,
        in_chans: int = 1,
        img_size: Sequence[int] | int = 128,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        size = (int(img_size),) * 3 if isinstance(img_size, int) else tuple(int(s) for s in img_size)
        if len(size) != 3 or any(s % patch_size for s in size):
            raise ValueError(
                f"img_size {img_size} must be three sides, each a multiple of patch {patch_size}"
            )
        self.in_chans, self.patch_size, self.embed_dim = int(in_chans), int(patch_size), int(embed_dim)
        self.depth, self.num_heads, self.mlp_ratio = int(depth), int(num_heads), float(mlp_ratio)
        self.img_size = size
        self.grid_size = tuple(s // patch_size for s in size)
        self.use_checkpoint = use_checkpoint
        self.patch_embed = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(embed_dim))
        n_tokens = self.grid_size[0] * self.grid_size[1] * self.grid_size[2]
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, embed_dim))
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(ViTBlock(embed_dim, num_heads, mlp_ratio, drop_path=r) for r in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        for parameter in (self.cls_token, self.mask_token, self.pos_embed):
            trunc_normal_(parameter, std=0.02)
        self.apply(init_vit_weights)

    @property
    def out_stride(self) -> int:
        """Voxels per token side."""
        return self.patch_size

    def config(self) -> dict[str, Any]:
        """Constructor arguments that fix the parameter shapes."""
        return {
            "in_chans": self.in_chans,
            "img_size": list(self.img_size),
            "patch_size": self.patch_size,
            "embed_dim": self.embed_dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
        }

    def grid(self, size: Sequence[int]) -> tuple[int, int, int]:
        """Patch grid for an input of spatial ``size``."""
        return tuple(int(s) // self.patch_size for s in size)  # type: ignore[return-value]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError unless ``x`` is (B, in_chans, D, H, W) with sides multiples of the patch size."""
        if x.ndim != 5 or x.shape[1] != self.in_chans:
            raise ValueError(f"input must have shape (B, {self.in_chans}, D, H, W), got {tuple(x.shape)}")
        size = tuple(x.shape[2:])
        if any(s % self.patch_size for s in size):
            raise ValueError(
                f"input size {size} is not supported: every side must be a multiple of {self.patch_size} "
                "(the patch size)"
            )

    def embed(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Patch embeddings (B, C, d, h, w) with mask token and noise applied, before the position embedding.

        Noise zeroes the patch embedding but the position embedding is still added afterwards, as a dropped
        Swin token keeps its place through the relative position bias.
        """
        self.check_input(x)
        tokens = self.patch_embed(x)
        batch, grid = tokens.shape[0], tokens.shape[2:]
        if mask is not None:
            cells = expand_grid_mask(mask.to(tokens.device), grid, batch, "mask").unsqueeze(1)
            tokens = torch.where(cells, self.mask_token.to(tokens.dtype).view(1, -1, 1, 1, 1), tokens)
        if drop is not None:
            tokens = tokens.masked_fill(
                expand_grid_mask(drop.to(tokens.device), grid, batch, "drop").unsqueeze(1), 0.0
            )
        return tokens

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, drop: torch.Tensor | None = None
    ) -> ViTFeatures:
        """Encode ``x`` (B, in_chans, D, H, W); ``mask``/``drop`` as in :meth:`embed`, on the patch grid."""
        tokens = self.embed(x, mask=mask, drop=drop)
        b, _, d, h, w = tokens.shape
        pos = resize_pos_embed(self.pos_embed, self.grid_size, (d, h, w)).to(tokens.dtype)
        z = torch.cat(
            [self.cls_token.to(tokens.dtype).expand(b, -1, -1), tokens.flatten(2).transpose(1, 2) + pos], 1
        )
        row = None
        for index, block in enumerate(self.blocks):
            last = index == len(self.blocks) - 1
            if self.use_checkpoint and z.requires_grad:
                z, row = checkpoint(block, z, last, use_reentrant=False)
            else:
                z, row = block(z, cls_attention=last)
        z = self.norm(z)
        return ViTFeatures(cls=z[:, 0], tokens=z[:, 1:], satt=satt_from_cls_attention(row), grid=(d, h, w))
