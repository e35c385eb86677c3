"""Number formatting and the three renderings of a report table: CSV, Markdown (pipe table) and LaTeX (booktabs).

A :class:`Table` holds display strings only (numbers already formatted), so the three files show the same
cells. Markdown is a caption paragraph, a plain pipe table and note paragraphs, which Snakemake's HTML report
and GitHub both render. LaTeX is a ``table`` float with a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``),
every cell escaped, so it compiles as written.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dagman.io.atomic import write_text_atomic

__all__ = [
    "Table",
    "NOT_RUN",
    "NOT_AVAILABLE",
    "DEMO_CAPTION",
    "fmt_number",
    "fmt_auc_ci",
    "fmt_mean_sd",
    "fmt_p",
    "fmt_diff",
    "to_markdown",
    "to_latex",
    "write_table",
]

NOT_RUN = "not run"
NOT_AVAILABLE = "n/a"
DEMO_CAPTION = "Synthetic demo data: these numbers are not the paper's."


@dataclass
class Table:
    """One report table.

    Attributes:
        name: file stem (<name>.csv/.md/.tex) and LaTeX label ``tab:<name>``.
        caption: one-sentence description (what the rows and cells are).
        frame: the cells, all strings.
        notes: further sentences printed under the table (sources of paper columns, definitions).
        label_columns: how many leading columns hold labels (left-aligned); the rest are right-aligned.
        demo: the data are synthetic; the caption says so.
    """

    name: str
    caption: str
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    label_columns: int = 1
    demo: bool = False

    @property
    def full_caption(self) -> str:
        return f"{DEMO_CAPTION} {self.caption}" if self.demo else self.caption


def _finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fmt_number(value, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals; "n/a" for a missing or non-finite value."""
    return f"{float(value):.{digits}f}" if _finite(value) else NOT_AVAILABLE


def fmt_auc_ci(auc, low, high, digits: int = 3, ci_digits: int = 2) -> str:
    """ "0.642 [0.60, 0.68]": an AUC with its confidence interval (the interval left out when unknown)."""
    if not _finite(auc):
        return NOT_AVAILABLE
    text = fmt_number(auc, digits)
    if _finite(low) and _finite(high):
        text += f" [{float(low):.{ci_digits}f}, {float(high):.{ci_digits}f}]"
    return text


def fmt_mean_sd(mean, sd, digits: int = 3) -> str:
    """ "0.712 ± 0.050" (just the mean when the sd is unknown, e.g. from one value)."""
    if not _finite(mean):
        return NOT_AVAILABLE
    return f"{float(mean):.{digits}f} ± {float(sd):.{digits}f}" if _finite(sd) else fmt_number(mean, digits)


def fmt_p(p) -> str:
    """A p-value: "<0.001" below 0.001, else three decimals ("0.003", "0.420")."""
    if not _finite(p):
        return NOT_AVAILABLE
    return "<0.001" if float(p) < 0.001 else f"{float(p):.3f}"


def fmt_diff(value, digits: int = 3) -> str:
    """A signed difference: "+0.012", "-0.030"."""
    return f"{float(value):+.{digits}f}" if _finite(value) else NOT_AVAILABLE


# ------------------------------------------------------------------------------------------------ Markdown
def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table) -> str:
    """Caption paragraph, pipe table, notes; plain GitHub/Snakemake-report Markdown."""
    frame = table.frame
    header = "| " + " | ".join(_md_cell(c) for c in frame.columns) + " |"
    align = ["---" if i < table.label_columns else "--:" for i in range(len(frame.columns))]
    lines = [f"**{_md_cell(table.full_caption)}**", "", header, "| " + " | ".join(align) + " |"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    if frame.empty:
        lines += ["", "(no rows)"]
    for note in table.notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------- LaTeX
_LATEX_CHARS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "×": r"$\times$",
    "Δ": r"$\Delta$",
    "<": r"$<$",
    ">": r"$>$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "–": "--",
    "—": "---",
    "…": r"\ldots{}",
    "²": r"$^2$",
    "[": "{[}",  # a "[" right after \\ would be read as the row-skip argument
    "]": "{]}",
}


def latex_escape(text: str) -> str:
    """``text`` as LaTeX text: special characters escaped, the few non-ASCII symbols used here as math."""
    out = "".join(_LATEX_CHARS.get(ch, ch) for ch in str(text))
    if not out.isascii():
        bad = sorted({ch for ch in out if not ch.isascii()})
        raise ValueError(f"no LaTeX spelling for character(s) {''.join(bad)!r} in {text!r}")
    return out


def to_latex(table: Table) -> str:
    """A ``table`` float with a booktabs ``tabular``, caption, label ``tab:<name>`` and notes; compiles with
    ``\\usepackage{booktabs}``."""
    frame = table.frame
    spec = "".join("l" if i < table.label_columns else "r" for i in range(len(frame.columns)))
    lines = [
        "% written by `dagman tables`; needs \\usepackage{booktabs}",
        "\\begin{table}[htbp]",
        "\\centering",
        f"\\caption{{{latex_escape(table.full_caption)}}}",
        f"\\label{{tab:{table.name}}}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_escape(c) for c in frame.columns) + " \\\\",
        "\\midrule",
    ]
    for row in frame.itertuples(index=False):
        lines.append(" & ".join(latex_escape(c) for c in row) + " \\\\")
    if frame.empty:
        lines.append(f"\\multicolumn{{{len(frame.columns)}}}{{l}}{{(no rows)}} \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    if table.notes:
        notes = " ".join(latex_escape(n) for n in table.notes)
        lines += ["", "\\smallskip", f"\\parbox{{\\linewidth}}{{\\footnotesize {notes}}}"]
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- writing
def write_table(table: Table, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``<name>.csv``, ``<name>.md`` and ``<name>.tex`` into ``out_dir`` (atomically); return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = {
        "csv": table.frame.to_csv(index=False, lineterminator="\n"),
        "md": to_markdown(table),
        "tex": to_latex(table),
    }
    written = []
    for suffix, text in texts.items():
        path = out / f"{table.name}.{suffix}"
        write_text_atomic(path, text)
        written.append(path)
    return written
