"""Command-line front end of ``dagman raters-demo``: the synthetic multi-rater zero-shot cohort."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``dagman raters-demo`` to ``parser``."""
    parser.add_argument("--out", type=Path, required=True, help="output folder (images/, masks/, raters.csv)")
    parser.add_argument("--cases", type=int, default=5, help="number of CTs (default 5)")
    parser.add_argument(
        "--raters", type=int, default=5, help="expert masks per CT (default 5, as the real set)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        metavar=("Z", "Y", "X"),
        default=(48, 128, 128),
        help="CT size in voxels (default 48 128 128)",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("X", "Y", "Z"),
        default=(1.5, 1.5, 3.0),
        help="CT spacing in mm (default 1.5 1.5 3.0)",
    )


def run(args: argparse.Namespace) -> int:
    """Write the cohort and print a one-line summary."""
    from dagman.cohorts.raters_demo import write_rater_demo

    table = write_rater_demo(
        args.out,
        n_cases=args.cases,
        n_raters=args.raters,
        seed=args.seed,
        shape=tuple(args.shape),
        spacing=tuple(args.spacing),
    )
    print(
        f"wrote {table['case_id'].nunique()} CTs with {args.raters} rater masks each: {args.out / 'raters.csv'}"
    )
    return 0
