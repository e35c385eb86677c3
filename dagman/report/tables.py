"""The report's tables (issue #8): which are written for a configuration, and writing them.

One rule decides whether a table exists, used both by :func:`planned_tables` (the workflow declares these as
outputs) and by :func:`write_tables` (which derives the same method lists from the result files):

- ``classification_<task>``: one per classification task with at least one method (Task 1 is "lidc",
  Task 3 "outcome"); rows method x regime x mode;
- ``comparisons``: two or more classification methods (rows: each method vs the reference, from
  comparisons.csv; empty when the reference did not run);
- the ablation tables (:data:`ABLATIONS`), written when the methods run in their sources (Task 1 "lidc"
  classification; for SA placement also segmentation and clustering) include one of each group:
  ``key_developments``: dagman and one of smit, dagman-no-sa, dagman-no-nt; ``loss_ablation``: dagman and one
  dagman-loss-*; ``sa_placement``: dagman and one of dagman-sa1/-sa2/-sa4; ``vit_vs_swin``: one ViT method
  (attmask, mst, smit-vit, dagman-vit) and one Swin method (ibot, ibot-dagman, smit, dagman). Their rows list
  every variant of the experiment, "not run" where it did not run;
- ``segmentation_dice``, ``cluster_distances``, ``zeroshot_dice``, ``attention_diversity``: at least one
  method of that task.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dagman.report.results import (
    ResultInputs,
    load_classification_summary,
    load_clusters,
    load_comparisons,
    load_diversity,
    load_segmentation,
    load_zeroshot,
    load_zeroshot_summary,
)
from dagman.report.tables_render import Table, write_table

__all__ = ["ABLATIONS", "AblationRule", "planned_tables", "build_tables", "write_tables"]

#: Task 1, whose fine-tuning and linear-probe AUCs the ablation tables report (EXPERIMENTS D7-D9).
ABLATION_TASK = "lidc"
VIT_METHODS = ("attmask", "mst", "smit-vit", "dagman-vit")
SWIN_METHODS = ("ibot", "ibot-dagman", "smit", "dagman")
LOSS_METHODS = (
    "dagman-loss-amip",
    "dagman-loss-amip+ampd",
    "dagman-loss-amip+ampd+aitd",
    "dagman-loss-amip+aitd+gitd",
    "dagman-loss-ampd+aitd+gitd",
)
SA_METHODS = ("dagman-sa1", "dagman-sa2", "dagman-sa4")


@dataclass(frozen=True)
class AblationRule:
    """An ablation table exists when the union of its sources' methods meets every group.

    Attributes:
        name: table name.
        groups: method sets; each must share at least one method with the methods run.
        sources: where its methods come from: "classification" (Task 1 only), "segmentation", "clusters".
    """

    name: str
    groups: tuple[tuple[str, ...], ...]
    sources: tuple[str, ...] = ("classification",)

    def applies(self, methods: Mapping[str, set[str]]) -> bool:
        run = set().union(*(methods.get(s, set()) for s in self.sources))
        return all(run & set(group) for group in self.groups)


ABLATIONS: tuple[AblationRule, ...] = (
    AblationRule("key_developments", (("dagman",), ("smit", "dagman-no-sa", "dagman-no-nt"))),
    AblationRule("loss_ablation", (("dagman",), LOSS_METHODS)),
    AblationRule("sa_placement", (("dagman",), SA_METHODS), ("classification", "segmentation", "clusters")),
    AblationRule("vit_vs_swin", (VIT_METHODS, SWIN_METHODS)),
)


def _plan(
    task_methods: Mapping[str, Iterable[str]],
    segmentation_methods: Iterable[str],
    cluster_methods: Iterable[str],
    zeroshot_methods: Iterable[str],
    diversity_methods: Iterable[str],
) -> list[str]:
    """The one rule (module docstring): table names for the methods run per source."""
    task_methods = {t: set(m) for t, m in task_methods.items()}
    names = [f"classification_{task}" for task, methods in task_methods.items() if methods]
    classified = set().union(*task_methods.values()) if task_methods else set()
    sources = {
        "classification": task_methods.get(ABLATION_TASK, set()),
        "segmentation": set(segmentation_methods),
        "clusters": set(cluster_methods),
    }
    if len(classified) >= 2:
        names.append("comparisons")
    names += [rule.name for rule in ABLATIONS if rule.applies(sources)]
    for name, methods in (
        ("segmentation_dice", sources["segmentation"]),
        ("cluster_distances", sources["clusters"]),
        ("zeroshot_dice", set(zeroshot_methods)),
        ("attention_diversity", set(diversity_methods)),
    ):
        if methods:
            names.append(name)
    return names


def planned_tables(
    tasks: Iterable[str],
    classification_methods: Iterable[str],
    segmentation_methods: Iterable[str],
    cluster_methods: Iterable[str],
    zeroshot_methods: Iterable[str],
    diversity_methods: Iterable[str],
) -> list[str]:
    """Names of the tables ``dagman tables`` writes for a configuration (each as .csv, .md and .tex).

    Args:
        tasks: classification task names (config ``classification.tasks``, e.g. ["lidc", "outcome"]).
        classification_methods: methods run on every task (``classification.methods``).
        segmentation_methods: segmentation methods (nnunet included when enabled).
        cluster_methods, zeroshot_methods, diversity_methods: methods of Task 4, zero-shot, head diversity.
    """
    methods = list(classification_methods)
    return _plan(
        {t: methods for t in tasks},
        segmentation_methods,
        cluster_methods,
        zeroshot_methods,
        diversity_methods,
    )


def _planned_from_inputs(inputs: ResultInputs) -> list[str]:
    """:func:`planned_tables`' rule applied to the methods present in the result files."""
    summary = load_classification_summary(inputs)
    task_methods = {t: set(part["method"]) for t, part in summary.groupby("task", sort=False)}
    segmentation = {key.rpartition(":")[0] for key in inputs.segmentation}
    return _plan(task_methods, segmentation, inputs.clusters, inputs.zeroshot, inputs.diversity)


def build_tables(inputs: ResultInputs) -> list[Table]:
    """Every table the inputs allow (see the module docstring), in report order."""
    from dagman.report import tables_ablation, tables_classification, tables_tasks

    names = _planned_from_inputs(inputs)
    summary = load_classification_summary(inputs)
    built: dict[str, Table] = {}
    for name in names:
        if name.startswith("classification_"):
            task = name.removeprefix("classification_")
            built[name] = tables_classification.classification_table(summary, task)
    if "comparisons" in names:
        built["comparisons"] = tables_classification.comparisons_table(load_comparisons(inputs))
    lidc = summary[summary["task"] == ABLATION_TASK]
    segmentation = load_segmentation(inputs)
    clusters = load_clusters(inputs)
    ablations = {
        "key_developments": lambda: tables_ablation.key_developments_table(lidc),
        "loss_ablation": lambda: tables_ablation.loss_ablation_table(lidc),
        "sa_placement": lambda: tables_ablation.sa_placement_table(lidc, segmentation, clusters),
        "vit_vs_swin": lambda: tables_ablation.vit_swin_table(lidc),
        "segmentation_dice": lambda: tables_tasks.segmentation_table(segmentation),
        "cluster_distances": lambda: tables_tasks.cluster_table(clusters),
        "zeroshot_dice": lambda: tables_tasks.zeroshot_table(
            load_zeroshot(inputs), load_zeroshot_summary(inputs)
        ),
        "attention_diversity": lambda: tables_tasks.diversity_table(load_diversity(inputs)),
    }
    for name, build in ablations.items():
        if name in names:
            built[name] = build()
    tables = [built[name] for name in names]
    for table in tables:
        table.demo = inputs.demo
    return tables


def write_tables(inputs: ResultInputs, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Build every table (:func:`build_tables`) and write each as .csv, .md and .tex into ``out_dir``."""
    written: list[Path] = []
    for table in build_tables(inputs):
        written += write_table(table, out_dir)
    return written
