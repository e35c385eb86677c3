"""Ablation tables on Task 1 (EXPERIMENTS D7-D9 and preprint Table VI): every variant is a row or cell, shown
as "not run" when its method did not run. AUCs are the fold ensemble's with its 95 % CI, at the largest
training regime present (100 % in the paper)."""

from __future__ import annotations

import pandas as pd

from dagman.report.paper_numbers import (
    KEY_DEVELOPMENTS_FT_AUC,
    LOSS_ABLATION_FT_AUC,
    SA_PLACEMENT,
    VIT_SWIN,
)
from dagman.report.style import display_name
from dagman.report.tables_classification import auc_cell, top_fraction
from dagman.report.tables_render import NOT_RUN, Table, fmt_mean_sd, fmt_number

__all__ = [
    "KEY_DEVELOPMENT_CELLS",
    "LOSS_ROWS",
    "SA_ROWS",
    "VIT_SWIN_ROWS",
    "key_developments_table",
    "loss_ablation_table",
    "sa_placement_table",
    "vit_swin_table",
]

#: (noisy teacher, semantic attention) -> method (preprint Table IVa).
KEY_DEVELOPMENT_CELLS = {
    (False, False): "smit",
    (True, False): "dagman-no-sa",
    (False, True): "dagman-no-nt",
    (True, True): "dagman",
}
_LOSSES = ("amip", "ampd", "aitd", "gitd")
#: (method, losses it trains with) in the order of preprint Table IVb; dagman uses all four.
LOSS_ROWS = (
    ("dagman-loss-amip", ("amip",)),
    ("dagman-loss-amip+ampd", ("amip", "ampd")),
    ("dagman-loss-amip+ampd+aitd", ("amip", "ampd", "aitd")),
    ("dagman-loss-amip+aitd+gitd", ("amip", "aitd", "gitd")),
    ("dagman-loss-ampd+aitd+gitd", ("ampd", "aitd", "gitd")),
    ("dagman", _LOSSES),
)
#: (SA stage, method): stage 3 is dagman itself.
SA_ROWS = ((1, "dagman-sa1"), (2, "dagman-sa2"), (3, "dagman"), (4, "dagman-sa4"))
#: (backbone, method) rows of the ViT vs Swin table.
VIT_SWIN_ROWS = (
    ("ViT", "attmask"),
    ("ViT", "mst"),
    ("ViT", "smit-vit"),
    ("ViT", "dagman-vit"),
    ("Swin", "ibot"),
    ("Swin", "ibot-dagman"),
    ("Swin", "smit"),
    ("Swin", "dagman"),
)


def _regime(lidc: pd.DataFrame) -> tuple[float, str, list[str]]:
    """The fraction and regime label the ablations report, and a note when it is not 100 %."""
    top = top_fraction(lidc)
    if top is None:
        return 1.0, "100%", []
    notes = [] if top[0] == 1.0 else [f"No 100 % regime was run; AUCs are at {top[1]}."]
    return top[0], top[1], notes


def _paper_note(source: str) -> str:
    return f"Paper columns: reported in {source}; not computed here."


def key_developments_table(lidc: pd.DataFrame) -> Table:
    """NT x SA grid of Task 1 fine-tuning AUC: rows noisy teacher no/yes, columns SA no/yes, plus paper."""
    fraction, regime, notes = _regime(lidc)
    rows = []
    for nt in (False, True):
        row = {"Noisy teacher": "yes" if nt else "no"}
        for sa in (False, True):
            row[f"SA {'yes' if sa else 'no'}"] = auc_cell(lidc, KEY_DEVELOPMENT_CELLS[nt, sa], "ft", fraction)
        for sa in (False, True):
            row[f"Paper: SA {'yes' if sa else 'no'}"] = fmt_number(
                KEY_DEVELOPMENTS_FT_AUC.get(KEY_DEVELOPMENT_CELLS[nt, sa])
            )
        rows.append(row)
    caption = (
        f"Key developments, Task 1 fine-tuning AUC [95 % CI] ({regime}): noisy teacher (NT) x semantic attention "
        "(SA). Neither = SMIT, NT only = DAGMaN w/o SA, SA only = DAGMaN w/o NT, both = DAGMaN."
    )
    notes = [*notes, _paper_note(KEY_DEVELOPMENTS_FT_AUC.source)]
    return Table("key_developments", caption, pd.DataFrame(rows), notes, label_columns=1)


def loss_ablation_table(lidc: pd.DataFrame) -> Table:
    """Task 1 FT and LP AUC per loss subset (preprint Table IVb), all four losses = dagman."""
    fraction, regime, notes = _regime(lidc)
    rows = []
    for method, losses in LOSS_ROWS:
        row = {"Method": display_name(method)}
        row.update({loss.upper(): "yes" if loss in losses else "no" for loss in _LOSSES})
        row["FT AUC [95 % CI]"] = auc_cell(lidc, method, "ft", fraction)
        row["LP AUC [95 % CI]"] = auc_cell(lidc, method, "lp", fraction)
        row["Paper FT AUC"] = fmt_number(LOSS_ABLATION_FT_AUC.get(method))
        rows.append(row)
    caption = (
        f"Loss ablation, Task 1 AUC [95 % CI] ({regime}) of DAGMaN pretrained with each subset of its losses."
    )
    notes = [*notes, _paper_note(LOSS_ABLATION_FT_AUC.source)]
    return Table("loss_ablation", caption, pd.DataFrame(rows), notes, label_columns=5)


def _dice_cell(segmentation: pd.DataFrame, method: str) -> tuple[str, str]:
    """Dice mean ± sd on the LIDC test set (else the first test set) at the largest fraction, and that set."""
    part = segmentation[segmentation["method"] == method]
    if part.empty:
        return NOT_RUN, ""
    part = part[part["fraction"] == part["fraction"].max()]
    test_set = "lidc" if "lidc" in set(part["test_set"]) else sorted(part["test_set"])[0]
    dice = pd.to_numeric(part.loc[part["test_set"] == test_set, "dice"], errors="coerce").dropna()
    return fmt_mean_sd(dice.mean(), dice.std(ddof=1) if len(dice) > 1 else float("nan")), test_set


def _distance_cells(clusters: pd.DataFrame, method: str) -> tuple[str, str]:
    rows = clusters[(clusters["method"] == method) & (clusters["space"] == "umap")]
    if rows.empty:
        return NOT_RUN, NOT_RUN
    r = rows.iloc[0]
    return fmt_mean_sd(r["intra_mean"], r["intra_sd"], 2), fmt_mean_sd(r["inter_mean"], r["inter_sd"], 2)


def sa_placement_table(lidc: pd.DataFrame, segmentation: pd.DataFrame, clusters: pd.DataFrame) -> Table:
    """SA at stage 1-4: Task 1 LP/FT AUC, Task 2 Dice and Task 4 UMAP distances where run, plus paper."""
    fraction, regime, notes = _regime(lidc)
    rows, test_sets = [], set()
    for stage, method in SA_ROWS:
        dice, test_set = _dice_cell(segmentation, method)
        if test_set:
            test_sets.add(test_set)
        intra, inter = _distance_cells(clusters, method)
        paper = SA_PLACEMENT.get(method, {})
        rows.append(
            {
                "SA stage": str(stage),
                "Method": display_name(method),
                "LP AUC [95 % CI]": auc_cell(lidc, method, "lp", fraction),
                "FT AUC [95 % CI]": auc_cell(lidc, method, "ft", fraction),
                "Dice": dice,
                "Intra (UMAP)": intra,
                "Inter (UMAP)": inter,
                "Paper LP AUC": fmt_number(paper.get("lp")),
                "Paper FT AUC": fmt_number(paper.get("ft")),
                "Paper intra": fmt_mean_sd(*paper["intra"], 2) if "intra" in paper else "",
                "Paper inter": fmt_mean_sd(*paper["inter"], 2) if "inter" in paper else "",
            }
        )
    caption = (
        f"Semantic-attention placement: DAGMaN with SA after Swin stage 1-4 (3 is the default). Task 1 AUC "
        f"[95 % CI] ({regime}), Task 2 Dice (mean ± sd over test cases), Task 4 intra- and inter-cluster "
        "distances in UMAP space (mean ± sd)."
    )
    if test_sets:
        notes.append(f"Dice on test set {', '.join(sorted(test_sets))}, largest training fraction run.")
    notes.append(_paper_note(SA_PLACEMENT.source))
    return Table("sa_placement", caption, pd.DataFrame(rows), notes, label_columns=2)


def vit_swin_table(lidc: pd.DataFrame) -> Table:
    """Task 1 LP/FT AUC of the ViT and Swin methods (preprint Table VI), plus paper."""
    fraction, regime, notes = _regime(lidc)
    rows = []
    for backbone, method in VIT_SWIN_ROWS:
        paper = VIT_SWIN.get(method, {})
        rows.append(
            {
                "Backbone": backbone,
                "Method": display_name(method),
                "LP AUC [95 % CI]": auc_cell(lidc, method, "lp", fraction),
                "FT AUC [95 % CI]": auc_cell(lidc, method, "ft", fraction),
                "Paper LP AUC": fmt_number(paper.get("lp")),
                "Paper FT AUC": fmt_number(paper.get("ft")),
            }
        )
    caption = f"ViT versus Swin backbones, Task 1 AUC [95 % CI] ({regime})."
    notes = [*notes, _paper_note(VIT_SWIN.source)]
    return Table("vit_vs_swin", caption, pd.DataFrame(rows), notes, label_columns=2)
