"""Command-line front end of ``dagman figures``: the report's figures (PNG + PDF) from the result files."""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``dagman figures`` (the input flags shared with ``dagman tables``) to ``parser``."""
    from dagman.report.results import add_input_arguments

    add_input_arguments(parser, out_help="output folder for <name>.png and <name>.pdf")


def run(args: argparse.Namespace) -> int:
    """Write the figures the given inputs allow and list them."""
    from dagman.report.figures import write_figures
    from dagman.report.results import inputs_from_args

    names = write_figures(inputs_from_args(args), args.out)
    if not names:
        print("no inputs given: no figures written")
        return 1
    print(f"wrote {len(names)} figure(s) to {args.out}: {', '.join(names)}")
    return 0
