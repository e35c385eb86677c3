"""``dagman outcome-demo``: write the demo's labelled outcome cohort (DICOM series, masks, cohort CSV).

Work is done by :func:`dagman.cohorts.outcome_demo.write_outcome_demo`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dagman outcome-demo``."""
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for dicom/, masks/, cohort.csv, truth.csv"
    )
    parser.add_argument("--cases", type=int, default=32, help="cases (24-40 suit a test set and 3-fold CV)")
    parser.add_argument(
        "--positive-fraction", type=float, default=0.4, help="share of label-1 cases (imbalanced on purpose)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of labels, anatomy and tumours")
    parser.add_argument(
        "--shape", type=int, nargs=3, default=(40, 96, 96), metavar=("Z", "Y", "X"), help="voxels per CT"
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=(3.0, 3.0, 3.0),
        metavar=("X", "Y", "Z"),
        help="mm per voxel",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes (0 = all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Write the cohort and report its size and label balance."""
    import sys

    from dagman.cohorts.outcome_demo import write_outcome_demo

    try:
        cohort = write_outcome_demo(
            args.out,
            n_cases=args.cases,
            positive_fraction=args.positive_fraction,
            seed=args.seed,
            shape=tuple(args.shape),
            spacing=tuple(args.spacing),
            workers=args.workers or None,
            progress=not args.quiet,
        )
    except ValueError as error:
        print(f"dagman outcome-demo: {error}", file=sys.stderr)
        return 1
    print(
        f"wrote {len(cohort)} cases ({int(cohort['label'].sum())} label 1) -> {args.out / 'cohort.csv'}",
        file=sys.stderr,
    )
    return 0
