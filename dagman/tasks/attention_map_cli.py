"""Command-line front end of ``dagman attention-map``: an encoder's attention on one CT as NIfTI and PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``dagman attention-map`` to ``parser``."""
    parser.add_argument(
        "--encoder",
        type=Path,
        required=True,
        help="pretrained export folder (encoder.pt, encoder_sa.pt, ...)",
    )
    parser.add_argument(
        "--image",
        type=Path,
        required=True,
        help="CT: a NIfTI (or other single image file) or a DICOM series folder",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (<stem>.nii.gz and <stem>_<view>.png)"
    )
    parser.add_argument("--stem", default="attention", help="output file stem (default attention)")
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
    parser.add_argument(
        "--overlap", type=float, default=0.5, help="overlap of the sliding windows, 0 to <1 (default 0.5)"
    )
    parser.add_argument(
        "--input-size", type=int, default=None, help="window side in voxels (default: the pretraining crop)"
    )
    parser.add_argument("--method", default=None, help="method name in titles (default: the folder's name)")


def run(args: argparse.Namespace) -> int:
    """Write the overlay files and list them."""
    from dagman.tasks.attention_map import run_attention_map

    written = run_attention_map(
        args.encoder,
        args.image,
        args.out,
        spacing=args.spacing,
        window=tuple(args.window),
        overlap=args.overlap,
        input_size=args.input_size,
        method=args.method,
        stem=args.stem,
    )
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0
