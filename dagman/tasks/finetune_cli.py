"""``dagman finetune``: train and evaluate one image-level classifier (one method x task x mode x regime x fold).

Work is done by :func:`dagman.tasks.classification.finetune`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dagman.cli import read_settings_arg

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dagman finetune``."""
    parser.add_argument(
        "--table",
        type=Path,
        required=True,
        help="crops table (LIDC crops.csv or `dagman cohort-crops` output)",
    )
    parser.add_argument(
        "--splits",
        type=Path,
        required=True,
        help="splits.csv of `dagman splits` (or its folder); never re-split",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--encoder",
        help="pretrained encoder folder (encoder.pt, encoder_sa.pt, encoder_config.json), or 'random' for the "
        "same architecture without weights (needs --arch-from)",
    )
    source.add_argument(
        "--resnet50",
        action="store_true",
        help="MONAI 3D ResNet-50 baseline (from scratch unless --med3d-weights)",
    )
    parser.add_argument(
        "--arch-from",
        type=Path,
        default=None,
        help="with --encoder random: the encoder folder whose architecture to use",
    )
    parser.add_argument(
        "--med3d-weights",
        type=Path,
        default=None,
        help="with --resnet50: Med3D (MedicalNet) ResNet-50 weights",
    )
    parser.add_argument(
        "--mode",
        choices=("lp", "ft"),
        required=True,
        help="lp = frozen encoder + linear head; ft = full fine-tuning",
    )
    parser.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="share of the training fold: 1.0, or a few-shot fraction of the split file (0.5, 0.25)",
    )
    parser.add_argument(
        "--fold", type=int, required=True, help="CV fold (1-based) whose validation part selects"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for predictions.csv and metrics.json")
    parser.add_argument(
        "--settings",
        default=None,
        help="JSON object or JSON file with hyper-parameters (epochs, lp_epochs, batch_size, lr, lp_lr, "
        "weight_decay, crop_size, window, flips, embedding cls|pooled, sa_weights, patience, seed, device, "
        "num_workers, threads, n_bootstrap, ci_level, save_model)",
    )
    parser.add_argument(
        "--method", default=None, help="method name in the results (default: encoder folder name)"
    )
    parser.add_argument(
        "--task", default="classification", help="task name in the results (e.g. lidc, outcome)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Train one classifier and write its predictions and metrics."""
    import sys

    from dagman.tasks.classification import ClassificationSettings, EncoderSpec, finetune

    try:
        if args.resnet50:
            spec = EncoderSpec("resnet50", args.med3d_weights)
        elif args.encoder == "random":
            if args.arch_from is None:
                raise ValueError("--encoder random needs --arch-from ENCODER_DIR (the architecture to build)")
            spec = EncoderSpec("random", args.arch_from)
        else:
            if args.med3d_weights is not None or args.arch_from is not None:
                raise ValueError("--med3d-weights goes with --resnet50 and --arch-from with --encoder random")
            spec = EncoderSpec("pretrained", Path(args.encoder))
        settings = ClassificationSettings.from_mapping(read_settings_arg(args.settings))
        metrics = finetune(
            args.table,
            args.splits,
            args.out,
            encoder=spec,
            mode=args.mode,
            fraction=args.fraction,
            fold=args.fold,
            settings=settings,
            method=args.method,
            task=args.task,
            progress=not args.quiet,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"dagman finetune: {error}", file=sys.stderr)
        return 1
    test = metrics["test"]
    print(
        f"{metrics['method']} {metrics['mode']} {metrics['regime']} fold {metrics['fold']}: best epoch "
        f"{metrics['best_epoch']}, val AUC {metrics['val_auc']:.3f}, test AUC {test['auc']:.3f} "
        f"[{test['auc_ci_low']:.3f}, {test['auc_ci_high']:.3f}] -> {args.out}",
        file=sys.stderr,
    )
    return 0
