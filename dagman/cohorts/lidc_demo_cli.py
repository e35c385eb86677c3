"""``dagman lidc-demo``: the LIDC-like synthetic cohort on real LIDC scan geometry, as DICOM.

Work is done by :mod:`dagman.cohorts.lidc_demo`; point pylidc (the config's LIDC root) at ``OUT/dicom``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dagman lidc-demo``."""
    parser.add_argument("--out", type=Path, required=True, help="output folder (DICOM root is OUT/dicom)")
    parser.add_argument(
        "--patients",
        nargs="+",
        metavar="ID",
        default=None,
        help="LIDC patient ids to synthesise (default: automatic)",
    )
    parser.add_argument(
        "--n-scans",
        type=int,
        default=6,
        help="automatic choice: this many small scans with benign and malignant nodules",
    )
    parser.add_argument(
        "--max-slices", type=int, default=130, help="automatic choice: at most this many slices per scan"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of anatomy and nodule textures")
    parser.add_argument(
        "--malignant-from", type=int, default=4, help="median score from which a nodule looks malignant"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="processes writing scans (default: all cores)"
    )


def run(args: argparse.Namespace) -> int:
    """Write the cohort and print a one-line summary."""
    import sys

    from dagman.cohorts.lidc import LabelRule
    from dagman.cohorts.lidc_demo import write_lidc_demo

    manifest = write_lidc_demo(
        args.out,
        patients=args.patients,
        n_scans=args.n_scans,
        max_slices=args.max_slices,
        seed=args.seed,
        rule=LabelRule(malignant_from=args.malignant_from),
        workers=args.workers,
    )
    print(
        f"{len(manifest)} LIDC-like scans, {int(manifest['n_nodules'].sum())} nodules "
        f"({int(manifest['n_benign'].sum())} benign, {int(manifest['n_malignant'].sum())} malignant) -> "
        f"{args.out / 'dicom'}",
        file=sys.stderr,
    )
    return 0
