"""The method registry: one pretraining engine, many configurations (DESIGN 3.6, EXPERIMENTS P1-P23).

Each method is a frozen ``MethodSpec``. ``get_method(name, **overrides)`` returns a registered method or a
named sweep variant, optionally changed (SA stage, PDR, loss subset); an unknown name raises and lists the
valid ones. ``sweep_methods()`` lists the sweep variants of EXPERIMENTS P11-P23 under stable names.

Conventions the loop relies on:
- Loss names: ``amip`` (masked voxel L1), ``ampd`` (masked patch-token distillation), ``aitd`` (the [CLS]
  token: SA [CLS] on Swin with SA, ViT [CLS] on ViT, the stage-3 token average on Swin without SA; see
  ``MethodSpec.cls_source``), ``gitd`` (global average of the last stage).
- On Swin the mask lives on the stage-3 grid whatever the SA stage (SATT from another stage is brought
  there with ``masking.resample_scores``); on ViT it lives on the token grid.
- The papers do not give the baselines' own masking ratios, so every method masks r = 0.7 (DAGMaN's) and
  only the strategy differs; override ``mask_ratio`` to use a baseline's published ratio.
- Baselines keep their own pretext losses: SMIT = reconstruction + patch + global distillation; iBOT and
  AttMask = [CLS] + masked-patch distillation with equal weights; MST = [CLS] distillation +
  reconstruction.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from dagman.ssl.losses import DEFAULT_LOSS_WEIGHTS, LOSS_NAMES, enabled_losses
from dagman.ssl.masking import ATTENTION_STRATEGIES, MASKING_STRATEGIES

__all__ = [
    "BACKBONES",
    "LossWeights",
    "MethodSpec",
    "get_method",
    "list_methods",
    "method_names",
    "sweep_methods",
]

BACKBONES: tuple[str, ...] = ("swin", "vit")
_HINT_STRATEGIES = ("attention-high", "attention-high-attmask")


class LossWeights(dict):
    """A read-only ``{loss name: weight}`` dict over all of ``LOSS_NAMES`` (0 = switched off).

    A dict subclass so that ``json.dumps``, ``dataclasses.asdict`` and checkpoints handle it; mutation
    raises because a ``MethodSpec`` is frozen.
    """

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("loss weights are read-only; use get_method(name, losses=...) for another set")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[type, tuple[dict[str, float]]]:
        return (LossWeights, (dict(self),))

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    @property
    def enabled(self) -> tuple[str, ...]:
        """Losses with a positive weight, in ``LOSS_NAMES`` order."""
        return enabled_losses(self)


def _loss_weights(losses: Mapping[str, float] | Iterable[str], base: Mapping[str, float]) -> LossWeights:
    """Normalise a weight mapping, or a subset of loss names (weights taken from ``base``), to all names."""
    if isinstance(losses, str):
        losses = tuple(x for x in losses.split("+") if x)
    if isinstance(losses, Mapping):
        weights = {k: float(v) for k, v in losses.items()}
    else:
        names = list(losses)
        unknown = sorted(set(names) - set(LOSS_NAMES))
        if unknown:
            raise ValueError(f"unknown loss name(s) {', '.join(unknown)}; valid: {', '.join(LOSS_NAMES)}")
        weights = {n: float(base[n]) if base.get(n, 0.0) > 0 else DEFAULT_LOSS_WEIGHTS[n] for n in names}
    enabled_losses(weights)  # validates names and values
    return LossWeights({n: weights.get(n, 0.0) for n in LOSS_NAMES})


@dataclass(frozen=True)
class MethodSpec:
    """One pretraining configuration.

    Args:
        name: registry name (also the run's folder name).
        backbone: "swin" or "vit".
        masking: student masking strategy, one of ``masking.MASKING_STRATEGIES``.
        hint_ratio: s, the top-attention cells kept visible (attention-high strategies only).
        mask_ratio: r, the fraction of cells masked.
        noisy_teacher: whether the teacher's tokens get patch dropout; equals ``pdr > 0``.
        pdr: patch drop ratio of the teacher's input.
        sa: whether a semantic-attention module is inserted (Swin only; ViT has its own [CLS]).
        sa_stage: Swin stage (1-4) of the SA module; None without SA.
        losses: loss weights over ``LOSS_NAMES`` (a mapping, or an iterable of names taking default weights).
        experiment: the EXPERIMENTS.md id (P1, P11, ...), for the report.
        description: one line for tables and logs.
    """

    name: str
    backbone: str
    masking: str
    hint_ratio: float
    mask_ratio: float
    noisy_teacher: bool
    pdr: float
    sa: bool
    sa_stage: int | None
    losses: LossWeights
    experiment: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "losses", _loss_weights(self.losses, DEFAULT_LOSS_WEIGHTS))
        where = f"method {self.name!r}"
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"{where}: backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}"
            )
        if self.masking not in MASKING_STRATEGIES:
            raise ValueError(
                f"{where}: masking must be one of {', '.join(MASKING_STRATEGIES)}, got {self.masking!r}"
            )
        for field in ("hint_ratio", "mask_ratio", "pdr"):
            value = getattr(self, field)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{where}: {field} must lie in [0, 1], got {value}")
        if self.hint_ratio > 0 and self.masking not in _HINT_STRATEGIES:
            raise ValueError(f"{where}: masking {self.masking!r} has no hint tokens, so hint_ratio must be 0")
        if self.masking == "attention-high" and self.hint_ratio + self.mask_ratio > 1.0:
            raise ValueError(f"{where}: hint_ratio + mask_ratio exceeds 1")
        if self.masking == "attention-high-attmask" and self.hint_ratio > self.mask_ratio:
            raise ValueError(f"{where}: hint_ratio reveals more cells than mask_ratio masks")
        if self.noisy_teacher != (self.pdr > 0):
            raise ValueError(
                f"{where}: noisy_teacher={self.noisy_teacher} contradicts pdr={self.pdr} "
                "(the noisy teacher is patch dropout with pdr > 0)"
            )
        if self.sa and self.backbone != "swin":
            raise ValueError(f"{where}: the SA module is for the Swin backbone; ViT uses its own [CLS]")
        if self.sa and self.sa_stage not in (1, 2, 3, 4):
            raise ValueError(f"{where}: sa_stage must be 1, 2, 3 or 4 with SA, got {self.sa_stage}")
        if not self.sa and self.sa_stage is not None:
            raise ValueError(f"{where}: sa_stage={self.sa_stage} given but the method has no SA module")
        if self.masking in ATTENTION_STRATEGIES and self.backbone == "swin" and not self.sa:
            raise ValueError(f"{where}: attention-guided masking on Swin needs the SA module (sa=True)")
        if not self.losses.enabled:
            raise ValueError(f"{where}: every loss is switched off")

    @property
    def needs_teacher_attention(self) -> bool:
        """Whether the teacher's attention must be computed before the student is masked."""
        return self.masking in ATTENTION_STRATEGIES

    @property
    def cls_source(self) -> str:
        """Where the image token for AITD comes from: "sa", "vit" or "average" (stage-3 token mean)."""
        if self.backbone == "vit":
            return "vit"
        return "sa" if self.sa else "average"

    @property
    def enabled_losses(self) -> tuple[str, ...]:
        """Losses the loop must compute."""
        return self.losses.enabled

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for configs, logs and checkpoints."""
        out = dataclasses.asdict(self)
        out["losses"] = dict(self.losses)
        return out


_ALL = dict(DEFAULT_LOSS_WEIGHTS)
_SMIT = {"amip": 1.0, "ampd": 0.1, "gitd": 0.1}


def _spec(name: str, experiment: str, description: str, **kw: Any) -> MethodSpec:
    defaults: dict[str, Any] = dict(
        backbone="swin",
        masking="attention-high",
        hint_ratio=0.1,
        mask_ratio=0.7,
        noisy_teacher=True,
        pdr=0.7,
        sa=True,
        sa_stage=3,
        losses=_ALL,
    )
    defaults.update(kw)
    return MethodSpec(name=name, experiment=experiment, description=description, **defaults)


_NO_SA = dict(sa=False, sa_stage=None)
_NO_NT = dict(noisy_teacher=False, pdr=0.0)
_RANDOM = dict(masking="random", hint_ratio=0.0)

_REGISTRY: dict[str, MethodSpec] = {
    s.name: s
    for s in (
        _spec("dagman", "P1", "DAGMaN: SA at stage 3, attention-high + hints, PDR 0.7, all four losses"),
        _spec(
            "smit",
            "P2",
            "SMIT: random masking, no SA, no noisy teacher",
            losses=_SMIT,
            **_RANDOM,
            **_NO_SA,
            **_NO_NT,
        ),
        _spec(
            "ibot",
            "P3",
            "iBOT on Swin: blockwise masking, [CLS] (average token) + patch distillation",
            masking="blockwise",
            hint_ratio=0.0,
            losses={"ampd": 1.0, "gitd": 1.0},
            **_NO_SA,
            **_NO_NT,
        ),
        _spec(
            "attmask",
            "P4",
            "AttMask on ViT: mask the most-attended tokens, [CLS] + patch distillation",
            backbone="vit",
            hint_ratio=0.0,
            losses={"ampd": 1.0, "aitd": 1.0},
            **_NO_SA,
            **_NO_NT,
        ),
        _spec(
            "mst",
            "P5",
            "MST on ViT: mask the least-attended tokens, [CLS] distillation + reconstruction",
            backbone="vit",
            masking="attention-low",
            hint_ratio=0.0,
            losses={"amip": 1.0, "aitd": 1.0},
            **_NO_SA,
            **_NO_NT,
        ),
        _spec("dagman-no-nt", "P6", "DAGMaN without the noisy teacher (SA only)", **_NO_NT),
        _spec(
            "dagman-no-sa",
            "P7",
            "DAGMaN without SA (NT only): random masking, [CLS] = average token",
            **_RANDOM,
            **_NO_SA,
        ),
        _spec(
            "dagman-vit",
            "P8",
            "DAGMaN on ViT: attention-high + hints from the ViT [CLS], noisy teacher",
            backbone="vit",
            **_NO_SA,
        ),
        _spec(
            "smit-vit",
            "P9",
            "SMIT on ViT: random masking, no noisy teacher",
            backbone="vit",
            losses=_SMIT,
            **_RANDOM,
            **_NO_SA,
            **_NO_NT,
        ),
        _spec(
            "ibot-dagman",
            "P10",
            "DAGMaN's components (SA, attention-high + hints, noisy teacher) on the "
            "iBOT pretext ([CLS] + patch distillation)",
            losses={"ampd": 1.0, "aitd": 1.0},
        ),
    )
}


def _sweeps() -> dict[str, MethodSpec]:
    base = _REGISTRY["dagman"]
    out: dict[str, MethodSpec] = {}
    for i, stage in enumerate((1, 2, 4)):
        name = f"dagman-sa{stage}"
        out[name] = dataclasses.replace(
            base,
            name=name,
            sa_stage=stage,
            experiment=f"P{11 + i}",
            description=f"DAGMaN with SA at stage {stage}",
        )
    for i, pdr in enumerate((0.0, 0.1, 0.3, 0.5, 0.9)):
        name = f"dagman-pdr{pdr:.1f}"
        out[name] = dataclasses.replace(
            base,
            name=name,
            pdr=pdr,
            noisy_teacher=pdr > 0,
            experiment=f"P{14 + i}",
            description=f"DAGMaN with PDR {pdr:.1f}",
        )
    subsets = ("amip", "amip+ampd", "amip+ampd+aitd", "amip+aitd+gitd", "ampd+aitd+gitd")
    for i, subset in enumerate(subsets):
        name = f"dagman-loss-{subset}"
        out[name] = dataclasses.replace(
            base,
            name=name,
            losses=_loss_weights(subset, base.losses),
            experiment=f"P{19 + i}",
            description=f"DAGMaN with losses {subset.upper()}",
        )
    return out


_SWEEPS = _sweeps()


def method_names() -> tuple[str, ...]:
    """Names of the registered methods (P1-P10), without the sweep variants."""
    return tuple(_REGISTRY)


def sweep_methods() -> dict[str, MethodSpec]:
    """The named sweep variants of EXPERIMENTS P11-P23: SA stage, PDR and loss subsets of DAGMaN."""
    return dict(_SWEEPS)


def list_methods() -> dict[str, MethodSpec]:
    """Every name ``get_method`` accepts: the registered methods, then the sweep variants."""
    return {**_REGISTRY, **_SWEEPS}


def get_method(name: str, **overrides: Any) -> MethodSpec:
    """Look up a method (or sweep variant) and apply overrides.

    Overrides are ``MethodSpec`` fields. ``losses`` accepts a weight mapping, an iterable of names or a
    "+"-joined string ("amip+ampd"); names take the method's own weight (else the default). Overriding
    ``pdr`` alone also sets ``noisy_teacher = pdr > 0``; overriding ``sa=False`` alone clears ``sa_stage``.
    The name is kept unless ``name=`` is given, so give one when the variant is a separate run.

    Raises:
        ValueError: unknown method name (the message lists the valid ones), unknown field, or an
            inconsistent combination.
    """
    methods = list_methods()
    if name not in methods:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(methods)}")
    spec = methods[name]
    if not overrides:
        return spec
    fields = {f.name for f in dataclasses.fields(MethodSpec)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"unknown MethodSpec field(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}"
        )
    changes = dict(overrides)
    if "losses" in changes:
        changes["losses"] = _loss_weights(changes["losses"], spec.losses)
    if "pdr" in changes and "noisy_teacher" not in changes:
        changes["noisy_teacher"] = float(changes["pdr"]) > 0
    if changes.get("sa") is False and "sa_stage" not in changes:
        changes["sa_stage"] = None
    if changes.get("sa") is True and "sa_stage" not in changes and spec.sa_stage is None:
        changes["sa_stage"] = 3
    return dataclasses.replace(spec, **changes)
