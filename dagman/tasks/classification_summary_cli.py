"""``dagman classification-summary``: gather fine-tuning runs into results, summary and comparison tables.

Work is done by :func:`dagman.tasks.classification_summary.write_classification_summary`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dagman classification-summary``."""
    parser.add_argument(
        "--inputs",
        nargs="+",
        required=True,
        help="fine-tuning run folders (holding metrics.json), folders searched recursively, or glob patterns",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for results.csv, summary.csv and comparisons.csv"
    )
    parser.add_argument("--reference", default="dagman", help="method every other method is compared with")
    parser.add_argument(
        "--n-bootstrap", type=int, default=2000, help="bootstrap replicates (CIs, paired tests)"
    )
    parser.add_argument("--ci-level", type=float, default=0.95, help="coverage of the ensemble AUC CI")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")


def run(args: argparse.Namespace) -> int:
    """Write the three classification tables."""
    import sys

    from dagman.tasks.classification_summary import write_classification_summary

    try:
        written = write_classification_summary(
            args.inputs,
            args.out,
            reference=args.reference,
            n_bootstrap=args.n_bootstrap,
            ci_level=args.ci_level,
            seed=args.seed,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"dagman classification-summary: {error}", file=sys.stderr)
        return 1
    print("wrote " + ", ".join(str(p) for p in written.values()), file=sys.stderr)
    return 0
