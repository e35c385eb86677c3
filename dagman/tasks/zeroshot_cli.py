"""Command-line front end of ``dagman zeroshot``: zero-shot tumour localisation Dice of one encoder."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``dagman zeroshot`` to ``parser``."""
    parser.add_argument(
        "--cohort",
        type=Path,
        required=True,
        help="raters.csv: case_id, rater, image, mask (paths relative to the CSV's folder)",
    )
    parser.add_argument(
        "--encoder", type=Path, required=True, help="pretrained export folder (with SA or ViT)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (dice.csv, summary.json, masks/)"
    )
    parser.add_argument(
        "--percentile",
        type=float,
        default=90.0,
        help="attention above this percentile is tumour (default 90)",
    )
    parser.add_argument(
        "--region",
        choices=("whole", "mask-centre"),
        default="whole",
        help="whole: sliding windows over the whole CT (no label used; default); mask-centre: one "
        "training-size window centred on the raters' tumour",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        default=2.0,
        help="pretraining spacing in mm the CT is resampled to (default 2)",
    )
    parser.add_argument(
        "--window",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=(-175.0, 250.0),
        help="pretraining HU window scaled to [0, 1] (default -175 250)",
    )
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (default 0.5)")
    parser.add_argument(
        "--input-size", type=int, default=None, help="window side in voxels (default: the pretraining crop)"
    )
    parser.add_argument(
        "--method", default=None, help="method name in the outputs (default: the folder's name)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the evaluation and print the mean Dice."""
    import json

    from dagman.tasks.zeroshot import run_zeroshot

    run_zeroshot(
        args.cohort,
        args.encoder,
        args.out,
        spacing=args.spacing,
        window=tuple(args.window),
        percentile=args.percentile,
        region=args.region,
        overlap=args.overlap,
        input_size=args.input_size,
        method=args.method,
    )
    summary = json.loads((args.out / "summary.json").read_text(encoding="utf-8"))
    print(
        f"{summary['method']}: zero-shot Dice {summary['dice_mean']:.3f} ± {summary['dice_sd']:.3f} over "
        f"{summary['n_cases']} cases ({summary['n_pairs']} case-rater pairs): {args.out / 'dice.csv'}"
    )
    return 0
