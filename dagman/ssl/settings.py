"""Pretraining hyper-parameters, each declared once with its default and a help line (STYLE "The training code").

``PretrainSettings`` holds everything the engine reads besides the method (``dagman.ssl.methods``), the cache
folders and the output folder. The workflow passes it as one JSON object (``dagman pretrain --settings``);
:meth:`PretrainSettings.from_dict` rejects unknown keys by name, so a typo fails instead of doing nothing.

Defaults follow the papers (DESIGN 3.1, 3.5): 128^3 crops at 2 mm, Swin embed 48 / depths (2, 2, 8, 2) /
heads (4, 4, 8, 16), AdamW at lr 8e-4 for 800 epochs with 80 warm-up epochs, drop path 0.1 on the student,
EMA momentum 0.996 -> 1, teacher temperature 0.04 -> 0.07, student temperature 0.1, centre momentum 0.9.
Keys in ``RUNTIME_KEYS`` change how a run executes but not what it computes, so a resumed run may change them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PretrainSettings", "RUNTIME_KEYS", "PRECISIONS"]

#: Keys that may differ between a checkpoint and the command that resumes it.
RUNTIME_KEYS: frozenset[str] = frozenset(
    {"num_workers", "device", "checkpoint_every", "max_steps", "tensorboard"}
)
#: Accepted values of ``precision``; fp16 is absent on purpose (it gives NaNs in this family of methods).
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")


def _opt(default: Any, help_text: str) -> Any:
    """A dataclass field with its help line in the metadata (mutable defaults through a factory)."""
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class PretrainSettings:
    """All pretraining hyper-parameters. See each field's help (``PretrainSettings.help()``)."""

    # data
    crop_size: tuple[int, int, int] = _opt(
        (128, 128, 128),
        "crop (D, H, W) in voxels at the cache spacing; Swin sides must be multiples of 32; lower to 64 or 96 "
        "when memory runs out or for quick runs",
    )
    batch_size: int = _opt(
        4,
        "samples (two crops each) per process per step; global batch = batch_size x processes; lower it "
        "when memory runs out",
    )
    num_workers: int = _opt(
        4,
        "data-loader worker processes per training process; raise it when metrics.csv data_wait_s is not ~0",
    )
    steps_per_epoch: int | None = _opt(
        None,
        "steps that count as one epoch (null = one pass over the cache); set it for tiny cohorts so that "
        "schedules given in epochs get enough steps",
    )
    seed: int = _opt(0, "seed of crops, masks, patch dropout and initialisation; change it for repeat runs")
    # schedules and optimiser
    epochs: int = _opt(800, "training epochs (paper: 800); lower it for demos, the schedules scale with it")
    warmup_epochs: float = _opt(80.0, "linear lr warm-up epochs (paper: 80); keep about 10 % of epochs")
    lr: float = _opt(
        8e-4, "peak AdamW learning rate after warm-up (paper: 8e-4); lower it if the loss spikes"
    )
    min_lr: float = _opt(1e-6, "learning rate at the last step of the cosine decay")
    weight_decay: float = _opt(
        0.04, "weight decay at the first step (iBOT: 0.04); biases, norms, tokens exempt"
    )
    weight_decay_end: float = _opt(0.4, "weight decay at the last step (cosine; iBOT: 0.4)")
    clip_grad: float = _opt(3.0, "gradient-norm clipping (DINO/iBOT: 3.0); 0 switches it off")
    momentum_base: float = _opt(
        0.996, "teacher EMA momentum at step 0 (cosine to momentum_final); raise to ~0.9995 for tiny batches"
    )
    momentum_final: float = _opt(1.0, "teacher EMA momentum at the last step")
    teacher_temp_start: float = _opt(
        0.04, "teacher temperature at step 0; lower it if the loss stays at ln K"
    )
    teacher_temp: float = _opt(0.07, "teacher temperature after warm-up (iBOT: 0.07)")
    teacher_temp_warmup_epochs: float = _opt(
        30.0, "teacher temperature warm-up epochs (truncated to the run)"
    )
    student_temp: float = _opt(0.1, "student temperature of the distillation losses (0.1)")
    center_momentum: float = _opt(0.9, "EMA momentum of the teacher centres (0.9)")
    # model
    embed_dim: int = _opt(48, "Swin embedding width (SwinUNETR feature_size; stage widths double)")
    depths: tuple[int, ...] = _opt((2, 2, 8, 2), "Swin blocks per stage")
    num_heads: tuple[int, ...] = _opt((4, 4, 8, 16), "Swin attention heads per stage")
    patch_size: int = _opt(2, "Swin patch side in voxels")
    window_size: int = _opt(4, "Swin window side in tokens; fine-tuning must build SwinUNETR with the same")
    mlp_ratio: float = _opt(4.0, "MLP width relative to the block width (Swin and ViT)")
    vit_embed_dim: int = _opt(768, "ViT width (ViT methods only)")
    vit_depth: int = _opt(12, "ViT blocks (ViT methods only)")
    vit_num_heads: int = _opt(8, "ViT attention heads (ViT methods only)")
    vit_patch_size: int = _opt(16, "ViT patch side in voxels (ViT methods only)")
    sa_depth: int = _opt(2, "semantic-attention blocks (paper: 2)")
    drop_path: float = _opt(0.1, "stochastic depth of the student (paper: 0.1); the teacher has none")
    out_dim: int = _opt(8192, "prototypes K of the projection heads; a loss stuck at ln K means collapse")
    head_hidden_dim: int = _opt(2048, "projection-head MLP width")
    head_bottleneck_dim: int = _opt(256, "projection-head bottleneck width")
    head_nlayers: int = _opt(3, "projection-head MLP layers")
    norm_last_layer: bool = _opt(
        True, "fix the heads' last weight-norm gain at 1 (DINO); false can help ViTs"
    )
    use_checkpoint: bool = _opt(
        False, "activation checkpointing in the backbone and SA; trades time for memory"
    )
    precision: str = _opt("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), bf16 or fp32; never fp16")
    method_overrides: dict[str, Any] = _opt(
        {}, 'MethodSpec fields to change (e.g. {"mask_ratio": 0.6}); prefer a named sweep method'
    )
    # runtime (may change on resume)
    device: str = _opt(
        "auto", "auto (CUDA when available), cpu or cuda; under torchrun each rank its own GPU"
    )
    checkpoint_every: int = _opt(500, "steps between checkpoints; lower it on pre-emptible queues")
    max_steps: int | None = _opt(
        None, "stop after this many global steps (quick checks); the schedules stay those of the full run"
    )
    tensorboard: bool = _opt(True, "also write TensorBoard scalars when the tensorboard package is installed")

    def __post_init__(self) -> None:
        for name in (
            "batch_size",
            "epochs",
            "embed_dim",
            "patch_size",
            "window_size",
            "vit_embed_dim",
            "vit_depth",
            "vit_num_heads",
            "vit_patch_size",
            "sa_depth",
            "out_dim",
            "head_hidden_dim",
            "head_bottleneck_dim",
            "head_nlayers",
            "checkpoint_every",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"setting {name!r} must be a positive integer, got {getattr(self, name)}")
        for name in ("steps_per_epoch", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"setting {name!r} must be a positive integer or null, got {value}")
        if self.num_workers < 0 or self.seed < 0:
            raise ValueError("settings 'num_workers' and 'seed' must be non-negative integers")
        if len(self.crop_size) != 3 or min(self.crop_size) < 1:
            raise ValueError(
                f"setting 'crop_size' must be three positive sides (D, H, W), got {self.crop_size}"
            )
        if len(self.depths) != len(self.num_heads) or not self.depths:
            raise ValueError(
                f"settings 'depths' {self.depths} and 'num_heads' {self.num_heads} must have the same length"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"setting 'precision' must be one of {', '.join(PRECISIONS)}, got {self.precision!r} "
                "(fp16 is not offered: it gives NaNs in DINO-style training; use bf16)"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"setting 'device' must be auto, cpu or cuda, got {self.device!r}")
        for name in (
            "lr",
            "min_lr",
            "weight_decay",
            "weight_decay_end",
            "clip_grad",
            "warmup_epochs",
            "teacher_temp_warmup_epochs",
            "drop_path",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"setting {name!r} must be a finite non-negative number, got {value}")
        for name in ("teacher_temp_start", "teacher_temp", "student_temp"):
            if not getattr(self, name) > 0:
                raise ValueError(f"setting {name!r} must be positive, got {getattr(self, name)}")
        for name in ("momentum_base", "momentum_final", "center_momentum"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"setting {name!r} must lie in [0, 1], got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PretrainSettings:
        """Build settings from a (JSON) mapping; missing keys take their defaults.

        Raises:
            ValueError: unknown keys (all named, with the valid ones) or values of the wrong type.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(
                f"unknown pretraining setting(s) {', '.join(unknown)}; valid settings: {', '.join(fields)}"
            )
        return cls(**{name: _coerce(name, fields[name], value) for name, value in values.items()})

    @classmethod
    def from_json(cls, text: str) -> PretrainSettings:
        """``from_dict`` of a JSON object string."""
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"pretraining settings are not valid JSON: {err}") from err
        if not isinstance(values, dict):
            raise ValueError(f"pretraining settings must be a JSON object, got {type(values).__name__}")
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples as lists); ``from_dict(to_dict())`` gives back an equal object."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def replace(self, **changes: Any) -> PretrainSettings:
        """A copy with some settings changed (validated like ``from_dict``)."""
        return PretrainSettings.from_dict({**self.to_dict(), **changes})

    @classmethod
    def help(cls) -> list[tuple[str, Any, str]]:
        """(name, default, help line) of every setting, in declaration order."""
        defaults = cls().to_dict()
        return [(f.name, defaults[f.name], f.metadata["help"]) for f in dataclasses.fields(cls)]


def _coerce(name: str, spec: dataclasses.Field, value: Any) -> Any:
    """Check one value against its field's type and convert JSON forms (lists to tuples, 3 to 3.0)."""
    kind = str(spec.type)

    def fail(expected: str) -> ValueError:
        return ValueError(f"setting {name!r} must be {expected}, got {value!r}")

    if value is None:
        if "None" in kind:
            return None
        raise fail("given (null is not allowed)")
    if kind.startswith("tuple"):
        if not isinstance(value, list | tuple) or not all(_is_int(v) for v in value):
            raise fail("a list of integers")
        return tuple(int(v) for v in value)
    if kind.startswith("dict"):
        if not isinstance(value, Mapping):
            raise fail("a JSON object")
        return dict(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if kind.startswith("int"):
        if not _is_int(value):
            raise fail("an integer")
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("a number")
        return float(value)
    if not isinstance(value, str):
        raise fail("a string")
    return value


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and (
        isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    )
