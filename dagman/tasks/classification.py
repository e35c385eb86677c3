"""Image-level binary classification (Tasks 1 and 3): crops, classifiers, training with model selection.

One call of :func:`finetune` trains one model (method x task x mode x regime x fold, DESIGN 4) and writes:

- ``predictions.csv``: ``key, set (val|test), label, prob`` for the fold's validation rows and the held-out
  test rows, from the selected checkpoint;
- ``metrics.json``: test AUC with a bootstrap CI, the threshold chosen on validation (Youden) and test
  sensitivity, specificity, precision and recall at it; best epoch and validation AUC; sizes; settings;
- ``history.csv``: per epoch, training loss, validation loss and validation AUC;
- ``model.pt`` when ``save_model`` is set (the selected classifier's state dict).

Leakage guard: training and model selection see only the fold's training part (``fraction`` of it) and its
validation part, read from the split file; the held-out test crops are read from disk only after the
selected checkpoint is fixed, and are predicted once.

Modes: ``lp`` (linear probing) freezes the encoder, computes every crop's embedding once and trains one
linear layer on standardised embeddings; ``ft`` (full fine-tuning) trains encoder and linear layer together
with random flips. Encoders: a pretrained DAGMaN-family encoder folder (``encoder.pt``, ``encoder_sa.pt``,
``encoder_config.json`` from :func:`dagman.models.weights.export_encoder`) loaded strictly; the same
architecture without weights (the "no pretraining" control); or MONAI's 3D ResNet-50 from scratch or from
Med3D weights (the CNN baseline). Class imbalance: ``pos_weight`` = negatives / positives of the training
part in the binary cross-entropy.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from dagman.io.atomic import atomic_path, write_csv_atomic, write_json_atomic
from dagman.tasks.metrics import bootstrap_auc_ci, roc_auc, threshold_metrics, youden_threshold

__all__ = [
    "ClassificationSettings",
    "EncoderSpec",
    "TransformerEncoder",
    "ResNetEncoder",
    "LinearHead",
    "BinaryClassifier",
    "TrainResult",
    "read_crops_table",
    "load_crop_arrays",
    "build_encoder",
    "load_med3d_weights",
    "train_binary",
    "predict_probs",
    "embed",
    "finetune",
]

MODES = ("lp", "ft")
EMBEDDINGS = ("cls", "pooled")
#: Key prefixes of a Med3D checkpoint outside the ResNet trunk (its segmentation head, a classifier layer).
_MED3D_HEAD_PREFIXES = ("conv_seg.", "fc.")


@dataclass
class ClassificationSettings:
    """Hyper-parameters of one fine-tuning run (``dagman finetune --settings``); defaults suit the demo.

    Attributes:
        epochs: full fine-tuning epochs (the paper fine-tunes longer; raise for real cohorts).
        lp_epochs: epochs of the linear head on cached embeddings (cheap; raise freely).
        batch_size: crops (FT) or embeddings (LP) per step.
        lr: AdamW learning rate of full fine-tuning (paper: 2e-4), cosine-decayed per step.
        lp_lr: AdamW learning rate of the linear probe.
        weight_decay: AdamW weight decay (both modes).
        crop_size: input side in voxels; crops on disk are centre-cropped or padded with air to it. A Swin
            needs a multiple of its output stride (32 by default).
        window: HU window clipped and scaled to [0, 1]; keep it equal to the pretraining cache's window.
        flips: random flips along the three axes during full fine-tuning.
        embedding: "cls" (SA [CLS] or ViT [CLS]) or "pooled" (global average of the last Swin stage, or of
            the ViT tokens). Encoders without SA always use "pooled"; metrics.json records what was used.
        sa_weights: "pretrained" or "random" (keep a pretrained Swin but re-initialise SA: EXPERIMENTS D10).
        patience: stop after this many epochs without a better validation AUC (0 = run all epochs).
        seed: seed of initialisation, batch order, flips and the bootstrap.
        device: torch device ("cpu", "cuda", "cuda:1").
        num_workers: threads reading crop files.
        threads: torch CPU threads (None = leave torch's default).
        n_bootstrap: bootstrap replicates of the AUC CI.
        ci_level: coverage of the AUC CI.
        save_model: also write the selected classifier's weights (model.pt).
    """

    epochs: int = 20
    lp_epochs: int = 100
    batch_size: int = 8
    lr: float = 2e-4
    lp_lr: float = 1e-3
    weight_decay: float = 1e-4
    crop_size: int = 32
    window: tuple[float, float] = (-175.0, 250.0)
    flips: bool = True
    embedding: str = "cls"
    sa_weights: str = "pretrained"
    patience: int = 0
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 2
    threads: int | None = None
    n_bootstrap: int = 2000
    ci_level: float = 0.95
    save_model: bool = False

    def __post_init__(self) -> None:
        self.window = (float(self.window[0]), float(self.window[1]))
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"settings.embedding must be one of {EMBEDDINGS}, got {self.embedding!r}")
        if self.sa_weights not in ("pretrained", "random"):
            raise ValueError(f"settings.sa_weights must be 'pretrained' or 'random', got {self.sa_weights!r}")
        if not self.window[1] > self.window[0]:
            raise ValueError(f"settings.window must be [low, high] with high > low, got {list(self.window)}")
        for name in ("epochs", "lp_epochs", "batch_size", "crop_size", "n_bootstrap"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"settings.{name} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> ClassificationSettings:
        """Settings from a dict; unknown keys raise (a typo must not silently do nothing)."""
        mapping = dict(mapping or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ValueError(
                f"unknown fine-tuning settings {unknown}; valid keys: {', '.join(sorted(known))}"
            )
        return cls(**mapping)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the window as a list)."""
        out = asdict(self)
        out["window"] = list(self.window)
        return out


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder a classifier starts from.

    Attributes:
        kind: "pretrained" (weights from ``path``), "random" (the architecture of ``path``, no weights) or
            "resnet50" (MONAI's 3D ResNet-50; from ``path`` = Med3D weights when given, else from scratch).
        path: the encoder folder (or its ``encoder.pt``) for "pretrained"/"random"; Med3D weights or None.
    """

    kind: str
    path: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("pretrained", "random", "resnet50"):
            raise ValueError(f"encoder kind must be pretrained, random or resnet50, got {self.kind!r}")
        if self.kind in ("pretrained", "random") and self.path is None:
            raise ValueError(
                f"a {self.kind!r} encoder needs the pretrained encoder folder (its architecture)"
            )


# ----------------------------------------------------------------------------------------------- data


def read_crops_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a crops table (LIDC ``crops.csv`` or the generic cohort's) and resolve its image paths.

    Rows whose ``status`` is not "cropped" (when the column exists) are dropped. ``image`` paths are relative
    to the table's folder; the returned ``image_path`` column holds absolute paths.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"crops table {path} is missing (run `dagman lidc-nodules` or `cohort-crops`)"
        )
    table = pd.read_csv(path, dtype={"key": str, "patient_id": str})
    for column in ("key", "label", "image"):
        if column not in table.columns:
            raise ValueError(
                f"crops table {path} has no {column!r} column (columns: {', '.join(table.columns)})"
            )
    if "status" in table.columns:
        table = table[table["status"].fillna("cropped") == "cropped"]
    table = table[table["image"].notna()].copy()
    if table["key"].duplicated().any():
        raise ValueError(
            f"crops table {path} repeats keys, e.g. {table.loc[table['key'].duplicated(), 'key'].iloc[0]}"
        )
    table["image_path"] = [str((path.parent / rel).resolve()) for rel in table["image"]]
    return table.set_index("key", drop=False)


def _fit_to_size(array: np.ndarray, size: int, pad_value: float) -> np.ndarray:
    """Centre-crop or pad (with ``pad_value``) a (z, y, x) array to ``size``^3."""
    out = np.full((size, size, size), pad_value, dtype=np.float32)
    src, dst = [], []
    for n in array.shape:
        if n >= size:
            start = (n - size) // 2
            src.append(slice(start, start + size))
            dst.append(slice(0, size))
        else:
            start = (size - n) // 2
            src.append(slice(0, n))
            dst.append(slice(start, start + n))
    out[tuple(dst)] = array[tuple(src)]
    return out


def _read_crop(path: str, size: int, window: tuple[float, float]) -> np.ndarray:
    """One crop file as a windowed float32 (size, size, size) array in [0, 1]."""
    import SimpleITK as sitk

    from dagman.io.resample import IMAGE_PAD_HU

    if not os.path.isfile(path):
        raise FileNotFoundError(f"crop image {path} is missing")
    array = sitk.GetArrayFromImage(sitk.ReadImage(path)).astype(np.float32)
    if array.ndim != 3:
        raise ValueError(f"crop image {path} is not a 3D volume (shape {array.shape})")
    array = _fit_to_size(array, size, IMAGE_PAD_HU)
    low, high = window
    return ((np.clip(array, low, high) - low) / (high - low)).astype(np.float32)


def load_crop_arrays(
    table: pd.DataFrame, keys: Sequence[str], size: int, window: tuple[float, float], workers: int = 2
) -> np.ndarray:
    """Windowed crops of ``keys`` (rows of :func:`read_crops_table`) as one float32 (N, 1, S, S, S) array."""
    paths = [table.at[key, "image_path"] for key in keys]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        arrays = list(pool.map(lambda p: _read_crop(p, size, window), paths))
    if not arrays:
        return np.zeros((0, 1, size, size, size), dtype=np.float32)
    return np.stack(arrays)[:, None]


# --------------------------------------------------------------------------------------------- models


class TransformerEncoder(nn.Module):
    """A pretrained-encoder wrapper (Swin with optional SA, or ViT) that returns one embedding per image.

    Args:
        backbone: :class:`dagman.models.swin.SwinBackbone` or :class:`dagman.models.vit.ViTBackbone`.
        backbone_name: "swin" or "vit".
        sa: the semantic-attention module (Swin only) or None.
        sa_stage: its Swin stage (1-based) or None.
        embedding: "cls" or "pooled"; a Swin without SA always pools (see :attr:`embedding`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        backbone_name: str,
        sa: nn.Module | None = None,
        sa_stage: int | None = None,
        embedding: str = "cls",
    ) -> None:
        super().__init__()
        if (sa is None) != (sa_stage is None):
            raise ValueError("sa and sa_stage must be given together")
        self.backbone, self.backbone_name, self.sa, self.sa_stage = backbone, backbone_name, sa, sa_stage
        #: the embedding actually used ("cls" needs SA on a Swin)
        self.embedding = embedding if (backbone_name == "vit" or sa is not None) else "pooled"
        if backbone_name == "vit":
            self.out_dim = int(backbone.embed_dim)
        elif self.embedding == "cls":
            self.out_dim = int(backbone.stage_dims[sa_stage - 1])
        else:
            self.out_dim = int(backbone.stage_dims[-1])

    @property
    def input_multiple(self) -> int:
        """Input sides must be multiples of this (Swin output stride, ViT patch)."""
        return int(self.backbone.out_stride)

    def _sa_hook(self, stage_map: torch.Tensor) -> tuple[torch.Tensor, Any]:
        out = self.sa(stage_map)
        return out.tokens, out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, out_dim) of crops (B, 1, D, H, W)."""
        if self.backbone_name == "vit":
            feats = self.backbone(x)
            return feats.cls if self.embedding == "cls" else feats.tokens.mean(dim=1)
        hook = self._sa_hook if self.sa is not None else None
        feats = self.backbone(x, hook=hook, hook_stage=self.sa_stage if hook else None)
        if self.embedding == "cls":
            return feats.hook_out.cls
        return feats.stages[-1].mean(dim=(2, 3, 4))


class ResNetEncoder(nn.Module):
    """MONAI's 3D ResNet-50 trunk in Med3D's configuration (shortcut B, no downsample bias, first stride 2).

    Its output is the global average of the last block (2048 wide). Med3D's own network uses dilation instead
    of stride in its last two stages; the parameter shapes are identical, so its weights load strictly.
    """

    def __init__(self) -> None:
        super().__init__()
        from monai.networks.nets import resnet50

        self.net = resnet50(
            spatial_dims=3,
            n_input_channels=1,
            shortcut_type="B",
            bias_downsample=False,
            conv1_t_stride=2,
            feed_forward=False,
        )
        self.out_dim = 2048
        self.embedding = "pooled"
        self.input_multiple = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, 2048) of crops (B, 1, D, H, W)."""
        return self.net(x)


class LinearHead(nn.Module):
    """One linear layer on standardised embeddings: ``w . (e - mean) / std + b`` (the linear probe).

    ``mean``/``std`` are buffers set from the training part's embeddings (identity by default), so the layer
    stays linear in the embedding while its optimisation is well conditioned.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.linear = nn.Linear(dim, 1)

    def set_standardisation(self, embeddings: torch.Tensor) -> None:
        """Use the mean and standard deviation of ``embeddings`` (N, dim) (the training part only)."""
        self.mean.copy_(embeddings.mean(dim=0))
        self.std.copy_(embeddings.std(dim=0, unbiased=False).clamp_min(1e-6))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """Logits (B,) of embeddings (B, dim)."""
        return self.linear((e - self.mean) / self.std).squeeze(-1)


class BinaryClassifier(nn.Module):
    """Encoder + :class:`LinearHead`; ``forward`` returns one logit per crop."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = LinearHead(int(encoder.out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B,) of crops (B, 1, D, H, W)."""
        return self.head(self.encoder(x))


def load_med3d_weights(encoder: ResNetEncoder, path: str | os.PathLike[str]) -> str:
    """Load Med3D (MedicalNet) ResNet-50 weights strictly into ``encoder``'s trunk.

    The checkpoint may wrap its weights in "state_dict" and prefix them with ``module.`` (DataParallel);
    Med3D's segmentation head (``conv_seg.``) and any ``fc.`` layer are skipped and reported. Every trunk
    parameter must be present with the right shape.

    Returns:
        A one-line report for logs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Med3D weights not found: {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} does not hold a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    skipped = sorted(k for k in state if k.startswith(_MED3D_HEAD_PREFIXES))
    state = {k: v for k, v in state.items() if k not in skipped}
    target = encoder.net.state_dict()
    missing, unexpected = sorted(set(target) - set(state)), sorted(set(state) - set(target))
    shaped = sorted(k for k in set(state) & set(target) if state[k].shape != target[k].shape)
    if missing or unexpected or shaped:
        raise ValueError(
            f"Med3D weights in {path} do not fit MONAI's 3D ResNet-50: missing {missing}, unexpected "
            f"{unexpected}, wrong shape {shaped}"
        )
    encoder.net.load_state_dict(state, strict=True)
    return f"loaded {len(state)} ResNet-50 tensors from {path.name}; skipped {len(skipped)} head keys"


def build_encoder(spec: EncoderSpec, settings: ClassificationSettings) -> tuple[nn.Module, dict[str, Any]]:
    """Build (and for "pretrained" load strictly) the encoder of a classifier.

    Call ``torch.manual_seed`` first: a random encoder's initial weights come from torch's generator.

    Returns:
        The encoder (``out_dim``, ``embedding``, ``input_multiple`` attributes) and a JSON-ready description
        (kind, source, backbone, SA stage, embedding used, load report).
    """
    from dagman.models.weights import load_encoder

    info: dict[str, Any] = {"kind": spec.kind, "source": str(spec.path) if spec.path else ""}
    if spec.kind == "resnet50":
        encoder = ResNetEncoder()
        info["backbone"] = "resnet50"
        info["load_report"] = load_med3d_weights(encoder, spec.path) if spec.path else "from scratch"
        info.update(sa_stage=None, embedding=encoder.embedding)
        return encoder, info

    # a random encoder gets a random SA too; settings.sa_weights="random" re-initialises SA alone
    sa_weights = settings.sa_weights if spec.kind == "pretrained" else "random"
    loaded = load_encoder(spec.path, weights=spec.kind, sa_weights=sa_weights)
    encoder = TransformerEncoder(
        loaded.backbone,
        loaded.backbone_name,
        sa=loaded.sa,
        sa_stage=loaded.sa_stage,
        embedding=settings.embedding,
    )
    info.update(
        backbone=loaded.backbone_name,
        sa_stage=loaded.sa_stage,
        embedding=encoder.embedding,
        load_report=loaded.load_report,
    )
    return encoder, info


# ------------------------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What :func:`train_binary` returns.

    Attributes:
        best_epoch: 1-based epoch of the selected checkpoint (highest validation AUC; ties: lower loss, then
            earlier epoch).
        val_auc: its validation AUC; val_loss: its validation loss.
        val_probs: its validation probabilities.
        history: one dict per epoch (epoch, train_loss, val_loss, val_auc, lr).
        epochs_run: epochs actually run (fewer than asked with early stopping).
    """

    best_epoch: int
    val_auc: float
    val_loss: float
    val_probs: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)
    epochs_run: int = 0


def _flip_batch(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Flip each crop of (B, 1, D, H, W) along each spatial axis with probability 1/2."""
    flips = rng.random((x.shape[0], 3)) < 0.5
    out = x.clone()
    for axis in range(3):
        rows = torch.from_numpy(np.flatnonzero(flips[:, axis]))
        if rows.numel():
            out[rows] = out[rows].flip(dims=(axis + 2,))
    return out


@torch.no_grad()
def predict_probs(
    model: nn.Module, inputs: np.ndarray | torch.Tensor, batch_size: int, device: torch.device
) -> np.ndarray:
    """Sigmoid probabilities of ``model`` (eval mode) on ``inputs`` in batches, as float64."""
    model.eval()
    inputs = torch.as_tensor(inputs)
    out = [
        torch.sigmoid(model(inputs[i : i + batch_size].to(device)).float()).cpu()
        for i in range(0, len(inputs), batch_size)
    ]
    return torch.cat(out).double().numpy() if out else np.zeros(0)


@torch.no_grad()
def embed(encoder: nn.Module, crops: np.ndarray, batch_size: int, device: torch.device) -> torch.Tensor:
    """Embeddings (N, out_dim) of crops (N, 1, S, S, S) from the encoder in eval mode (on the CPU)."""
    encoder.eval()
    tensor = torch.as_tensor(crops)
    parts = [
        encoder(tensor[i : i + batch_size].to(device)).float().cpu()
        for i in range(0, len(tensor), batch_size)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, int(encoder.out_dim))


def train_binary(
    model: nn.Module,
    train_x: np.ndarray | torch.Tensor,
    train_y: np.ndarray,
    val_x: np.ndarray | torch.Tensor,
    val_y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    device: torch.device,
    augment: bool = False,
    patience: int = 0,
    progress: bool = True,
    desc: str = "training",
) -> TrainResult:
    """Train ``model`` (inputs -> logits) with weighted BCE and keep the epoch with the best validation AUC.

    Only ``train_*`` drives the gradients and ``pos_weight``; only ``val_*`` drives the selection. On return
    ``model`` holds the selected epoch's weights.

    Args:
        model: maps a batch of inputs to logits (B,).
        train_x, train_y: training inputs and 0/1 labels (both classes needed).
        val_x, val_y: validation inputs and 0/1 labels (both classes needed).
        epochs, lr, weight_decay, batch_size: AdamW with a per-step cosine schedule from ``lr`` to 0.
        seed: batch order and flips of epoch e come from ``np.random.default_rng([seed, e])``.
        device: where the model runs.
        augment: random flips of 5-D crop batches.
        patience: early stopping after this many epochs without improvement (0 = never).
        progress: tqdm bar over epochs on stderr.
        desc: the bar's label.
    """
    from tqdm import tqdm

    train_y, val_y = np.asarray(train_y, dtype=np.int64), np.asarray(val_y, dtype=np.int64)
    n_pos, n_neg = int(train_y.sum()), int((1 - train_y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"the training part needs both classes, got {n_pos} positives and {n_neg} negatives")
    if val_y.min() == val_y.max():
        raise ValueError("the validation part needs both classes for AUC-based model selection")
    train_x = torch.as_tensor(train_x)
    targets = torch.as_tensor(train_y, dtype=torch.float32)
    val_targets = torch.as_tensor(val_y, dtype=torch.float64)
    pos_weight = torch.tensor(n_neg / n_pos, dtype=torch.float32, device=device)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train_x) / batch_size)
    total = epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total))
    )

    best: tuple[float, float, int] | None = None
    best_state, best_probs, history, since_best = None, np.zeros(0), [], 0
    for epoch in tqdm(range(1, epochs + 1), desc=desc, unit="epoch", disable=not progress, file=sys.stderr):
        rng = np.random.default_rng([seed, epoch])
        order = torch.from_numpy(rng.permutation(len(train_x)))
        model.train()
        total_loss = 0.0
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            x = train_x[rows]
            if augment:
                x = _flip_batch(x, rng)
            loss = loss_fn(model(x.to(device)).float(), targets[rows].to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite training loss at epoch {epoch}; lower the learning rate"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += float(loss.detach()) * len(rows)
        probs = predict_probs(model, val_x, batch_size, device)
        logits = torch.logit(torch.as_tensor(probs).clamp(1e-7, 1 - 1e-7))
        val_loss = float(
            nn.functional.binary_cross_entropy_with_logits(
                logits, val_targets, pos_weight=pos_weight.double().cpu()
            )
        )
        val_auc = roc_auc(val_y, probs)
        history.append(
            dict(
                epoch=epoch,
                train_loss=total_loss / len(train_x),
                val_loss=val_loss,
                val_auc=val_auc,
                lr=optimizer.param_groups[0]["lr"],
            )
        )
        if best is None or (val_auc, -val_loss) > (best[0], -best[1]):
            best = (val_auc, val_loss, epoch)
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best_probs, since_best = probs, 0
        else:
            since_best += 1
            if patience and since_best >= patience:
                break
    model.load_state_dict(best_state)
    return TrainResult(
        best_epoch=best[2],
        val_auc=best[0],
        val_loss=best[1],
        val_probs=best_probs,
        history=history,
        epochs_run=len(history),
    )


# ------------------------------------------------------------------------------------------- finetune


@contextmanager
def _deterministic(seed: int, device: torch.device, threads: int | None) -> Iterator[None]:
    """Seed torch and turn on deterministic algorithms for the block, restoring the previous flags."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    previous_threads = torch.get_num_threads()
    if device.type == "cuda":
        # cuBLAS needs a fixed workspace for deterministic matrix products
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if threads:
        torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.set_num_threads(previous_threads)


def _labels_for(splits: pd.DataFrame, crops: pd.DataFrame, keys: Sequence[str], what: str) -> np.ndarray:
    """0/1 labels of ``keys`` from the split file, checked against the crops table."""
    missing = [k for k in keys if k not in crops.index]
    if missing:
        raise ValueError(
            f"{len(missing)} {what} keys of the split file have no crop (e.g. {missing[:3]}); the split file and "
            "the crops table must come from the same cohort"
        )
    labels = splits.set_index("key").loc[list(keys), "label"].to_numpy()
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{what} labels must be 0/1, got {sorted(set(labels.tolist()))}")
    table_labels = pd.to_numeric(crops.loc[list(keys), "label"]).to_numpy()
    if not np.array_equal(labels.astype(float), table_labels.astype(float)):
        raise ValueError(f"{what} labels in the split file differ from the crops table's labels")
    return labels.astype(np.int64)


def _json_ready(value: Any) -> Any:
    """Floats that JSON can carry (NaN/inf become None), recursively."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def finetune(
    table_csv: str | os.PathLike[str],
    splits_csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    encoder: EncoderSpec,
    mode: str,
    fraction: float,
    fold: int,
    settings: ClassificationSettings | None = None,
    method: str | None = None,
    task: str = "classification",
    progress: bool = True,
) -> dict[str, Any]:
    """Train one classifier on one fold (and few-shot fraction) and evaluate it once on the held-out test.

    Args:
        table_csv: crops table (``key``, ``label``, ``image`` relative to it; see :func:`read_crops_table`).
        splits_csv: the split file of ``dagman splits`` (or its folder); never re-split here.
        out_dir: folder for predictions.csv, metrics.json, history.csv (and model.pt).
        encoder: where the encoder comes from (:class:`EncoderSpec`).
        mode: "lp" (frozen encoder, linear head on cached embeddings) or "ft" (full fine-tuning).
        fraction: 1.0 or a few-shot fraction present in the split file (0.5, 0.25).
        fold: CV fold (1-based): trains on the other folds' training rows, selects on this fold's.
        settings: hyper-parameters (defaults: :class:`ClassificationSettings`).
        method: name recorded in the results (default: the encoder folder's name, "random" or "resnet50").
        task: task name recorded in the results (e.g. "lidc", "outcome").
        progress: tqdm bars on stderr.

    Returns:
        The metrics written to metrics.json.
    """
    from dagman.cohorts.splits import fewshot_column, fold_keys, heldout_keys, read_splits

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    settings = settings or ClassificationSettings()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(settings.device)
    crops = read_crops_table(table_csv)
    splits = read_splits(splits_csv)
    train_keys, val_keys = fold_keys(splits, fold, fraction)
    test_keys = heldout_keys(splits)
    if set(test_keys) & (set(train_keys) | set(val_keys)):
        raise ValueError("the split file puts held-out test keys into a training fold")
    train_y = _labels_for(splits, crops, train_keys, "training")
    val_y = _labels_for(splits, crops, val_keys, "validation")
    if method is None:
        method = {"resnet50": "resnet50", "random": "random"}.get(encoder.kind) or (
            Path(encoder.path).name if Path(encoder.path).is_dir() else Path(encoder.path).parent.name
        )
    size, window, workers = settings.crop_size, settings.window, settings.num_workers

    with _deterministic(settings.seed, device, settings.threads):
        enc, info = build_encoder(encoder, settings)
        if size % enc.input_multiple:
            raise ValueError(f"crop_size {size} must be a multiple of {enc.input_multiple} for this encoder")
        model = BinaryClassifier(enc).to(device)
        train_x = load_crop_arrays(crops, train_keys, size, window, workers)
        val_x = load_crop_arrays(crops, val_keys, size, window, workers)
        if mode == "lp":
            for p in enc.parameters():
                p.requires_grad_(False)
            train_e = embed(enc, train_x, settings.batch_size, device)
            val_e = embed(enc, val_x, settings.batch_size, device)
            model.head.set_standardisation(train_e)
            # every probe starts from the same neutral head: with few validation cases, early stopping would
            # otherwise often pick a barely trained, randomly initialised head
            nn.init.zeros_(model.head.linear.weight)
            nn.init.zeros_(model.head.linear.bias)
            result = train_binary(
                model.head,
                train_e,
                train_y,
                val_e,
                val_y,
                epochs=settings.lp_epochs,
                lr=settings.lp_lr,
                weight_decay=settings.weight_decay,
                batch_size=settings.batch_size,
                seed=settings.seed,
                device=device,
                patience=settings.patience,
                progress=progress,
                desc=f"{method} lp fold {fold}",
            )
        else:
            result = train_binary(
                model,
                train_x,
                train_y,
                val_x,
                val_y,
                epochs=settings.epochs,
                lr=settings.lr,
                weight_decay=settings.weight_decay,
                batch_size=settings.batch_size,
                seed=settings.seed,
                device=device,
                augment=settings.flips,
                patience=settings.patience,
                progress=progress,
                desc=f"{method} ft fold {fold}",
            )
        del train_x
        threshold = youden_threshold(val_y, result.val_probs)
        # the held-out test set: read from disk only now, predicted once with the selected checkpoint
        test_y = _labels_for(splits, crops, test_keys, "test")
        test_x = load_crop_arrays(crops, test_keys, size, window, workers)
        test_p = predict_probs(model, test_x, settings.batch_size, device)

    test_auc = roc_auc(test_y, test_p)
    low, high = bootstrap_auc_ci(
        test_y, test_p, n_bootstrap=settings.n_bootstrap, level=settings.ci_level, seed=settings.seed
    )
    at_threshold = threshold_metrics(test_y, test_p, threshold).as_dict()
    metrics = {
        "method": method,
        "task": task,
        "mode": mode,
        "fraction": float(fraction),
        "regime": f"{round(fraction * 100)}%",
        "fold": int(fold),
        "encoder": info,
        "embedding": info["embedding"],
        "fewshot_column": fewshot_column(fraction, fold) if fraction < 1 else "",
        "n_train": len(train_keys),
        "n_train_pos": int(train_y.sum()),
        "n_val": len(val_keys),
        "n_val_pos": int(val_y.sum()),
        "n_test": len(test_keys),
        "n_test_pos": int(test_y.sum()),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "val_auc": result.val_auc,
        "val_loss": result.val_loss,
        "threshold_rule": "youden_on_validation",
        "test": {
            "auc": test_auc,
            "auc_ci_low": low,
            "auc_ci_high": high,
            "ci_level": settings.ci_level,
            **at_threshold,
        },
        "settings": settings.as_dict(),
        "versions": {"torch": torch.__version__, "dagman": _dagman_version()},
    }
    predictions = pd.concat(
        [
            pd.DataFrame({"key": val_keys, "set": "val", "label": val_y, "prob": result.val_probs}),
            pd.DataFrame({"key": test_keys, "set": "test", "label": test_y, "prob": test_p}),
        ],
        ignore_index=True,
    )
    write_csv_atomic(out / "predictions.csv", predictions, lineterminator="\n", float_format="%.8g")
    write_csv_atomic(
        out / "history.csv", pd.DataFrame(result.history), lineterminator="\n", float_format="%.8g"
    )
    if settings.save_model:
        with atomic_path(out / "model.pt") as tmp:
            torch.save(
                {"state_dict": model.cpu().state_dict(), "encoder": info, "settings": settings.as_dict()}, tmp
            )
    write_json_atomic(out / "metrics.json", _json_ready(metrics))
    return metrics


def _dagman_version() -> str:
    from dagman import __version__

    return str(__version__)
