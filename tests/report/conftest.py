"""Small result files in the workflow's exact formats, for the figure and table tests.

Each builder writes what the real stage writes, with the column constants of the writing modules and through the
real code where it is cheap: cluster distances by
``cluster_distances``; per-head diversity summarised by ``summarise_heads``; zero-shot Dice by ``dice`` on tiny
NIfTI masks. Fixtures:

- ``result_inputs`` (session): a :class:`ResultInputs` over every kind of result (see ``CLASSIFICATION_METHODS``
  and the other constants for which methods each holds; some ablation cells are left out on purpose so the
  tables show "not run");
- ``result_methods`` (session): the method lists behind ``result_inputs`` (for planned_tables/figures);
- ``make_result_inputs`` (function): ``make_result_inputs(root, **method_lists)`` writes a custom set.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dagman.report.results import ATTENTION_VIEWS, ResultInputs

#: Task 1 (lidc) methods; dagman-no-nt ("SA only"), dagman-sa1 and three loss subsets are left out on purpose.
CLASSIFICATION_METHODS: tuple[str, ...] = (
    "dagman",
    "smit",
    "random",
    "resnet50",
    "ibot",
    "attmask",
    "mst",
    "dagman-no-sa",
    "dagman-vit",
    "smit-vit",
    "ibot-dagman",
    "dagman-sa2",
    "dagman-sa4",
    "dagman-loss-amip",
    "dagman-loss-amip+ampd",
)
#: Task 3 (outcome) methods, 100 % only.
OUTCOME_METHODS: tuple[str, ...] = ("dagman", "smit", "random")
CLASSIFICATION_FRACTIONS: tuple[float, ...] = (1.0, 0.5)
SEGMENTATION_RUNS: tuple[tuple[str, str], ...] = (
    ("dagman", "1"),
    ("dagman", "0.5"),
    ("smit", "1"),
    ("random", "1"),
    ("nnunet", "1"),
    ("dagman-sa2", "1"),
)
CLUSTER_METHODS: tuple[str, ...] = ("dagman", "smit", "dagman-no-sa", "attmask", "dagman-sa2")
ZEROSHOT_METHODS: tuple[str, ...] = ("dagman", "attmask")
DIVERSITY_METHODS: tuple[str, ...] = ("dagman", "smit", "dagman-no-nt", "dagman-no-sa")
PRETRAIN_METHODS: tuple[str, ...] = ("dagman", "dagman-no-nt", "smit")
ATTENTION_METHODS: tuple[str, ...] = ("dagman", "attmask")
N_FOLDS = 3
# AUC-ish quality per method: the larger, the better separated its test probabilities
_QUALITY = {"dagman": 2.0, "smit": 1.4, "random": 0.3, "resnet50": 0.8}


def _seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------- classification
#: summary.csv row with known numbers (ensemble AUC and CI) for the table tests: lidc / ft / 100 % / dagman
KNOWN_SUMMARY = {"ensemble_auc": 0.6421, "ensemble_auc_ci_low": 0.6012, "ensemble_auc_ci_high": 0.6838}
#: comparisons.csv fold-mean row with known p-values: lidc / ft / 100 % / smit vs dagman
KNOWN_COMPARISON = {"delong_p": 0.0004, "bootstrap_p": 0.0032}


def _run_metrics(task: str, method: str, mode: str, fraction: float, fold: int) -> dict:
    """Deterministic per-fold test metrics of one run (a results.csv row)."""
    rng = np.random.default_rng(_seed(task, method, mode, fraction, fold))
    auc = 0.55 + 0.1 * _QUALITY.get(method, 1.0) * (1.0 if mode == "ft" else 0.6) * (0.7 + 0.3 * fraction)
    auc = float(np.clip(auc + rng.normal(0, 0.02), 0.3, 0.99))
    tp, fn = int(rng.integers(5, 10)), 0
    fn, fp = 10 - tp, int(rng.integers(2, 7))
    tn = 14 - fp
    return {
        "auc": auc,
        "auc_ci_low": auc - 0.08,
        "auc_ci_high": min(auc + 0.08, 1.0),
        "threshold": float(rng.uniform(0.3, 0.6)),
        "sensitivity": tp / 10,
        "specificity": tn / 14,
        "precision": tp / (tp + fp),
        "recall": tp / 10,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "val_auc": float(np.clip(auc + rng.normal(0, 0.05), 0, 1)),
    }


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """As ``classification_summary`` writes its CSVs."""
    frame.to_csv(path, index=False, lineterminator="\n", float_format="%.6g")


def write_classification(
    root: Path,
    methods: Sequence[str] = CLASSIFICATION_METHODS,
    outcome_methods: Sequence[str] = OUTCOME_METHODS,
    fractions: Sequence[float] = CLASSIFICATION_FRACTIONS,
    reference: str = "dagman",
) -> Path:
    """results.csv, summary.csv and comparisons.csv (their real columns) for lidc (``methods`` x lp/ft x
    ``fractions``) and outcome (100 %), 3 folds, 24 test cases (10 positive).

    Built directly rather than through ``write_classification_summary`` (which takes ~20 s for this many runs
    on the CI's cores); the summary's mean/sd are the folds' and the ensemble AUC is made up near them.
    """
    from dagman.tasks.classification_summary import (
        COMPARISON_COLUMNS,
        RESULT_COLUMNS,
        SUMMARY_COLUMNS,
        SUMMARY_METRICS,
    )

    plan = [("lidc", m, f) for m in methods for f in fractions] + [
        ("outcome", m, 1.0) for m in outcome_methods
    ]
    results, summary, comparisons = [], [], []
    for task, method, fraction in plan:
        for mode in ("lp", "ft"):
            group = {"method": method, "task": task, "mode": mode, "fraction": fraction}
            group["regime"] = f"{round(fraction * 100)}%"
            folds = []
            for fold in range(1, N_FOLDS + 1):
                row = {**group, "fold": fold, "embedding": "cls", "encoder_kind": "swin"}
                row.update(_run_metrics(task, method, mode, fraction, fold))
                row.update(
                    best_epoch=2, epochs_run=4, n_train=int(40 * fraction), n_train_pos=int(16 * fraction)
                )
                row.update(n_val=8, n_val_pos=3, n_test=24, n_test_pos=10, seed=0)
                row["run_dir"] = f"runs/{task}/{method}/{mode}/f{fraction:g}/fold{fold}"
                folds.append(row)
            results += folds
            folds_frame = pd.DataFrame(folds)
            row = {**group, "n_folds": N_FOLDS, "n_test": 24}
            for metric in SUMMARY_METRICS:
                row[f"{metric}_mean"] = float(folds_frame[metric].mean())
                row[f"{metric}_sd"] = float(folds_frame[metric].std(ddof=1))
            row["auc_mean_sd"] = f"{row['auc_mean']:.3f} ± {row['auc_sd']:.3f}"
            row["ensemble_auc"] = min(row["auc_mean"] + 0.01, 1.0)
            row["ensemble_auc_ci_low"] = row["ensemble_auc"] - 0.07
            row["ensemble_auc_ci_high"] = min(row["ensemble_auc"] + 0.07, 1.0)
            if (method, task, mode, fraction) == (reference, "lidc", "ft", 1.0):
                row.update(KNOWN_SUMMARY)
            summary.append(row)
    summary_frame = pd.DataFrame(summary, columns=SUMMARY_COLUMNS)
    for (task, mode, fraction, regime), part in summary_frame.groupby(["task", "mode", "fraction", "regime"]):
        ref = part[part["method"] == reference]
        if ref.empty:
            continue
        for method in sorted(set(part["method"]) - {reference}):
            mine = part[part["method"] == method].iloc[0]
            rng = np.random.default_rng(_seed("compare", task, mode, fraction, method))
            for fold in [*range(1, N_FOLDS + 1), ""]:
                auc_m, auc_r = mine["ensemble_auc"], ref["ensemble_auc"].iloc[0]
                row = {"task": task, "mode": mode, "fraction": fraction, "regime": regime, "method": method}
                row.update(reference=reference, level="fold" if fold else "fold-mean", fold=fold)
                row.update(
                    n_cases=24, n_pos=10, auc_method=auc_m, auc_reference=auc_r, auc_diff=auc_m - auc_r
                )
                p = float(rng.uniform(0.001, 0.9))
                row.update(delong_z=float(rng.normal(0, 2)), delong_p=p, bootstrap_p=min(p * 1.1, 1.0))
                if not fold and (task, mode, fraction, method) == ("lidc", "ft", 1.0, "smit"):
                    row.update(KNOWN_COMPARISON)
                comparisons.append(row)
    out = root / "classification"
    out.mkdir(parents=True, exist_ok=True)
    results_frame = pd.DataFrame(results, columns=RESULT_COLUMNS)
    _write_csv(
        results_frame.sort_values(["method", "task", "mode", "fraction", "regime", "fold"]),
        out / "results.csv",
    )
    _write_csv(
        summary_frame.sort_values(["method", "task", "mode", "fraction", "regime"]), out / "summary.csv"
    )
    _write_csv(pd.DataFrame(comparisons, columns=COMPARISON_COLUMNS), out / "comparisons.csv")
    return out


# ------------------------------------------------------------------------------------------- segmentation
def write_segmentation(root: Path, runs: Sequence[tuple[str, str]] = SEGMENTATION_RUNS) -> dict[str, Path]:
    """dice.csv per (method, fraction label): 4 LIDC cases and 3 outcome-cohort cases."""
    from dagman.tasks.segmentation import DICE_COLUMNS

    out = {}
    for method, fraction in runs:
        rng = np.random.default_rng(_seed("seg", method, fraction))
        base = {"dagman": 0.75, "nnunet": 0.8, "random": 0.4}.get(method, 0.65) * (
            0.8 + 0.2 * float(fraction)
        )
        rows = []
        for test_set, n in (("lidc", 4), ("outcome", 3)):
            for i in range(n):
                true = int(rng.integers(400, 900))
                rows.append(
                    {
                        "test_set": test_set,
                        "case_id": f"{test_set}-{i:03d}",
                        "dice": float(np.clip(base + rng.normal(0, 0.08), 0, 1)),
                        "true_voxels": true,
                        "pred_voxels": int(true * rng.uniform(0.7, 1.3)),
                    }
                )
        path = root / "segmentation" / method / f"f{fraction}" / "dice.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows, columns=list(DICE_COLUMNS)).to_csv(path, index=False, float_format="%.6f")
        out[f"{method}:{fraction}"] = path
    return out


# --------------------------------------------------------------------------------------------- clustering
def write_clusters(root: Path, methods: Sequence[str] = CLUSTER_METHODS) -> dict[str, Path]:
    """umap.csv and distances.csv (distances computed by the real ``cluster_distances``) per method."""
    from dagman.io.organmnist import ORGAN_CLASSES
    from dagman.tasks.clustering import DISTANCE_COLUMNS, cluster_distances

    out = {}
    labels = np.repeat(np.arange(4), 5)
    for method in methods:
        rng = np.random.default_rng(_seed("clusters", method))
        spread = 3.0 if method.startswith("dagman") else 1.5
        centres = rng.normal(0, spread, (4, 2))
        coords = centres[labels] + rng.normal(0, 0.5, (len(labels), 2))
        embeddings = rng.normal(0, 1, (4, 8))[labels] + rng.normal(0, 0.3, (len(labels), 8))
        folder = root / "clustering" / method
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {
                "method": method,
                "index": np.arange(len(labels)),
                "label": labels,
                "organ": [ORGAN_CLASSES[c] for c in labels],
                "x": coords[:, 0],
                "y": coords[:, 1],
            }
        ).to_csv(folder / "umap.csv", index=False)
        rows = []
        for space, points in (("umap", coords), ("embedding", embeddings)):
            d = cluster_distances(points, labels)
            rows.append(
                {"method": method, "space": space, **{k: getattr(d, k) for k in DISTANCE_COLUMNS[2:]}}
            )
        pd.DataFrame(rows, columns=list(DISTANCE_COLUMNS)).to_csv(folder / "distances.csv", index=False)
        out[method] = folder
    return out


# ---------------------------------------------------------------------------------------------- zero-shot
def _write_nifti(array: np.ndarray, path: Path, spacing=(2.0, 2.0, 2.0)) -> Path:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def _box(shape, low, high) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[low[0] : high[0], low[1] : high[1], low[2] : high[2]] = 1
    return mask


def write_zeroshot(root: Path, methods: Sequence[str] = ZEROSHOT_METHODS) -> tuple[dict[str, Path], Path]:
    """raters.csv (2 cases x 3 raters, tiny NIfTI CTs and masks) and per method dice.csv, summary.json, masks/."""
    from dagman.tasks.zeroshot import DICE_COLUMNS, dice

    shape = (8, 12, 12)
    cohort_dir = root / "raters"
    cohort_rows, rater_masks = [], {}
    for c, case in enumerate(("zs-001", "zs-002")):
        ct = np.full(shape, -800, dtype=np.int16)
        ct[2:6, 3 + c : 8 + c, 3:8] = 40
        _write_nifti(ct, cohort_dir / "images" / f"{case}.nii.gz")
        for r, rater in enumerate(("r1", "r2", "r3")):
            mask = _box(shape, (2, 3 + c, 3 + r % 2), (6, 8 + c, 8))
            _write_nifti(mask, cohort_dir / "masks" / f"{case}_{rater}.nii.gz")
            rater_masks[case, rater] = mask
            cohort_rows.append(
                {
                    "case_id": case,
                    "rater": rater,
                    "image": f"images/{case}.nii.gz",
                    "mask": f"masks/{case}_{rater}.nii.gz",
                }
            )
    cohort = cohort_dir / "raters.csv"
    pd.DataFrame(cohort_rows).to_csv(cohort, index=False)

    out = {}
    for m, method in enumerate(methods):
        folder = root / "zeroshot" / method
        rows = []
        for c, case in enumerate(("zs-001", "zs-002")):
            predicted = _box(shape, (2, 3 + c + m, 4), (6, 9 + c, 9))
            _write_nifti(predicted, folder / "masks" / f"{case}.nii.gz")
            for rater in ("r1", "r2", "r3"):
                reference = rater_masks[case, rater]
                rows.append(
                    {
                        "method": method,
                        "case_id": case,
                        "rater": rater,
                        "dice": dice(predicted, reference),
                        "predicted_voxels": int(predicted.sum()),
                        "rater_voxels": int(reference.sum()),
                    }
                )
        table = pd.DataFrame(rows, columns=list(DICE_COLUMNS))
        table.to_csv(folder / "dice.csv", index=False)
        per_case = table.groupby("case_id")["dice"].mean()
        summary = {
            "method": method,
            "n_cases": int(table["case_id"].nunique()),
            "n_pairs": len(table),
            "dice_mean": float(per_case.mean()),
            "dice_sd": float(per_case.std(ddof=1)),
            "dice_pairs_mean": float(table["dice"].mean()),
            "dice_pairs_sd": float(table["dice"].std(ddof=1)),
            "percentile": 90.0,
            "region": "whole",
            "spacing_mm": 2.0,
            "window": [-175.0, 250.0],
            "input_size": [32, 32, 32],
            "overlap": 0.5,
        }
        _write_json(folder / "summary.json", summary)
        out[method] = folder
    return out, cohort


# ---------------------------------------------------------------------------------------------- diversity
def write_diversity(root: Path, methods: Sequence[str] = DIVERSITY_METHODS) -> dict[str, Path]:
    """diversity.csv (4 stages x 2 blocks x 3 heads) and its real summary, diversity_summary.csv, per method."""
    from dagman.tasks.diversity import DIVERSITY_COLUMNS, summarise_heads

    out = {}
    for method in methods:
        rng = np.random.default_rng(_seed("diversity", method))
        rows = [
            {
                "method": method,
                "stage": stage,
                "block": block,
                "head": head,
                "mean_distance": float(2.0 * stage + rng.uniform(0, 1)),
                "mean_distance_mm": float(4.0 * stage + rng.uniform(0, 2)),
                "entropy": float(3.0 + rng.uniform(-0.5, 0.5)),
                "n_queries": 512,
            }
            for stage in (1, 2, 3, 4)
            for block in (1, 2)
            for head in (1, 2, 3)
        ]
        table = pd.DataFrame(rows, columns=list(DIVERSITY_COLUMNS))
        folder = root / "diversity" / method
        folder.mkdir(parents=True, exist_ok=True)
        table.to_csv(folder / "diversity.csv", index=False)
        summarise_heads(table).to_csv(folder / "diversity_summary.csv", index=False)
        out[method] = folder / "diversity_summary.csv"
    return out


# -------------------------------------------------------------------------------------------- pretraining
def write_pretrain(root: Path, methods: Sequence[str] = PRETRAIN_METHODS, steps: int = 12) -> dict[str, Path]:
    """metrics.csv per method with the columns ``dagman pretrain`` writes for that method's losses."""
    from dagman.ssl.methods import get_method

    out = {}
    for method in methods:
        enabled = list(get_method(method).enabled_losses)
        distill = [k for k in enabled if k != "amip"]
        columns = ["step", "epoch", "lr", "weight_decay", "momentum", "teacher_temp", "loss", *enabled]
        columns += [f"{k}_entropy" for k in distill] + ["ln_k", "samples_per_s", "data_wait_s"]
        rng = np.random.default_rng(_seed("pretrain", method))
        step = np.arange(steps)
        data = {
            "step": step,
            "epoch": step // 4,
            "lr": 8e-4 * np.minimum(1, (step + 1) / 4),
            "weight_decay": 0.04,
            "momentum": 0.996,
            "teacher_temp": 0.04,
        }
        for name in enabled:
            data[name] = (0.5 if name == "amip" else 5.0) * np.exp(-step / 10) + rng.uniform(0, 0.05, steps)
        data["loss"] = sum(data[k] * (1.0 if k == "amip" else 0.1) for k in enabled)
        for name in distill:
            data[f"{name}_entropy"] = 2.0 + rng.uniform(0, 0.2, steps)
        data.update(ln_k=np.log(256), samples_per_s=0.25, data_wait_s=0.05)
        path = root / "pretrain" / method / "metrics.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(data)[columns].to_csv(path, index=False)
        out[method] = path
    return out


# --------------------------------------------------------------------------------------- attention maps
def write_attention_maps(root: Path, methods: Sequence[str] = ATTENTION_METHODS) -> dict[str, Path]:
    """Per method one case: <case>.nii.gz (float32 attention) and <case>_{axial,coronal,sagittal}.png."""
    import matplotlib.pyplot as plt

    out = {}
    for method in methods:
        folder = root / "attention_maps" / method
        values = np.random.default_rng(_seed("attention", method)).random((8, 12, 12)).astype(np.float32)
        _write_nifti(values, folder / "case-001.nii.gz")
        for view, image in zip(ATTENTION_VIEWS, (values[4], values[:, 6], values[:, :, 6]), strict=True):
            plt.imsave(folder / f"case-001_{view}.png", image, cmap="inferno")
        out[method] = folder
    return out


# ------------------------------------------------------------------------------------------------- fixtures
def build_result_inputs(
    root: Path,
    *,
    classification: Sequence[str] | None = CLASSIFICATION_METHODS,
    outcome: Sequence[str] = OUTCOME_METHODS,
    segmentation: Sequence[tuple[str, str]] = SEGMENTATION_RUNS,
    clusters: Sequence[str] = CLUSTER_METHODS,
    zeroshot: Sequence[str] = ZEROSHOT_METHODS,
    diversity: Sequence[str] = DIVERSITY_METHODS,
    pretrain: Sequence[str] = PRETRAIN_METHODS,
    attention_maps: Sequence[str] = ATTENTION_METHODS,
    demo: bool = True,
) -> ResultInputs:
    """Write the chosen result files under ``root`` and return the inputs naming them (None/() = not run)."""
    root.mkdir(parents=True, exist_ok=True)
    zeroshot_dirs, cohort = write_zeroshot(root, zeroshot) if zeroshot else ({}, None)
    return ResultInputs(
        classification=write_classification(root, classification, outcome) if classification else None,
        segmentation=write_segmentation(root, segmentation),
        pretrain=write_pretrain(root, pretrain),
        clusters=write_clusters(root, clusters),
        zeroshot=zeroshot_dirs,
        zeroshot_cohort=cohort,
        diversity=write_diversity(root, diversity),
        attention_maps=write_attention_maps(root, attention_maps),
        demo=demo,
    )


@pytest.fixture(scope="session")
def result_inputs(tmp_path_factory) -> ResultInputs:
    """Every kind of result, in the real formats, written once per test session (read-only for tests)."""
    return build_result_inputs(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="session")
def result_methods() -> dict[str, list[str]]:
    """The method lists behind ``result_inputs``, as the config would name them (planned_tables/figures args)."""
    return {
        "tasks": ["lidc", "outcome"],
        "classification": list(CLASSIFICATION_METHODS),
        "segmentation": sorted({m for m, _ in SEGMENTATION_RUNS}),
        "clusters": list(CLUSTER_METHODS),
        "zeroshot": list(ZEROSHOT_METHODS),
        "diversity": list(DIVERSITY_METHODS),
        "pretrain": list(PRETRAIN_METHODS),
        "attention_maps": list(ATTENTION_METHODS),
    }


@pytest.fixture
def make_result_inputs():
    """``make_result_inputs(root, classification=[...], clusters=[...], ...)``: a custom set of results."""
    return build_result_inputs
