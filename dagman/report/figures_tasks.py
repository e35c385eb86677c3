"""Figures of Task 2 (Dice), Task 4 (UMAP, PDR sweep) and the attention-head diversity analysis.

- ``segmentation_dice``: per-case Dice, one panel per test set, boxes per method grouped by regime (MIDL Fig. 3);
- ``attention_diversity``: attention entropy and mean attention distance per Swin stage, mean ± sd over the
  stage's heads, one line per method (MIDL Fig. 4a);
- ``umap_clusters``: the 2-D UMAP of each method's OrganMNIST3D embeddings coloured by organ, the intra- and
  inter-cluster distances in each panel title (MIDL Fig. 4c; preprint Fig. 3, 8-10);
- ``pdr_sweep``: UMAP cluster distances and/or classification AUC against the pretraining PDR (P14-P18 and
  DAGMaN at 0.7; preprint section VI).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from dagman.report.figures_base import (
    figure_legend,
    house_style,
    method_handles,
    new_figure,
    regime_order,
    regime_text,
    suptitle,
)
from dagman.report.style import display_name, method_colour, pdr_of, sort_methods, task_title

__all__ = [
    "ORGAN_COLOURS",
    "TEST_SET_TITLES",
    "pdr_sources",
    "plot_diversity",
    "plot_pdr_sweep",
    "plot_segmentation_dice",
    "plot_umap_grid",
]

TEST_SET_TITLES = {"lidc": "LIDC nodules > 3 cc", "outcome": "labelled cohort tumours"}
#: 11 organ colours (Tol muted + Okabe-Ito), in MedMNIST's class order; separate from the method colours.
ORGAN_COLOURS = (
    "#CC6677",
    "#332288",
    "#88CCEE",
    "#117733",
    "#999933",
    "#DDCC77",
    "#AA4499",
    "#44AA99",
    "#0072B2",
    "#882255",
    "#E69F00",
)


def _dodge(index: int, count: int, width: float) -> float:
    return (index - (count - 1) / 2) * width


# ------------------------------------------------------------------------------------------- segmentation
@house_style
def plot_segmentation_dice(dice: pd.DataFrame):
    """Per-case Dice (``load_segmentation`` rows): a panel per test set, boxes + points per method and regime."""
    if dice.empty:
        raise ValueError("no segmentation Dice rows to plot")
    methods = sort_methods(dice["method"])
    test_sets = sorted(dice["test_set"].astype(str).unique())
    regimes = regime_order(dice["regime"].astype(str))
    width = min(0.8 / len(methods), 0.3)
    fig_width = min(max(2.0 + 0.3 * len(test_sets) * len(regimes) * len(methods), 6.5), 15.0)
    fig, axes = new_figure(1, len(test_sets), width=fig_width, height=3.6, sharey=True)
    rng = np.random.default_rng(0)  # jitter only; fixed so reruns give identical files
    for ax, test_set in zip(axes[0], test_sets, strict=True):
        part = dice[dice["test_set"].astype(str) == test_set]
        for i, method in enumerate(methods):
            for j, regime in enumerate(regimes):
                values = part.loc[(part["method"] == method) & (part["regime"] == regime), "dice"].astype(
                    float
                )
                values = values.dropna().to_numpy()
                if values.size == 0:
                    continue
                x = j + _dodge(i, len(methods), width)
                box = ax.boxplot(
                    values,
                    positions=[x],
                    widths=width * 0.8,
                    patch_artist=True,
                    showfliers=False,
                    medianprops={"color": "black", "linewidth": 1.0},
                    whiskerprops={"linewidth": 0.8},
                    capprops={"linewidth": 0.8},
                )
                box["boxes"][0].set(
                    facecolor=method_colour(method), alpha=0.55, edgecolor="black", linewidth=0.6
                )
                jitter = rng.uniform(-width * 0.25, width * 0.25, values.size)
                ax.plot(x + jitter, values, "o", ms=2.5, color=method_colour(method), mec="black", mew=0.3)
        ax.set_xticks(np.arange(len(regimes)), [regime_text(r) for r in regimes])
        ax.set_xlim(-0.5, len(regimes) - 0.5)
        ax.set_ylim(0.0, 1.02)
        ax.set_xlabel("training data (share of the training set)")
        n_cases = part["case_id"].nunique()
        ax.set_title(f"{TEST_SET_TITLES.get(test_set, test_set)} (n = {n_cases})")
        ax.grid(axis="y", color="#DDDDDD", linewidth=0.6)
        ax.set_axisbelow(True)
    axes[0][0].set_ylabel("Dice per case")
    suptitle(fig, "Task 2: tumour segmentation, Dice on the test sets")
    figure_legend(fig, method_handles(methods))
    return fig


# ---------------------------------------------------------------------------------------------- diversity
@house_style
def plot_diversity(summary: pd.DataFrame, heads: pd.DataFrame | None = None):
    """Entropy and mean attention distance per stage (``load_diversity`` rows; per-head dots from ``heads``)."""
    if summary.empty:
        raise ValueError("no attention-diversity rows to plot")
    methods = sort_methods(summary["method"])
    use_mm = summary["distance_mm_mean"].notna().all()
    panels = [
        ("entropy_mean", "entropy_var", "entropy", "attention entropy (nats)", "Attention entropy"),
        (
            "distance_mm_mean" if use_mm else "distance_mean",
            "distance_mm_var" if use_mm else "distance_var",
            "mean_distance_mm" if use_mm else "mean_distance",
            "mean attention distance (mm)" if use_mm else "mean attention distance (voxels)",
            "Mean attention distance",
        ),
    ]
    stages = sorted(int(s) for s in summary["stage"].unique())
    fig, axes = new_figure(1, 2, width=8.0, height=3.4)
    for ax, (mean_col, var_col, head_col, ylabel, title) in zip(axes[0], panels, strict=True):
        for i, method in enumerate(methods):
            rows = summary[summary["method"] == method].sort_values("stage")
            x = rows["stage"].astype(float).to_numpy() + _dodge(i, len(methods), 0.08)
            sd = np.sqrt(rows[var_col].astype(float).clip(lower=0).to_numpy())
            colour = method_colour(method)
            ax.errorbar(x, rows[mean_col], yerr=sd, color=colour, marker="o", ms=4, lw=1.5, capsize=2.5)
            if heads is not None and len(heads):
                h = heads[heads["method"] == method]
                hx = h["stage"].astype(float).to_numpy() + _dodge(i, len(methods), 0.08)
                ax.plot(hx, h[head_col], ".", ms=2.5, color=colour, alpha=0.35, zorder=1)
        ax.set_xticks(stages, [f"stage {s}" for s in stages])
        ax.set_xlabel("Swin stage")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(axis="y", color="#DDDDDD", linewidth=0.6)
    suptitle(fig, "Attention-head diversity (mean ± sd over the heads of each stage)")
    handles = method_handles(methods, kind="line")
    if heads is not None and len(heads):
        handles.append(Line2D([], [], marker=".", color="grey", linestyle="none", label="single head"))
    figure_legend(fig, handles)
    return fig


# ----------------------------------------------------------------------------------------------- clusters
@house_style
def plot_umap_grid(umap: pd.DataFrame, distances: pd.DataFrame, organs: Sequence[str] | None = None):
    """One UMAP panel per method, points coloured by organ; titles carry the UMAP-space distances.

    Args:
        umap: ``load_umap`` rows (method, label, organ, x, y).
        distances: ``load_clusters`` rows (the "umap" space rows are used).
        organs: class index -> organ name for the legend (default: OrganMNIST3D's 11 classes, all listed
            whether or not a class has points, so that every UMAP figure has the same legend).
    """
    if umap.empty:
        raise ValueError("no UMAP rows to plot")
    methods = sort_methods(umap["method"])
    if organs is None:
        from dagman.io.organmnist import ORGAN_CLASSES

        organs = ORGAN_CLASSES
    organs = dict(enumerate(organs))
    ncols = min(len(methods), 4)
    nrows = math.ceil(len(methods) / ncols)
    fig, axes = new_figure(nrows, ncols, width=2.6 * ncols + 0.4, height=2.55 * nrows + 0.9)
    space = distances[distances["space"] == "umap"].set_index("method") if len(distances) else pd.DataFrame()
    for ax, method in zip(axes.flat, methods, strict=False):
        rows = umap[umap["method"] == method]
        size = float(np.clip(2000 / max(len(rows), 1), 3, 14))  # bigger dots when there are few
        for label, organ_rows in rows.groupby("label"):
            colour = ORGAN_COLOURS[int(label) % len(ORGAN_COLOURS)]
            ax.scatter(organ_rows["x"], organ_rows["y"], s=size, color=colour, linewidths=0, alpha=0.85)
        title = display_name(method)
        if method in space.index:
            d = space.loc[method]
            title += f"\nintra {d['intra_mean']:.2f} ± {d['intra_sd']:.2f}, inter {d['inter_mean']:.2f} ± {d['inter_sd']:.2f}"
        ax.set_title(title, fontsize=8.5)
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(methods) :]:
        ax.set_visible(False)
    suptitle(fig, "Task 4: OrganMNIST3D embeddings (UMAP; distances in UMAP units, mean ± sd)")
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="none",
            ms=5,
            color=ORGAN_COLOURS[int(k) % len(ORGAN_COLOURS)],
            label=v,
        )
        for k, v in sorted(organs.items())
    ]
    figure_legend(fig, handles, max_columns=6)
    return fig


# ---------------------------------------------------------------------------------------------- PDR sweep
def pdr_sources(cluster_methods: Sequence[str], classification_methods: Sequence[str]) -> list[str]:
    """Which PDR-sweep panels the methods allow: "clusters" and/or "classification" (2+ PDR values each)."""
    out = []
    for name, methods in (("clusters", cluster_methods), ("classification", classification_methods)):
        if len({pdr_of(m) for m in methods} - {None}) >= 2:
            out.append(name)
    return out


def _pdr_points(table: pd.DataFrame) -> pd.DataFrame:
    table = table.assign(pdr=table["method"].map(pdr_of))
    return table[table["pdr"].notna()].sort_values("pdr")


@house_style
def plot_pdr_sweep(distances: pd.DataFrame, summary: pd.DataFrame):
    """Metrics against the pretraining PDR: UMAP intra/inter distances; AUC (100 %) per classification task.

    Panels are drawn for the sources with at least two PDR values (:func:`pdr_sources`).
    """
    panels: list[tuple[str, pd.DataFrame]] = []
    clusters = _pdr_points(distances[distances["space"] == "umap"]) if len(distances) else distances
    if len(clusters) and clusters["pdr"].nunique() >= 2:
        panels.append(("clusters", clusters))
    if len(summary):
        full = summary[summary["regime"].astype(str) == regime_order(summary["regime"].astype(str))[0]]
        for task in sorted(full["task"].astype(str).unique()):
            points = _pdr_points(full[full["task"].astype(str) == task])
            if points["pdr"].nunique() >= 2:
                panels.append((task, points))
    if not panels:
        raise ValueError(
            "the PDR sweep needs results of at least two PDR values (dagman-pdr* methods, dagman)"
        )
    fig, axes = new_figure(1, len(panels), width=max(3.6 * len(panels), 6.0), height=3.4)
    seen: set[str] = set()
    styles = {"inter": "-", "intra": "--", "ft": "-", "lp": "--"}
    labels = {"inter": "inter-cluster", "intra": "intra-cluster", "ft": "fine-tuning", "lp": "linear probing"}
    for ax, (source, points) in zip(axes[0], panels, strict=True):
        if source == "clusters":
            series = [("inter", "inter_mean", "inter_sd"), ("intra", "intra_mean", "intra_sd")]
            groups = [(name, points, mean, sd) for name, mean, sd in series]
            ax.set_ylabel("UMAP distance (UMAP units)")
            ax.set_title("Task 4: cluster distances (UMAP)")
        else:
            groups = [(mode, points[points["mode"] == mode], "auc_mean", "auc_sd") for mode in ("ft", "lp")]
            ax.set_ylabel("test AUC (mean ± sd)")
            ax.set_title(task_title(source), fontsize=9)
            ax.axhline(0.5, color="#555555", linestyle=":", linewidth=0.9)
        for name, rows, mean, sd in groups:
            if rows.empty:
                continue
            ax.errorbar(
                rows["pdr"],
                rows[mean],
                yerr=rows[sd].fillna(0),
                color="#444444",
                ls=styles[name],
                lw=1.2,
                capsize=2,
                zorder=1,
                label=labels[name],
            )
            ax.scatter(
                rows["pdr"],
                rows[mean],
                c=[method_colour(m) for m in rows["method"]],
                s=30,
                edgecolors="black",
                linewidths=0.5,
                zorder=2,
            )
            seen.update(rows["method"])
        ax.set_xlabel("patch drop ratio (PDR) in pretraining")
        ax.set_xticks([0.0, 0.1, 0.3, 0.5, 0.7, 0.9])
        ax.set_xlim(-0.05, 0.95)
        ax.grid(axis="y", color="#DDDDDD", linewidth=0.6)
        ax.legend(loc="best", frameon=False, fontsize=7.5)  # line styles mean different things per panel
    auc_note = "; AUC with 100 % of the training data" if any(src != "clusters" for src, _ in panels) else ""
    suptitle(fig, f"PDR sweep of DAGMaN (0.7 is the default{auc_note})")
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="none",
            color=method_colour(m),
            mec="black",
            mew=0.5,
            label=display_name(m),
        )
        for m in sorted(seen, key=pdr_of)
    ]
    figure_legend(fig, handles, max_columns=5)
    return fig
