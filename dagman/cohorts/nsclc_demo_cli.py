"""``dagman nsclc-demo``: the NSCLC-like synthetic cohort (CT DICOM plus RTSTRUCT tumour contours).

Work is done by :func:`dagman.cohorts.nsclc_demo.write_nsclc_demo`; feed ``OUT/dicom`` to ``dagman nsclc``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dagman nsclc-demo``."""
    parser.add_argument("--out", type=Path, required=True, help="output folder (DICOM root is OUT/dicom)")
    parser.add_argument(
        "--cases", type=int, default=6, help="number of patients; the last one has no GTV (at least 2)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of anatomy, tumours and UIDs")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=(48, 128, 128),
        metavar=("Z", "Y", "X"),
        help="voxels of each CT (slices, rows, columns)",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=(2.5, 2.5, 3.0),
        metavar=("X", "Y", "Z"),
        help="voxel spacing of each CT in mm",
    )


def run(args: argparse.Namespace) -> int:
    """Write the cohort and print a one-line summary."""
    import sys

    from dagman.cohorts.nsclc_demo import write_nsclc_demo

    manifest = write_nsclc_demo(args.out, args.cases, args.seed, shape=args.shape, spacing=args.spacing)
    n_gtv = int((manifest["expected"] == "ok").sum())
    print(
        f"{len(manifest)} NSCLC-like cases ({n_gtv} with a GTV, {len(manifest) - n_gtv} without) -> {args.out}",
        file=sys.stderr,
    )
    return 0
