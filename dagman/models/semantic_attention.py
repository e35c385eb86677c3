"""Semantic attention (SA): a [CLS] token and two LayerScale ViT blocks over all tokens of one Swin stage.

Also holds the ViT block both SA and the ViT backbone use. Attention runs through torch's
``scaled_dot_product_attention`` (memory-efficient at the 4096 tokens of stage 3, or the 262144 of stage 1, at
128^3); the [CLS] query's attention row is computed separately with an explicit softmax, so SATT (paper eq. 1)
is exact without ever materialising the full (N+1)^2 attention matrix.

SATT convention: the softmax runs over all N+1 keys ([CLS] included), is averaged over heads, and the N patch
entries are then renormalised to sum to 1 per image, so SATT is a distribution over the stage's patch tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.networks.blocks import MLPBlock
from monai.networks.layers import DropPath, trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "SemanticAttention",
    "SAOutput",
    "ViTBlock",
    "Attention",
    "LayerScale",
    "satt_from_cls_attention",
    "resize_pos_embed",
    "init_vit_weights",
]


def satt_from_cls_attention(cls_attention: torch.Tensor) -> torch.Tensor:
    """SATT from the [CLS] query's attention row.

    Args:
        cls_attention: (B, heads, 1 + N) softmax over all keys, key 0 being the [CLS] token.

    Returns:
        (B, N): mean over heads of the attention to the N patch keys, renormalised to sum to 1.
    """
    patches = cls_attention[:, :, 1:].mean(dim=1)
    return patches / patches.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(patches.dtype).tiny)


def resize_pos_embed(pos_embed: torch.Tensor, grid: Sequence[int], new_grid: Sequence[int]) -> torch.Tensor:
    """Resize a (1, N, C) position embedding laid out on ``grid`` to ``new_grid`` by trilinear interpolation."""
    grid, new_grid = tuple(int(g) for g in grid), tuple(int(g) for g in new_grid)
    if grid == new_grid:
        return pos_embed
    channels = pos_embed.shape[-1]
    volume = pos_embed.reshape(1, *grid, channels).permute(0, 4, 1, 2, 3)
    volume = F.interpolate(volume.float(), size=new_grid, mode="trilinear", align_corners=False)
    return volume.permute(0, 2, 3, 4, 1).reshape(1, -1, channels).to(pos_embed.dtype)


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch (Touvron et al. 2021, CaiT)."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale the last dimension of ``x``."""
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention over (B, L, C) with token 0 as [CLS]; optionally returns the [CLS] row.

    Args:
        dim: token width.
        num_heads: heads; ``dim`` must divide evenly.
        qkv_bias: biases on the query/key/value projections (b_q, b_k, b_v of paper eq. 1).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, cls_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend; return the output and, if asked, the [CLS] query's softmax row (B, heads, L) in float32."""
        b, length, dim = x.shape
        qkv = self.qkv(x).reshape(b, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        out = F.scaled_dot_product_attention(q, k, v)
        row = None
        if cls_attention:
            # Same logits SDPA uses (scale 1/sqrt(D/h)), in float32 with autocast off (autocast would cast
            # the matmul back to bf16) so SATT and its ranking are exact.
            with torch.autocast(device_type=x.device.type, enabled=False):
                logits = q[:, :, :1].float() @ k.float().transpose(-2, -1) * self.head_dim**-0.5
                row = logits.softmax(dim=-1)[:, :, 0]
        return self.proj(out.transpose(1, 2).reshape(b, length, dim)), row


class ViTBlock(nn.Module):
    """Pre-norm ViT block (attention, MLP) with optional LayerScale and stochastic depth.

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP width relative to ``dim``.
        qkv_bias: biases on query/key/value.
        drop_path: stochastic-depth rate of both residual branches.
        layerscale_init: initial LayerScale value; None for no LayerScale (plain ViT).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        layerscale_init: float | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.ls1 = LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), dropout_rate=0.0, act="GELU")
        self.ls2 = LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, x: torch.Tensor, cls_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Apply the block to (B, L, C); also return the [CLS] attention row when asked."""
        update, row = self.attn(self.norm1(x), cls_attention=cls_attention)
        x = x + self.drop_path(self.ls1(update))
        x = x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
        return x, row


@dataclass
class SAOutput:
    """Output of :class:`SemanticAttention`.

    Attributes:
        tokens: patch tokens in the stage's layout (B, C, d, h, w), to continue into the Swin.
        cls: layer-normalised [CLS] embedding (B, C): the image embedding.
        satt: (B, N) SATT of the last block, N = d*h*w in C order (flatten of the grid); sums to 1.
    """

    tokens: torch.Tensor
    cls: torch.Tensor
    satt: torch.Tensor


class SemanticAttention(nn.Module):
    """[CLS] + position embedding + ``depth`` LayerScale ViT blocks over one Swin stage (paper III-B, eq. 1).

    The position embedding is used inside SA only: the tokens handed back to the Swin are the input tokens
    plus the blocks' residual updates, without the position embedding, so the Swin's own stream carries no
    absolute position that the exported encoder (which has no SA) would miss.

    LayerScale starts at 0.1 (CaiT's value for shallow stacks) rather than 1e-5: SA is only two blocks deep
    and its [CLS] output is the image embedding from the first step, so with 1e-5 the [CLS] would start as a
    near-constant vector (the learned token plus a 1e-5 update) and AITD would distil noise; 0.1 still keeps
    SA's change to the Swin stream small at start.

    Args:
        dim: stage width (channels).
        num_heads: attention heads.
        grid_size: the stage grid the position embedding is built for; other grids are interpolated.
        depth: number of blocks (2 in the paper).
        layerscale_init: initial LayerScale value.
        mlp_ratio: MLP width relative to ``dim``.
        drop_path: stochastic-depth rate of the SA blocks.
        use_checkpoint: activation checkpointing per block.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid_size: Sequence[int] | int,
        depth: int = 2,
        layerscale_init: float = 0.1,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        grid = (int(grid_size),) * 3 if isinstance(grid_size, int) else tuple(int(g) for g in grid_size)
        if len(grid) != 3 or min(grid) < 1:
            raise ValueError(f"grid_size must be three positive sides, got {grid_size}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.dim, self.num_heads, self.depth = int(dim), int(num_heads), int(depth)
        self.grid_size = grid
        self.layerscale_init, self.mlp_ratio = float(layerscale_init), float(mlp_ratio)
        self.use_checkpoint = use_checkpoint
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1] * grid[2], dim))
        trunc_normal_(self.cls_token, std=0.02)
        trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            ViTBlock(dim, num_heads, mlp_ratio, drop_path=drop_path, layerscale_init=layerscale_init)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(init_vit_weights)

    def config(self) -> dict[str, object]:
        """Constructor arguments that fix the parameter shapes (stored with exported SA weights)."""
        return {
            "dim": self.dim,
            "num_heads": self.num_heads,
            "grid_size": list(self.grid_size),
            "depth": self.depth,
            "layerscale_init": self.layerscale_init,
            "mlp_ratio": self.mlp_ratio,
        }

    def forward(self, x: torch.Tensor) -> SAOutput:
        """Run SA on a channel-first stage map (B, dim, d, h, w)."""
        if x.ndim != 5 or x.shape[1] != self.dim:
            raise ValueError(f"SemanticAttention expects (B, {self.dim}, d, h, w), got {tuple(x.shape)}")
        b, _, d, h, w = x.shape
        pos = resize_pos_embed(self.pos_embed, self.grid_size, (d, h, w)).to(x.dtype)
        patches = x.flatten(2).transpose(1, 2) + pos
        z = torch.cat([self.cls_token.to(x.dtype).expand(b, -1, -1), patches], dim=1)
        row = None
        for index, block in enumerate(self.blocks):
            last = index == len(self.blocks) - 1
            if self.use_checkpoint and z.requires_grad:
                z, row = checkpoint(block, z, last, use_reentrant=False)
            else:
                z, row = block(z, cls_attention=last)
        tokens = (z[:, 1:] - pos).transpose(1, 2).reshape(b, self.dim, d, h, w)
        return SAOutput(tokens=tokens, cls=self.norm(z[:, 0]), satt=satt_from_cls_attention(row))


def init_vit_weights(module: nn.Module) -> None:
    """ViT initialisation: truncated-normal linear weights (std 0.02), zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
