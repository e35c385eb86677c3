"""AUC bar charts of Tasks 1 and 3 (EXPERIMENTS D1, D2, D7-D9; MIDL Fig. 2a-d, 4b, 6; preprint Tables II-V).

One figure per classification task and method family: panels LP | FT, bars grouped by training regime (100 %,
then the few-shot fractions), one colour per method. Bar = AUC on the held-out test set of the fold ensemble
(fold-averaged probabilities) with its 95 % bootstrap CI, when summary.csv has it for every bar; otherwise the
mean across folds ± sd. Black dots: the AUC of each fold's model (results.csv).

Naming rule (shared with :func:`dagman.report.figures.planned_figures`): ``classification_auc_<task>`` for the
main methods (every method outside the sweeps) and ``classification_auc_<task>_<family>`` for each sweep family
with at least one method (SA stage, PDR, loss subset; DAGMaN is added to each as its reference point).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from dagman.report.figures_base import (
    figure_legend,
    house_style,
    method_handles,
    new_figure,
    regime_order,
    regime_text,
    safe_name,
    suptitle,
)
from dagman.report.style import CHANCE_COLOUR, method_colour, method_family, sort_methods, task_title

__all__ = ["FAMILY_TITLES", "classification_figures", "plot_auc_bars"]

#: Figure-name suffix and title of each method family (``method_family``); "main" has no suffix.
FAMILY_TITLES = {
    "main": ("", "method comparison"),
    "sa_stage": ("_sa_stage", "SA placement (DAGMaN: stage 3)"),
    "pdr": ("_pdr", "PDR sweep (DAGMaN: PDR 0.7)"),
    "loss": ("_loss", "loss ablation (DAGMaN: all four losses)"),
}
_MODES = {"lp": "Linear probing (LP)", "ft": "Fine-tuning (FT)"}


def classification_figures(tasks: Iterable[str], methods: Iterable[str]) -> dict[str, tuple[str, list[str]]]:
    """``{figure name: (task, methods in legend order)}`` for the tasks and methods (the naming rule above)."""
    methods = sort_methods(methods)
    families: dict[str, list[str]] = {}
    for m in methods:
        families.setdefault(method_family(m), []).append(m)
    out: dict[str, tuple[str, list[str]]] = {}
    for task in tasks:
        for family, members in families.items():
            suffix, _ = FAMILY_TITLES[family]
            shown = (
                members
                if family == "main"
                else sort_methods([*members, *(["dagman"] if "dagman" in methods else [])])
            )
            out[f"classification_auc_{safe_name(task)}{suffix}"] = (str(task), shown)
    return out


def _bar_values(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series, str]:
    """(height, lower error, upper error, y label): mean ± sd over folds, or the ensemble's CI with one fold."""
    if len(rows) and (rows["n_folds"].astype(float) >= 2).all():
        height = rows["auc_mean"].astype(float)
        sd = rows["auc_sd"].astype(float).fillna(0.0)
        return height, sd, sd, "test AUC (mean ± sd over folds)"
    height = rows["ensemble_auc"].astype(float)
    low = (height - rows["ensemble_auc_ci_low"].astype(float)).clip(lower=0)
    high = (rows["ensemble_auc_ci_high"].astype(float) - height).clip(lower=0)
    return height, low, high, "test AUC, fold ensemble (95 % CI)"


@house_style
def plot_auc_bars(
    summary: pd.DataFrame,
    results: pd.DataFrame | None,
    task: str,
    methods: Sequence[str],
    family_title: str = "methods",
):
    """The AUC bar figure of one task and one method list (rows of other tasks/methods are ignored).

    Args:
        summary: summary.csv rows (``SUMMARY_COLUMNS``).
        results: results.csv rows (per fold), or None for no fold dots.
        task: the task to draw.
        methods: methods in legend order; those without rows are left out.
        family_title: what the methods are (goes into the title).
    """
    rows = summary[(summary["task"].astype(str) == str(task)) & summary["method"].isin(methods)].copy()
    if rows.empty:
        raise ValueError(f"summary.csv has no rows for task {task!r} and methods {', '.join(methods)}")
    methods = [m for m in methods if m in set(rows["method"])]
    modes = [m for m in _MODES if m in set(rows["mode"])] + sorted(set(rows["mode"]) - set(_MODES))
    regimes = regime_order(rows["regime"].astype(str))
    height, low, high, ylabel = _bar_values(rows)
    rows = rows.assign(_h=height, _lo=low, _hi=high)
    folds = None
    if results is not None and len(results):
        folds = results[(results["task"].astype(str) == str(task)) & results["method"].isin(methods)]

    width = min(0.8 / len(methods), 0.3)
    bars = len(regimes) * len(methods)
    if bars * len(modes) <= 24:  # LP | FT side by side
        fig, axes = new_figure(
            1, len(modes), width=max(2.5 + 0.33 * len(modes) * bars, 6.5), height=3.6, sharey=True
        )
    else:  # many bars: LP above FT, so that the figure keeps a page's proportions
        fig, axes = new_figure(
            len(modes), 1, width=min(max(2.5 + 0.25 * bars, 7.0), 12.0), height=2.9 * len(modes) + 1.1
        )
    panels = list(axes.flat)
    for ax, mode in zip(panels, modes, strict=True):
        for i, method in enumerate(methods):
            offset = (i - (len(methods) - 1) / 2) * width
            sel = rows[(rows["mode"] == mode) & (rows["method"] == method)].set_index("regime")
            x = np.arange(len(regimes)) + offset
            values = [sel["_h"].get(r, math.nan) for r in regimes]
            errors = [
                [sel["_lo"].get(r, math.nan) for r in regimes],
                [sel["_hi"].get(r, math.nan) for r in regimes],
            ]
            ax.bar(x, values, width * 0.92, color=method_colour(method), edgecolor="black", linewidth=0.4)
            for xi, value in zip(x, values, strict=True):
                if not math.isfinite(value):  # say "not run" rather than leave a gap that reads as AUC 0
                    ax.text(
                        xi, 0.02, "not run", rotation=90, ha="center", va="bottom", fontsize=6.5, color="grey"
                    )
            ax.errorbar(x, values, yerr=errors, fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
            if folds is not None:
                f = folds[(folds["mode"] == mode) & (folds["method"] == method)]
                for j, regime in enumerate(regimes):
                    aucs = f.loc[f["regime"].astype(str) == regime, "auc"].astype(float).dropna()
                    ax.plot(np.full(len(aucs), x[j]), aucs, "o", ms=2.2, color="black", alpha=0.7, zorder=3)
        ax.axhline(0.5, color=CHANCE_COLOUR, linestyle="--", linewidth=0.9, zorder=0)
        ax.set_xticks(np.arange(len(regimes)), [regime_text(r) for r in regimes])
        ax.set_xlim(-0.5, len(regimes) - 0.5)
        ax.set_ylim(0.0, 1.02)
        if ax is panels[-1] or axes.shape[0] == 1:  # stacked panels share the bottom one's x label
            ax.set_xlabel("training data (share of the training fold)")
        ax.set_title(_MODES.get(mode, str(mode)))
        ax.grid(axis="y", color="#DDDDDD", linewidth=0.6)
        ax.set_axisbelow(True)
    for ax in panels if axes.shape[1] == 1 else panels[:1]:
        ax.set_ylabel(ylabel)
    suptitle(fig, f"{task_title(task)} - {family_title}")
    handles = method_handles(methods)
    from matplotlib.lines import Line2D

    handles.append(Line2D([], [], color=CHANCE_COLOUR, linestyle="--", label="chance (AUC 0.5)"))
    if folds is not None and len(folds):
        handles.append(Line2D([], [], marker="o", ms=3, color="black", linestyle="none", label="single fold"))
    figure_legend(fig, handles, max_columns=min(6, len(handles)))
    return fig
