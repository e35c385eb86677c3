"""Report tables: number formats, known cells from the fixture results, the table rule, renderings and the CLI."""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess

import pandas as pd
import pytest

from dagman.report import tables_cli
from dagman.report.results import input_arguments, load_classification_summary
from dagman.report.tables import planned_tables, write_tables
from dagman.report.tables_classification import auc_cell
from dagman.report.tables_render import (
    DEMO_CAPTION,
    Table,
    fmt_auc_ci,
    fmt_diff,
    fmt_mean_sd,
    fmt_number,
    fmt_p,
    latex_escape,
    to_markdown,
)

ALL_TABLES = [
    "classification_lidc",
    "classification_outcome",
    "comparisons",
    "key_developments",
    "loss_ablation",
    "sa_placement",
    "vit_vs_swin",
    "segmentation_dice",
    "cluster_distances",
    "zeroshot_dice",
    "attention_diversity",
]


@pytest.fixture(scope="module")
def tables_dir(result_inputs, tmp_path_factory):
    """The tables of the full fixture results, written once through ``dagman tables``' parser and run."""
    out = tmp_path_factory.mktemp("tables")
    parser = argparse.ArgumentParser()
    tables_cli.add_arguments(parser)
    assert tables_cli.run(parser.parse_args([*input_arguments(result_inputs), "--out", str(out)])) == 0
    return out


def _csv(folder, name) -> pd.DataFrame:
    return pd.read_csv(folder / f"{name}.csv", dtype=str, keep_default_na=False)


def test_number_formats():
    """AUC with CI, mean ± sd, p-values and differences print as the tables promise."""
    assert fmt_auc_ci(0.6421, 0.6012, 0.6838) == "0.642 [0.60, 0.68]"
    assert fmt_auc_ci(0.7, math.nan, 0.8) == "0.700"
    assert fmt_auc_ci(math.nan, 0.1, 0.2) == "n/a"
    assert fmt_mean_sd(0.71234, 0.0501, 2) == "0.71 ± 0.05"
    assert fmt_mean_sd(0.5, math.nan) == "0.500"
    assert (fmt_p(0.0004), fmt_p(0.0032), fmt_p(0.42), fmt_p(None)) == ("<0.001", "0.003", "0.420", "n/a")
    assert (fmt_diff(0.0123), fmt_diff(-0.03)) == ("+0.012", "-0.030")
    assert fmt_number("x") == "n/a"


def test_planned_tables_rule():
    """The demo config's methods give the tables they can fill; ablations need their groups."""
    demo = planned_tables(["lidc", "outcome"], ["dagman", "smit", "random"], ["dagman", "random"], [], [], [])
    assert demo == [
        "classification_lidc",
        "classification_outcome",
        "comparisons",
        "key_developments",
        "segmentation_dice",
    ]
    # ablations are Task 1 tables: without lidc only the per-task and comparison tables remain
    assert planned_tables(["outcome"], ["dagman", "smit"], [], [], [], []) == [
        "classification_outcome",
        "comparisons",
    ]
    # SA placement also counts segmentation and clustering methods; one method gives no comparison table
    assert planned_tables([], ["dagman"], ["dagman-sa2"], ["dagman"], ["dagman"], ["smit"]) == [
        "sa_placement",
        "segmentation_dice",
        "cluster_distances",
        "zeroshot_dice",
        "attention_diversity",
    ]
    assert "vit_vs_swin" not in planned_tables(["lidc"], ["attmask", "mst"], [], [], [], [])
    assert planned_tables(["lidc"], [], [], [], [], []) == []


def test_written_tables_are_the_planned_ones(tables_dir, result_methods):
    """Every table the fixture results allow is written as .csv, .md and .tex, and they are the planned ones."""
    m = result_methods
    planned = planned_tables(
        m["tasks"], m["classification"], m["segmentation"], m["clusters"], m["zeroshot"], m["diversity"]
    )
    assert planned == ALL_TABLES
    files = sorted(p.name for p in tables_dir.iterdir())
    assert files == sorted(f"{name}.{ext}" for name in planned for ext in ("csv", "md", "tex"))


def test_partial_results_write_exactly_the_planned_tables(make_result_inputs, tmp_path):
    """A run without classification: SA placement comes from segmentation + clustering alone, as planned."""
    inputs = make_result_inputs(
        tmp_path / "results",
        classification=None,
        segmentation=[("dagman", "1")],
        clusters=["dagman-sa2"],
        zeroshot=[],
        diversity=[],
        pretrain=[],
        attention_maps=[],
        demo=False,
    )
    written = write_tables(inputs, tmp_path / "tables")
    names = list(dict.fromkeys(p.stem for p in written))
    assert names == planned_tables([], [], ["dagman"], ["dagman-sa2"], [], [])
    assert names == ["sa_placement", "segmentation_dice", "cluster_distances"]
    sa = _csv(tmp_path / "tables", "sa_placement").set_index("SA stage")
    assert sa.loc["2", "LP AUC [95 % CI]"] == "not run" and sa.loc["2", "Intra (UMAP)"] != "not run"
    assert sa.loc["3", "Dice"] != "not run" and sa.loc["1", "Dice"] == "not run"
    assert DEMO_CAPTION not in (tmp_path / "tables" / "sa_placement.md").read_text(encoding="utf-8")


def test_classification_row_known_answer(tables_dir):
    """The lidc / 100 % / DAGMaN / FT row shows the summary's fold-ensemble AUC and CI and the paper's AUC."""
    table = _csv(tables_dir, "classification_lidc")
    row = table[(table["Regime"] == "100%") & (table["Method"] == "DAGMaN") & (table["Mode"] == "FT")]
    assert row["AUC [95 % CI]"].tolist() == ["0.642 [0.60, 0.68]"]
    assert row["Paper AUC"].tolist() == ["0.895"]
    # paper values belong to the 100 % regime only, and to methods the paper reports
    assert set(table.loc[table["Regime"] == "50%", "Paper AUC"]) == {""}
    assert set(table.loc[table["Method"] == "Random init", "Paper AUC"]) == {""}
    assert list(dict.fromkeys(table["Regime"])) == ["100%", "50%"]
    outcome = _csv(tables_dir, "classification_outcome")
    assert set(outcome["Method"]) == {"DAGMaN", "SMIT", "Random init"} and set(outcome["Regime"]) == {"100%"}


def test_key_developments_grid(tables_dir, result_inputs):
    """NT x SA cells hold the right methods' FT AUCs; the SA-only cell (dagman-no-nt) was not run."""
    summary = load_classification_summary(result_inputs)
    lidc = summary[summary["task"] == "lidc"]
    grid = _csv(tables_dir, "key_developments").set_index("Noisy teacher")
    assert grid.loc["no", "SA no"] == auc_cell(lidc, "smit", "ft", 1.0) != "not run"
    assert grid.loc["yes", "SA no"] == auc_cell(lidc, "dagman-no-sa", "ft", 1.0) != "not run"
    assert grid.loc["no", "SA yes"] == "not run"
    assert grid.loc["yes", "SA yes"] == "0.642 [0.60, 0.68]"
    assert grid.loc["no", "Paper: SA yes"] == "0.875" and grid.loc["yes", "Paper: SA no"] == "0.882"


def test_ablation_and_vit_rows(tables_dir):
    """Every variant is a row; missing ones say "not run"; dagman is the all-losses row and SA stage 3."""
    loss = _csv(tables_dir, "loss_ablation").set_index("Method")
    assert len(loss) == 6 and loss.loc["DAGMaN", "FT AUC [95 % CI]"] == "0.642 [0.60, 0.68]"
    assert loss.loc["DAGMaN", ["AMIP", "AMPD", "AITD", "GITD"]].tolist() == ["yes"] * 4
    assert loss.loc["DAGMaN, AMPD+AITD+GITD", "FT AUC [95 % CI]"] == "not run"
    assert loss.loc["DAGMaN, AMPD+AITD+GITD", "Paper FT AUC"] == "0.829"
    sa = _csv(tables_dir, "sa_placement").set_index("SA stage")
    assert sa.loc["1", "FT AUC [95 % CI]"] == "not run" and sa.loc["3", "Method"] == "DAGMaN"
    assert sa.loc["4", "Paper FT AUC"] == "0.684" and sa.loc["4", "Dice"] == "not run"
    vit = _csv(tables_dir, "vit_vs_swin")
    assert vit["Backbone"].tolist() == ["ViT"] * 4 + ["Swin"] * 4
    assert "not run" not in set(vit["LP AUC [95 % CI]"])


def test_comparisons_known_p_values(tables_dir):
    """The fold-mean SMIT vs DAGMaN row (lidc, 100 %, FT) prints its p-values; fold counts are per pair."""
    table = _csv(tables_dir, "comparisons")
    row = table[
        (table["Task"] == "Task 1 (LIDC)")
        & (table["Regime"] == "100%")
        & (table["Mode"] == "FT")
        & (table["Method"] == "SMIT")
    ]
    assert row[["DeLong p", "Bootstrap p", "Reference"]].values.tolist() == [["<0.001", "0.003", "DAGMaN"]]
    assert set(table["Folds DeLong p < 0.05"].str.split("/").str[1]) == {"3"}
    assert "DAGMaN" not in set(table["Method"])


def test_task_tables(tables_dir, result_inputs, result_methods):
    """Segmentation, clusters, zero-shot and diversity tables carry the files' numbers."""
    seg = _csv(tables_dir, "segmentation_dice")
    dice = pd.read_csv(result_inputs.segmentation["dagman:1"])
    lidc = dice.loc[dice["test_set"] == "lidc", "dice"]
    row = seg[(seg["Method"] == "DAGMaN") & (seg["Regime"] == "100%") & (seg["Test set"] == "lidc")]
    assert row[["Dice", "n"]].values.tolist() == [[f"{lidc.mean():.3f} ± {lidc.std(ddof=1):.3f}", "4"]]
    clusters = _csv(tables_dir, "cluster_distances").set_index("Method")
    distances = pd.read_csv(result_inputs.clusters["dagman"] / "distances.csv").set_index("space")
    umap = distances.loc["umap"]
    assert clusters.loc["DAGMaN", "Intra (UMAP)"] == f"{umap['intra_mean']:.2f} ± {umap['intra_sd']:.2f}"
    assert (
        clusters.loc["DAGMaN", "Paper inter"] == "5.93 ± 3.30"
        and clusters.loc["DAGMaN, SA stage 2", "Paper intra"] == ""
    )
    zeroshot = _csv(tables_dir, "zeroshot_dice").set_index("Method")
    assert [c for c in zeroshot.columns if c.startswith("Rater")] == ["Rater r1", "Rater r2", "Rater r3"]
    assert zeroshot.loc["DAGMaN", "Paper Dice"] == "0.62 ± 0.32"
    diversity = _csv(tables_dir, "attention_diversity")
    assert len(diversity) == 4 * len(result_methods["diversity"]) and set(diversity["Heads"]) == {"6"}


def test_markdown_and_latex_renderings(tables_dir):
    """Demo captions in .md and .tex; every Markdown row has the header's cell count; LaTeX is booktabs."""
    for name in ALL_TABLES:
        md = (tables_dir / f"{name}.md").read_text(encoding="utf-8")
        tex = (tables_dir / f"{name}.tex").read_text(encoding="utf-8")
        assert md.startswith(f"**{DEMO_CAPTION}") and DEMO_CAPTION in tex
        rows = [line for line in md.splitlines() if line.startswith("|")]
        assert len({line.count(" | ") for line in rows}) == 1, name
        assert "\\toprule" in tex and "\\bottomrule" in tex and f"\\label{{tab:{name}}}" in tex
        assert tex.count("{") == tex.count("}"), name


def test_escaping():
    """Markdown pipes and LaTeX specials are escaped; a character without a LaTeX spelling is an error."""
    table = Table("t", "a | b", pd.DataFrame({"x": ["1 | 2"]}))
    assert "1 \\| 2" in to_markdown(table) and "**a \\| b**" in to_markdown(table)
    assert latex_escape("a_b & 50% ± 1 [x]") == r"a\_b \& 50\% $\pm$ 1 {[}x{]}"
    with pytest.raises(ValueError, match="no LaTeX spelling"):
        latex_escape("α")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_latex_compiles(tables_dir, tmp_path):
    """All .tex tables compile in one document with booktabs."""
    body = "\n".join(f"\\input{{{tables_dir / name}.tex}}" for name in ALL_TABLES)
    doc = tmp_path / "doc.tex"
    doc.write_text(
        "\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
        "\\usepackage[a4paper,landscape,margin=1cm]{geometry}\n"
        f"\\begin{{document}}\n{body}\n\\end{{document}}\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:]


def test_cli_errors_name_the_flag(tmp_path):
    """A missing input file is an error naming its flag and path; a malformed pair is a usage error."""
    parser = argparse.ArgumentParser()
    tables_cli.add_arguments(parser)
    missing = tmp_path / "nowhere"
    args = parser.parse_args(["--zeroshot", f"dagman={missing}", "--out", str(tmp_path / "out")])
    with pytest.raises(FileNotFoundError, match=f"--zeroshot dagman: {missing}"):
        tables_cli.run(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["--segmentation", "dagman=dice.csv", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        parser.parse_args(["--segmentation", "dagman:1.5=dice.csv", "--out", str(tmp_path)])
