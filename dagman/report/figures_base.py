"""Shared plumbing of the report figures: the Agg backend, the house style, saving PNG + PDF atomically."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import ParamSpec, TypeVar

import matplotlib

matplotlib.use("Agg")  # files only: no display on cluster nodes, and no backend race in parallel jobs

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from dagman.io.atomic import atomic_path  # noqa: E402
from dagman.report.style import DEMO_FOOTNOTE, display_name, method_colour  # noqa: E402

P = ParamSpec("P")
R = TypeVar("R")

__all__ = [
    "DPI",
    "FORMATS",
    "house_style",
    "new_figure",
    "save_figure",
    "method_handles",
    "figure_legend",
    "suptitle",
    "safe_name",
    "regime_order",
    "regime_text",
]

DPI = 150
FORMATS = ("png", "pdf")
_RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "pdf.fonttype": 42,  # TrueType in PDFs: text stays editable and searchable in journals' tools
}


def house_style(plot: Callable[P, R]) -> Callable[P, R]:
    """Decorator: run a plotting function under the report's rc settings (font sizes, spines, PDF fonts),
    without changing matplotlib's global state for anyone else in the process."""

    @functools.wraps(plot)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with plt.rc_context(_RC):
            return plot(*args, **kwargs)

    return wrapper


def new_figure(
    nrows: int = 1, ncols: int = 1, *, width: float = 7.0, height: float = 3.2, **kwargs
) -> tuple[Figure, object]:
    """A figure in the house style (``plt.subplots`` with the report's font sizes; constrained layout)."""
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(
            nrows, ncols, figsize=(width, height), layout="constrained", squeeze=False, **kwargs
        )
    for ax in axes.flat:
        for key in ("top", "right"):
            ax.spines[key].set_visible(False)
    return fig, axes


def suptitle(fig: Figure, text: str) -> None:
    """Figure title, wrapped to the figure's width so that narrow figures do not clip it."""
    import textwrap

    width = max(int(fig.get_figwidth() * 11), 30)  # characters per line at the title's 10-11 pt
    fig.suptitle("\n".join(textwrap.wrap(text, width)), fontsize=11)


def safe_name(text: str) -> str:
    """``text`` as a file-name part: letters, digits, '-', '_' and '.'; anything else becomes '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "_"


def save_figure(fig: Figure, out_dir: str | os.PathLike[str], name: str, demo: bool = False) -> list[Path]:
    """Write ``out_dir/<name>.png`` (``DPI``) and ``.pdf`` atomically, then close ``fig``.

    With ``demo`` the figure carries the footnote :data:`~dagman.report.style.DEMO_FOOTNOTE`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if demo:
        # top-right, on an empty first line of the suptitle: the layout reserves that line, whereas a note at
        # the bottom collides with the outside legend (which constrained layout puts at the very edge)
        title = fig.get_suptitle()
        fig.suptitle("\n" + title if title else "\n", fontsize=11)
        fig.text(
            0.995, 0.998, DEMO_FOOTNOTE, ha="right", va="top", fontsize=7.5, color="#B00000", style="italic"
        )
    written = []
    try:
        for fmt in FORMATS:
            path = out / f"{name}.{fmt}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=DPI)
            written.append(path)
    finally:
        plt.close(fig)
    return written


def method_handles(methods: Iterable[str], kind: str = "patch") -> list:
    """Legend handles, one per method in the given order: coloured patches (bars) or lines with markers."""
    if kind == "patch":
        return [
            Patch(facecolor=method_colour(m), edgecolor="black", linewidth=0.5, label=display_name(m))
            for m in methods
        ]
    return [
        Line2D([], [], color=method_colour(m), marker="o", markersize=4, linewidth=1.5, label=display_name(m))
        for m in methods
    ]


def figure_legend(fig: Figure, handles: Sequence, title: str | None = None, max_columns: int = 6) -> None:
    """One legend for the whole figure, centred below the panels, in as few rows as ``max_columns`` allows."""
    # as many columns as fit the figure's width (about 0.07 in per character at the legend font size)
    longest = max((len(h.get_label()) for h in handles), default=1)
    fitting = int(fig.get_figwidth() // (0.07 * longest + 0.55))
    ncol = max(1, min(len(handles), max_columns, fitting))
    # matplotlib fills legends column by column; reorder so that they read row by row, in the given order
    nrow = -(-len(handles) // ncol)
    rows = [handles[i * ncol : (i + 1) * ncol] for i in range(nrow)]
    ordered = [row[c] for c in range(ncol) for row in rows if c < len(row)]
    fig.legend(
        handles=ordered,
        loc="outside lower center",
        ncol=ncol,
        frameon=False,
        title=title,
        handlelength=1.6,
        columnspacing=1.2,
    )


def regime_order(regimes: Iterable[str]) -> list[str]:
    """Regime labels ("100%", "50%", "25%") from the most to the least training data; others last."""

    def key(label: str) -> tuple[float, str]:
        try:
            return (-float(str(label).rstrip("%")), str(label))
        except ValueError:
            return (1.0, str(label))

    return sorted(set(regimes), key=key)


def regime_text(regime: str) -> str:
    """Axis text of a regime: "100 %\\n(full)" for the full regime, "50 %\\n(few-shot)" for the others."""
    label = str(regime)
    try:
        value = float(label.rstrip("%"))
    except ValueError:
        return label
    return f"{value:g} %\n(full)" if value >= 100 else f"{value:g} %\n(few-shot)"
