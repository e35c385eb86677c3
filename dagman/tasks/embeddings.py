"""Pretrained encoders for the representation analyses: strict loading from an export folder, and embeddings.

An export folder is what :func:`dagman.models.weights.export_encoder` writes (``results/<run>/pretrain/<method>/``):
``encoder.pt`` (plain encoder state dict), ``encoder_sa.pt`` (semantic-attention weights and configuration,
SA methods only) and ``encoder_config.json`` (backbone name and configuration, SA stage). The network is
rebuilt from those files alone and every tensor is loaded strictly; projection and reconstruction heads are not
part of an export and are never run here.

Image embedding (DESIGN 4, preprint section V): the SA [CLS] for Swin methods with SA, the ViT [CLS] for ViT
methods, and otherwise ("pooled") the global average of the last Swin stage, which is the representation the
preprint uses for SMIT ("average pooling of the features from stage #4").
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from dagman.models.network import DagmanNetwork, NetworkOutput
from dagman.models.weights import load_semantic_attention, map_encoder_keys

__all__ = [
    "EMBEDDING_KINDS",
    "PretrainedEncoder",
    "load_pretrained_encoder",
    "resize_volumes",
    "embed_volumes",
    "resolve_kind",
]

#: "auto": [CLS] where the encoder has one (SA or ViT), else "pooled"; "cls": NetworkOutput.cls (the average
#: token of the token stage for Swin without SA); "pooled": global average of the last stage.
EMBEDDING_KINDS: tuple[str, ...] = ("auto", "cls", "pooled")


@dataclass
class PretrainedEncoder:
    """A pretrained encoder ready for inference.

    Attributes:
        network: the rebuilt :class:`DagmanNetwork` in eval mode, gradients off.
        input_size: (D, H, W) the network is fed at (the pretraining crop size).
        method: the method's name (the export folder's name unless given).
        path: the encoder weights file.
    """

    network: DagmanNetwork
    input_size: tuple[int, int, int]
    method: str
    path: Path

    @property
    def has_attention(self) -> bool:
        """Whether the encoder has a [CLS]-to-patch attention map (Swin with SA, or ViT)."""
        return self.network.sa is not None or self.network.backbone_name == "vit"

    @property
    def device(self) -> torch.device:
        """Device of the network's parameters."""
        return next(self.network.parameters()).device

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> NetworkOutput:
        """Encode a batch (B, 1, D, H, W) without projections or reconstruction."""
        return self.network(x.to(self.device), project=False, reconstruct=False)


def _export_files(path: Path) -> tuple[Path, Path, Path]:
    """Encoder weights, config and SA files of an export folder or of an ``encoder.pt`` path."""
    weights = path / "encoder.pt" if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(
            f"encoder weights not found: {weights} (give an export folder holding encoder.pt, or the .pt file)"
        )
    config = weights.with_name(f"{weights.stem}_config.json")
    if not config.is_file():
        raise FileNotFoundError(
            f"encoder configuration not found: {config} (written by export_encoder next to {weights.name})"
        )
    return weights, config, weights.with_name(f"{weights.stem}_sa.pt")


def _as_size(size: Sequence[int] | int) -> tuple[int, int, int]:
    """Three positive sides from one side or three."""
    sides = (int(size),) * 3 if isinstance(size, int | np.integer) else tuple(int(s) for s in size)
    if len(sides) != 3 or min(sides) < 1:
        raise ValueError(f"input size must be one positive side or three, got {size!r}")
    return sides  # type: ignore[return-value]


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """``load_state_dict(strict=True)`` with a plain-language ValueError listing every mismatch."""
    target = module.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    shaped = sorted(
        f"{k} (file {tuple(state[k].shape)}, model {tuple(target[k].shape)})"
        for k in set(state) & set(target)
        if state[k].shape != target[k].shape
    )
    if missing or unexpected or shaped:
        parts = [
            f"{label}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shaped))
            if keys
        ]
        raise ValueError(
            f"encoder weights in {source} do not fit the configured encoder; " + "; ".join(parts)
        )
    module.load_state_dict(state, strict=True)


def load_pretrained_encoder(
    path: str | os.PathLike[str],
    input_size: Sequence[int] | int | None = None,
    method: str | None = None,
    device: str | torch.device = "cpu",
) -> PretrainedEncoder:
    """Rebuild a pretrained encoder from its export and load every tensor strictly.

    Args:
        path: export folder (``.../pretrain/<method>/``) or its ``encoder.pt``.
        input_size: side(s) the network is fed at. Default: ``img_size`` in the config if present, else the
            SA position-embedding grid times the SA stage's stride (the pretraining crop), else the ViT's
            ``img_size``. A Swin export without SA records no crop size, so give it there.
        method: name for outputs; default: the export folder's name.
        device: where to run.

    Returns:
        :class:`PretrainedEncoder`.
    """
    weights, config_path, sa_path = _export_files(Path(path))
    config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    for key in ("backbone", "backbone_config", "sa_stage"):
        if key not in config:
            raise ValueError(f"{config_path} has no {key!r}: not an export_encoder configuration")
    backbone, backbone_config, sa_stage = (
        config["backbone"],
        dict(config["backbone_config"]),
        config["sa_stage"],
    )
    sa_module = None
    if sa_stage is not None:
        if not sa_path.is_file():
            raise FileNotFoundError(f"{config_path} names SA stage {sa_stage} but {sa_path} does not exist")
        sa_module, stored_stage = load_semantic_attention(sa_path)
        if stored_stage != sa_stage:
            raise ValueError(f"{sa_path} is for SA stage {stored_stage}, {config_path} says {sa_stage}")

    if input_size is None:
        if "img_size" in config:
            input_size = config["img_size"]
        elif sa_module is not None:
            stride = int(backbone_config["patch_size"]) * 2 ** (int(sa_stage) - 1)
            input_size = [g * stride for g in sa_module.grid_size]
        elif backbone == "vit":
            input_size = backbone_config["img_size"]
        else:
            raise ValueError(
                f"{config_path} records no crop size for this Swin encoder without SA; pass the pretraining "
                "crop size (input_size / --input-size)"
            )
    size = _as_size(input_size)
    network = DagmanNetwork(
        backbone,
        img_size=size,
        sa_stage=sa_stage,
        sa_heads=sa_module.num_heads if sa_module is not None else None,
        sa_depth=sa_module.depth if sa_module is not None else 2,
        # heads are not exported and never run here: build them minimal
        out_dim=2,
        head_hidden_dim=2,
        head_bottleneck_dim=2,
        head_nlayers=1,
        recon_head=False,
        backbone_kwargs=backbone_config,
    )
    if sa_module is not None:
        network.sa = sa_module  # the exported module itself, loaded strictly with its own grid
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{weights} does not hold a state dict (got {type(state).__name__})")
    if backbone == "swin":
        state, _ = map_encoder_keys(state)
        _load_strict(network.backbone.swinViT, state, weights)
    else:
        _load_strict(network.backbone, state, weights)
    network.eval().requires_grad_(False).to(device)
    name = method or (weights.parent.name if weights.name == "encoder.pt" else weights.stem)
    return PretrainedEncoder(network=network, input_size=size, method=name, path=weights)


def resize_volumes(volumes: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Trilinear resize of (B, 1, D, H, W) float volumes to ``size`` (no-op when already that size)."""
    size = _as_size(size)
    if tuple(volumes.shape[2:]) == size:
        return volumes
    return F.interpolate(volumes, size=size, mode="trilinear", align_corners=False)


def resolve_kind(encoder: PretrainedEncoder, kind: str) -> Literal["cls", "pooled"]:
    """The concrete embedding for ``kind`` ("auto" -> "cls" where a [CLS] exists, else "pooled")."""
    if kind not in EMBEDDING_KINDS:
        raise ValueError(f"embedding kind must be one of {', '.join(EMBEDDING_KINDS)}, got {kind!r}")
    if kind == "auto":
        return "cls" if encoder.has_attention else "pooled"
    return kind  # type: ignore[return-value]


def embed_volumes(
    encoder: PretrainedEncoder,
    volumes: np.ndarray,
    kind: str = "auto",
    batch_size: int = 8,
    progress: bool = True,
) -> np.ndarray:
    """Embed volumes with a pretrained encoder.

    Args:
        encoder: from :func:`load_pretrained_encoder`.
        volumes: (N, D, H, W) uint8 (scaled by 1/255, as OrganMNIST3D) or float in [0, 1]; each is resized
            trilinearly to the encoder's input size.
        kind: "auto", "cls" or "pooled" (see ``EMBEDDING_KINDS``).
        batch_size: volumes per forward pass.
        progress: show a progress bar on stderr.

    Returns:
        (N, C) float32 embeddings.
    """
    if volumes.ndim != 4:
        raise ValueError(f"volumes must be (N, D, H, W), got shape {volumes.shape}")
    which = resolve_kind(encoder, kind)
    scale = 1.0 / 255.0 if volumes.dtype == np.uint8 else 1.0
    out = []
    starts = range(0, len(volumes), max(1, int(batch_size)))
    for start in tqdm(starts, desc=f"embed {encoder.method}", disable=not progress, unit="batch"):
        batch = torch.from_numpy(np.asarray(volumes[start : start + batch_size], dtype=np.float32) * scale)
        batch = resize_volumes(batch.unsqueeze(1), encoder.input_size)
        result = encoder.forward(batch)
        out.append((result.cls if which == "cls" else result.global_avg).float().cpu().numpy())
    width = 0 if not out else out[0].shape[1]
    return np.concatenate(out) if out else np.zeros((0, width), dtype=np.float32)
