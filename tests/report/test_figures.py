"""The report figures: every figure renders from the fixture results, the planned names are the written ones,
method colours are fixed and the same in every figure, and demo figures say their data are synthetic."""

from __future__ import annotations

import argparse

import pytest
from matplotlib.colors import to_hex

from dagman.report import results
from dagman.report.figures import planned_figures, write_figures
from dagman.report.figures_base import FORMATS, new_figure, save_figure
from dagman.report.figures_classification import plot_auc_bars
from dagman.report.figures_tasks import plot_diversity
from dagman.report.style import (
    DEMO_FOOTNOTE,
    METHOD_ORDER,
    display_name,
    method_colour,
    method_family,
    pdr_of,
    sort_methods,
)


@pytest.fixture(scope="module")
def written(result_inputs, tmp_path_factory):
    """Every figure of the session fixture, written once: (output folder, names written)."""
    out = tmp_path_factory.mktemp("figures")
    return out, write_figures(result_inputs, out)


# ------------------------------------------------------------------------------------------------- style
def test_style_covers_every_method_with_its_own_colour():
    """All registry methods plus the references have a place in the order, a name and a distinct fixed colour."""
    from dagman.ssl.methods import list_methods

    expected = {*list_methods(), "random", "resnet50", "nnunet"}
    assert expected == set(METHOD_ORDER)
    colours = [method_colour(m) for m in METHOD_ORDER]
    assert len(set(colours)) == len(colours)
    assert len({display_name(m) for m in METHOD_ORDER}) == len(METHOD_ORDER)
    assert display_name("dagman-pdr0.3") == "DAGMaN, PDR 0.3"
    assert display_name("dagman-loss-amip+ampd") == "DAGMaN, AMIP+AMPD"


def test_colours_are_fixed_and_unknown_names_stable():
    """DAGMaN is vermillion everywhere; a name outside the table gets the same fallback colour every time."""
    assert method_colour("dagman") == "#D55E00"
    assert method_colour("smit") == "#0072B2"
    assert method_colour("future-method") == method_colour("future-method")
    assert display_name("future-method") == "future-method"


def test_sort_family_and_pdr():
    assert sort_methods(["dagman", "zzz", "random", "smit", "dagman"]) == ["random", "smit", "dagman", "zzz"]
    assert [method_family(m) for m in ("dagman", "dagman-sa2", "dagman-pdr0.5", "dagman-loss-amip")] == [
        "main",
        "sa_stage",
        "pdr",
        "loss",
    ]
    assert (pdr_of("dagman"), pdr_of("dagman-pdr0.1"), pdr_of("smit")) == (0.7, 0.1, None)


def test_method_colour_is_the_same_in_bars_and_lines(result_inputs):
    """The DAGMaN bars of the AUC figure and the DAGMaN line of the diversity figure use style's colour."""
    summary = results.load_classification_summary(result_inputs)
    fig = plot_auc_bars(summary, None, "lidc", ["dagman", "smit"])
    bar_colours = {to_hex(p.get_facecolor()) for ax in fig.axes for p in ax.patches}
    assert {method_colour("dagman").lower(), method_colour("smit").lower()} <= bar_colours
    fig = plot_diversity(results.load_diversity(result_inputs))
    line_colours = {to_hex(line.get_color()) for ax in fig.axes for line in ax.get_lines()}
    assert method_colour("dagman").lower() in line_colours


# --------------------------------------------------------------------------------------------- rendering
def test_every_figure_renders_as_png_and_pdf(written):
    out, names = written
    assert len(names) == len(set(names)) >= 10
    for name in names:
        for fmt in FORMATS:
            path = out / f"{name}.{fmt}"
            assert path.is_file() and path.stat().st_size > 5000, path
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.{f}" for n in names for f in FORMATS)


def test_planned_figures_are_the_written_ones(result_inputs, written):
    """Planned from the fixture's method lists; its outcome task ran fewer methods, so it is planned alone."""
    _, names = written
    summary = results.load_classification_summary(result_inputs)
    per_task = {t: sorted(summary.loc[summary["task"] == t, "method"].unique()) for t in ("lidc", "outcome")}
    lidc = planned_figures(
        ["lidc"],
        per_task["lidc"],
        sorted({key.rpartition(":")[0] for key in result_inputs.segmentation}),
        list(result_inputs.clusters),
        list(result_inputs.zeroshot),
        list(result_inputs.diversity),
        list(result_inputs.pretrain),
        list(result_inputs.attention_maps),
    )
    outcome = planned_figures(["outcome"], per_task["outcome"])
    assert per_task["outcome"] != per_task["lidc"]
    assert sorted(names) == sorted(set(lidc) | set(outcome))


def test_pdr_sweep_needs_two_pdr_values(make_result_inputs, tmp_path):
    """dagman (PDR 0.7) and dagman-pdr0.3 in clustering and on one task give the PDR figures, nothing else."""
    pdr = ["dagman", "dagman-pdr0.3"]
    none = dict(segmentation=(), zeroshot=(), diversity=(), pretrain=(), attention_maps=())
    inputs = make_result_inputs(tmp_path / "in", classification=pdr, outcome=(), clusters=pdr, **none)
    names = write_figures(inputs, tmp_path / "out")
    assert names == planned_figures(["lidc"], pdr, cluster_methods=pdr)
    assert names == ["classification_auc_lidc", "classification_auc_lidc_pdr", "umap_clusters", "pdr_sweep"]
    assert "pdr_sweep" not in planned_figures(cluster_methods=["dagman", "smit"])
    # PDR methods among the classification methods count only where a task ran them
    assert "pdr_sweep" not in planned_figures([], ["dagman", "dagman-pdr0.5"])
    assert "pdr_sweep" in planned_figures(["lidc"], ["dagman", "dagman-pdr0.5"])


def test_planned_figures_of_the_demo_config():
    """Known answer for config/config.yaml's method lists."""
    names = planned_figures(
        ["lidc", "outcome"],
        ["dagman", "smit", "random"],
        ["dagman", "random"],
        ["dagman", "smit", "dagman-no-nt"],
        ["dagman", "dagman-no-nt"],
        ["dagman", "smit", "dagman-no-nt"],
        ["dagman", "smit", "dagman-no-nt"],
        ["dagman", "dagman-no-nt"],
    )
    assert names == [
        "classification_auc_lidc",
        "classification_auc_outcome",
        "segmentation_dice",
        "umap_clusters",
        "attention_diversity",
        "pretrain_losses",
        "attention_maps",
        "zeroshot_examples",
    ]
    assert planned_figures(["lidc"], ["dagman", "dagman-sa2", "dagman-loss-amip"]) == [
        "classification_auc_lidc",
        "classification_auc_lidc_sa_stage",
        "classification_auc_lidc_loss",
    ]
    assert planned_figures() == []


def test_demo_footnote_only_with_demo(tmp_path):
    texts = {}
    for demo in (True, False):
        fig, _ = new_figure()
        save_figure(fig, tmp_path, f"demo-{demo}", demo=demo)
        texts[demo] = [t.get_text() for t in fig.texts]
    assert DEMO_FOOTNOTE in texts[True]
    assert DEMO_FOOTNOTE not in texts[False]


def test_cli_writes_the_figures_of_its_flags(result_inputs, tmp_path, capsys):
    from dagman.report import figures_cli

    parser = argparse.ArgumentParser()
    figures_cli.add_arguments(parser)
    subset = results.ResultInputs(
        pretrain=result_inputs.pretrain, diversity=result_inputs.diversity, demo=True
    )
    args = parser.parse_args([*results.input_arguments(subset), "--out", str(tmp_path)])
    assert figures_cli.run(args) == 0
    assert "attention_diversity, pretrain_losses" in capsys.readouterr().out
    assert (tmp_path / "pretrain_losses.png").is_file() and (tmp_path / "attention_diversity.pdf").is_file()
