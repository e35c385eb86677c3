"""Gather fine-tuning runs into the classification tables: per run, per method across folds, and comparisons.

Reads every run folder written by :func:`dagman.tasks.classification.finetune` (``metrics.json`` +
``predictions.csv``) and writes into ``results/<run>/tasks/classification/``:

- ``results.csv``: one row per method x task x mode x regime x fold (:data:`RESULT_COLUMNS`);
- ``summary.csv``: per method x task x mode x regime, mean and sample standard deviation across folds of each
  metric, a "mean ± sd" text column for tables, and the AUC (with bootstrap CI) of the fold-averaged test
  probabilities, the ensemble of the fold models (:data:`SUMMARY_COLUMNS`);
- ``comparisons.csv``: each method against the reference method (dagman) on the same held-out test cases, per
  task x mode x regime, with DeLong's test and a paired bootstrap test (:data:`COMPARISON_COLUMNS`). Rows with
  ``level`` "fold" compare the two fold-k models; the row with ``level`` "fold-mean" compares the test
  probabilities averaged over the folds both methods have (each fold model predicts every test case once).
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dagman.io.atomic import write_csv_atomic
from dagman.tasks.metrics import bootstrap_auc_ci, delong_test, paired_bootstrap_test, roc_auc

__all__ = [
    "RESULT_COLUMNS",
    "SUMMARY_COLUMNS",
    "COMPARISON_COLUMNS",
    "SUMMARY_METRICS",
    "find_runs",
    "collect_results",
    "summarise",
    "compare_methods",
    "write_classification_summary",
]

_GROUP = ["method", "task", "mode", "fraction", "regime"]
RESULT_COLUMNS = [
    *_GROUP,
    "fold",
    "embedding",
    "encoder_kind",
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "threshold",
    "sensitivity",
    "specificity",
    "precision",
    "recall",
    "tp",
    "fp",
    "tn",
    "fn",
    "val_auc",
    "best_epoch",
    "epochs_run",
    "n_train",
    "n_train_pos",
    "n_val",
    "n_val_pos",
    "n_test",
    "n_test_pos",
    "seed",
    "run_dir",
]
#: metrics summarised across folds (mean and sd)
SUMMARY_METRICS = ["auc", "sensitivity", "specificity", "precision", "recall", "val_auc"]
SUMMARY_COLUMNS = [
    *_GROUP,
    "n_folds",
    *[f"{m}_{s}" for m in SUMMARY_METRICS for s in ("mean", "sd")],
    "auc_mean_sd",
    "ensemble_auc",
    "ensemble_auc_ci_low",
    "ensemble_auc_ci_high",
    "n_test",
]
COMPARISON_COLUMNS = [
    "task",
    "mode",
    "fraction",
    "regime",
    "method",
    "reference",
    "level",
    "fold",
    "n_cases",
    "n_pos",
    "auc_method",
    "auc_reference",
    "auc_diff",
    "delong_z",
    "delong_p",
    "bootstrap_p",
]


def find_runs(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Run folders (holding metrics.json) from folders, glob patterns or metrics.json paths; sorted, unique.

    A folder without its own metrics.json is searched recursively.
    """
    found: set[Path] = set()
    for item in inputs:
        text = str(item)
        matches = [Path(p) for p in glob.glob(text, recursive=True)] if glob.has_magic(text) else [Path(text)]
        if not matches:
            raise FileNotFoundError(f"no fine-tuning runs match {text}")
        for path in matches:
            if path.is_file() and path.name == "metrics.json":
                found.add(path.parent.resolve())
            elif (path / "metrics.json").is_file():
                found.add(path.resolve())
            elif path.is_dir():
                found.update(p.parent.resolve() for p in path.rglob("metrics.json"))
            else:
                raise FileNotFoundError(f"{path} is neither a fine-tuning run folder nor a folder of runs")
    return sorted(found)


def _result_row(run: Path) -> dict[str, Any]:
    """One results.csv row from a run folder."""
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    test = metrics["test"]
    row = {
        key: metrics.get(key) for key in ("method", "task", "mode", "fraction", "regime", "fold", "embedding")
    }
    row["encoder_kind"] = metrics.get("encoder", {}).get("kind", "")
    row.update({key: test.get(key) for key in ("auc", "auc_ci_low", "auc_ci_high", "threshold")})
    row.update({key: test.get(key) for key in ("sensitivity", "specificity", "precision", "recall")})
    row.update({key: test.get(key) for key in ("tp", "fp", "tn", "fn")})
    for key in ("val_auc", "best_epoch", "epochs_run", "n_train", "n_train_pos", "n_val", "n_val_pos"):
        row[key] = metrics.get(key)
    row["n_test"], row["n_test_pos"] = metrics.get("n_test"), metrics.get("n_test_pos")
    row["seed"] = metrics.get("settings", {}).get("seed")
    row["run_dir"] = str(run)
    return row


def collect_results(runs: Sequence[Path]) -> pd.DataFrame:
    """results.csv: one row per run, sorted; two runs of the same method x task x mode x regime x fold raise."""
    if not runs:
        raise ValueError("no fine-tuning runs given (no metrics.json found)")
    table = pd.DataFrame([_result_row(run) for run in runs], columns=RESULT_COLUMNS)
    keys = [*_GROUP, "fold"]
    duplicated = table[table.duplicated(keys, keep=False)]
    if not duplicated.empty:
        raise ValueError(
            "several runs share method x task x mode x regime x fold: "
            + ", ".join(duplicated["run_dir"].head(4))
        )
    return table.sort_values(keys, kind="stable", ignore_index=True)


def _test_predictions(run_dir: str) -> pd.DataFrame:
    """Held-out test predictions (key, label, prob) of one run, indexed by key."""
    predictions = pd.read_csv(Path(run_dir) / "predictions.csv", dtype={"key": str})
    return predictions[predictions["set"] == "test"].set_index("key")[["label", "prob"]]


def _fold_mean(results: pd.DataFrame) -> pd.DataFrame:
    """Test probabilities averaged over the runs (folds) of ``results``: index key, columns label, prob."""
    frames = [_test_predictions(run) for run in results["run_dir"]]
    probs = pd.concat([f["prob"] for f in frames], axis=1, join="inner").mean(axis=1)
    labels = pd.concat([f["label"] for f in frames], axis=1, join="inner")
    if not (labels.nunique(axis=1) == 1).all():
        raise ValueError(
            "test labels differ between fold runs of one method: the runs used different split files"
        )
    return pd.DataFrame({"label": labels.iloc[:, 0], "prob": probs})


def summarise(
    results: pd.DataFrame, *, n_bootstrap: int = 2000, level: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """summary.csv: per method x task x mode x regime, mean and sd across folds plus the fold ensemble's AUC."""
    rows = []
    for group, part in results.groupby(_GROUP, sort=True):
        row: dict[str, Any] = dict(zip(_GROUP, group, strict=True))
        row["n_folds"] = len(part)
        for metric in SUMMARY_METRICS:
            values = pd.to_numeric(part[metric], errors="coerce")
            row[f"{metric}_mean"] = float(values.mean())
            row[f"{metric}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        sd = row["auc_sd"]
        row["auc_mean_sd"] = (
            f"{row['auc_mean']:.3f} ± {sd:.3f}" if math.isfinite(sd) else f"{row['auc_mean']:.3f}"
        )
        ensemble = _fold_mean(part)
        row["n_test"] = len(ensemble)
        try:
            row["ensemble_auc"] = roc_auc(ensemble["label"], ensemble["prob"])
            low, high = bootstrap_auc_ci(
                ensemble["label"], ensemble["prob"], n_bootstrap=n_bootstrap, level=level, seed=seed
            )
        except ValueError:
            row["ensemble_auc"], low, high = math.nan, math.nan, math.nan
        row["ensemble_auc_ci_low"], row["ensemble_auc_ci_high"] = low, high
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _compare(
    method: pd.DataFrame, reference: pd.DataFrame, n_bootstrap: int, seed: int
) -> dict[str, float | int]:
    """DeLong and paired-bootstrap comparison of two prediction frames on their common test cases."""
    joined = method.add_suffix("_m").join(reference.add_suffix("_r"), how="inner")
    if not (joined["label_m"] == joined["label_r"]).all():
        raise ValueError("test labels differ between methods: the runs used different split files")
    y = joined["label_m"].to_numpy(dtype=int)
    out: dict[str, float | int] = {"n_cases": len(joined), "n_pos": int(y.sum())}
    try:
        delong = delong_test(y, joined["prob_m"].to_numpy(), joined["prob_r"].to_numpy())
        _, boot_p = paired_bootstrap_test(
            y, joined["prob_m"].to_numpy(), joined["prob_r"].to_numpy(), n_bootstrap=n_bootstrap, seed=seed
        )
    except ValueError:
        # too few cases of a class for DeLong or the AUC: report the comparison as not computable
        return {
            **out,
            **dict.fromkeys(("auc_method", "auc_reference", "auc_diff", "delong_z", "delong_p"), math.nan),
            "bootstrap_p": math.nan,
        }
    return {
        **out,
        "auc_method": delong.auc_a,
        "auc_reference": delong.auc_b,
        "auc_diff": delong.difference,
        "delong_z": delong.z,
        "delong_p": delong.p_value,
        "bootstrap_p": boot_p,
    }


def compare_methods(
    results: pd.DataFrame, reference: str = "dagman", *, n_bootstrap: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """comparisons.csv: every method against ``reference`` on the same test cases (see the module docstring)."""
    rows = []
    setting_cols = ["task", "mode", "fraction", "regime"]
    for setting, part in results.groupby(setting_cols, sort=True):
        ref = part[part["method"] == reference]
        if ref.empty:
            continue
        for method, runs in part[part["method"] != reference].groupby("method", sort=True):
            base = {**dict(zip(setting_cols, setting, strict=True)), "method": method, "reference": reference}
            common = sorted(set(runs["fold"]) & set(ref["fold"]))
            for fold in common:
                ours = _test_predictions(runs.loc[runs["fold"] == fold, "run_dir"].iloc[0])
                theirs = _test_predictions(ref.loc[ref["fold"] == fold, "run_dir"].iloc[0])
                rows.append(
                    {**base, "level": "fold", "fold": fold, **_compare(ours, theirs, n_bootstrap, seed)}
                )
            if common:
                ours = _fold_mean(runs[runs["fold"].isin(common)])
                theirs = _fold_mean(ref[ref["fold"].isin(common)])
                rows.append(
                    {**base, "level": "fold-mean", "fold": "", **_compare(ours, theirs, n_bootstrap, seed)}
                )
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def write_classification_summary(
    inputs: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    reference: str = "dagman",
    n_bootstrap: int = 2000,
    ci_level: float = 0.95,
    seed: int = 0,
) -> dict[str, Path]:
    """Find the runs under ``inputs`` and write results.csv, summary.csv and comparisons.csv into ``out_dir``.

    Returns:
        The written paths under the keys "results", "summary" and "comparisons".
    """
    results = collect_results(find_runs(inputs))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "results": results,
        "summary": summarise(results, n_bootstrap=n_bootstrap, level=ci_level, seed=seed),
        "comparisons": compare_methods(results, reference, n_bootstrap=n_bootstrap, seed=seed),
    }
    written = {}
    for name, frame in tables.items():
        written[name] = out / f"{name}.csv"
        write_csv_atomic(written[name], frame, lineterminator="\n", float_format="%.6g")
    return written
