"""Command-line front end of ``dagman cluster``: Task 4 organ clustering of one pretrained encoder."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``dagman cluster`` to ``parser``."""
    parser.add_argument(
        "--npz", type=Path, required=True, help="OrganMNIST3D file (organmnist3d[_64].npz format)"
    )
    parser.add_argument(
        "--encoder",
        type=Path,
        required=True,
        help="pretrained export folder (encoder.pt, encoder_config.json)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (umap.csv, distances.csv/json, embeddings.npy)"
    )
    parser.add_argument(
        "--split", choices=("train", "val", "test"), default="test", help="split to embed (default test)"
    )
    parser.add_argument("--seed", type=int, default=0, help="UMAP seed (default 0)")
    parser.add_argument(
        "--method", default=None, help="method name in the outputs (default: the folder's name)"
    )
    parser.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="network input side in voxels; volumes are resized to it (default: the pretraining crop recorded "
        "in the export; needed only for Swin exports without SA written before the crop was recorded)",
    )
    parser.add_argument(
        "--embedding",
        choices=("auto", "cls", "pooled"),
        default="auto",
        help="auto: [CLS] for SA/ViT encoders, else the last stage's global average (default auto)",
    )
    parser.add_argument("--n-neighbors", type=int, default=15, help="UMAP n_neighbors (default 15)")
    parser.add_argument("--min-dist", type=float, default=0.1, help="UMAP min_dist (default 0.1)")
    parser.add_argument("--batch-size", type=int, default=8, help="volumes per forward pass (default 8)")


def run(args: argparse.Namespace) -> int:
    """Run the clustering and print the UMAP-space distances."""
    from dagman.tasks.clustering import run_clustering

    results = run_clustering(
        args.npz,
        args.encoder,
        args.out,
        split=args.split,
        seed=args.seed,
        method=args.method,
        input_size=args.input_size,
        kind=args.embedding,
        n_neighbors=args.n_neighbors,
        min_dist=args.min_dist,
        batch_size=args.batch_size,
    )
    r = results["umap"]
    print(
        f"UMAP intra-cluster {r.intra_mean:.3f} ± {r.intra_sd:.3f}, inter-cluster {r.inter_mean:.3f} ± "
        f"{r.inter_sd:.3f} ({r.n_classes} classes, {r.n_points} volumes): {args.out / 'distances.csv'}"
    )
    return 0
