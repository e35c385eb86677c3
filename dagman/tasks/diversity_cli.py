"""Command-line front end of ``dagman attention-diversity``: attention distance and entropy per Swin head."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``dagman attention-diversity`` to ``parser``."""
    parser.add_argument("--encoder", type=Path, required=True, help="pretrained Swin export folder")
    parser.add_argument(
        "--index",
        type=Path,
        required=True,
        help="training cache index.csv: centred crops of its volumes are the evaluation set",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (diversity.csv, diversity_summary.csv)"
    )
    parser.add_argument(
        "--method", default=None, help="method name in the outputs (default: the folder's name)"
    )
    parser.add_argument(
        "--input-size", type=int, default=None, help="crop side in voxels (default: the pretraining crop)"
    )
    parser.add_argument(
        "--max-volumes",
        type=int,
        default=None,
        help="use only the first N volumes of the index (default all)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="crops per forward pass (default 1)")


def run(args: argparse.Namespace) -> int:
    """Measure and print the per-stage summary."""
    from dagman.tasks.diversity import run_diversity

    _, summary = run_diversity(
        args.encoder,
        args.index,
        args.out,
        method=args.method,
        input_size=args.input_size,
        max_volumes=args.max_volumes,
        batch_size=args.batch_size,
    )
    for row in summary.itertuples(index=False):
        print(
            f"{row.method} stage {row.stage}: entropy {row.entropy_mean:.3f} (var {row.entropy_var:.4f}), "
            f"distance {row.distance_mm_mean:.1f} mm (var {row.distance_mm_var:.2f}) over {row.n_heads} heads"
        )
    print(f"wrote {args.out / 'diversity.csv'}")
    return 0
