"""``dagman convert INPUT_DIR --out OUT``: discover the CT series in a DICOM folder tree and convert them.

Thin front end over :func:`dagman.io.convert.convert_tree`; see that function for the outputs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dagman convert``."""
    parser.add_argument(
        "input_dir", type=Path, help="folder tree of DICOM files (any layout, any file names)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder: images/*.nii.gz, series.csv and quarantine.csv (a rerun replaces them)",
    )
    parser.add_argument(
        "--case-ids",
        choices=("pseudonym", "patient-id"),
        default="pseudonym",
        help="pseudonym (default): case-<sha256 of PatientID>; patient-id: keep the PatientID, "
        "only for public anonymised datasets such as LIDC-IDRI",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes for reading and converting (default: all usable cores)",
    )
    parser.add_argument(
        "--min-slices",
        type=int,
        default=8,
        help="series with fewer usable slices are quarantined as too_few_slices (default 8)",
    )
    parser.add_argument(
        "--spacing-tolerance",
        type=float,
        default=0.01,
        help="allowed deviation of a slice step from the median step, as a fraction (default "
        "0.01); the larger of this and --spacing-tolerance-mm applies",
    )
    parser.add_argument(
        "--spacing-tolerance-mm",
        type=float,
        default=0.01,
        help="allowed deviation of a slice step in mm (default 0.01)",
    )
    parser.add_argument(
        "--tilt-tolerance-deg",
        type=float,
        default=0.1,
        help="largest gantry tilt in degrees still treated as untilted (default 0.1)",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")


def run(args: argparse.Namespace) -> int:
    """Run the conversion and print a one-line summary; returns 0 (quarantined series are not errors)."""
    from dagman.io.convert import convert_tree
    from dagman.io.dicom_series import SeriesChecks

    checks = SeriesChecks(
        min_slices=args.min_slices,
        spacing_rel_tol=args.spacing_tolerance,
        spacing_abs_tol_mm=args.spacing_tolerance_mm,
        tilt_tol_deg=args.tilt_tolerance_deg,
    )
    result = convert_tree(
        args.input_dir,
        args.out,
        case_ids=args.case_ids,
        workers=args.workers,
        checks=checks,
        progress=not args.no_progress,
    )
    n_series = sum(row["level"] == "series" for row in result.quarantine)
    n_files = len(result.quarantine) - n_series
    print(
        f"converted {len(result.series)} series; quarantined {n_series} series and {n_files} files "
        f"(see {result.quarantine_csv})"
    )
    return 0
