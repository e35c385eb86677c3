"""Tasks 1 and 3 tables: classification per method and regime, and the paired comparisons with the reference."""

from __future__ import annotations

import pandas as pd

from dagman.report.paper_numbers import classification_task_numbers
from dagman.report.style import display_name, sort_methods, task_title
from dagman.report.tables_render import (
    NOT_RUN,
    Table,
    fmt_auc_ci,
    fmt_diff,
    fmt_mean_sd,
    fmt_number,
    fmt_p,
)

__all__ = [
    "MODE_NAMES",
    "top_fraction",
    "summary_row",
    "auc_cell",
    "classification_table",
    "comparisons_table",
]

TASK_SHORT = {"lidc": "Task 1 (LIDC)", "outcome": "Task 3 (outcome)"}
MODE_NAMES = {"lp": "LP", "ft": "FT"}
_RATES = {"precision": "Precision", "sensitivity": "Sensitivity (recall)", "specificity": "Specificity"}
_AUC_NOTE = (
    "AUC: held-out test AUC of the fold ensemble (test probabilities averaged over the fold models) with its 95 % "
    "bootstrap CI; AUC folds: mean ± sd over the fold models."
)


def _regime_order(frame: pd.DataFrame) -> list[tuple[float, str]]:
    """(fraction, regime) pairs present, largest training fraction first."""
    pairs = frame[["fraction", "regime"]].drop_duplicates()
    return sorted(((float(f), r) for f, r in pairs.itertuples(index=False)), reverse=True)


def top_fraction(summary: pd.DataFrame) -> tuple[float, str] | None:
    """The largest training fraction in ``summary`` and its regime label (the ablations report that regime)."""
    order = _regime_order(summary)
    return order[0] if order else None


def summary_row(summary: pd.DataFrame, method: str, mode: str, fraction: float) -> pd.Series | None:
    rows = summary[
        (summary["method"] == method) & (summary["mode"] == mode) & (summary["fraction"] == fraction)
    ]
    return rows.iloc[0] if len(rows) else None


def auc_cell(summary: pd.DataFrame, method: str, mode: str, fraction: float) -> str:
    """ "0.642 [0.60, 0.68]" (fold-ensemble AUC and CI) of one method, mode and fraction, or "not run"."""
    row = summary_row(summary, method, mode, fraction)
    if row is None:
        return NOT_RUN
    return fmt_auc_ci(row["ensemble_auc"], row["ensemble_auc_ci_low"], row["ensemble_auc_ci_high"])


def classification_table(summary: pd.DataFrame, task: str) -> Table:
    """Rows regime x method x mode: AUC [CI], fold AUC mean ± sd, precision, recall, sensitivity, specificity."""
    part = summary[summary["task"] == task]
    paper = classification_task_numbers(task)
    top = top_fraction(part)
    rows = []
    for fraction, regime in _regime_order(part):
        for method in sort_methods(part["method"]):
            for mode in ("lp", "ft"):
                row = summary_row(part, method, mode, fraction)
                if row is None:
                    continue
                cells = {
                    "Regime": regime,
                    "Method": display_name(method),
                    "Mode": MODE_NAMES.get(mode, mode),
                    "AUC [95 % CI]": fmt_auc_ci(
                        row["ensemble_auc"], row["ensemble_auc_ci_low"], row["ensemble_auc_ci_high"]
                    ),
                    "AUC folds": fmt_mean_sd(row["auc_mean"], row["auc_sd"]),
                }
                # recall and sensitivity are the same rate (TP / positives): one column for both
                for metric, header in _RATES.items():
                    cells[header] = fmt_mean_sd(row[f"{metric}_mean"], row[f"{metric}_sd"], 2)
                if paper is not None:
                    value = paper.get((method, mode)) if fraction == 1.0 else None
                    cells["Paper AUC"] = fmt_number(value) if value is not None else ""
                rows.append(cells)
    n_folds = int(part["n_folds"].max()) if len(part) else 0
    n_test = int(part["n_test"].max()) if len(part) else 0
    caption = (
        f"{task_title(task)}: linear probe (LP) and fine-tuning (FT) per method and training regime "
        f"({n_folds} cross-validation fold{'s' if n_folds != 1 else ''}, {n_test} held-out test cases)."
    )
    notes = [
        _AUC_NOTE,
        "Precision, sensitivity (= recall) and specificity: mean ± sd over the fold models, each at the threshold "
        "chosen on its validation fold (Youden).",
    ]
    if paper is not None:
        notes.append(f"Paper AUC: reported in {paper.source}, 100 % regime; not computed here.")
    if top is not None and top[0] != 1.0:
        notes.append(f"No 100 % regime was run; the largest is {top[1]}.")
    return Table(f"classification_{task}", caption, pd.DataFrame(rows), notes, label_columns=3)


def comparisons_table(comparisons: pd.DataFrame) -> Table:
    """One row per task x regime x mode x method: fold-ensemble AUCs, difference, DeLong and bootstrap p."""
    columns = [
        "Task",
        "Regime",
        "Mode",
        "Method",
        "Reference",
        "Cases (pos.)",
        "AUC",
        "AUC ref.",
        "ΔAUC",
        "DeLong p",
        "Bootstrap p",
        "Folds DeLong p < 0.05",
    ]
    ensemble = comparisons[comparisons["level"] == "fold-mean"]
    folds = comparisons[comparisons["level"] == "fold"]
    rows = []
    keys = ["task", "fraction", "mode"]
    settings = ensemble[keys].drop_duplicates().sort_values(keys, ascending=[True, False, False])
    for task, fraction, mode in settings.itertuples(index=False):
        here = ensemble[
            (ensemble["task"] == task) & (ensemble["fraction"] == fraction) & (ensemble["mode"] == mode)
        ]
        for method in sort_methods(here["method"]):
            row = here[here["method"] == method].iloc[0]
            per_fold = folds[
                (folds["task"] == task)
                & (folds["fraction"] == fraction)
                & (folds["mode"] == mode)
                & (folds["method"] == method)
            ]
            significant = int((pd.to_numeric(per_fold["delong_p"], errors="coerce") < 0.05).sum())
            rows.append(
                [
                    TASK_SHORT.get(task, task),
                    row["regime"],
                    MODE_NAMES.get(mode, mode),
                    display_name(method),
                    display_name(row["reference"]),
                    f"{int(row['n_cases'])} ({int(row['n_pos'])})",
                    fmt_number(row["auc_method"]),
                    fmt_number(row["auc_reference"]),
                    fmt_diff(row["auc_diff"]),
                    fmt_p(row["delong_p"]),
                    fmt_p(row["bootstrap_p"]),
                    f"{significant}/{len(per_fold)}",
                ]
            )
    caption = (
        "Paired comparisons with the reference method on the same held-out test cases: fold-ensemble AUCs "
        "(test probabilities averaged over the folds both methods have), DeLong's test and a paired bootstrap."
    )
    notes = [
        "ΔAUC = AUC - AUC ref. Last column: how many fold-k model pairs differ at DeLong p < 0.05 (two-sided, "
        "not corrected for multiple comparisons)."
    ]
    if not rows:
        notes.append("No comparison: the reference method has no runs in these settings.")
    return Table("comparisons", caption, pd.DataFrame(rows, columns=columns), notes, label_columns=5)
