"""Pretrained encoders for the representation analyses: an export folder as a network, and embeddings.

An export folder is what :func:`dagman.models.weights.export_encoder` writes (``results/<run>/pretrain/<method>/``):
``encoder.pt`` (plain encoder state dict), ``encoder_sa.pt`` (semantic-attention weights and configuration,
SA methods only) and ``encoder_config.json`` (backbone name and configuration, SA stage, pretraining crop
size). :func:`dagman.models.weights.load_encoder` rebuilds the encoder from those files alone and loads every
tensor strictly; projection and reconstruction heads are not part of an export and are never run here.

Image embedding (DESIGN 4, preprint section V): the SA [CLS] for Swin methods with SA, the ViT [CLS] for ViT
methods, and otherwise ("pooled") the global average of the last Swin stage, which is the representation the
preprint uses for SMIT ("average pooling of the features from stage #4").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from dagman.models.network import DagmanNetwork, NetworkOutput
from dagman.models.weights import as_input_size, load_encoder

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


def load_pretrained_encoder(
    path: str | os.PathLike[str],
    input_size: Sequence[int] | int | None = None,
    method: str | None = None,
    device: str | torch.device = "cpu",
) -> PretrainedEncoder:
    """Rebuild a pretrained encoder from its export (strictly, :func:`~dagman.models.weights.load_encoder`).

    Args:
        path: export folder (``.../pretrain/<method>/``) or its ``encoder.pt``.
        input_size: side(s) the network is fed at. Default: the pretraining crop recorded in the export (for
            exports that predate the record: derived from the SA grid or the ViT; a Swin without SA then
            needs it given).
        method: name for outputs; default: the export folder's name.
        device: where to run.

    Returns:
        :class:`PretrainedEncoder`.
    """
    loaded = load_encoder(path)
    size = loaded.resolve_input_size(input_size)
    network = loaded.network(size).eval().requires_grad_(False).to(device)
    return PretrainedEncoder(
        network=network, input_size=size, method=method or loaded.files.method, path=loaded.files.weights
    )


def resize_volumes(volumes: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Trilinear resize of (B, 1, D, H, W) float volumes to ``size`` (no-op when already that size)."""
    size = as_input_size(size)
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
