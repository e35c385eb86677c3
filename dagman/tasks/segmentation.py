"""Task 2: tumour segmentation with the pretrained Swin inside MONAI's SwinUNETR (DESIGN 4; EXPERIMENTS D3).

The encoder (``SwinUNETR.swinViT``) is loaded strictly from a pretraining's exported ``encoder.pt``; every
other module (UNETR skip encoders, decoders, output head) starts from a seeded random initialisation.
Training samples random patches (MONAI's ``RandCropByPosNegLabeld``, half centred on tumour) with MONAI's
``DiceCELoss``; the model is selected by the mean Dice of a seeded validation split of the training cases
(the paper used 350 train / 27 validation); few-shot runs train on a seeded fraction of the remaining cases
(25 % inside 50 % inside 100 %, the same validation cases for every fraction). Test volumes are segmented
whole with ``sliding_window_inference`` and scored by Dice per case (``monai.metrics.DiceMetric``).

Case tables are CSV files with an id column (``case_id`` or ``key``), ``image`` and ``mask`` (NIfTI paths,
absolute or relative to the CSV's folder); rows without a mask are skipped. ``dagman nsclc``'s
``cases.csv`` and ``dagman lidc-nodules``' ``seg_test.csv`` are both such tables.

Outputs of :func:`run_segmentation` in ``out_dir``: ``dice.csv`` (:data:`DICE_COLUMNS`), ``metrics.json``,
``log.csv`` (iteration, loss, validation Dice) and, when asked, ``model.pt``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from dagman.io.atomic import atomic_path, write_csv_atomic, write_json_atomic

__all__ = [
    "DICE_COLUMNS",
    "SegmentationSettings",
    "read_cases",
    "split_cases",
    "resolve_encoder",
    "build_segmentation_model",
    "binary_dice",
    "predict_volume",
    "run_segmentation",
]

DICE_COLUMNS = ("test_set", "case_id", "dice", "true_voxels", "pred_voxels")


@dataclass
class SegmentationSettings:
    """Hyper-parameters of one segmentation run (``dagman segment --settings``); defaults follow the paper.

    Attributes:
        patch_size: training patch and sliding-window size in voxels: multiples of 32, not all 32.
        batch_size: volumes per step; each gives ``samples_per_volume`` patches.
        samples_per_volume: patches per volume and step (RandCropByPosNegLabeld's num_samples).
        pos_fraction: fraction of patches centred on tumour voxels (the others on any non-tumour voxel).
        iterations: optimiser steps.
        val_every: steps between validations (model selection); the last step is always validated.
        lr: AdamW learning rate, cosine-decayed per step after ``warmup`` steps.
        warmup: linear warm-up steps.
        weight_decay: AdamW weight decay.
        n_val: validation cases (None: ``round(val_fraction * cases)``, at least 1 when there are 2+ cases).
        val_fraction: share of training cases held out for model selection (paper: 27 of 377).
        spacing: voxel size in mm the volumes are resampled to on loading (no-op for 2 mm inputs).
        window: HU window clipped and scaled to [0, 1]; keep it equal to the pretraining's.
        flips: random flips along the three axes.
        sw_overlap: sliding-window overlap at inference.
        sw_batch_size: windows per forward pass at inference.
        drop_path: stochastic depth in the Swin encoder.
        feature_size, depths, num_heads, window_size, swin_patch_size, mlp_ratio: the architecture when
            the encoder is random and no ``arch_from`` is given (a pretrained encoder's config wins).
        seed: seed of the split, initialisation, patch sampling and augmentation.
        device: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N".
        num_workers: data-loading worker processes.
        cache_rate: share of training volumes MONAI's CacheDataset keeps in memory after loading.
        threads: torch CPU threads (None: leave torch's default).
        save_model: also write the selected model's weights (model.pt).
    """

    patch_size: tuple[int, int, int] = (96, 96, 96)
    batch_size: int = 2
    samples_per_volume: int = 2
    pos_fraction: float = 0.5
    iterations: int = 5000
    val_every: int = 250
    lr: float = 2e-4
    warmup: int = 100
    weight_decay: float = 1e-5
    n_val: int | None = None
    val_fraction: float = 27 / 377
    spacing: float = 2.0
    window: tuple[float, float] = (-175.0, 250.0)
    flips: bool = True
    sw_overlap: float = 0.5
    sw_batch_size: int = 2
    drop_path: float = 0.1
    feature_size: int = 48
    depths: tuple[int, ...] = (2, 2, 8, 2)
    num_heads: tuple[int, ...] = (4, 4, 8, 16)
    window_size: int = 4
    swin_patch_size: int = 2
    mlp_ratio: float = 4.0
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    cache_rate: float = 1.0
    threads: int | None = None
    save_model: bool = True

    def __post_init__(self) -> None:
        size = self.patch_size
        self.patch_size = tuple(int(s) for s in ((size,) * 3 if isinstance(size, int) else size))  # type: ignore[assignment]
        self.window = (float(self.window[0]), float(self.window[1]))
        self.depths = tuple(int(d) for d in self.depths)
        self.num_heads = tuple(int(h) for h in self.num_heads)
        if (
            len(self.patch_size) != 3
            or any(s < 32 or s % 32 for s in self.patch_size)
            or max(self.patch_size) < 64
        ):
            # SwinUNETR's bottleneck is 1/32 of the patch and its instance norm needs more than one voxel
            raise ValueError(
                f"settings.patch_size must be three multiples of 32 (SwinUNETR's input stride), at least one "
                f"of them 64 or more, got {size}"
            )
        if not self.window[1] > self.window[0]:
            raise ValueError(f"settings.window must be [low, high] with high > low, got {list(self.window)}")
        for name in ("batch_size", "samples_per_volume", "iterations", "val_every", "sw_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"settings.{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.pos_fraction <= 1.0 or not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("settings.pos_fraction must lie in [0, 1] and settings.val_fraction in [0, 1)")
        if not 0.0 <= self.sw_overlap < 1.0:
            raise ValueError(f"settings.sw_overlap must lie in [0, 1), got {self.sw_overlap}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> SegmentationSettings:
        """Settings from a dict; unknown keys raise (a typo must not silently do nothing)."""
        mapping = dict(mapping or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ValueError(
                f"unknown segmentation settings {unknown}; valid keys: {', '.join(sorted(known))}"
            )
        return cls(**mapping)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# ------------------------------------------------------------------------------------------------ cases


def read_cases(csv_path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Cases with an image and a mask from a case table.

    Args:
        csv_path: CSV with an id column (``case_id`` or ``key``) and ``image`` / ``mask`` paths (absolute or
            relative to the CSV's folder). Rows with an empty mask (e.g. ``dagman nsclc`` cases without a
            GTV) are skipped.

    Returns:
        ``[{"case_id", "name", "image", "label"}]`` in table order; ``name`` is unique (the case id, with the
        series id appended when a case has several series), ``case_id`` groups rows of one patient.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"case table {path} does not exist")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    id_column = next((c for c in ("case_id", "key") if c in table.columns), None)
    missing = [c for c in ("image", "mask") if c not in table.columns]
    if id_column is None or missing:
        raise ValueError(
            f"case table {path} needs an id column (case_id or key) and image and mask columns; "
            f"it has {', '.join(table.columns)}"
        )
    table = table[(table["image"] != "") & (table["mask"] != "")]
    duplicated = table[id_column].duplicated(keep=False)
    cases = []
    for i, row in enumerate(table.to_dict("records")):
        name = row[id_column]
        if duplicated.iloc[i]:
            name = f"{name}__{row.get('series_id') or i}"
        image, mask = (
            Path(row[c]) if Path(row[c]).is_absolute() else path.parent / row[c] for c in ("image", "mask")
        )
        for what, file in (("image", image), ("mask", mask)):
            if not file.is_file():
                raise FileNotFoundError(f"{what} of case {name!r} in {path} not found: {file}")
        cases.append({"case_id": row[id_column], "name": name, "image": str(image), "label": str(mask)})
    if not cases:
        raise ValueError(f"case table {path} has no case with both an image and a mask")
    return cases


def split_cases(
    cases: Sequence[Mapping[str, str]],
    fraction: float = 1.0,
    *,
    n_val: int | None = None,
    val_fraction: float = 27 / 377,
    seed: int = 0,
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Seeded patient-level split into training and validation cases, then the few-shot training subset.

    The validation cases depend only on ``seed`` (not on ``fraction``), and the training subsets are
    prefixes of one seeded permutation, so 25 % lies inside 50 % inside 100 %.

    Args:
        cases: from :func:`read_cases` (grouped by ``case_id``).
        fraction: share of the non-validation patients to train on, in (0, 1].
        n_val, val_fraction: validation patients (``n_val`` wins); none when there is a single patient.
        seed: seed of both permutations.

    Returns:
        ``(train, val)`` case lists.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    patients = sorted({c["case_id"] for c in cases})
    order = [patients[i] for i in np.random.default_rng([seed, 0]).permutation(len(patients))]
    wanted = n_val if n_val is not None else max(1, round(val_fraction * len(patients)))
    k_val = min(int(wanted), len(patients) - 1) if len(patients) > 1 else 0
    val_ids, rest = set(order[:k_val]), order[k_val:]
    rest = [rest[i] for i in np.random.default_rng([seed, 1]).permutation(len(rest))]
    train_ids = set(rest[: max(1, round(fraction * len(rest)))])
    return (
        [dict(c) for c in cases if c["case_id"] in train_ids],
        [dict(c) for c in cases if c["case_id"] in val_ids],
    )


# ------------------------------------------------------------------------------------------------ model


def resolve_encoder(encoder: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """The encoder weights file and its exported config (``<stem>_config.json`` beside it).

    Args:
        encoder: a pretraining's encoder folder (holding ``encoder.pt``) or the ``.pt`` file itself.

    Returns:
        ``(weights_path, config)``.
    """
    from dagman.models.weights import read_export_config

    files, config = read_export_config(encoder)
    if config["backbone"] != "swin" or "swinunetr_kwargs" not in config:
        raise ValueError(
            f"{files.config}: only a Swin encoder fits SwinUNETR, this one is {config['backbone']!r}"
        )
    return files.weights, config


def _architecture(settings: SegmentationSettings, arch_from: str | os.PathLike[str] | None) -> dict[str, Any]:
    if arch_from is not None:
        return dict(resolve_encoder(arch_from)[1]["swinunetr_kwargs"])
    return {
        "in_channels": 1,
        "feature_size": settings.feature_size,
        "depths": list(settings.depths),
        "num_heads": list(settings.num_heads),
        "window_size": settings.window_size,
        "patch_size": settings.swin_patch_size,
        "mlp_ratio": settings.mlp_ratio,
    }


def build_segmentation_model(
    encoder: str | os.PathLike[str] | None,
    settings: SegmentationSettings,
    arch_from: str | os.PathLike[str] | None = None,
) -> tuple[nn.Module, dict[str, Any], str]:
    """A two-class SwinUNETR: decoder from a seeded random init, encoder from ``encoder`` (strict) or random.

    Args:
        encoder: encoder folder or file (see :func:`resolve_encoder`), or None for a random encoder.
        settings: seed, drop path, and the architecture used when nothing else fixes it.
        arch_from: with ``encoder=None``, an encoder folder whose architecture to copy (weights unused).

    Returns:
        ``(model, architecture, load_summary)``; ``architecture`` holds SwinUNETR's keyword arguments.
    """
    from monai.networks.nets import SwinUNETR

    from dagman.models.weights import load_encoder_into_swinunetr

    weights = None
    if encoder is not None:
        weights, config = resolve_encoder(encoder)
        arch = dict(config["swinunetr_kwargs"])
    else:
        arch = _architecture(settings, arch_from)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}
    # The seed alone fixes the decoder's initial weights; loading the encoder draws no random numbers.
    torch.manual_seed(settings.seed)
    model = SwinUNETR(out_channels=2, dropout_path_rate=settings.drop_path, **kwargs)
    summary = "random encoder (seeded initialisation)"
    if weights is not None:
        summary = f"{weights}: " + load_encoder_into_swinunetr(model, weights).summary()
    return model, arch, summary


# ------------------------------------------------------------------------------------------ data and Dice


def _binarise(x: torch.Tensor) -> torch.Tensor:
    """Any non-zero label is tumour (module level, so worker processes can pickle it)."""
    return (x > 0).to(torch.float32)


def _transforms(settings: SegmentationSettings, train: bool) -> Any:
    from monai import transforms as mt

    keys = ["image", "label"]
    steps: list[Any] = [
        mt.LoadImaged(keys=keys, image_only=True),
        mt.EnsureChannelFirstd(keys=keys),
        mt.Orientationd(keys=keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        mt.Spacingd(keys=keys, pixdim=(settings.spacing,) * 3, mode=("bilinear", "nearest")),
        mt.ScaleIntensityRanged(
            keys="image", a_min=settings.window[0], a_max=settings.window[1], b_min=0.0, b_max=1.0, clip=True
        ),
        mt.Lambdad(keys="label", func=_binarise),
        mt.EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False),
    ]
    if train:
        steps += [
            mt.SpatialPadd(keys=keys, spatial_size=settings.patch_size),
            mt.RandCropByPosNegLabeld(
                keys=keys,
                label_key="label",
                spatial_size=settings.patch_size,
                pos=settings.pos_fraction,
                neg=1.0 - settings.pos_fraction,
                num_samples=settings.samples_per_volume,
                allow_smaller=True,
            ),
        ]
        if settings.flips:
            steps += [mt.RandFlipd(keys=keys, prob=0.5, spatial_axis=axis) for axis in range(3)]
        steps.append(mt.RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5))
    return mt.Compose(steps)


def binary_dice(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Dice of two binary volumes with MONAI's DiceMetric (1.0 when both are empty, 0.0 when one is).

    Args:
        prediction, target: label volumes of one case, any shape, non-zero = tumour.
    """
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
    pred = one_hot((prediction > 0).long().reshape(1, 1, *prediction.shape[-3:]), num_classes=2)
    true = one_hot((target > 0).long().reshape(1, 1, *target.shape[-3:]), num_classes=2)
    return float(metric(pred, true).item())


def predict_volume(
    model: nn.Module, image: torch.Tensor, settings: SegmentationSettings, device: torch.device
) -> torch.Tensor:
    """Label volume (0/1, on the CPU) of a whole (1, D, H, W) image by sliding-window inference."""
    from monai.inferers import sliding_window_inference

    model.eval()
    with torch.no_grad(), _autocast(device):
        logits = sliding_window_inference(
            image[None].to(device),
            roi_size=settings.patch_size,
            sw_batch_size=settings.sw_batch_size,
            predictor=model,
            overlap=settings.sw_overlap,
            mode="gaussian",
        )
    return logits.float().argmax(dim=1)[0].cpu()


def _autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA (fp16 gives NaNs in this model family), nothing on the CPU."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _evaluate(
    model: nn.Module, dataset: Any, names: Sequence[str], settings: SegmentationSettings, device: torch.device
) -> list[dict[str, Any]]:
    rows = []
    for i, name in enumerate(names):
        item = dataset[i]
        prediction = predict_volume(model, item["image"], settings, device)
        truth = item["label"][0]
        rows.append(
            {
                "case_id": name,
                "dice": binary_dice(prediction, truth),
                "true_voxels": int((truth > 0).sum()),
                "pred_voxels": int((prediction > 0).sum()),
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------ training


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _forever(loader: Any) -> Iterator[Any]:
    while True:
        yield from loader


def _lr_at(step: int, settings: SegmentationSettings) -> float:
    """Linear warm-up, then cosine decay to zero over the remaining steps."""
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.iterations - settings.warmup)
    return 0.5 * settings.lr * (1.0 + math.cos(math.pi * progress))


def _summary(values: Sequence[float]) -> dict[str, float | int | None]:
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return {"n": 0, "mean_dice": None, "sd_dice": None, "median_dice": None}
    return {
        "n": int(array.size),
        "mean_dice": float(array.mean()),
        "sd_dice": float(array.std(ddof=1)) if array.size > 1 else 0.0,
        "median_dice": float(np.median(array)),
    }


def run_segmentation(
    train_csv: str | os.PathLike[str],
    test_csvs: Mapping[str, str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    encoder: str | os.PathLike[str] | None,
    arch_from: str | os.PathLike[str] | None = None,
    fraction: float = 1.0,
    settings: SegmentationSettings | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune a SwinUNETR on the training cases, select it on validation Dice, score the test sets.

    Args:
        train_csv: training case table (see :func:`read_cases`), e.g. ``dagman nsclc``'s cases.csv.
        test_csvs: ``{test set name: case table}``, e.g. ``{"lidc": seg_test.csv}``.
        out_dir: output folder (dice.csv, metrics.json, log.csv, model.pt).
        encoder: pretrained encoder folder or file, or None for a random encoder.
        arch_from: with ``encoder=None``, the encoder folder whose architecture to build.
        fraction: few-shot share of the training patients (1.0, 0.5, 0.25).
        settings: hyper-parameters (default :class:`SegmentationSettings`).
        progress: show a tqdm bar on stderr.

    Returns:
        The metrics written to ``metrics.json``.
    """
    from monai.data import CacheDataset, DataLoader, Dataset, list_data_collate
    from monai.losses import DiceCELoss
    from monai.utils import set_determinism
    from tqdm import tqdm

    settings = settings or SegmentationSettings()
    started = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tests = {name: read_cases(path) for name, path in test_csvs.items()}
    train, val = split_cases(
        read_cases(train_csv),
        fraction,
        n_val=settings.n_val,
        val_fraction=settings.val_fraction,
        seed=settings.seed,
    )
    device = _device(settings.device)
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    set_determinism(seed=settings.seed)
    model, arch, load_summary = build_segmentation_model(encoder, settings, arch_from)
    model.to(device)

    train_tf = _transforms(settings, train=True)
    train_tf.set_random_state(seed=settings.seed)
    train_ds = CacheDataset(
        train, transform=train_tf, cache_rate=settings.cache_rate, num_workers=None, progress=False
    )
    generator = torch.Generator().manual_seed(settings.seed)
    loader = DataLoader(
        train_ds,
        batch_size=settings.batch_size,
        shuffle=True,
        num_workers=settings.num_workers,
        collate_fn=list_data_collate,
        generator=generator,
    )
    eval_tf = _transforms(settings, train=False)
    val_ds = CacheDataset(val, transform=eval_tf, cache_rate=settings.cache_rate, progress=False)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)

    log: list[dict[str, Any]] = []
    best = {"val_dice": -1.0, "iteration": 0}
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    batches = _forever(loader)
    bar = tqdm(range(settings.iterations), desc="segmentation", unit="step", disable=not progress)
    for step in bar:
        model.train()
        for group in optimiser.param_groups:
            group["lr"] = _lr_at(step, settings)
        batch = next(batches)
        image, label = batch["image"].to(device), batch["label"].to(device)
        with _autocast(device):
            loss = loss_fn(model(image), label)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"segmentation loss is {loss.item()} at step {step}; lower settings.lr")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        entry: dict[str, Any] = {"iteration": step + 1, "loss": float(loss.item()), "val_dice": ""}
        log.append(entry)
        if (step + 1) % settings.val_every == 0 or step + 1 == settings.iterations:
            scores = [r["dice"] for r in _evaluate(model, val_ds, [c["name"] for c in val], settings, device)]
            # without validation cases the last step is the model
            val_dice = float(np.mean(scores)) if scores else 0.0
            entry["val_dice"] = val_dice
            if val_dice > best["val_dice"] or not scores:
                best = {"val_dice": val_dice, "iteration": step + 1}
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            bar.set_postfix(loss=f"{entry['loss']:.3f}", val_dice=f"{val_dice:.3f}")
            # the log is rewritten at each validation so a long run can be followed
            write_csv_atomic(out / "log.csv", pd.DataFrame(log))
    model.load_state_dict(best_state)

    rows = []
    for name, cases in tests.items():
        for row in _evaluate(
            model, Dataset(cases, transform=eval_tf), [c["name"] for c in cases], settings, device
        ):
            rows.append({"test_set": name, **row})
    dice = pd.DataFrame(rows, columns=list(DICE_COLUMNS))
    write_csv_atomic(out / "dice.csv", dice, float_format="%.6f")
    write_csv_atomic(out / "log.csv", pd.DataFrame(log))
    if settings.save_model:
        with atomic_path(out / "model.pt") as tmp:
            torch.save({"state_dict": best_state, "architecture": arch, "settings": settings.as_dict()}, tmp)
    metrics = {
        "encoder": str(encoder) if encoder is not None else "random",
        "encoder_load": load_summary,
        "architecture": arch,
        "fraction": fraction,
        "n_train": len(train),
        "n_val": len(val),
        "train_cases": [c["name"] for c in train],
        "val_cases": [c["name"] for c in val],
        "best_iteration": best["iteration"],
        "best_val_dice": best["val_dice"] if val else None,
        "test": {name: _summary(dice.loc[dice["test_set"] == name, "dice"].tolist()) for name in tests},
        "device": str(device),
        "seconds": round(time.time() - started, 1),
        "settings": settings.as_dict(),
    }
    write_json_atomic(out / "metrics.json", metrics)
    return metrics
