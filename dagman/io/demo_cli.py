"""``dagman demo``: write the synthetic demo cohort (chest CT phantoms plus broken series) as real DICOM."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dagman demo``."""
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="cohort folder; receives dicom/<PatientID>/<StudyUID>/<SeriesUID>/*.dcm and manifest.csv "
        "(an existing dicom/ there is replaced)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="fixes UIDs, anatomy, noise and file names; same seed, identical files",
    )
    parser.add_argument(
        "--cases",
        type=int,
        default=6,
        help="number of good chest CT series; six broken series (scout, gap, duplicates, truncated file, "
        "non-image object, mixed pixel spacing) are always added",
    )
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        metavar=("Z", "Y", "X"),
        default=(96, 128, 128),
        help="voxels per series (slices, rows, columns); lower it for quick tests",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("X", "Y", "Z"),
        default=(2.7, 2.7, 2.5),
        help="voxel spacing in mm (column, row, slice)",
    )


def run(args: argparse.Namespace) -> int:
    """Write the cohort and print a one-line summary."""
    from dagman.io.synthetic.demo import write_demo_cohort

    manifest = write_demo_cohort(
        args.out,
        seed=args.seed,
        n_cases=args.cases,
        shape=tuple(args.shape),
        spacing=tuple(args.spacing),
        progress=True,
    )
    n_good = int((manifest["kind"] == "good").sum())
    n_quarantine = int((manifest["expected"] == "quarantine").sum())
    print(
        f"wrote {len(manifest)} series ({n_good} good, {len(manifest) - n_good} deliberately broken, "
        f"{n_quarantine} expected in quarantine), {int(manifest['n_files'].sum())} files, "
        f"to {Path(args.out) / 'dicom'}; manifest {Path(args.out) / 'manifest.csv'}"
    )
    return 0
