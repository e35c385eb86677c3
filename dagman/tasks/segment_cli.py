"""``dagman segment``: Task 2 tumour segmentation with a pretrained Swin in SwinUNETR (full or few-shot).

Work is done by :func:`dagman.tasks.segmentation.run_segmentation`. Outputs in ``--out``: ``dice.csv``
(test_set, case_id, dice, true_voxels, pred_voxels), ``metrics.json``, ``log.csv`` and ``model.pt``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dagman.cli import read_settings_arg

__all__ = ["add_arguments", "run", "named_csv"]


def named_csv(value: str) -> tuple[str, Path]:
    """Parse ``NAME=CSV``."""
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=CSV, got {value!r}")
    return name, Path(path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dagman segment``."""
    parser.add_argument(
        "--train",
        type=Path,
        required=True,
        help="training case table (case_id or key, image, mask), e.g. the cases.csv of `dagman nsclc`",
    )
    parser.add_argument(
        "--test",
        type=named_csv,
        nargs="+",
        default=[],
        metavar="NAME=CSV",
        help="test case tables by name, e.g. lidc=crops/seg_test.csv nsclc_test=cases.csv",
    )
    parser.add_argument(
        "--encoder",
        required=True,
        help="pretrained encoder folder (encoder.pt + encoder_config.json) or file, or 'random'",
    )
    parser.add_argument(
        "--arch-from",
        type=Path,
        default=None,
        help="with --encoder random: the encoder folder whose architecture to build (default: settings)",
    )
    parser.add_argument(
        "--fraction", type=float, default=1.0, help="few-shot share of the training patients (1.0, 0.5, 0.25)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--settings",
        default=None,
        help="JSON object or JSON file of SegmentationSettings (patch_size, iterations, lr, seed, ...)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Train, select, test; print the mean Dice of each test set."""
    import sys

    from dagman.tasks.segmentation import SegmentationSettings, run_segmentation

    if args.encoder != "random" and args.arch_from is not None:
        raise ValueError("--arch-from goes with --encoder random only")
    names = [name for name, _ in args.test]
    if len(set(names)) != len(names):
        raise ValueError(f"test set names must be unique, got {names}")
    metrics = run_segmentation(
        args.train,
        dict(args.test),
        args.out,
        encoder=None if args.encoder == "random" else args.encoder,
        arch_from=args.arch_from,
        fraction=args.fraction,
        settings=SegmentationSettings.from_mapping(read_settings_arg(args.settings)),
        progress=not args.quiet,
    )
    for name, summary in metrics["test"].items():
        mean = summary["mean_dice"]
        text = "no cases" if mean is None else f"mean Dice {mean:.3f} over {summary['n']} cases"
        print(f"segmentation test set {name}: {text}", file=sys.stderr)
    return 0
