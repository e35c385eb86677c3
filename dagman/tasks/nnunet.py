"""Task 2 baseline: nnU-Net through the real ``nnunetv2`` package (DESIGN 4; EXPERIMENTS D3).

:func:`run_nnunet` is the typed entry point behind ``dagman nnunet``:

1. :func:`convert_to_nnunet_raw` writes the training and test cases in nnU-Net's raw layout under
   ``OUT/nnUNet_raw/Dataset<ID>_<Name>/`` (``dataset.json``, ``imagesTr/<id>_0000.nii.gz``,
   ``labelsTr/<id>.nii.gz``, ``imagesTs/<id>_0000.nii.gz``) plus ``OUT/cases.csv`` mapping nnU-Net's
   identifiers back to the project's case ids. It needs no nnunetv2.
2. In a fresh (spawned) Python process whose ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results``
   point inside ``OUT`` (nnunetv2 reads them at import time): fingerprint extraction, experiment planning and
   preprocessing; the project's seeded train/validation split (the same as ``dagman segment``'s, few-shot
   fraction included) written as nnU-Net's ``splits_final.json`` fold 0; training of the configured trainer
   (epochs and iterations per epoch may be overridden for demo speed); prediction of ``imagesTs`` with
   ``nnUNetPredictor``.
3. Dice per case against the masks, in ``dagman segment``'s ``dice.csv`` format, and ``metrics.json``.

nnunetv2 is an optional dependency: without it, steps 2-3 fail with the install hint
``pip install dagman[nnunet]`` (or ``pip install nnunetv2``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from dagman.io.atomic import write_csv_atomic, write_json_atomic
from dagman.tasks.segmentation import DICE_COLUMNS, binary_dice, read_cases, split_cases

__all__ = [
    "INSTALL_HINT",
    "NnUNetSettings",
    "require_nnunetv2",
    "convert_to_nnunet_raw",
    "run_nnunet",
]

INSTALL_HINT = "nnU-Net is optional: install it with `pip install dagman[nnunet]` (or `pip install nnunetv2`)"
_FILE_ENDING = ".nii.gz"


@dataclass
class NnUNetSettings:
    """Settings of one nnU-Net baseline run (``dagman nnunet --settings``); defaults are nnU-Net's own.

    Attributes:
        dataset_id: nnU-Net dataset id (three digits; pick one no other dataset in OUT uses).
        dataset_name: the name part of ``Dataset<ID>_<Name>`` (letters and digits).
        configuration: nnU-Net configuration ("3d_fullres", "2d", "3d_lowres").
        trainer: trainer class name (e.g. "nnUNetTrainer", "nnUNetTrainer_5epochs", "nnUNetTrainer_1epoch").
        planner: experiment planner class (e.g. "ExperimentPlanner", "nnUNetPlannerResEncM").
        plans: plans identifier the planner writes (e.g. "nnUNetPlans", "nnUNetResEncUNetMPlans").
        fold: "0" trains on the project's split (validation cases as nnU-Net's validation fold); "all" trains
            on training and validation cases together.
        epochs, iterations_per_epoch, val_iterations_per_epoch: override the trainer's 1000 / 250 / 50
            (None keeps them; the demo lowers them to run on a CPU).
        validate: run nnU-Net's own final validation on the validation fold (its summary.json).
        n_val, val_fraction, seed: the project's train/validation split (as in ``dagman segment``).
        device: "auto" (CUDA when present), "cpu" or "cuda".
        num_processes: processes for fingerprinting, preprocessing and prediction export.
        n_proc_da: nnU-Net's data-augmentation workers (nnUNet_n_proc_DA; 0 = in the training process;
            None = nnU-Net's own default).
        compile: let nnU-Net torch.compile the network (nnUNet_compile; slow to start, useless on a CPU).
        tile_step_size, use_mirroring: nnUNetPredictor's sliding-window step and test-time mirroring.
        checkpoint: which checkpoint predicts ("checkpoint_final.pth" or "checkpoint_best.pth").
    """

    dataset_id: int = 501
    dataset_name: str = "NSCLCGTV"
    configuration: str = "3d_fullres"
    trainer: str = "nnUNetTrainer"
    planner: str = "ExperimentPlanner"
    plans: str = "nnUNetPlans"
    fold: str = "0"
    epochs: int | None = None
    iterations_per_epoch: int | None = None
    val_iterations_per_epoch: int | None = None
    validate: bool = True
    n_val: int | None = None
    val_fraction: float = 27 / 377
    seed: int = 0
    device: str = "auto"
    num_processes: int = 2
    n_proc_da: int | None = None
    compile: bool = False
    tile_step_size: float = 0.5
    use_mirroring: bool = True
    checkpoint: str = "checkpoint_final.pth"

    def __post_init__(self) -> None:
        self.fold = str(self.fold)
        if self.fold not in ("0", "all"):
            raise ValueError(f"settings.fold must be '0' (the project's split) or 'all', got {self.fold!r}")
        if not 1 <= int(self.dataset_id) <= 999:
            raise ValueError(f"settings.dataset_id must be 1..999, got {self.dataset_id}")
        if not re.fullmatch(r"[A-Za-z0-9]+", self.dataset_name):
            raise ValueError(f"settings.dataset_name must be letters and digits, got {self.dataset_name!r}")
        for name in ("epochs", "iterations_per_epoch", "val_iterations_per_epoch"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"settings.{name} must be at least 1 or null, got {value}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> NnUNetSettings:
        """Settings from a dict; unknown keys raise (a typo must not silently do nothing)."""
        mapping = dict(mapping or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ValueError(f"unknown nnU-Net settings {unknown}; valid keys: {', '.join(sorted(known))}")
        return cls(**mapping)

    @property
    def dataset_folder(self) -> str:
        """nnU-Net's dataset folder name, ``Dataset<ID>_<Name>``."""
        return f"Dataset{int(self.dataset_id):03d}_{self.dataset_name}"


def require_nnunetv2() -> None:
    """Raise an ImportError with the install hint when nnunetv2 cannot be imported."""
    import importlib.util

    if importlib.util.find_spec("nnunetv2") is None:
        raise ImportError(INSTALL_HINT)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "set"


def _write_label(mask_path: str, image_path: str, out: Path) -> None:
    """The mask as a 0/1 uint8 label with the image's exact header (nnU-Net checks geometry equality)."""
    import SimpleITK as sitk

    image = sitk.ReadImage(image_path)
    mask = sitk.ReadImage(mask_path)
    if mask.GetSize() != image.GetSize():
        raise ValueError(
            f"mask {mask_path} has size {mask.GetSize()}, its image {image_path} {image.GetSize()}"
        )
    label = sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8)
    label.CopyInformation(image)
    sitk.WriteImage(label, str(out), True)


def convert_to_nnunet_raw(
    train: Sequence[Mapping[str, str]],
    tests: Mapping[str, Sequence[Mapping[str, str]]],
    raw_root: str | os.PathLike[str],
    settings: NnUNetSettings,
) -> pd.DataFrame:
    """Write cases in nnU-Net's raw layout (no nnunetv2 needed).

    Args:
        train: training cases (:func:`dagman.tasks.segmentation.read_cases` dicts), validation cases included.
        tests: ``{test set name: cases}``.
        raw_root: the ``nnUNet_raw`` folder; the dataset folder is created (replaced) inside it.
        settings: dataset id and name.

    Returns:
        The identifier table: ``identifier, split (train|test), test_set, case_id, name, image, mask``.
    """
    folder = Path(raw_root) / settings.dataset_folder
    if folder.exists():
        shutil.rmtree(folder)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True)
    rows = []
    for i, case in enumerate(train):
        identifier = f"train_{i:04d}"
        shutil.copyfile(case["image"], folder / "imagesTr" / f"{identifier}_0000{_FILE_ENDING}")
        _write_label(case["label"], case["image"], folder / "labelsTr" / f"{identifier}{_FILE_ENDING}")
        rows.append({"identifier": identifier, "split": "train", "test_set": "", **_ids(case)})
    for set_name, cases in tests.items():
        for j, case in enumerate(cases):
            identifier = f"{_safe(set_name)}_{j:04d}"
            shutil.copyfile(case["image"], folder / "imagesTs" / f"{identifier}_0000{_FILE_ENDING}")
            rows.append({"identifier": identifier, "split": "test", "test_set": set_name, **_ids(case)})
    table = pd.DataFrame(
        rows, columns=["identifier", "split", "test_set", "case_id", "name", "image", "mask"]
    )
    if table["identifier"].duplicated().any():
        raise ValueError(f"test set names {list(tests)} collide after making them file-name safe")
    dataset = {
        "channel_names": {"0": "CT"},  # "CT" selects nnU-Net's CT intensity normalisation
        "labels": {"background": 0, "tumour": 1},
        "numTraining": len(train),
        "file_ending": _FILE_ENDING,
        "name": settings.dataset_name,
        "description": "Task 2 tumour segmentation (DAGMaN reproduction), written by dagman nnunet",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n", encoding="utf-8")
    return table


def _ids(case: Mapping[str, str]) -> dict[str, str]:
    return {"case_id": case["case_id"], "name": case["name"], "image": case["image"], "mask": case["label"]}


def _nnunet_child(job: dict[str, Any]) -> None:
    """Plan, preprocess, train and predict inside a fresh interpreter (nnunetv2 reads its paths at import)."""
    os.environ.update(job["env"])
    n_proc_da = job["settings"]["n_proc_da"]
    if n_proc_da is not None:
        # the planner also sets torch's thread count from nnUNet_n_proc_DA, which must then be positive
        os.environ["nnUNet_n_proc_DA"] = str(max(1, int(n_proc_da)))
    import torch
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    s = NnUNetSettings.from_mapping(job["settings"])
    ids, n_proc = [int(s.dataset_id)], int(s.num_processes)
    extract_fingerprints(ids, num_processes=n_proc, check_dataset_integrity=True, clean=True, verbose=False)
    plan_experiments(ids, experiment_planner_class_name=s.planner)
    preprocess(ids, plans_identifier=s.plans, configurations=(s.configuration,), num_processes=(n_proc,))
    if job["plan_only"]:
        return
    preprocessed = Path(job["env"]["nnUNet_preprocessed"]) / s.dataset_folder
    if s.fold == "0":
        split = [{"train": job["train_ids"], "val": job["val_ids"]}]
        (preprocessed / "splits_final.json").write_text(json.dumps(split, indent=2) + "\n", encoding="utf-8")

    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.run.run_training import get_trainer_from_args

    if n_proc_da is not None:
        os.environ["nnUNet_n_proc_DA"] = str(int(n_proc_da))  # read again when the data loaders are built

    device = torch.device(job["device"])
    fold: int | str = 0 if s.fold == "0" else "all"
    trainer = get_trainer_from_args(
        str(s.dataset_id), s.configuration, fold, s.trainer, s.plans, device=device
    )
    # the trainer's lengths are plain attributes set in __init__; the class name (kept in the checkpoint for
    # the predictor) stays that of a real nnU-Net trainer
    for attribute, value in (
        ("num_epochs", s.epochs),
        ("num_iterations_per_epoch", s.iterations_per_epoch),
        ("num_val_iterations_per_epoch", s.val_iterations_per_epoch),
    ):
        if value is not None:
            setattr(trainer, attribute, int(value))
    trainer.run_training()
    if s.validate:
        trainer.perform_actual_validation(False)

    predictor = nnUNetPredictor(
        tile_step_size=s.tile_step_size,
        use_gaussian=True,
        use_mirroring=s.use_mirroring,
        perform_everything_on_device=device.type == "cuda",
        device=device,
        verbose=False,
        allow_tqdm=job["progress"],
    )
    predictor.initialize_from_trained_model_folder(
        trainer.output_folder_base, use_folds=(fold,), checkpoint_name=s.checkpoint
    )
    raw = Path(job["env"]["nnUNet_raw"]) / s.dataset_folder
    if any((raw / "imagesTs").iterdir()):
        predictor.predict_from_files(
            str(raw / "imagesTs"),
            job["predictions"],
            save_probabilities=False,
            overwrite=True,
            num_processes_preprocessing=n_proc,
            num_processes_segmentation_export=n_proc,
        )


def run_nnunet(
    train_csv: str | os.PathLike[str],
    test_csvs: Mapping[str, str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    fraction: float = 1.0,
    settings: NnUNetSettings | None = None,
    plan_only: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """The nnU-Net baseline end to end; writes ``dice.csv`` and ``metrics.json`` in ``out_dir``.

    Args:
        train_csv: training case table (as for ``dagman segment``).
        test_csvs: ``{test set name: case table}``.
        out_dir: output folder; nnU-Net's raw, preprocessed and results folders live inside it.
        fraction: few-shot share of the training patients (validation cases are the same for every fraction).
        settings: :class:`NnUNetSettings`.
        plan_only: stop after planning and preprocessing (no training, prediction or Dice).
        progress: let nnU-Net show its progress bars.

    Returns:
        The metrics written to ``metrics.json``.
    """
    import torch

    require_nnunetv2()
    settings = settings or NnUNetSettings()
    started = time.time()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    train, val = split_cases(
        read_cases(train_csv),
        fraction,
        n_val=settings.n_val,
        val_fraction=settings.val_fraction,
        seed=settings.seed,
    )
    if settings.fold == "0" and not val:
        raise ValueError(
            "nnU-Net fold 0 needs validation cases (at least 2 patients); set settings.fold to 'all'"
        )
    tests = {name: read_cases(path) for name, path in test_csvs.items()}
    env = {
        "nnUNet_raw": str(out / "nnUNet_raw"),
        "nnUNet_preprocessed": str(out / "nnUNet_preprocessed"),
        "nnUNet_results": str(out / "nnUNet_results"),
        "nnUNet_compile": "t" if settings.compile else "f",
    }
    table = convert_to_nnunet_raw([*train, *val], tests, env["nnUNet_raw"], settings)
    write_csv_atomic(out / "cases.csv", table)
    by_name = dict(zip(table["name"], table["identifier"], strict=False))
    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    predictions = out / "predictions"
    if predictions.exists():
        shutil.rmtree(predictions)
    job = {
        "env": env,
        "settings": asdict(settings),
        "plan_only": plan_only,
        "train_ids": [by_name[c["name"]] for c in train],
        "val_ids": [by_name[c["name"]] for c in val],
        "device": device,
        "progress": progress,
        "predictions": str(predictions),
    }
    process = multiprocessing.get_context("spawn").Process(target=_nnunet_child, args=(job,))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(
            f"nnU-Net failed (exit code {process.exitcode}); its messages are above, its files under {out}"
        )
    metrics: dict[str, Any] = {
        "method": "nnunet",
        "fraction": fraction,
        "n_train": len(train),
        "n_val": len(val),
        "train_cases": [c["name"] for c in train],
        "val_cases": [c["name"] for c in val],
        "dataset": settings.dataset_folder,
        "device": device,
        "plan_only": plan_only,
        "settings": asdict(settings),
    }
    if not plan_only:
        rows = []
        for row in table[table["split"] == "test"].itertuples():
            rows.append(
                {
                    "test_set": row.test_set,
                    "case_id": row.name,
                    **_score(predictions, row.identifier, row.mask),
                }
            )
        dice = pd.DataFrame(rows, columns=list(DICE_COLUMNS))
        write_csv_atomic(out / "dice.csv", dice, float_format="%.6f")
        metrics["test"] = {name: _summary(dice.loc[dice["test_set"] == name, "dice"]) for name in tests}
    metrics["seconds"] = round(time.time() - started, 1)
    write_json_atomic(out / "metrics.json", metrics)
    return metrics


def _score(predictions: Path, identifier: str, mask_path: str) -> dict[str, Any]:
    """Dice of nnU-Net's prediction (written on the input image's grid) against the mask."""
    import SimpleITK as sitk
    import torch

    prediction_path = predictions / f"{identifier}{_FILE_ENDING}"
    if not prediction_path.is_file():
        raise FileNotFoundError(f"nnU-Net wrote no prediction {prediction_path}")
    pred = torch.from_numpy(sitk.GetArrayFromImage(sitk.ReadImage(str(prediction_path))).astype("uint8"))
    true = torch.from_numpy(sitk.GetArrayFromImage(sitk.ReadImage(mask_path)).astype("uint8"))
    return {
        "dice": binary_dice(pred, true),
        "true_voxels": int((true > 0).sum()),
        "pred_voxels": int((pred > 0).sum()),
    }


def _summary(values: pd.Series) -> dict[str, Any]:
    if values.empty:
        return {"n": 0, "mean_dice": None, "sd_dice": None, "median_dice": None}
    return {
        "n": int(values.size),
        "mean_dice": float(values.mean()),
        "sd_dice": float(values.std(ddof=1)) if values.size > 1 else 0.0,
        "median_dice": float(values.median()),
    }
