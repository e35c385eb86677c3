"""Encoder export and strict loading of pretrained weights (DESIGN 3.1; STYLE "Loading weights").

- :func:`export_encoder` writes the plain encoder state dict (for the Swin: exactly the keys of
  ``SwinUNETR(...).swinViT``), the semantic-attention weights with their configuration beside it
  (``<stem>_sa.pt``), and the encoder configuration as JSON (``<stem>_config.json``, with the pretraining
  crop size as ``input_size``), all atomically.
- :func:`load_encoder` is the one loader of an export: it rebuilds the encoder (Swin or ViT, with or without
  SA) from those files alone and loads every tensor strictly, or builds the same architecture with fresh
  weights (the "no pretraining" control). :meth:`LoadedEncoder.network` wraps it in a :class:`DagmanNetwork`.
- :func:`map_encoder_keys` is the one function that renames foreign checkpoint keys (``module.`` from DDP,
  ``swinViT.`` from a whole SwinUNETR, ``backbone.swinViT.`` from a whole DAGMaN network) and reports what it
  kept and skipped.
- :func:`load_encoder_into_swinunetr` loads strictly and raises listing missing, unexpected or mis-shaped keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dagman.io.atomic import atomic_path, write_json_atomic
from dagman.models.network import DagmanNetwork, build_backbone
from dagman.models.semantic_attention import SemanticAttention

__all__ = [
    "ENCODER_FILE",
    "EncoderLoadReport",
    "ExportFiles",
    "LoadedEncoder",
    "as_input_size",
    "export_encoder",
    "export_files",
    "load_encoder",
    "load_encoder_into_swinunetr",
    "load_semantic_attention",
    "map_encoder_keys",
    "read_export_config",
    "swinunetr_kwargs",
]

#: Name of the encoder weights in a pretraining's export folder.
ENCODER_FILE = "encoder.pt"
#: Containers that training checkpoints commonly wrap a state dict in, tried in this order.
_CONTAINER_KEYS = ("state_dict", "model", "student")
#: Prefixes that mark the encoder inside a whole-model state dict, longest first.
_ENCODER_PREFIXES = ("backbone.swinViT.", "swinViT.")
_DDP_PREFIX = "module."
#: Keys listed per kind of mismatch in a loading error (the rest are counted).
_SHOW_KEYS = 20
#: Keys every export configuration has.
_CONFIG_KEYS = ("backbone", "backbone_config", "sa_stage")


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


def _checked_state(
    path: Path, map_location: str | torch.device
) -> tuple[dict[str, torch.Tensor], EncoderLoadReport]:
    """The encoder state dict in the file at ``path`` (through :func:`map_encoder_keys`)."""
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights not found: {path}")
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(checkpoint).__name__})")
    return map_encoder_keys(checkpoint)


def _load_strict(
    module: nn.Module, state: Mapping[str, torch.Tensor], report: EncoderLoadReport, source: Path, what: str
) -> None:
    """``module.load_state_dict(state, strict=True)``, first raising a ValueError that lists every mismatch."""
    target = module.state_dict()
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
                more = f", ... ({len(keys) - _SHOW_KEYS} more)" if len(keys) > _SHOW_KEYS else ""
                problems.append(f"{label} ({len(keys)}): " + ", ".join(keys[:_SHOW_KEYS]) + more)
        raise ValueError(
            f"encoder weights in {source} do not match the {what} ({report.summary()}); "
            + "; ".join(problems)
            + ". Build it with the pretraining's sizes (window_size included)."
        )
    module.load_state_dict(state, strict=True)


def load_encoder_into_swinunetr(
    model: nn.Module, path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> EncoderLoadReport:
    """Load pretrained Swin encoder weights strictly into ``model.swinViT`` (a MONAI SwinUNETR).

    Args:
        model: a module with a ``swinViT`` attribute (``monai.networks.nets.SwinUNETR``, or our
            :class:`~dagman.models.swin.SwinBackbone`) built with the pretraining's feature_size, depths,
            num_heads, window_size and patch_size (see :func:`swinunetr_kwargs`).
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
    state, report = _checked_state(path, map_location)
    _load_strict(encoder, state, report, path, "SwinUNETR encoder")
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


def as_input_size(size: Sequence[int] | int) -> tuple[int, int, int]:
    """Three positive sides (D, H, W) from one side or three."""
    sides = (int(size),) * 3 if isinstance(size, int | np.integer) else tuple(int(s) for s in size)
    if len(sides) != 3 or min(sides) < 1:
        raise ValueError(f"input size must be one positive side or three, got {size!r}")
    return sides  # type: ignore[return-value]


def export_encoder(
    network: DagmanNetwork, path: str | os.PathLike[str], input_size: Sequence[int] | int | None = None
) -> dict[str, Path]:
    """Write the encoder (plain state dict), SA weights and encoder config next to each other, atomically.

    Files: ``path`` (``torch.save`` of :meth:`DagmanNetwork.encoder_state_dict`), ``<stem>_sa.pt``
    (``{"config": SA config, "sa_stage": stage, "state_dict": SA weights}``, only when the network has SA)
    and ``<stem>_config.json`` (backbone name, backbone config, SwinUNETR arguments for a Swin, SA stage and
    ``input_size``, the crop side(s) the encoder was pretrained on, which downstream tasks feed it by default).

    Args:
        network: the network to export (pretraining exports the EMA teacher).
        path: the encoder file, usually ``<out>/encoder.pt``.
        input_size: pretraining crop side(s); default: the ``img_size`` the network was built with.

    Returns:
        Paths written, under the keys "encoder", "config" and (with SA) "sa".
    """
    path = Path(path)
    size = as_input_size(input_size if input_size is not None else network.config()["img_size"])
    written = {"encoder": path}
    with atomic_path(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in network.encoder_state_dict().items()}, tmp)
    if network.sa is not None:
        sa_path = path.with_name(f"{path.stem}_sa.pt")
        state = {k: v.detach().cpu() for k, v in network.sa_state_dict().items()}
        with atomic_path(sa_path) as tmp:
            torch.save(
                {"config": network.sa.config(), "sa_stage": network.sa_stage, "state_dict": state}, tmp
            )
        written["sa"] = sa_path
    config: dict[str, Any] = {
        "backbone": network.backbone_name,
        "backbone_config": network.backbone.config(),
        "sa_stage": network.sa_stage,
        "input_size": list(size),
    }
    if network.backbone_name == "swin":
        config["swinunetr_kwargs"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in swinunetr_kwargs(network).items()
        }
    written["config"] = write_json_atomic(path.with_name(f"{path.stem}_config.json"), config)
    return written


def load_semantic_attention(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[SemanticAttention, int]:
    """Rebuild the SA module from an exported ``<stem>_sa.pt`` and load it strictly.

    Returns:
        The module (in eval mode) and the Swin stage it belongs to.
    """
    module, stage = _semantic_attention(Path(path), pretrained=True, map_location=map_location)
    return module, stage


def _semantic_attention(
    path: Path, pretrained: bool, map_location: str | torch.device = "cpu"
) -> tuple[SemanticAttention, int]:
    """The exported SA module's architecture, with its weights (``pretrained``) or fresh ones; eval mode."""
    if not path.is_file():
        raise FileNotFoundError(f"semantic-attention weights not found: {path}")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, Mapping) or not {"config", "state_dict", "sa_stage"} <= set(payload):
        raise ValueError(
            f"{path} is not an exported semantic-attention file (needs config, sa_stage, state_dict)"
        )
    module = SemanticAttention(**payload["config"])
    if pretrained:
        module.load_state_dict(payload["state_dict"], strict=True)
    return module.eval(), int(payload["sa_stage"])


# ----------------------------------------------------------------------------------- loading an export


@dataclass(frozen=True)
class ExportFiles:
    """The files of one encoder export (``sa`` may not exist: only SA methods have it)."""

    weights: Path
    config: Path
    sa: Path

    @property
    def method(self) -> str:
        """Default method name: the export folder's name for ``encoder.pt``, else the file's stem."""
        return self.weights.parent.name if self.weights.name == ENCODER_FILE else self.weights.stem


def export_files(path: str | os.PathLike[str]) -> ExportFiles:
    """The weights, config and SA files of an export folder (holding ``encoder.pt``) or of a ``<stem>.pt``.

    Raises:
        FileNotFoundError: the weights or the config file is missing (named).
    """
    path = Path(path)
    weights = path / ENCODER_FILE if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(
            f"encoder weights not found: {weights} (give a pretraining export folder holding {ENCODER_FILE}, "
            "or the .pt file; `dagman pretrain` writes them)"
        )
    config = weights.with_name(f"{weights.stem}_config.json")
    if not config.is_file():
        raise FileNotFoundError(
            f"encoder configuration {config} is missing (export_encoder writes it beside {weights.name}, "
            f"with {weights.stem}_sa.pt for SA methods)"
        )
    return ExportFiles(weights=weights, config=config, sa=weights.with_name(f"{weights.stem}_sa.pt"))


def read_export_config(path: str | os.PathLike[str]) -> tuple[ExportFiles, dict[str, Any]]:
    """The files of an export (see :func:`export_files`) and its checked ``<stem>_config.json``."""
    files = export_files(path)
    config = json.loads(files.config.read_text(encoding="utf-8"))
    missing = [k for k in _CONFIG_KEYS if k not in config] if isinstance(config, dict) else list(_CONFIG_KEYS)
    if missing:
        raise ValueError(f"{files.config} has no {', '.join(missing)}: not an export_encoder configuration")
    if config["backbone"] not in ("swin", "vit"):
        raise ValueError(f"{files.config}: backbone must be 'swin' or 'vit', got {config['backbone']!r}")
    return files, config


@dataclass
class LoadedEncoder:
    """An encoder rebuilt by :func:`load_encoder`.

    Attributes:
        backbone_name: "swin" or "vit".
        backbone: :class:`~dagman.models.swin.SwinBackbone` or :class:`~dagman.models.vit.ViTBackbone`.
        sa: the semantic-attention module (Swin methods with SA) or None.
        sa_stage: its Swin stage (1-based) or None.
        input_size: the pretraining crop (D, H, W): recorded in the config, or for exports that predate the
            record, derived from the SA grid or the ViT's ``img_size``; None where nothing fixes it (a Swin
            without SA exported before ``input_size`` was recorded).
        config: the export's configuration.
        files: the export's files.
        load_report: one line for logs (what was loaded, what was freshly initialised).
    """

    backbone_name: str
    backbone: nn.Module
    sa: SemanticAttention | None
    sa_stage: int | None
    input_size: tuple[int, int, int] | None
    config: dict[str, Any]
    files: ExportFiles
    load_report: str

    def resolve_input_size(self, input_size: Sequence[int] | int | None = None) -> tuple[int, int, int]:
        """``input_size`` when given, else the pretraining crop of the export.

        Raises:
            ValueError: neither is known (an export older than the ``input_size`` record, Swin without SA).
        """
        if input_size is not None:
            return as_input_size(input_size)
        if self.input_size is None:
            raise ValueError(
                f"{self.files.config} records no input size (exported before encoder configs recorded the "
                "pretraining crop); pass the pretraining crop side with --input-size (input_size=...)"
            )
        return self.input_size

    def network(self, input_size: Sequence[int] | int | None = None) -> DagmanNetwork:
        """A :class:`DagmanNetwork` around this encoder (its modules, not copies) for inference.

        Projection and reconstruction heads are not part of an export: they are built minimal and must not be
        used (call the network with ``project=False, reconstruct=False``).

        Args:
            input_size: side(s) the network is fed at (default: :meth:`resolve_input_size`).
        """
        size = self.resolve_input_size(input_size)
        # The throwaway modules built here are replaced at once; forking the RNG keeps the caller's draws.
        with torch.random.fork_rng(devices=[]):
            network = DagmanNetwork(
                self.backbone_name,
                img_size=size,
                sa_stage=self.sa_stage,
                sa_heads=self.sa.num_heads if self.sa is not None else None,
                sa_depth=self.sa.depth if self.sa is not None else 2,
                out_dim=2,
                head_hidden_dim=2,
                head_bottleneck_dim=2,
                head_nlayers=1,
                recon_head=False,
                backbone_kwargs=self.config["backbone_config"],
            )
        network.backbone = self.backbone
        if self.sa is not None:
            network.sa = self.sa  # the exported module itself, with its own (pretraining) grid
        return network


def load_encoder(
    path: str | os.PathLike[str],
    weights: str = "pretrained",
    sa_weights: str | None = None,
    map_location: str | torch.device = "cpu",
) -> LoadedEncoder:
    """Rebuild the encoder of an export folder; load every tensor strictly, or keep fresh weights.

    The backbone is built first and the SA module second, each drawing its initial weights from torch's
    global generator (seed it first when ``weights`` or ``sa_weights`` is "random").

    Args:
        path: export folder (``.../pretrain/<method>/``) or its ``encoder.pt``.
        weights: "pretrained" (the exported encoder, strictly) or "random" (the same architecture, fresh
            weights: the no-pretraining control).
        sa_weights: the same choice for the SA module (default: as ``weights``); "random" with pretrained
            ``weights`` re-initialises SA only.
        map_location: device for reading the files.

    Returns:
        :class:`LoadedEncoder` (modules in train mode, as built; put them in eval mode for inference).

    Raises:
        FileNotFoundError: a file of the export is missing.
        ValueError: the config is not an export's, the SA file disagrees with it, or a tensor is missing,
            unexpected or mis-shaped (all listed).
    """
    sa_weights = weights if sa_weights is None else sa_weights
    for name, value in (("weights", weights), ("sa_weights", sa_weights)):
        if value not in ("pretrained", "random"):
            raise ValueError(f"{name} must be 'pretrained' or 'random', got {value!r}")
    files, config = read_export_config(path)
    name, backbone_config = config["backbone"], dict(config["backbone_config"])
    backbone = build_backbone(name, **backbone_config)
    sa, sa_stage, reports = None, None, []
    if name == "swin" and config["sa_stage"] is not None:
        if not files.sa.is_file():
            raise FileNotFoundError(
                f"{files.config} names SA stage {config['sa_stage']} but {files.sa} is missing"
            )
        sa, sa_stage = _semantic_attention(files.sa, sa_weights == "pretrained", map_location)
        sa.train()
        if sa_stage != int(config["sa_stage"]):
            raise ValueError(
                f"{files.sa} is for SA stage {sa_stage} but {files.config} says {config['sa_stage']}"
            )
        reports.append(
            f"SA loaded strictly from {files.sa.name}"
            if sa_weights == "pretrained"
            else "SA randomly initialised"
        )
    if weights == "pretrained":
        state, report = _checked_state(files.weights, map_location)
        target = backbone.swinViT if name == "swin" else backbone
        _load_strict(target, state, report, files.weights, f"{name} encoder in {files.config.name}")
        reports.insert(0, report.summary())
    else:
        reports.insert(0, "randomly initialised encoder (no pretraining)")

    if "input_size" in config:
        input_size = as_input_size(config["input_size"])
    elif sa is not None:
        stride = int(backbone.stage_strides[sa_stage - 1])
        input_size = as_input_size([g * stride for g in sa.grid_size])
    elif name == "vit":
        input_size = as_input_size(backbone.img_size)
    else:
        input_size = None
    return LoadedEncoder(
        backbone_name=name,
        backbone=backbone,
        sa=sa,
        sa_stage=sa_stage,
        input_size=input_size,
        config=config,
        files=files,
        load_report="; ".join(reports),
    )
