"""Command-line front end of ``dagman resample``: converted series to the isotropic training cache."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``dagman resample`` to ``parser``."""
    parser.add_argument(
        "--series", type=Path, required=True, help="the converter's series.csv (OUT/series.csv)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="cache folder to write (images/, arrays/, index.csv)"
    )
    parser.add_argument(
        "--spacing",
        type=float,
        default=2.0,
        help="isotropic output spacing in mm (default 2; the paper's setting)",
    )
    parser.add_argument(
        "--window",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=(-175.0, 250.0),
        help="HU window scaled to [0, 1] in the arrays (default -175 250, SMIT's soft-tissue window)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="parallel processes (default: every CPU core; 1 = no pool)"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--only",
        nargs="+",
        metavar="KEY",
        help="resample only these <case_id>__<series_id> series and leave index.csv alone (one workflow job per series)",
    )
    mode.add_argument(
        "--index-only",
        action="store_true",
        help="write index.csv for series already resampled with --only (no resampling)",
    )


def run(args: argparse.Namespace) -> int:
    """Build the cache and print a one-line summary; return the exit status."""
    from dagman.io.cache import build_cache, write_index

    window = tuple(args.window)
    if args.index_only:
        index = write_index(args.series, args.out, spacing=args.spacing, window=window)
        print(f"indexed {len(index)} cached series: {args.out / 'index.csv'}")
        return 0
    index = build_cache(
        args.series, args.out, spacing=args.spacing, window=window, workers=args.workers, only=args.only
    )
    where = "" if args.only else f"; index: {args.out / 'index.csv'}"
    print(f"resampled {len(index)} series to {args.spacing:g} mm{where}")
    return 0
