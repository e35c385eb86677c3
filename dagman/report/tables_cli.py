"""Command-line front end of ``dagman tables``: the report's tables as CSV, Markdown and LaTeX."""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``dagman tables`` to ``parser``."""
    from dagman.report.results import add_input_arguments

    parser.description = (
        "Write the report's tables (classification per task, paired comparisons, key developments, loss "
        "ablation, SA placement, ViT vs Swin, segmentation Dice, cluster distances, zero-shot Dice, attention "
        "diversity) as <name>.csv, <name>.md and <name>.tex. A table is written when its inputs hold the "
        "methods it needs; give each result with the flags below (a missing file is an error naming its flag)."
    )
    add_input_arguments(parser, out_help="output folder for <name>.csv/.md/.tex")


def run(args: argparse.Namespace) -> int:
    """Write the tables and list their names."""
    from dagman.report.results import inputs_from_args
    from dagman.report.tables import write_tables

    written = write_tables(inputs_from_args(args), args.out)
    names = sorted({p.stem for p in written})
    print(f"wrote {len(names)} tables ({', '.join(names) or 'none'}) to {args.out}")
    return 0
