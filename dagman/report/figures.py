"""The report's figures: which ones a configuration gets (:func:`planned_figures`) and writing them.

Every figure is written as ``<name>.png`` (150 dpi) and ``<name>.pdf``. The rule for each name, used both by
:func:`planned_figures` (the workflow declares the names as outputs) and by :func:`write_figures`:

====================================  ===========================================================================
name                                  written when
====================================  ===========================================================================
classification_auc_<task>             a classification method outside the sweeps (``method_family`` "main") ran
                                      on <task>
classification_auc_<task>_sa_stage    a dagman-sa<N> method ran on <task> (DAGMaN is drawn as the reference)
classification_auc_<task>_pdr         a dagman-pdr<X> method ran on <task>
classification_auc_<task>_loss        a dagman-loss-<subset> method ran on <task>
segmentation_dice                     any segmentation run (nnU-Net included)
umap_clusters                         any clustering run
pdr_sweep                             two or more PDR values (dagman-pdr<X>; dagman is 0.7) among the clustering
                                      runs, or among the classification methods of some task
attention_diversity                   any attention-diversity run
pretrain_losses                       any pretraining metrics.csv
attention_maps                        any attention-map folder
zeroshot_examples                     any zero-shot run (with its raters.csv)
====================================  ===========================================================================

``<task>`` is the task name with characters other than letters, digits, "-", "_" and "." replaced by "_".
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from dagman.report import results
from dagman.report.figures_base import save_figure
from dagman.report.figures_classification import FAMILY_TITLES, classification_figures, plot_auc_bars
from dagman.report.figures_images import plot_attention_maps, plot_zeroshot_examples
from dagman.report.figures_pretrain import plot_pretrain_losses
from dagman.report.figures_tasks import (
    pdr_sources,
    plot_diversity,
    plot_pdr_sweep,
    plot_segmentation_dice,
    plot_umap_grid,
)
from dagman.report.style import method_family

__all__ = ["planned_figures", "write_figures"]


def planned_figures(
    tasks: Iterable[str] = (),
    classification_methods: Iterable[str] = (),
    segmentation_methods: Iterable[str] = (),
    cluster_methods: Iterable[str] = (),
    zeroshot_methods: Iterable[str] = (),
    diversity_methods: Iterable[str] = (),
    pretrain_methods: Iterable[str] = (),
    attention_map_methods: Iterable[str] = (),
) -> list[str]:
    """Names of the figures ``dagman figures`` writes for results covering these methods (module docstring).

    Args:
        tasks: classification task names (config ``classification.tasks``); every task is assumed to have
            run every classification method.
        classification_methods .. attention_map_methods: the methods of each analysis (empty = not run).
    """
    tasks, classification_methods = list(tasks), list(classification_methods)
    cluster_methods = list(cluster_methods)
    names = list(classification_figures(tasks, classification_methods)) if classification_methods else []
    if list(segmentation_methods):
        names.append("segmentation_dice")
    if cluster_methods:
        names.append("umap_clusters")
    if pdr_sources(cluster_methods, classification_methods if tasks else []):
        names.append("pdr_sweep")
    for name, methods in (
        ("attention_diversity", diversity_methods),
        ("pretrain_losses", pretrain_methods),
        ("attention_maps", attention_map_methods),
        ("zeroshot_examples", zeroshot_methods),
    ):
        if list(methods):
            names.append(name)
    return names


def _classification(inputs: results.ResultInputs, out: Path, names: list[str]) -> None:
    if inputs.classification is None:
        return
    summary = results.load_classification_summary(inputs)
    per_fold = results.load_classification_results(inputs)
    for task in sorted(summary["task"].astype(str).unique()):
        methods = summary.loc[summary["task"].astype(str) == task, "method"].unique()
        for name, (_, shown) in classification_figures([task], methods).items():
            families = {method_family(m) for m in shown} - {"main"}
            family_title = FAMILY_TITLES[families.pop() if families else "main"][1]
            fig = plot_auc_bars(summary, per_fold, task, shown, family_title)
            save_figure(fig, out, name, inputs.demo)
            names.append(name)


def write_figures(inputs: results.ResultInputs, out_dir: str | os.PathLike[str]) -> list[str]:
    """Write every figure the inputs allow into ``out_dir`` (PNG + PDF); returns the names written, in order."""
    out = Path(out_dir)
    names: list[str] = []

    def save(fig, name: str) -> None:
        save_figure(fig, out, name, inputs.demo)
        names.append(name)

    _classification(inputs, out, names)
    if inputs.segmentation:
        save(plot_segmentation_dice(results.load_segmentation(inputs)), "segmentation_dice")
    distances = results.load_clusters(inputs)
    if inputs.clusters:
        save(plot_umap_grid(results.load_umap(inputs), distances), "umap_clusters")
    summary = results.load_classification_summary(inputs)
    task_methods = [summary.loc[summary["task"] == t, "method"].unique() for t in summary["task"].unique()]
    if pdr_sources(list(inputs.clusters), []) or any(pdr_sources([], list(m)) for m in task_methods):
        save(plot_pdr_sweep(distances, summary), "pdr_sweep")
    if inputs.diversity:
        save(
            plot_diversity(results.load_diversity(inputs), results.load_diversity_heads(inputs)),
            "attention_diversity",
        )
    if inputs.pretrain:
        save(plot_pretrain_losses(results.load_pretrain_metrics(inputs)), "pretrain_losses")
    if inputs.attention_maps:
        save(plot_attention_maps(results.list_attention_maps(inputs)), "attention_maps")
    if inputs.zeroshot:
        if inputs.zeroshot_cohort is None:
            raise ValueError(
                "--zeroshot needs --zeroshot-cohort (the raters.csv the runs were scored against)"
            )
        cohort = results.load_zeroshot_cohort(inputs)
        save(
            plot_zeroshot_examples(
                cohort,
                inputs.zeroshot,
                results.load_zeroshot(inputs),
                results.percentile_text(results.load_zeroshot_summary(inputs)),
            ),
            "zeroshot_examples",
        )
    return names
