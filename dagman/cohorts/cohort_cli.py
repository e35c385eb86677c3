"""``dagman cohort-crops``: a labelled cohort CSV (Task 3) to 2 mm tumour crops and crops.csv.

Work is done by :func:`dagman.cohorts.cohort.build_cohort_crops`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dagman cohort-crops``."""
    parser.add_argument(
        "--cohort",
        type=Path,
        required=True,
        help="cohort CSV: case_id, image (DICOM folder or NIfTI, relative to the CSV), label (0/1), optional "
        "patient_id, mask (NIfTI) or center_x/center_y/center_z (mm, LPS)",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for images/, masks/ and crops.csv")
    parser.add_argument("--spacing", type=float, default=2.0, help="isotropic spacing of the crops in mm")
    parser.add_argument("--crop-size", type=int, default=32, help="crop edge in voxels (32 at 2 mm = 64 mm)")
    parser.add_argument("--workers", type=int, default=1, help="processes working on cases (0 = all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Crop the cohort and report how many cases were cropped and skipped."""
    import sys

    from dagman.cohorts.cohort import build_cohort_crops

    try:
        crops = build_cohort_crops(
            args.cohort,
            args.out,
            spacing=args.spacing,
            crop_size=args.crop_size,
            workers=args.workers or None,
            progress=not args.quiet,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"dagman cohort-crops: {error}", file=sys.stderr)
        return 1
    skipped = crops[crops["status"] != "cropped"]
    print(
        f"cropped {len(crops) - len(skipped)} cases, skipped {len(skipped)} -> {args.out / 'crops.csv'}",
        file=sys.stderr,
    )
    for _, row in skipped.iterrows():
        print(f"  skipped {row['key']}: {row['reason']}", file=sys.stderr)
    return 1 if len(skipped) == len(crops) else 0
