"""3D Swin backbone for DAGMaN: MONAI's ``SwinTransformer`` plus a mask token, token noise and a stage hook.

The window attention, patch embedding and patch merging are MONAI's own modules, held unchanged under the
attribute ``swinViT`` so that ``backbone.swinViT.state_dict()`` loads with ``strict=True`` into
``monai.networks.nets.SwinUNETR(...).swinViT`` built with the same sizes (DESIGN 3.1). What this module adds
lives outside ``swinViT``:

- a learnable mask token that replaces masked patch embeddings (SimMIM style; tokens are replaced, not removed);
- token noise for the noisy teacher: chosen patch tokens are zeroed, explicitly and independent of
  ``train()``/``eval()`` (DESIGN 3.4);
- the pre-merge output of every stage (MONAI only returns post-merge outputs) and a hook between one stage's
  blocks and its patch merging, where the semantic-attention module sits (DESIGN 3.2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.networks.layers import trunc_normal_
from monai.networks.nets.swin_unetr import SwinTransformer, compute_mask, get_window_size
from torch import nn

__all__ = ["SwinBackbone", "SwinFeatures", "StageHook", "expand_grid_mask"]

#: A stage hook takes the raw channel-first pre-merge map (B, C, d, h, w) of one stage and returns the map that
#: continues into that stage's patch merging (same shape) plus any side output, handed back in
#: ``SwinFeatures.hook_out``.
StageHook = Callable[[torch.Tensor], tuple[torch.Tensor, Any]]


@dataclass
class SwinFeatures:
    """What one forward pass of :class:`SwinBackbone` returns.

    All maps are channel-first and layer-normalised over channels without affine parameters (MONAI's
    ``proj_out(x, normalize=True)``), the same normalisation SwinUNETR applies to its skip features.

    Attributes:
        embedding: patch embedding after mask token and noise, (B, C, D/p, H/p, W/p).
        stages: pre-merge output of stages 1..S; stage s has ``embed * 2**(s-1)`` channels on a grid of
            side ``size / (patch * 2**(s-1))``. For the hooked stage this is the map BEFORE the hook.
        merged: post-merge output of stages 1..S (MONAI's outputs 1..S); ``merged[-1]`` is the encoder's final
            map, ``embed * 2**S`` channels at stride ``patch * 2**S``.
        hook_out: the side output of the stage hook, or None when no hook ran.
    """

    embedding: torch.Tensor
    stages: tuple[torch.Tensor, ...]
    merged: tuple[torch.Tensor, ...]
    hook_out: Any = None


def expand_grid_mask(mask: torch.Tensor, grid: Sequence[int], batch: int, name: str = "mask") -> torch.Tensor:
    """Check a boolean token mask and broadcast it to the patch grid.

    A mask may be given on the patch grid itself or on any coarser grid whose sides divide the patch grid
    (for example a Swin stage grid, where each cell covers ``2**(s-1)`` patches per side); coarse cells are
    repeated to the patch grid.

    Args:
        mask: boolean tensor (B, d, h, w); True marks a token.
        grid: the patch grid (D, H, W).
        batch: expected batch size.
        name: the argument's name, used in error messages.

    Returns:
        Boolean tensor (B, D, H, W) on the patch grid.
    """
    if mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a boolean tensor, got dtype {mask.dtype}")
    if mask.ndim != 4 or mask.shape[0] != batch:
        raise ValueError(f"{name} must have shape (B={batch}, d, h, w), got {tuple(mask.shape)}")
    grid = tuple(int(g) for g in grid)
    factors = []
    for side, cells in zip(grid, mask.shape[1:], strict=True):
        if cells == 0 or side % cells != 0:
            raise ValueError(
                f"{name} grid {tuple(mask.shape[1:])} does not divide the patch grid {grid}; give it on the "
                "patch grid or on a stage grid"
            )
        factors.append(side // cells)
    for axis, factor in enumerate(factors, start=1):
        if factor > 1:
            mask = mask.repeat_interleave(factor, dim=axis)
    return mask


class SwinBackbone(nn.Module):
    """MONAI 3D Swin transformer with a mask token, token noise and per-stage pre-merge outputs.

    Args:
        in_chans: input channels (1 for CT).
        embed_dim: patch-embedding width (stage widths are ``embed_dim * 2**i``); SwinUNETR's ``feature_size``.
        depths: Swin blocks per stage.
        num_heads: attention heads per stage.
        patch_size: patch side in voxels (cubic patches).
        window_size: attention window side in tokens (cubic windows). SwinUNETR's default is 7: build the
            fine-tuning SwinUNETR with the same ``window_size``, as the relative-position tables depend on it.
        mlp_ratio: MLP width relative to the block width.
        drop_path_rate: stochastic depth, rising linearly over all blocks to this value (0.1 on the student).
        use_checkpoint: activation checkpointing inside the Swin blocks (saves memory at 128^3).

    Reference: DESIGN 3.1; Liu et al. 2021 (Swin); Xie et al. 2022 (SimMIM) for the mask token.
    """

    def __init__(
        self,
        in_chans: int = 1,
        embed_dim: int = 48,
        depths: Sequence[int] = (2, 2, 8, 2),
        num_heads: Sequence[int] = (4, 4, 8, 16),
        patch_size: int = 2,
        window_size: int = 4,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(
                f"depths {tuple(depths)} and num_heads {tuple(num_heads)} must have the same length"
            )
        if len(depths) not in (1, 2, 3, 4):
            raise ValueError(f"MONAI's SwinTransformer has 1 to 4 stages, got depths {tuple(depths)}")
        for i, heads in enumerate(num_heads):
            if (embed_dim * 2**i) % heads != 0:
                raise ValueError(f"stage {i + 1} width {embed_dim * 2**i} is not divisible by {heads} heads")
        self.in_chans = int(in_chans)
        self.embed_dim = int(embed_dim)
        self.depths = tuple(int(d) for d in depths)
        self.num_heads = tuple(int(h) for h in num_heads)
        self.patch_size = int(patch_size)
        self.window_size = int(window_size)
        self.mlp_ratio = float(mlp_ratio)
        self.num_stages = len(self.depths)
        # Keyword arguments match SwinUNETR's defaults (qkv_bias, no patch norm, "merging", not v2) so that
        # the parameter names and shapes are those of SwinUNETR(...).swinViT.
        self.swinViT = SwinTransformer(
            in_chans=self.in_chans,
            embed_dim=self.embed_dim,
            window_size=(self.window_size,) * 3,
            patch_size=(self.patch_size,) * 3,
            depths=self.depths,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            qkv_bias=True,
            drop_rate=0.0,
            attn_drop_rate=0.0,
            drop_path_rate=float(drop_path_rate),
            norm_layer=nn.LayerNorm,
            patch_norm=False,
            use_checkpoint=use_checkpoint,
            spatial_dims=3,
            downsample="merging",
            use_v2=False,
        )
        # Outside swinViT on purpose: the exported encoder state dict must hold SwinUNETR's keys only.
        self.mask_token = nn.Parameter(torch.zeros(self.embed_dim))
        trunc_normal_(self.mask_token, std=0.02)

    @property
    def stage_dims(self) -> tuple[int, ...]:
        """Channel width of each stage before its merging."""
        return tuple(self.embed_dim * 2**i for i in range(self.num_stages))

    @property
    def stage_strides(self) -> tuple[int, ...]:
        """Voxels per grid cell side at each stage before its merging (2, 4, 8, 16 by default)."""
        return tuple(self.patch_size * 2**i for i in range(self.num_stages))

    @property
    def out_dim(self) -> int:
        """Channels of the encoder's final (post-merge) map."""
        return self.embed_dim * 2**self.num_stages

    @property
    def out_stride(self) -> int:
        """Voxels per cell side of the encoder's final (post-merge) map (32 by default)."""
        return self.patch_size * 2**self.num_stages

    def config(self) -> dict[str, Any]:
        """The constructor arguments that fix the encoder's parameter shapes (for export and rebuilding)."""
        return {
            "in_chans": self.in_chans,
            "embed_dim": self.embed_dim,
            "depths": list(self.depths),
            "num_heads": list(self.num_heads),
            "patch_size": self.patch_size,
            "window_size": self.window_size,
            "mlp_ratio": self.mlp_ratio,
        }

    def grid(self, size: Sequence[int], stage: int = 0) -> tuple[int, int, int]:
        """Token grid for an input of spatial ``size``: stage 0 is the patch grid, 1..S the pre-merge grids."""
        if not 0 <= stage <= self.num_stages:
            raise ValueError(f"stage must be 0..{self.num_stages}, got {stage}")
        step = self.patch_size * 2 ** max(stage - 1, 0)
        return tuple(int(s) // step for s in size)  # type: ignore[return-value]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError unless ``x`` is (B, in_chans, D, H, W) with every side a multiple of out_stride."""
        if x.ndim != 5 or x.shape[1] != self.in_chans:
            raise ValueError(f"input must have shape (B, {self.in_chans}, D, H, W), got {tuple(x.shape)}")
        size = tuple(x.shape[2:])
        if any(s % self.out_stride for s in size):
            raise ValueError(
                f"input size {size} is not supported: every side must be a multiple of {self.out_stride} "
                f"(patch {self.patch_size} x 2^{self.num_stages} merges)"
            )

    def embed(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Patch embedding with the mask token and token noise applied (raw, channel-first).

        Args:
            x: input (B, in_chans, D, H, W), sides multiples of ``out_stride``.
            mask: student mask, bool (B, d, h, w) on the patch grid or a coarser stage grid; True cells have
                their patch embeddings replaced by the mask token.
            drop: teacher noise, bool, same grids; True cells have their patch tokens set to zero. Applied
                whatever the module's training flag.

        Returns:
            Tokens (B, embed_dim, D/p, H/p, W/p).
        """
        self.check_input(x)
        tokens = self.swinViT.pos_drop(self.swinViT.patch_embed(x))
        batch, grid = tokens.shape[0], tokens.shape[2:]
        if mask is not None:
            cells = expand_grid_mask(mask.to(tokens.device), grid, batch, "mask").unsqueeze(1)
            token = self.mask_token.to(tokens.dtype).view(1, -1, 1, 1, 1)
            tokens = torch.where(cells, token, tokens)
        if drop is not None:
            cells = expand_grid_mask(drop.to(tokens.device), grid, batch, "drop").unsqueeze(1)
            tokens = tokens.masked_fill(cells, 0.0)
        return tokens

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
        hook: StageHook | None = None,
        hook_stage: int | None = None,
    ) -> SwinFeatures:
        """Run the encoder and return the features of every stage.

        Args:
            x: input (B, in_chans, D, H, W).
            mask: student mask token cells (see :meth:`embed`).
            drop: teacher token-noise cells (see :meth:`embed`).
            hook: called on the raw pre-merge map of ``hook_stage``; its returned map goes on into the
                stage's patch merging and the rest of the network.
            hook_stage: 1-based stage of the hook.

        Returns:
            :class:`SwinFeatures`.
        """
        if (hook is None) != (hook_stage is None):
            raise ValueError("hook and hook_stage must be given together")
        if hook_stage is not None and not 1 <= hook_stage <= self.num_stages:
            raise ValueError(f"hook_stage must be 1..{self.num_stages}, got {hook_stage}")
        hidden = self.embed(x, mask=mask, drop=drop)
        embedding = self.swinViT.proj_out(hidden, True)
        layers = [self.swinViT.layers1, self.swinViT.layers2, self.swinViT.layers3, self.swinViT.layers4]
        stages, merged, hook_out = [], [], None
        for index in range(self.num_stages):
            layer = layers[index][0]
            pre = self._run_blocks(layer, hidden)
            stages.append(self.swinViT.proj_out(pre, True))
            if hook is not None and hook_stage == index + 1:
                pre, hook_out = hook(pre)
            hidden = self._merge(layer, pre)
            merged.append(self.swinViT.proj_out(hidden, True))
        return SwinFeatures(
            embedding=embedding, stages=tuple(stages), merged=tuple(merged), hook_out=hook_out
        )

    @staticmethod
    def _run_blocks(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The Swin blocks of one MONAI ``BasicLayer`` without its downsample (its forward, 3D branch, split)."""
        b, _, d, h, w = x.shape
        window_size, shift_size = get_window_size((d, h, w), layer.window_size, layer.shift_size)
        x = x.permute(0, 2, 3, 4, 1).contiguous()
        padded = [int(math.ceil(n / ws)) * ws for n, ws in zip((d, h, w), window_size, strict=True)]
        attn_mask = compute_mask(padded, window_size, shift_size, x.device)
        for block in layer.blocks:
            x = block(x, attn_mask)
        return x.view(b, d, h, w, -1).permute(0, 4, 1, 2, 3)

    @staticmethod
    def _merge(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The patch merging of one MONAI ``BasicLayer`` on a channel-first map."""
        return layer.downsample(x.permute(0, 2, 3, 4, 1).contiguous()).permute(0, 4, 1, 2, 3)
