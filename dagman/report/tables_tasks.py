"""Tables of Task 2 (segmentation Dice), Task 4 (cluster distances), zero-shot Dice and attention-head diversity."""

from __future__ import annotations

import pandas as pd

from dagman.report.paper_numbers import CLUSTER_DISTANCES, ZEROSHOT_DICE
from dagman.report.results import percentile_text
from dagman.report.style import display_name, sort_methods
from dagman.report.tables_render import NOT_AVAILABLE, Table, fmt_mean_sd, fmt_number

__all__ = ["segmentation_table", "cluster_table", "zeroshot_table", "diversity_table"]


def _mean_sd(values: pd.Series, digits: int = 3) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return NOT_AVAILABLE
    return fmt_mean_sd(values.mean(), values.std(ddof=1) if len(values) > 1 else float("nan"), digits)


def segmentation_table(dice: pd.DataFrame) -> Table:
    """Rows method x regime x test set: Dice mean ± sd over test cases and the number of cases."""
    rows = []
    fractions = sorted(dice["fraction"].unique(), reverse=True)
    for fraction in fractions:
        for method in sort_methods(dice["method"]):
            part = dice[(dice["method"] == method) & (dice["fraction"] == fraction)]
            for test_set, cases in part.groupby("test_set", sort=True):
                scored = pd.to_numeric(cases["dice"], errors="coerce").notna().sum()
                rows.append(
                    {
                        "Regime": cases["regime"].iloc[0],
                        "Method": display_name(method),
                        "Test set": test_set,
                        "Dice": _mean_sd(cases["dice"]),
                        "n": str(int(scored)),
                    }
                )
    caption = (
        "Task 2 tumour segmentation: Dice per test case, mean ± sd, per method, training regime and test set."
    )
    notes = [
        "n: test cases with a defined Dice (cases where prediction and reference are both empty are left out)."
    ]
    return Table("segmentation_dice", caption, pd.DataFrame(rows), notes, label_columns=3)


def cluster_table(clusters: pd.DataFrame) -> Table:
    """Rows method: intra/inter-cluster distance (mean ± sd) in UMAP and embedding space, plus paper."""
    rows = []
    for method in sort_methods(clusters["method"]):
        part = clusters[clusters["method"] == method].set_index("space")
        row = {"Method": display_name(method)}
        for space, label in (("umap", "UMAP"), ("embedding", "embedding")):
            if space in part.index:
                r = part.loc[space]
                row[f"Intra ({label})"] = fmt_mean_sd(r["intra_mean"], r["intra_sd"], 2)
                row[f"Inter ({label})"] = fmt_mean_sd(r["inter_mean"], r["inter_sd"], 2)
            else:
                row[f"Intra ({label})"] = row[f"Inter ({label})"] = NOT_AVAILABLE
        first = part.iloc[0]
        row["Classes"], row["Volumes"] = str(int(first["n_classes"])), str(int(first["n_points"]))
        paper = CLUSTER_DISTANCES.get(method)
        row["Paper intra"] = fmt_mean_sd(*paper[0], 2) if paper else ""
        row["Paper inter"] = fmt_mean_sd(*paper[1], 2) if paper else ""
        rows.append(row)
    caption = (
        "Task 4 organ clustering (OrganMNIST3D): intra-cluster distance (mean distance to the class centroid, "
        "mean ± sd over classes; lower is better) and inter-cluster distance (between class centroids, mean ± sd "
        "over class pairs; higher is better), Euclidean, in the 2-D UMAP space and in the embedding space."
    )
    notes = [
        "Embedding-space distances depend on the embedding width, so compare them only between methods of one "
        "backbone.",
        f"Paper columns: UMAP space, reported in {CLUSTER_DISTANCES.source}; not computed here.",
    ]
    return Table("cluster_distances", caption, pd.DataFrame(rows), notes, label_columns=1)


def zeroshot_table(dice: pd.DataFrame, summary: pd.DataFrame) -> Table:
    """Rows method: Dice over cases and over case x rater pairs (summary.json), per rater, plus paper."""
    raters = sorted(dice["rater"].astype(str).unique())
    rows = []
    for method in sort_methods(summary["method"]):
        s = summary[summary["method"] == method].iloc[0]
        part = dice[dice["method"] == method]
        row = {
            "Method": display_name(method),
            "Cases": str(int(s["n_cases"])),
            "Dice (cases)": fmt_mean_sd(s["dice_mean"], s["dice_sd"]),
            "Dice (pairs)": fmt_mean_sd(s.get("dice_pairs_mean"), s.get("dice_pairs_sd")),
        }
        for rater in raters:
            row[f"Rater {rater}"] = _mean_sd(part.loc[part["rater"].astype(str) == rater, "dice"])
        paper = ZEROSHOT_DICE.get(method)
        row["Paper Dice"] = fmt_mean_sd(*paper, 2) if paper else ""
        rows.append(row)
    caption = (
        f"Zero-shot tumour localisation: Dice of the pretrained attention map above its {percentile_text(summary)} "
        "against each expert's mask."
    )
    notes = [
        "Dice (cases): mean ± sd over cases of each case's mean over raters; Dice (pairs): over all case x rater "
        "pairs; Rater columns: mean ± sd over cases against that rater.",
        f"Paper Dice: reported in {ZEROSHOT_DICE.source}; not computed here.",
    ]
    return Table("zeroshot_dice", caption, pd.DataFrame(rows), notes, label_columns=1)


def diversity_table(summary: pd.DataFrame) -> Table:
    """Rows method x stage: mean and variance across heads of attention entropy and mean attention distance."""
    rows = []
    for method in sort_methods(summary["method"]):
        for r in summary[summary["method"] == method].sort_values("stage").itertuples(index=False):
            rows.append(
                {
                    "Method": display_name(method),
                    "Stage": str(int(r.stage)),
                    "Heads": str(int(r.n_heads)),
                    "Entropy mean": fmt_number(r.entropy_mean),
                    "Entropy var.": fmt_number(r.entropy_var, 4),
                    "Distance mean (vox)": fmt_number(r.distance_mean, 2),
                    "Distance var. (vox²)": fmt_number(r.distance_var, 2),
                    "Distance mean (mm)": fmt_number(r.distance_mm_mean, 2),
                    "Distance var. (mm²)": fmt_number(r.distance_mm_var, 2),
                }
            )
    caption = (
        "Attention-head diversity per Swin stage: mean and variance across all heads of the stage's blocks of the "
        "attention entropy (nats) and of the mean attention distance, over the evaluation crops."
    )
    notes = [
        "A larger variance across heads means more diverse heads. Variances are population variances (ddof 0)."
    ]
    return Table("attention_diversity", caption, pd.DataFrame(rows), notes, label_columns=2)
