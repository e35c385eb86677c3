"""``dagman nnunet``: the nnU-Net baseline of Task 2 through the real nnunetv2 package.

Work is done by :func:`dagman.tasks.nnunet.run_nnunet`. Outputs in ``--out``: ``dice.csv`` (same columns as
``dagman segment``'s), ``metrics.json``, ``cases.csv`` (nnU-Net identifiers to case ids) and nnU-Net's own
``nnUNet_raw/``, ``nnUNet_preprocessed/``, ``nnUNet_results/`` and ``predictions/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dagman.cli import read_settings_arg
from dagman.tasks.segment_cli import named_csv

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dagman nnunet``."""
    parser.add_argument(
        "--train", type=Path, required=True, help="training case table (case_id or key, image, mask)"
    )
    parser.add_argument(
        "--test", type=named_csv, nargs="+", default=[], metavar="NAME=CSV", help="test case tables by name"
    )
    parser.add_argument(
        "--fraction", type=float, default=1.0, help="few-shot share of the training patients (1.0, 0.5, 0.25)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (nnU-Net's folders live here)")
    parser.add_argument(
        "--settings",
        default=None,
        help="JSON object or JSON file of NnUNetSettings (trainer, configuration, epochs, fold, ...)",
    )
    parser.add_argument(
        "--plan-only", action="store_true", help="stop after nnU-Net's planning and preprocessing"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Run the baseline; print the mean Dice of each test set."""
    import sys

    from dagman.tasks.nnunet import NnUNetSettings, run_nnunet

    names = [name for name, _ in args.test]
    if len(set(names)) != len(names):
        raise ValueError(f"test set names must be unique, got {names}")
    metrics = run_nnunet(
        args.train,
        dict(args.test),
        args.out,
        fraction=args.fraction,
        settings=NnUNetSettings.from_mapping(read_settings_arg(args.settings)),
        plan_only=args.plan_only,
        progress=not args.quiet,
    )
    for name, summary in metrics.get("test", {}).items():
        mean = summary["mean_dice"]
        text = "no cases" if mean is None else f"mean Dice {mean:.3f} over {summary['n']} cases"
        print(f"nnU-Net test set {name}: {text}", file=sys.stderr)
    return 0
