"""``dagman nsclc``: NSCLC-style cohort (CT + RTSTRUCT) to 2 mm images and tumour masks.

Work is done by :func:`dagman.cohorts.nsclc.build_nsclc_cohort`. Outputs: ``OUT/cases.csv``,
``OUT/report.csv`` (cases without a usable GTV, with the reason), ``OUT/images/``, ``OUT/masks/`` and the
conversion tables under ``OUT/converted/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dagman nsclc``."""
    from dagman.cohorts.rtstruct import DEFAULT_GTV_NAMES

    parser.add_argument(
        "--dicom-root", type=Path, required=True, help="DICOM folder tree holding CT series and RTSTRUCTs"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--roi-names",
        nargs="+",
        default=list(DEFAULT_GTV_NAMES),
        metavar="NAME",
        help="tumour ROI names, in priority order, matched case-insensitively (default: %(default)s)",
    )
    parser.add_argument("--spacing", type=float, default=2.0, help="isotropic output spacing in mm")
    parser.add_argument(
        "--case-ids",
        choices=("pseudonym", "patient-id"),
        default="pseudonym",
        help="case ids: pseudonymous hash of PatientID, or the PatientID of a public anonymised set",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all usable cores)")


def run(args: argparse.Namespace) -> int:
    """Build the cohort and print a one-line summary."""
    import sys

    from dagman.cohorts.nsclc import build_nsclc_cohort

    cases, report = build_nsclc_cohort(
        args.dicom_root,
        args.out,
        roi_names=args.roi_names,
        spacing=args.spacing,
        case_ids=args.case_ids,
        workers=args.workers,
    )
    n_ok = int((cases["status"] == "ok").sum())
    print(
        f"NSCLC cohort: {n_ok} cases with a GTV mask, {len(report)} reported without one "
        f"(see {args.out / 'report.csv'})",
        file=sys.stderr,
    )
    return 0
