"""The one place that knows where the workflow's result files are and how to read them (figures and tables).

A :class:`ResultInputs` names every input file or folder explicitly (the workflow passes them as flags, so
Snakemake knows each dependency); the loaders read them into tidy pandas frames with a ``method`` column taken
from the key the caller gave (the method name the config uses), whatever the file itself says.

Flags shared by ``dagman tables`` and ``dagman figures`` (:func:`add_input_arguments`):

- ``--classification DIR``: folder with results.csv, summary.csv, comparisons.csv (``dagman
  classification-summary``);
- ``--segmentation METHOD:FRACTION=CSV ...``: each segmentation run's dice.csv (fraction label "1", "0.5");
- ``--pretrain METHOD=CSV ...``: each pretraining's metrics.csv;
- ``--clusters METHOD=DIR ...``: each clustering folder (umap.csv, distances.csv);
- ``--zeroshot METHOD=DIR ...`` and ``--zeroshot-cohort CSV``: zero-shot folders (dice.csv, summary.json) and
  the raters.csv they were scored against;
- ``--diversity METHOD=CSV ...``: each diversity_summary.csv (diversity.csv, per head, is read beside it);
- ``--attention-maps METHOD=DIR ...``: attention-map folders (<case>.nii.gz, <case>_<view>.png);
- ``--demo``: the inputs come from the synthetic demo cohort; every output says so.

Column names come from the modules that write the files; those modules import torch or SimpleITK, so they are
imported inside the loaders and ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

__all__ = [
    "ResultInputs",
    "add_input_arguments",
    "inputs_from_args",
    "input_arguments",
    "regime_label",
    "load_classification_results",
    "load_classification_summary",
    "load_comparisons",
    "load_segmentation",
    "load_clusters",
    "load_umap",
    "load_zeroshot",
    "load_zeroshot_summary",
    "load_zeroshot_cohort",
    "load_diversity",
    "load_diversity_heads",
    "load_pretrain_metrics",
    "list_attention_maps",
    "ATTENTION_VIEWS",
]

#: PNG views ``dagman attention-map`` writes beside each NIfTI (``<case>_<view>.png``).
ATTENTION_VIEWS: tuple[str, ...] = ("axial", "coronal", "sagittal")


@dataclass
class ResultInputs:
    """Every result file or folder a figure or table may read; empty entries mean "not run".

    Attributes:
        classification: folder with results.csv, summary.csv and comparisons.csv (Tasks 1 and 3).
        segmentation: "method:fraction" (fraction label as in the path, "1", "0.5") -> dice.csv (Task 2).
        pretrain: method -> metrics.csv of its pretraining.
        clusters: method -> clustering folder (umap.csv, distances.csv) (Task 4).
        zeroshot: method -> zero-shot folder (dice.csv, summary.json).
        zeroshot_cohort: the raters.csv the zero-shot runs were scored against.
        diversity: method -> diversity_summary.csv (diversity.csv beside it).
        attention_maps: method -> attention-map folder (<case>.nii.gz and <case>_<view>.png).
        demo: the inputs come from the synthetic demo cohort.
    """

    classification: Path | None = None
    segmentation: dict[str, Path] = field(default_factory=dict)
    pretrain: dict[str, Path] = field(default_factory=dict)
    clusters: dict[str, Path] = field(default_factory=dict)
    zeroshot: dict[str, Path] = field(default_factory=dict)
    zeroshot_cohort: Path | None = None
    diversity: dict[str, Path] = field(default_factory=dict)
    attention_maps: dict[str, Path] = field(default_factory=dict)
    demo: bool = False

    def check(self) -> None:
        """Raise FileNotFoundError naming the flag and the path of the first input that does not exist."""
        if self.classification is not None:
            for name in ("summary.csv", "comparisons.csv", "results.csv"):
                _require(self.classification / name, "--classification")
        for key, path in self.segmentation.items():
            _require(path, f"--segmentation {key}")
        for method, path in self.pretrain.items():
            _require(path, f"--pretrain {method}")
        for method, folder in self.clusters.items():
            for name in ("umap.csv", "distances.csv"):
                _require(folder / name, f"--clusters {method}")
        for method, folder in self.zeroshot.items():
            for name in ("dice.csv", "summary.json"):
                _require(folder / name, f"--zeroshot {method}")
        if self.zeroshot_cohort is not None:
            _require(self.zeroshot_cohort, "--zeroshot-cohort")
        for method, path in self.diversity.items():
            _require(path, f"--diversity {method}")
        for method, folder in self.attention_maps.items():
            _require(folder, f"--attention-maps {method}")
            if not any(folder.glob("*.nii.gz")):
                raise FileNotFoundError(f"--attention-maps {method}: no <case>.nii.gz in {folder}")


def _require(path: Path, flag: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{flag}: {path} does not exist")


# ----------------------------------------------------------------------------------------------- arguments
def _pair(text: str) -> tuple[str, Path]:
    """Parse one KEY=PATH argument."""
    key, sep, path = text.partition("=")
    if not sep or not key or not path:
        raise argparse.ArgumentTypeError(f"expected KEY=PATH, got {text!r}")
    return key.strip(), Path(path)


def _segmentation_pair(text: str) -> tuple[str, Path]:
    """Parse one METHOD:FRACTION=CSV argument; the fraction must be a number in (0, 1]."""
    key, path = _pair(text)
    method, sep, fraction = key.rpartition(":")
    try:
        value = float(fraction)
    except ValueError:
        value = math.nan
    if not sep or not method or not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"expected METHOD:FRACTION=CSV with FRACTION in (0, 1], got {text!r}"
        )
    return f"{method}:{fraction}", path


def add_input_arguments(parser: argparse.ArgumentParser, out_help: str = "output folder") -> None:
    """Add the input flags shared by ``dagman tables`` and ``dagman figures``, plus --demo and --out."""
    pairs = dict(nargs="+", action="extend", default=[])
    parser.add_argument(
        "--classification",
        type=Path,
        metavar="DIR",
        help="folder with results.csv, summary.csv and comparisons.csv (dagman classification-summary)",
    )
    parser.add_argument(
        "--segmentation",
        type=_segmentation_pair,
        metavar="METHOD:FRACTION=CSV",
        help="dice.csv of each segmentation run, e.g. dagman:0.5=results/run/tasks/segmentation/dagman/f0.5/dice.csv",
        **pairs,
    )
    parser.add_argument(
        "--pretrain", type=_pair, metavar="METHOD=CSV", help="metrics.csv of each pretraining", **pairs
    )
    parser.add_argument(
        "--clusters",
        type=_pair,
        metavar="METHOD=DIR",
        help="clustering folder of each method (umap.csv, distances.csv)",
        **pairs,
    )
    parser.add_argument(
        "--zeroshot",
        type=_pair,
        metavar="METHOD=DIR",
        help="zero-shot folder of each method (dice.csv, summary.json)",
        **pairs,
    )
    parser.add_argument(
        "--zeroshot-cohort",
        type=Path,
        metavar="CSV",
        help="raters.csv the zero-shot runs were scored against",
    )
    parser.add_argument(
        "--diversity",
        type=_pair,
        metavar="METHOD=CSV",
        help="diversity_summary.csv of each method (diversity.csv is read beside it when present)",
        **pairs,
    )
    parser.add_argument(
        "--attention-maps",
        type=_pair,
        metavar="METHOD=DIR",
        help="attention-map folder of each method (<case>.nii.gz, <case>_<view>.png)",
        **pairs,
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="the inputs come from the synthetic demo cohort: every output says its numbers are not the paper's",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help=out_help)


def _mapping(pairs: Iterable[tuple[str, Path]], flag: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for key, path in pairs:
        if key in out and out[key] != path:
            raise ValueError(f"{flag}: {key} given twice ({out[key]} and {path})")
        out[key] = path
    return out


def inputs_from_args(args: argparse.Namespace) -> ResultInputs:
    """The :class:`ResultInputs` of parsed arguments; raises FileNotFoundError naming a missing input's flag."""
    inputs = ResultInputs(
        classification=args.classification,
        segmentation=_mapping(args.segmentation, "--segmentation"),
        pretrain=_mapping(args.pretrain, "--pretrain"),
        clusters=_mapping(args.clusters, "--clusters"),
        zeroshot=_mapping(args.zeroshot, "--zeroshot"),
        zeroshot_cohort=args.zeroshot_cohort,
        diversity=_mapping(args.diversity, "--diversity"),
        attention_maps=_mapping(args.attention_maps, "--attention-maps"),
        demo=bool(args.demo),
    )
    inputs.check()
    return inputs


def input_arguments(inputs: ResultInputs) -> list[str]:
    """The command-line flags naming ``inputs`` (the inverse of :func:`inputs_from_args`, without --out)."""
    args: list[str] = []
    if inputs.classification is not None:
        args += ["--classification", str(inputs.classification)]
    for flag, mapping in (
        ("--segmentation", inputs.segmentation),
        ("--pretrain", inputs.pretrain),
        ("--clusters", inputs.clusters),
        ("--zeroshot", inputs.zeroshot),
        ("--diversity", inputs.diversity),
        ("--attention-maps", inputs.attention_maps),
    ):
        if mapping:
            args += [flag, *(f"{key}={path}" for key, path in mapping.items())]
    if inputs.zeroshot_cohort is not None:
        args += ["--zeroshot-cohort", str(inputs.zeroshot_cohort)]
    return args + (["--demo"] if inputs.demo else [])


# ------------------------------------------------------------------------------------------------- readers
def regime_label(fraction: float) -> str:
    """ "100%", "50%", "25%": the regime label the classification runs use for a training fraction."""
    return f"{round(float(fraction) * 100)}%"


def _read_csv(path: Path, columns: Iterable[str], flag: str, **kwargs) -> pd.DataFrame:
    """Read a CSV and check that it has ``columns``; errors name the flag and the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{flag}: {path} does not exist")
    table = pd.read_csv(path, **kwargs)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{flag}: {path} lacks column(s) {', '.join(missing)}")
    return table


def _concat(frames: list[pd.DataFrame], columns: Iterable[str]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns))


def _classification_csv(inputs: ResultInputs, name: str, columns: Iterable[str]) -> pd.DataFrame:
    if inputs.classification is None:
        return pd.DataFrame(columns=list(columns))
    return _read_csv(inputs.classification / name, columns, "--classification")


def load_classification_results(inputs: ResultInputs) -> pd.DataFrame:
    """results.csv: one row per method x task x mode x regime x fold (``RESULT_COLUMNS``)."""
    from dagman.tasks.classification_summary import RESULT_COLUMNS

    return _classification_csv(inputs, "results.csv", RESULT_COLUMNS)


def load_classification_summary(inputs: ResultInputs) -> pd.DataFrame:
    """summary.csv: per method x task x mode x regime, fold mean/sd and the fold ensemble's AUC and CI."""
    from dagman.tasks.classification_summary import SUMMARY_COLUMNS

    return _classification_csv(inputs, "summary.csv", SUMMARY_COLUMNS)


def load_comparisons(inputs: ResultInputs) -> pd.DataFrame:
    """comparisons.csv: each method vs the reference, DeLong and paired-bootstrap p (``COMPARISON_COLUMNS``)."""
    from dagman.tasks.classification_summary import COMPARISON_COLUMNS

    table = _classification_csv(inputs, "comparisons.csv", COMPARISON_COLUMNS)
    table["fold"] = table["fold"].astype("string").fillna("")
    return table


def load_segmentation(inputs: ResultInputs) -> pd.DataFrame:
    """Every dice.csv: ``method, fraction, regime`` + ``DICE_COLUMNS`` (one row per method x fraction x case)."""
    from dagman.tasks.segmentation import DICE_COLUMNS

    frames = []
    for key, path in inputs.segmentation.items():
        method, _, fraction = key.rpartition(":")
        table = _read_csv(path, DICE_COLUMNS, f"--segmentation {key}", dtype={"case_id": str})
        table.insert(0, "method", method)
        table.insert(1, "fraction", float(fraction))
        table.insert(2, "regime", regime_label(float(fraction)))
        frames.append(table[["method", "fraction", "regime", *DICE_COLUMNS]])
    return _concat(frames, ["method", "fraction", "regime", *DICE_COLUMNS])


def _per_method(paths: Mapping[str, Path], name: str | None, columns, flag: str, **kwargs) -> pd.DataFrame:
    """Concatenate one CSV per method (``folder/name`` or the path itself), ``method`` set to the key."""
    frames = []
    for method, path in paths.items():
        table = _read_csv(path / name if name else path, columns, f"{flag} {method}", **kwargs)
        table["method"] = method
        frames.append(table[["method", *[c for c in table.columns if c != "method"]]])
    return _concat(frames, ["method", *[c for c in columns if c != "method"]])


def load_clusters(inputs: ResultInputs) -> pd.DataFrame:
    """Every distances.csv: one row per method x space ("umap", "embedding") (``DISTANCE_COLUMNS``)."""
    from dagman.tasks.clustering import DISTANCE_COLUMNS

    return _per_method(inputs.clusters, "distances.csv", DISTANCE_COLUMNS, "--clusters")


def load_umap(inputs: ResultInputs) -> pd.DataFrame:
    """Every umap.csv: method, index, label, organ, x, y (one row per embedded volume)."""
    columns = ("method", "index", "label", "organ", "x", "y")
    return _per_method(inputs.clusters, "umap.csv", columns, "--clusters")


def load_zeroshot(inputs: ResultInputs) -> pd.DataFrame:
    """Every zero-shot dice.csv: one row per method x case x rater (``DICE_COLUMNS`` of zeroshot)."""
    from dagman.tasks.zeroshot import DICE_COLUMNS

    return _per_method(inputs.zeroshot, "dice.csv", DICE_COLUMNS, "--zeroshot", dtype={"case_id": str})


def load_zeroshot_summary(inputs: ResultInputs) -> pd.DataFrame:
    """Every zero-shot summary.json as one row per method (n_cases, dice_mean, dice_sd, dice_pairs_*, ...)."""
    rows = []
    for method, folder in inputs.zeroshot.items():
        path = folder / "summary.json"
        if not path.is_file():
            raise FileNotFoundError(f"--zeroshot {method}: {path} does not exist")
        record = json.loads(path.read_text(encoding="utf-8"))
        missing = [k for k in ("n_cases", "dice_mean", "dice_sd") if k not in record]
        if missing:
            raise ValueError(f"--zeroshot {method}: {path} lacks key(s) {', '.join(missing)}")
        record = {k: v for k, v in record.items() if not isinstance(v, list | dict)}
        rows.append({**record, "method": method})
    table = pd.DataFrame(rows)
    return table[["method", *[c for c in table.columns if c != "method"]]] if rows else table


def percentile_text(summary: pd.DataFrame) -> str:
    """The attention threshold the zero-shot runs used, as words ("90th percentile"), from their summaries."""
    values = sorted(set(summary["percentile"].astype(float))) if "percentile" in summary else []
    if not values:
        return "the configured percentile"
    return " / ".join(f"{v:g}th" for v in values) + " percentile"


def load_zeroshot_cohort(inputs: ResultInputs) -> pd.DataFrame:
    """The raters.csv (case_id, rater, image, mask) with absolute image and mask paths; empty if not given."""
    from dagman.tasks.zeroshot import RATER_COLUMNS, read_rater_cohort

    if inputs.zeroshot_cohort is None:
        return pd.DataFrame(columns=list(RATER_COLUMNS))
    return read_rater_cohort(inputs.zeroshot_cohort)


def load_diversity(inputs: ResultInputs) -> pd.DataFrame:
    """Every diversity_summary.csv: per method x stage, mean and variance across heads (``SUMMARY_COLUMNS``)."""
    from dagman.tasks.diversity import SUMMARY_COLUMNS

    return _per_method(inputs.diversity, None, SUMMARY_COLUMNS, "--diversity")


def load_diversity_heads(inputs: ResultInputs) -> pd.DataFrame:
    """The per-head diversity.csv beside each diversity_summary.csv (methods without one are left out)."""
    from dagman.tasks.diversity import DIVERSITY_COLUMNS

    present = {m: p.with_name("diversity.csv") for m, p in inputs.diversity.items()}
    present = {m: p for m, p in present.items() if p.is_file()}
    return _per_method(present, None, DIVERSITY_COLUMNS, "--diversity")


def load_pretrain_metrics(inputs: ResultInputs) -> pd.DataFrame:
    """Every metrics.csv, one row per method x step; loss columns differ by method (absent ones are NaN)."""
    return _per_method(inputs.pretrain, None, ("step", "loss"), "--pretrain")


_PNG = re.compile(r"^(?P<case>.+)_(?P<view>" + "|".join(ATTENTION_VIEWS) + r")\.png$")


def list_attention_maps(inputs: ResultInputs) -> pd.DataFrame:
    """One row per method x case x view: method, case, nifti, view, png (paths; png empty if not written)."""
    rows = []
    for method, folder in inputs.attention_maps.items():
        if not folder.is_dir():
            raise FileNotFoundError(f"--attention-maps {method}: {folder} is not a folder")
        pngs = {(m["case"], m["view"]): p for p in folder.glob("*.png") if (m := _PNG.match(p.name))}
        for nifti in sorted(folder.glob("*.nii.gz")):
            case = nifti.name.removesuffix(".nii.gz")
            for view in ATTENTION_VIEWS:
                png = pngs.get((case, view))
                rows.append({"method": method, "case": case, "nifti": nifti, "view": view, "png": png or ""})
    return pd.DataFrame(rows, columns=["method", "case", "nifti", "view", "png"])
