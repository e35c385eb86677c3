"""Command-line front end of ``dagman organmnist-demo``: a synthetic OrganMNIST3D-format ``.npz``."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``dagman organmnist-demo`` to ``parser``."""
    parser.add_argument(
        "--out", type=Path, required=True, help="output .npz (MedMNIST's organmnist3d format exactly)"
    )
    parser.add_argument(
        "--size",
        type=int,
        choices=(28, 64),
        default=28,
        help="cube side: 28 as organmnist3d.npz, 64 as organmnist3d_64.npz (default 28)",
    )
    parser.add_argument(
        "--per-class",
        type=int,
        default=20,
        help="volumes per class in train and test; val gets a quarter (default 20)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same file (default 0)")


def run(args: argparse.Namespace) -> int:
    """Synthesise the volumes, write the file and print a one-line summary."""
    from dagman.io.organmnist import write_organmnist
    from dagman.io.synthetic.organs import synthesize_organmnist

    splits = synthesize_organmnist(size=args.size, per_class=args.per_class, seed=args.seed)
    path = write_organmnist(args.out, splits)
    counts = ", ".join(f"{name} {len(split.labels)}" for name, split in splits.items())
    print(f"wrote synthetic OrganMNIST3D ({args.size}^3; {counts}): {path}")
    return 0
