"""Encoder export and strict loading of pretrained weights (DESIGN 3.1; STYLE "Loading weights").

- :func:`export_encoder` writes the plain encoder state dict (for the Swin: exactly the keys of
  ``SwinUNETR(...).swinViT``), the semantic-attention weights with their configuration beside it
  (``<stem>_sa.pt``), and the encoder configuration as JSON (``<stem>_config.json``), all atomically.
- :func:`map_encoder_keys` is the one function that renames foreign checkpoint keys (``module.`` from DDP,
  ``swinViT.`` from a whole SwinUNETR, ``backbone.swinViT.`` from a whole DAGMaN network) and reports what it
  kept and skipped.
- :func:`load_encoder_into_swinunetr` loads strictly and raises listing missing, unexpected or mis-shaped keys.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dagman.models.network import DagmanNetwork
from dagman.models.semantic_attention import SemanticAttention

__all__ = [
    "EncoderLoadReport",
    "export_encoder",
    "map_encoder_keys",
    "load_encoder_into_swinunetr",
    "load_semantic_attention",
    "swinunetr_kwargs",
]

#: Containers that training checkpoints commonly wrap a state dict in, tried in this order.
_CONTAINER_KEYS = ("state_dict", "model", "student")
#: Prefixes that mark the encoder inside a whole-model state dict, longest first.
_ENCODER_PREFIXES = ("backbone.swinViT.", "swinViT.")
_DDP_PREFIX = "module."


@dataclass
class EncoderLoadReport:
    """What :func:`map_encoder_keys` / :func:`load_encoder_into_swinunetr` did.

    Attributes:
        container: the wrapping key the state dict was found under ("" when the file was the state dict).
        stripped: prefixes removed from the keys, in order.
        loaded: encoder keys handed to the model.
        skipped: keys outside the encoder (e.g. a SwinUNETR decoder, DAGMaN heads), not loaded.
    """

    container: str = ""
    stripped: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs."""
        where = f" from '{self.container}'" if self.container else ""
        prefixes = ", ".join(repr(p) for p in self.stripped) or "none"
        return (
            f"loaded {len(self.loaded)} encoder tensors{where}; stripped prefixes: {prefixes}; "
            f"skipped {len(self.skipped)} non-encoder keys"
        )


def map_encoder_keys(checkpoint: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], EncoderLoadReport]:
    """Find the Swin encoder in a checkpoint and rename its keys to ``SwinUNETR.swinViT``'s.

    Rules, applied in order:
    1. a dict holding a state dict under "state_dict", "model" or "student" is unwrapped;
    2. a ``module.`` prefix on every key (DistributedDataParallel) is stripped;
    3. if any key starts with ``backbone.swinViT.`` or ``swinViT.``, the keys under that prefix are the encoder
       (prefix stripped) and all other keys are skipped as outside the encoder; otherwise the dict is taken
       as a plain encoder state dict, every key kept.

    Returns:
        The renamed encoder state dict and an :class:`EncoderLoadReport`.
    """
    report = EncoderLoadReport()
    state: Mapping[str, Any] = checkpoint
    for key in _CONTAINER_KEYS:
        if isinstance(state.get(key), Mapping):
            state, report.container = state[key], key
            break
    if state and all(k.startswith(_DDP_PREFIX) for k in state):
        state = {k[len(_DDP_PREFIX) :]: v for k, v in state.items()}
        report.stripped.append(_DDP_PREFIX)
    for prefix in _ENCODER_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            report.stripped.append(prefix)
            report.skipped = sorted(k for k in state if not k.startswith(prefix))
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            break
    mapped = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    report.skipped += sorted(k for k in state if k not in mapped)
    report.loaded = sorted(mapped)
    return mapped, report


def load_encoder_into_swinunetr(
    model: nn.Module, path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> EncoderLoadReport:
    """Load pretrained Swin encoder weights strictly into ``model.swinViT`` (a MONAI SwinUNETR).

    Args:
        model: a module with a ``swinViT`` attribute (``monai.networks.nets.SwinUNETR``) built with the
            pretraining's feature_size, depths, num_heads, window_size and patch_size (see
            :func:`swinunetr_kwargs`).
        path: an exported encoder file, or any checkpoint :func:`map_encoder_keys` understands.
        map_location: device for loading.

    Returns:
        The :class:`EncoderLoadReport`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: keys are missing, unexpected or of the wrong shape (all are listed), or ``model`` has no
            ``swinViT``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights not found: {path}")
    encoder = getattr(model, "swinViT", None)
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"{type(model).__name__} has no 'swinViT' encoder to load {path} into")
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(checkpoint).__name__})")
    state, report = map_encoder_keys(checkpoint)
    target = encoder.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    mis_shaped = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        for k in set(state) & set(target)
        if state[k].shape != target[k].shape
    )
    if missing or unexpected or mis_shaped:
        problems = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped)):
            if keys:
                problems.append(f"{label} ({len(keys)}): " + ", ".join(keys))
        raise ValueError(
            f"encoder weights in {path} do not match the SwinUNETR encoder ({report.summary()}); "
            + "; ".join(problems)
            + ". Build SwinUNETR with the pretraining's sizes (window_size included)."
        )
    encoder.load_state_dict(state, strict=True)
    return report


def swinunetr_kwargs(network: DagmanNetwork) -> dict[str, Any]:
    """SwinUNETR constructor arguments whose encoder matches ``network``'s Swin (add ``out_channels``)."""
    if network.backbone_name != "swin":
        raise ValueError(
            f"only a Swin encoder fits SwinUNETR, this network's backbone is {network.backbone_name!r}"
        )
    config = network.backbone.config()
    return {
        "in_channels": config["in_chans"],
        "feature_size": config["embed_dim"],
        "depths": tuple(config["depths"]),
        "num_heads": tuple(config["num_heads"]),
        "window_size": config["window_size"],
        "patch_size": config["patch_size"],
        "mlp_ratio": config["mlp_ratio"],
    }


def export_encoder(network: DagmanNetwork, path: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the encoder (plain state dict), SA weights and encoder config next to each other, atomically.

    Files: ``path`` (``torch.save`` of :meth:`DagmanNetwork.encoder_state_dict`), ``<stem>_sa.pt``
    (``{"config": SA config, "state_dict": SA weights}``, only when the network has SA) and
    ``<stem>_config.json`` (backbone name, backbone config, SwinUNETR arguments for a Swin, SA stage).

    Returns:
        Paths written, under the keys "encoder", "config" and (with SA) "sa".
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = {"encoder": path}
    _atomic_save({k: v.detach().cpu() for k, v in network.encoder_state_dict().items()}, path)
    if network.sa is not None:
        sa_path = path.with_name(f"{path.stem}_sa.pt")
        state = {k: v.detach().cpu() for k, v in network.sa_state_dict().items()}
        _atomic_save(
            {"config": network.sa.config(), "sa_stage": network.sa_stage, "state_dict": state}, sa_path
        )
        written["sa"] = sa_path
    config: dict[str, Any] = {
        "backbone": network.backbone_name,
        "backbone_config": network.backbone.config(),
        "sa_stage": network.sa_stage,
    }
    if network.backbone_name == "swin":
        config["swinunetr_kwargs"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in swinunetr_kwargs(network).items()
        }
    config_path = path.with_name(f"{path.stem}_config.json")
    _atomic_write_text(json.dumps(config, indent=2) + "\n", config_path)
    written["config"] = config_path
    return written


def load_semantic_attention(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[SemanticAttention, int]:
    """Rebuild the SA module from an exported ``<stem>_sa.pt`` and load it strictly.

    Returns:
        The module (in eval mode) and the Swin stage it belongs to.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"semantic-attention weights not found: {path}")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, Mapping) or not {"config", "state_dict", "sa_stage"} <= set(payload):
        raise ValueError(
            f"{path} is not an exported semantic-attention file (needs config, sa_stage, state_dict)"
        )
    module = SemanticAttention(**payload["config"])
    module.load_state_dict(payload["state_dict"], strict=True)
    return module.eval(), int(payload["sa_stage"])


def _atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the target folder, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _atomic_write_text(text: str, path: Path) -> None:
    """Write text to a temporary file in the target folder, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
