"""Command-line front end of ``dagman pretrain``: self-supervised pretraining of one registry method.

All hyper-parameters come as one JSON object in ``--settings`` (a string or a file path; the workflow passes
its config section); the flags below override single keys. Under ``torchrun --nproc_per_node G -m dagman.cli
pretrain ...`` the processes train together with DDP. Exit status 3 means SIGTERM/SIGUSR1 arrived, a
checkpoint was written, and rerunning the same command resumes. A checkpoint of other settings is refused
(exit status 1) unless ``--restart-stale`` moves it aside.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dagman.cli import read_settings_arg

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``dagman pretrain`` to ``parser``."""
    parser.add_argument("--method", help="registry method (see --list-methods), e.g. dagman, smit, ibot")
    parser.add_argument(
        "--cache", type=Path, nargs="+", metavar="DIR", help="training cache folder(s) with index.csv"
    )
    parser.add_argument(
        "--out", type=Path, help="output folder (results/<run>/pretrain/<method>); rerun here to resume"
    )
    parser.add_argument(
        "--settings",
        metavar="JSON_OR_PATH",
        help="hyper-parameters as a JSON object string or a .json file (see --list-settings)",
    )
    parser.add_argument("--epochs", type=int, help="override setting 'epochs'")
    parser.add_argument("--batch-size", type=int, help="override setting 'batch_size' (samples per process)")
    parser.add_argument("--crop", type=int, nargs=3, metavar=("D", "H", "W"), help="override 'crop_size'")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override setting 'device'")
    parser.add_argument(
        "--max-steps",
        type=int,
        help="stop after N global steps (quick checks; schedules stay the full run's)",
    )
    parser.add_argument(
        "--restart-stale",
        action="store_true",
        help="train from step 0 when OUT holds a checkpoint of other settings, method or process count, or one "
        "already at the last step: that run's files (checkpoint, metrics, encoder, ...) move to OUT/stale-<n>/ "
        "instead of being refused or 'resumed' with nothing left to train. An interrupted checkpoint of the "
        "same settings still resumes. The workflow passes this flag (Snakemake reruns a pretraining only when "
        "its settings changed or a rerun is forced)",
    )
    parser.add_argument("--list-methods", action="store_true", help="print the method registry and exit")
    parser.add_argument(
        "--list-settings", action="store_true", help="print every setting with its default and help, and exit"
    )


def run(args: argparse.Namespace) -> int:
    """Resolve the settings and run ``dagman.ssl.pretrain.pretrain``; return the exit status."""
    import json
    import logging
    import sys

    from dagman.ssl.methods import list_methods
    from dagman.ssl.settings import PretrainSettings

    if args.list_methods:
        for name, spec in list_methods().items():
            print(f"{name:<28} {spec.experiment:<4} {spec.description}")
        return 0
    if args.list_settings:
        for name, default, help_text in PretrainSettings.help():
            print(f"{name:<28} {json.dumps(default):<22} {help_text}")
        return 0
    missing = [
        flag
        for flag, value in (("--method", args.method), ("--cache", args.cache), ("--out", args.out))
        if not value
    ]
    if missing:
        print(f"dagman pretrain: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        values = read_settings_arg(args.settings)
        flags = {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "device": args.device,
            "max_steps": args.max_steps,
            "crop_size": list(args.crop) if args.crop else None,
        }
        values.update({k: v for k, v in flags.items() if v is not None})
        settings = PretrainSettings.from_dict(values)
    except ValueError as err:
        print(f"dagman pretrain: {err}", file=sys.stderr)
        return 2

    from dagman.ssl.distributed import torchrun_env
    from dagman.ssl.pretrain import EXIT_INTERRUPTED, TrainingInterrupted, pretrain

    env = torchrun_env()
    rank = env[0] if env else 0
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        summary = pretrain(args.method, args.cache, args.out, settings, restart_stale=args.restart_stale)
    except TrainingInterrupted as err:
        if rank == 0:
            print(str(err), file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        print(f"dagman pretrain: {err}", file=sys.stderr)
        return 1
    if rank == 0:
        state = "finished" if summary["completed"] else "stopped early (--max-steps)"
        print(
            f"pretraining {summary['method']} {state} at step {summary['final_step']} of "
            f"{summary['total_steps']}; loss {summary['final_losses'].get('loss', float('nan')):.4f}; "
            f"encoder: {args.out / 'encoder.pt'}"
        )
    return 0
