"""The ``dagman`` command: one subcommand per pipeline stage.

Each stage lives in a ``*_cli.py`` module that exposes ``add_arguments(parser)`` and ``run(args)`` and keeps
heavy imports (torch, SimpleITK, pylidc) inside ``run``. Only the module of the chosen subcommand is imported,
so ``dagman --help`` is instant and one stage's optional dependency never breaks another stage.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "COMMANDS", "read_settings_arg"]

# subcommand -> (module with add_arguments/run, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "dagman.io.demo_cli",
        "write the synthetic demo cohort (chest CT phantoms and broken series) as DICOM",
    ),
    "convert": (
        "dagman.io.convert_cli",
        "discover DICOM series in any folder tree and convert each to NIfTI",
    ),
    "resample": (
        "dagman.io.resample_cli",
        "resample converted series to isotropic spacing and write the training cache",
    ),
    "lidc-demo": (
        "dagman.cohorts.lidc_demo_cli",
        "write LIDC-like synthetic DICOM on real LIDC scan geometry",
    ),
    "lidc-nodules": (
        "dagman.cohorts.lidc_cli",
        "build the LIDC nodule table (and masks and crops) through pylidc",
    ),
    "splits": ("dagman.cohorts.splits_cli", "write patient-level test / 3-fold CV / few-shot split files"),
    "pretrain": (
        "dagman.ssl.pretrain_cli",
        "self-supervised pretraining of one method (DAGMaN or a baseline)",
    ),
    "outcome-demo": (
        "dagman.cohorts.outcome_demo_cli",
        "write the demo labelled outcome cohort (Task 3) as DICOM",
    ),
    "cohort-crops": (
        "dagman.cohorts.cohort_cli",
        "crop a labelled cohort CSV (DICOM or NIfTI) around each tumour",
    ),
    "finetune": (
        "dagman.tasks.finetune_cli",
        "Tasks 1/3: linear probe or fine-tune one encoder on one fold and regime",
    ),
    "classification-summary": (
        "dagman.tasks.classification_summary_cli",
        "gather classification runs: per-fold results, summaries, paired comparisons",
    ),
    "nsclc-demo": (
        "dagman.cohorts.nsclc_demo_cli",
        "write an NSCLC-like demo cohort: CT DICOM plus RTSTRUCT",
    ),
    "nsclc": (
        "dagman.cohorts.nsclc_cli",
        "CT + RTSTRUCT cohort to 2 mm images and GTV masks (report of missing GTVs)",
    ),
    "segment": (
        "dagman.tasks.segment_cli",
        "Task 2: fine-tune SwinUNETR with a pretrained encoder; Dice per case",
    ),
    "nnunet": ("dagman.tasks.nnunet_cli", "Task 2 baseline: nnU-Net through nnunetv2; Dice per case"),
    "organmnist-demo": (
        "dagman.io.organmnist_demo_cli",
        "write a synthetic OrganMNIST3D-format npz (Task 4 demo)",
    ),
    "raters-demo": ("dagman.cohorts.raters_demo_cli", "write a multi-rater tumour cohort (zero-shot demo)"),
    "cluster": (
        "dagman.tasks.cluster_cli",
        "Task 4: embed OrganMNIST3D, UMAP, intra/inter-cluster distances",
    ),
    "zeroshot": (
        "dagman.tasks.zeroshot_cli",
        "zero-shot localisation: SA attention > 90th percentile vs each rater",
    ),
    "attention-diversity": (
        "dagman.tasks.diversity_cli",
        "per Swin stage and head: attention distance and entropy",
    ),
    "attention-map": (
        "dagman.tasks.attention_map_cli",
        "SA attention as a NIfTI overlay on the CT grid and PNGs",
    ),
    "tables": (
        "dagman.report.tables_cli",
        "the report's tables (CSV, Markdown, LaTeX) from the result files",
    ),
    "figures": ("dagman.report.figures_cli", "the report's figures (PNG and PDF) from the result files"),
}


def read_settings_arg(value: str | None) -> dict:
    """The ``--settings`` value of a stage: an inline JSON object, or the path of a JSON file holding one.

    The workflow passes a stage's hyper-parameters as one JSON string; people may pass a file instead.
    """
    import json
    from pathlib import Path

    if not value:
        return {}
    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"--settings: {value!r} is neither a JSON object nor an existing JSON file")
        text = path.read_text(encoding="utf-8")
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--settings is not valid JSON: {error}") from error
    if not isinstance(mapping, dict):
        raise ValueError("--settings must hold a JSON object of setting names and values")
    return mapping


def build_parser(command: str) -> argparse.ArgumentParser:
    """The parser of one stage, built from its module's ``add_arguments``."""
    module, help_text = COMMANDS[command]
    parser = argparse.ArgumentParser(prog=f"dagman {command}", description=help_text)
    importlib.import_module(module).add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from dagman import __version__

    argv = list(sys.argv[1:] if argv is None else argv)
    stages = "\n".join(f"  {name:<14} {help_text}" for name, (_, help_text) in COMMANDS.items())
    usage = (
        "usage: dagman [-h] [--version] <stage> [options]\n\n"
        "DAGMaN pipeline stages; each is one step of the Snakemake workflow.\n\n"
        f"stages:\n{stages}\n\nRun `dagman <stage> --help` for a stage's options.\n"
    )
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"dagman {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"dagman: unknown stage {command!r}; valid stages: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    args = build_parser(command).parse_args(rest)
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
