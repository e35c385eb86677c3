"""The DAGMaN network: backbone + semantic attention + projection heads + reconstruction head.

One module serves as student and teacher (the teacher is an EMA copy, e.g. ``copy.deepcopy(student)``, run
with ``reconstruct=False``). The forward pass takes the student's mask and the teacher's token noise as
boolean grids and returns every tensor the four losses need (DESIGN 3.5):

- AITD: ``cls_logits`` (projection of the SA [CLS]; with SA off, of the average token of the token stage);
- GITD: ``global_logits`` (projection of the global average of the last Swin stage before its merging,
  as SMIT's average pooling after stage 4);
- AMPD: ``patch_logits`` (projection of the token stage's patch tokens before SA and before merging);
- AMIP: ``recon`` (one linear layer + voxel shuffle from the encoder's final map, SMIT's stride-32 decoder).

Head sharing follows iBOT: one head serves the [CLS] and the patch tokens (same width, same prototypes) unless
``share_patch_head=False``; the global embedding is wider (last stage) and has its own head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dagman.models.heads import ProjectionHead, ReconstructionHead
from dagman.models.semantic_attention import SAOutput, SemanticAttention
from dagman.models.swin import SwinBackbone
from dagman.models.vit import ViTBackbone

__all__ = ["DagmanNetwork", "NetworkOutput", "BACKBONES", "build_backbone"]

#: Backbone registry: name -> class. ``build_backbone`` is the only way the package builds one by name.
BACKBONES: dict[str, type[nn.Module]] = {"swin": SwinBackbone, "vit": ViTBackbone}


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build a backbone by registry name ("swin" or "vit") with its constructor keyword arguments."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](**kwargs)


@dataclass
class NetworkOutput:
    """Outputs of :class:`DagmanNetwork` for one batch. N is the token-stage grid flattened in C order.

    Attributes:
        cls: image embedding (B, C_tok): SA [CLS] (Swin with SA), ViT [CLS], or the average token of the
            token stage when SA is off ("dagman-no-sa").
        satt: (B, N) SATT, non-negative, sums to 1 per image; None when SA is off.
        stage_tokens: (B, N, C_tok) normalised patch tokens of the token stage before SA and before merging
            (ViT: final patch tokens).
        token_grid: the grid (d, h, w) of ``satt`` and ``stage_tokens``.
        global_avg: (B, C_last) global average of the last stage before its merging (ViT: of the patch tokens).
        recon: (B, in_chans, D, H, W) reconstruction, or None when not asked for.
        cls_logits: (B, K) projection of ``cls``, or None when ``project=False``.
        patch_logits: (B, N, K) projection of ``stage_tokens``, or None.
        global_logits: (B, K) projection of ``global_avg``, or None.
    """

    cls: torch.Tensor
    satt: torch.Tensor | None
    stage_tokens: torch.Tensor
    token_grid: tuple[int, int, int]
    global_avg: torch.Tensor
    recon: torch.Tensor | None = None
    cls_logits: torch.Tensor | None = None
    patch_logits: torch.Tensor | None = None
    global_logits: torch.Tensor | None = None


class DagmanNetwork(nn.Module):
    """Student/teacher network of DAGMaN and its baselines (DESIGN 3.6).

    Args:
        backbone: "swin" or "vit".
        img_size: training crop side(s); fixes the SA and ViT position-embedding grids (other sizes are
            interpolated).
        sa_stage: Swin stage (1-4) holding the semantic-attention module, or None for no SA. Ignored for the
            ViT, whose own [CLS] and last-block attention play SA's role.
        token_stage: Swin stage whose pre-merge tokens feed AMPD (and the average-token [CLS] when SA is off);
            default: ``sa_stage``, or 3 when SA is off.
        sa_depth: SA blocks (2).
        sa_heads: SA heads; default: the Swin heads of that stage.
        sa_layerscale_init: initial LayerScale of the SA blocks (see :class:`SemanticAttention`).
        sa_drop_path: stochastic depth inside SA.
        out_dim: prototypes K of the projection heads.
        head_hidden_dim: projection-head MLP width.
        head_bottleneck_dim: projection-head bottleneck.
        head_nlayers: projection-head MLP layers.
        norm_last_layer: freeze the projection heads' last weight-norm gain at 1.
        share_patch_head: one head for [CLS] and patch tokens (iBOT); needs equal widths.
        recon_head: build the reconstruction head (a teacher built on its own can skip it).
        backbone_kwargs: keyword arguments of the backbone (see :class:`SwinBackbone`, :class:`ViTBackbone`).
    """

    def __init__(
        self,
        backbone: str = "swin",
        *,
        img_size: Sequence[int] | int = 128,
        sa_stage: int | None = 3,
        token_stage: int | None = None,
        sa_depth: int = 2,
        sa_heads: int | None = None,
        sa_layerscale_init: float = 0.1,
        sa_drop_path: float = 0.0,
        out_dim: int = 8192,
        head_hidden_dim: int = 2048,
        head_bottleneck_dim: int = 256,
        head_nlayers: int = 3,
        norm_last_layer: bool = True,
        share_patch_head: bool = True,
        recon_head: bool = True,
        backbone_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self._config = {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in locals().items()
            if k not in ("self", "__class__")
        }
        self._config["backbone_kwargs"] = dict(backbone_kwargs or {})
        size = (int(img_size),) * 3 if isinstance(img_size, int) else tuple(int(s) for s in img_size)
        kwargs = dict(backbone_kwargs or {})
        self.backbone_name = backbone
        self.sa: SemanticAttention | None = None
        if backbone == "vit":
            kwargs.setdefault("img_size", size)
            self.backbone = build_backbone("vit", **kwargs)
            self.sa_stage, self.token_stage = None, None
            cls_dim = tok_dim = global_dim = self.backbone.embed_dim
            recon_dim, recon_stride = self.backbone.embed_dim, self.backbone.patch_size
        else:
            self.backbone = build_backbone(backbone, **kwargs)
            stages = self.backbone.num_stages
            for name, stage in (("sa_stage", sa_stage), ("token_stage", token_stage)):
                if stage is not None and not 1 <= stage <= stages:
                    raise ValueError(f"{name} must be 1..{stages} or None, got {stage}")
            self.sa_stage = sa_stage
            self.token_stage = token_stage or sa_stage or min(3, stages)
            dims = self.backbone.stage_dims
            if sa_stage is not None:
                self.backbone.check_input(torch.empty(1, self.backbone.in_chans, *size, device="meta"))
                self.sa = SemanticAttention(
                    dims[sa_stage - 1],
                    sa_heads or self.backbone.num_heads[sa_stage - 1],
                    grid_size=self.backbone.grid(size, sa_stage),
                    depth=sa_depth,
                    layerscale_init=sa_layerscale_init,
                    drop_path=sa_drop_path,
                    use_checkpoint=bool(kwargs.get("use_checkpoint", False)),
                )
            tok_dim = dims[self.token_stage - 1]
            cls_dim = dims[sa_stage - 1] if sa_stage is not None else tok_dim
            global_dim = dims[-1]
            recon_dim, recon_stride = self.backbone.out_dim, self.backbone.out_stride
        if share_patch_head and cls_dim != tok_dim:
            raise ValueError(
                f"share_patch_head needs equal [CLS] and patch widths, got {cls_dim} (sa_stage) and "
                f"{tok_dim} (token_stage)"
            )
        head_args = dict(
            out_dim=out_dim,
            hidden_dim=head_hidden_dim,
            bottleneck_dim=head_bottleneck_dim,
            nlayers=head_nlayers,
            norm_last_layer=norm_last_layer,
        )
        self.cls_head = ProjectionHead(cls_dim, **head_args)
        self.patch_head = None if share_patch_head else ProjectionHead(tok_dim, **head_args)
        self.global_head = ProjectionHead(global_dim, **head_args)
        in_chans = self.backbone.in_chans
        self.recon_head = ReconstructionHead(recon_dim, recon_stride, in_chans) if recon_head else None

    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-serialisable) to rebuild this network with :meth:`from_config`."""
        return dict(self._config)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DagmanNetwork:
        """Rebuild a network from :meth:`config`."""
        return cls(**config)

    def token_grid(self, size: Sequence[int]) -> tuple[int, int, int]:
        """Grid of ``satt`` / ``stage_tokens`` for an input of spatial ``size``.

        Masks and noise may be given on this grid (the Swin broadcasts them to its patch grid), so
        attention-guided masking can work on SATT's grid directly.
        """
        if self.backbone_name == "vit":
            return self.backbone.grid(size)
        return self.backbone.grid(size, self.token_stage)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
        *,
        project: bool = True,
        reconstruct: bool | None = None,
    ) -> NetworkOutput:
        """Encode a batch.

        Args:
            x: crops (B, in_chans, D, H, W); Swin sides multiples of 32 (default sizes), ViT of the patch.
            mask: student mask, bool, True cells get the mask token: (B, d, h, w) on the patch grid or a
                coarser stage grid (e.g. :meth:`token_grid`), or (B, N) flattened in C order from the patch
                grid or the token grid (told apart by N).
            drop: teacher noise, bool, same forms; True cells are zeroed (in train() and eval() alike).
            project: compute the three projection-head outputs.
            reconstruct: compute ``recon``; default: whenever the network has a reconstruction head.

        Returns:
            :class:`NetworkOutput`.
        """
        if reconstruct is None:
            reconstruct = self.recon_head is not None
        if reconstruct and self.recon_head is None:
            raise ValueError("reconstruct=True but this network was built with recon_head=False")
        mask = self._as_grid(mask, x, "mask")
        drop = self._as_grid(drop, x, "drop")
        if self.backbone_name == "vit":
            feats = self.backbone(x, mask=mask, drop=drop)
            cls, satt, tokens, grid = feats.cls, feats.satt, feats.tokens, feats.grid
            global_avg = tokens.mean(dim=1)
            final = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)
        else:
            hook = self._sa_hook if self.sa is not None else None
            feats = self.backbone(
                x, mask=mask, drop=drop, hook=hook, hook_stage=self.sa_stage if hook else None
            )
            token_map = feats.stages[self.token_stage - 1]
            grid = tuple(token_map.shape[2:])
            tokens = token_map.flatten(2).transpose(1, 2)
            if self.sa is not None:
                sa_out: SAOutput = feats.hook_out
                cls, satt = sa_out.cls, sa_out.satt
            else:
                cls, satt = tokens.mean(dim=1), None
            global_avg = feats.stages[-1].mean(dim=(2, 3, 4))
            final = feats.merged[-1]
        out = NetworkOutput(cls=cls, satt=satt, stage_tokens=tokens, token_grid=grid, global_avg=global_avg)
        if reconstruct:
            out.recon = self.recon_head(final)
        if project:
            out.cls_logits = self.cls_head(cls)
            out.patch_logits = (self.patch_head or self.cls_head)(tokens)
            out.global_logits = self.global_head(global_avg)
        return out

    def _as_grid(self, cells: torch.Tensor | None, x: torch.Tensor, name: str) -> torch.Tensor | None:
        """Reshape a flat (B, N) cell mask to the patch grid or the token grid, whichever has N cells."""
        if cells is None or cells.ndim != 2:
            return cells
        size = tuple(x.shape[2:])
        patch = self.backbone.grid(size) if self.backbone_name == "vit" else self.backbone.grid(size, 0)
        for grid in (patch, self.token_grid(size)):
            if cells.shape[1] == grid[0] * grid[1] * grid[2]:
                return cells.reshape(cells.shape[0], *grid)
        raise ValueError(
            f"{name} has {cells.shape[1]} cells per image, which fits neither the patch grid {patch} nor the "
            f"token grid {self.token_grid(size)} of a {size} input"
        )

    def _sa_hook(self, stage_map: torch.Tensor) -> tuple[torch.Tensor, SAOutput]:
        """Stage hook: run SA and hand its patch tokens back to the Swin."""
        sa_out = self.sa(stage_map)
        return sa_out.tokens, sa_out

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """Encoder weights alone: for the Swin exactly ``SwinUNETR(...).swinViT.state_dict()``'s keys."""
        if self.backbone_name == "vit":
            return dict(self.backbone.state_dict())
        return dict(self.backbone.swinViT.state_dict())

    def sa_state_dict(self) -> dict[str, torch.Tensor]:
        """Semantic-attention weights (keys relative to the SA module)."""
        if self.sa is None:
            raise ValueError(
                "this network has no semantic-attention module (sa_stage=None or backbone 'vit')"
            )
        return dict(self.sa.state_dict())
