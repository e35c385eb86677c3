"""Pretraining loss curves (EXPERIMENTS D13; preprint Fig. 11): total and each component loss against the step.

One panel per loss (total, then AMIP, AMPD, AITD, GITD, whichever some method logged), one line per method.
The total is the weighted sum the optimiser sees; components are unweighted. The y axis is logarithmic when the
panel's values are positive and span more than a decade (a long run's fall), linear otherwise. Long runs are smoothed (running mean) with the raw values drawn faintly underneath,
so the trend reads at a glance without hiding the noise.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from dagman.report.figures_base import figure_legend, house_style, method_handles, new_figure, suptitle
from dagman.report.style import method_colour, sort_methods

__all__ = ["LOSS_COLUMNS", "plot_pretrain_losses", "smoothing_window"]

#: metrics.csv loss columns in panel order, with their panel titles.
LOSS_COLUMNS = {
    "loss": "total (weighted sum)",
    "amip": "AMIP (masked image prediction)",
    "ampd": "AMPD (masked patch distillation)",
    "aitd": "AITD (SA image token distillation)",
    "gitd": "GITD (global image token distillation)",
}


def smoothing_window(n_steps: int) -> int:
    """Running-mean window for a run of ``n_steps`` logged steps: 1 (none) below 100 steps, else ~2 %."""
    return 1 if n_steps < 100 else max(int(round(n_steps / 50)), 2)


@house_style
def plot_pretrain_losses(metrics: pd.DataFrame):
    """Loss curves from ``load_pretrain_metrics`` rows (method, step, loss, amip, ...)."""
    if metrics.empty:
        raise ValueError("no pretraining metrics rows to plot")
    methods = sort_methods(metrics["method"])
    losses = [c for c in LOSS_COLUMNS if c in metrics.columns and metrics[c].notna().any()]
    ncols = min(len(losses), 3)
    nrows = -(-len(losses) // ncols)
    fig, axes = new_figure(nrows, ncols, width=3.3 * ncols + 0.3, height=2.6 * nrows + 0.8)
    for ax, column in zip(axes.flat, losses, strict=False):
        values = metrics[column].astype(float).dropna()
        # log only where it helps: positive values spanning more than a decade (else labels like "2x10^0")
        log = bool(len(values) and (values > 0).all() and values.max() / values.min() > 10)
        for method in methods:
            rows = metrics[metrics["method"] == method].sort_values("step")
            y = rows[column].astype(float)
            if y.notna().sum() == 0:
                continue
            colour = method_colour(method)
            window = smoothing_window(len(rows))
            if window > 1:
                ax.plot(rows["step"], y, color=colour, alpha=0.2, linewidth=0.6)
                y = y.rolling(window, min_periods=1, center=True).mean()
            ax.plot(
                rows["step"], y, color=colour, linewidth=1.4, marker="o" if len(rows) <= 30 else None, ms=2.5
            )
        if log:
            ax.set_yscale("log")
            # ticks at 1, 2, 5 x 10^k in plain numbers; matplotlib's default labels minor ticks "6x10^-1"
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(LOSS_COLUMNS[column], fontsize=9)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("loss" + (" (log scale)" if log else ""))
        ax.grid(color="#E5E5E5", linewidth=0.6, which="major")
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in list(axes.flat)[len(losses) :]:
        ax.set_visible(False)
    longest = metrics.groupby("method")["step"].count().max()
    note = (
        f" (running mean over {smoothing_window(longest)} steps, raw values faint)"
        if smoothing_window(longest) > 1
        else ""
    )
    suptitle(fig, f"Pretraining losses per step{note}")
    figure_legend(fig, method_handles(methods, kind="line"))
    return fig
