"""``dagman splits``: patient-level held-out test, k-fold CV and nested few-shot subsets as files.

Work is done by :mod:`dagman.cohorts.splits`; the file layout is described there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def _test_size(text: str) -> float | int:
    """A fraction (0 < x < 1, e.g. 0.2) or a count (integer >= 1, e.g. 1000)."""
    value = float(text)
    if 0 < value < 1:
        return value
    if value >= 1 and value == int(value):
        return int(value)
    raise argparse.ArgumentTypeError(
        f"test size must be a fraction in (0, 1) or a whole count >= 1, got {text}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dagman splits``."""
    parser.add_argument(
        "--table", type=Path, required=True, help="CSV with one row per item (e.g. the nodule table)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for splits.csv and splits.json")
    parser.add_argument(
        "--test-size",
        type=_test_size,
        default=0.2,
        help="held-out test items: fraction (0.2) or count (1000, as the paper)",
    )
    parser.add_argument("--folds", type=int, default=3, help="cross-validation folds on the non-test items")
    parser.add_argument(
        "--fractions",
        type=float,
        nargs="*",
        default=[0.25, 0.5],
        help="nested few-shot fractions of each training fold",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of every random choice (same seed, same files)"
    )
    parser.add_argument("--key-col", default="key", help="column with the item key")
    parser.add_argument(
        "--group-col", default="patient_id", help="column with the group kept whole (the patient)"
    )
    parser.add_argument("--label-col", default="label", help="column with the class label (empty = left out)")


def run(args: argparse.Namespace) -> int:
    """Read the table, make the splits, write them and print a one-line summary."""
    import sys

    import pandas as pd

    from dagman.cohorts.splits import make_splits, write_splits

    if not args.table.is_file():
        raise SystemExit(f"dagman splits: table {args.table} does not exist")
    table = pd.read_csv(args.table, dtype={args.key_col: str, args.group_col: str})
    if "status" in table.columns:
        # tables with a status column (the LIDC crops) list items that could not be made; only usable ones split
        usable = table["status"].isin(["cropped", "ok", "converted"])
        if not usable.all():
            print(f"leaving out {int((~usable).sum())} items whose status is not usable", file=sys.stderr)
        table = table[usable]
    splits = make_splits(
        table,
        key_col=args.key_col,
        group_col=args.group_col,
        label_col=args.label_col,
        test_size=args.test_size,
        n_folds=args.folds,
        fractions=args.fractions,
        seed=args.seed,
    )
    settings = {
        "table": args.table.name,
        "key_col": args.key_col,
        "group_col": args.group_col,
        "label_col": args.label_col,
        "test_size": args.test_size,
        "folds": args.folds,
        "fractions": sorted(args.fractions),
        "seed": args.seed,
        "items_without_label": int(table[args.label_col].isna().sum()),
    }
    csv_path, _ = write_splits(splits, args.out, settings)
    n_test = int((splits["set"] == "test").sum())
    print(
        f"{len(splits)} items ({splits['group'].nunique()} groups): {n_test} test, {len(splits) - n_test} in "
        f"{args.folds} folds -> {csv_path}",
        file=sys.stderr,
    )
    return 0
