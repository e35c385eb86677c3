"""Method names, order and colours shared by every figure and table of the report.

Colours come from the Okabe-Ito and Paul Tol palettes (readable with the common colour-vision deficiencies).
Every method has its own colour, and the methods compared within one experiment of EXPERIMENTS.md (main
comparison P1-P9, SA placement, PDR sweep, loss ablation) get clearly different ones; DAGMaN is vermillion in
every figure. Names outside the table (a future method) get a stable fallback colour and their own name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

__all__ = [
    "METHOD_ORDER",
    "CHANCE_COLOUR",
    "DEMO_FOOTNOTE",
    "display_name",
    "method_colour",
    "method_colours",
    "method_family",
    "pdr_of",
    "sort_methods",
]

DEMO_FOOTNOTE = "synthetic demo data - not the paper's numbers"
CHANCE_COLOUR = "#555555"

# Row order of tables and legend order of figures: references, baselines in the papers' table order, the
# DAGMaN ablations of the main grid, DAGMaN, the ViT/iBOT transfers, then the sweeps in sweep order.
METHOD_ORDER: tuple[str, ...] = (
    "random",
    "resnet50",
    "nnunet",
    "attmask",
    "mst",
    "ibot",
    "smit",
    "dagman-no-nt",
    "dagman-no-sa",
    "dagman",
    "smit-vit",
    "dagman-vit",
    "ibot-dagman",
    "dagman-sa1",
    "dagman-sa2",
    "dagman-sa4",
    "dagman-pdr0.0",
    "dagman-pdr0.1",
    "dagman-pdr0.3",
    "dagman-pdr0.5",
    "dagman-pdr0.9",
    "dagman-loss-amip",
    "dagman-loss-amip+ampd",
    "dagman-loss-amip+ampd+aitd",
    "dagman-loss-amip+aitd+gitd",
    "dagman-loss-ampd+aitd+gitd",
)

_DISPLAY: dict[str, str] = {
    "random": "Random init",
    "resnet50": "3D ResNet-50",
    "nnunet": "nnU-Net",
    "attmask": "AttMask",
    "mst": "MST",
    "ibot": "iBOT",
    "smit": "SMIT",
    "dagman-no-nt": "DAGMaN w/o NT",
    "dagman-no-sa": "DAGMaN w/o SA",
    "dagman": "DAGMaN",
    "smit-vit": "SMIT-ViT",
    "dagman-vit": "DAGMaN-ViT",
    "ibot-dagman": "iBOT+DAGMaN",
}

_COLOURS: dict[str, str] = {
    # references: greys, so they read as "not a pretraining method"
    "random": "#BBBBBB",
    "resnet50": "#7F7F7F",
    "nnunet": "#4D4D4D",
    # main comparison (Okabe-Ito) and its ablations
    "attmask": "#CC79A7",
    "mst": "#E69F00",
    "ibot": "#009E73",
    "smit": "#0072B2",
    "dagman-no-nt": "#56B4E9",
    "dagman-no-sa": "#882255",
    "dagman": "#D55E00",
    # ViT / iBOT transfers (Tol muted)
    "smit-vit": "#332288",
    "dagman-vit": "#CC6677",
    "ibot-dagman": "#44AA99",
    # SA placement (stage 3 is dagman)
    "dagman-sa1": "#77AADD",
    "dagman-sa2": "#117733",
    "dagman-sa4": "#AA4499",
    # PDR sweep: a dark-to-light ramp (viridis anchors); 0.7 is dagman
    "dagman-pdr0.0": "#440154",
    "dagman-pdr0.1": "#3B528B",
    "dagman-pdr0.3": "#21918C",
    "dagman-pdr0.5": "#5EC962",
    "dagman-pdr0.9": "#B8A200",
    # loss ablation (all four is dagman)
    "dagman-loss-amip": "#999933",
    "dagman-loss-amip+ampd": "#88CCEE",
    "dagman-loss-amip+ampd+aitd": "#DDCC77",
    "dagman-loss-amip+aitd+gitd": "#6F4E7C",
    "dagman-loss-ampd+aitd+gitd": "#EE8866",
}

# Fallback for names outside the table: picked by a hash of the name, so stable across runs and processes.
_FALLBACK = ("#8C613C", "#3D6B8E", "#A0522D", "#5B7F3A", "#7A5195", "#B07AA1", "#4E6E58", "#9C755F")

_SA_RE = re.compile(r"^dagman-sa(\d)$")
_PDR_RE = re.compile(r"^dagman-pdr(\d+(?:\.\d+)?)$")
_LOSS_RE = re.compile(r"^dagman-loss-([a-z+]+)$")


def display_name(method: str) -> str:
    """Human-readable name of ``method`` for legends, axis labels and table rows."""
    if method in _DISPLAY:
        return _DISPLAY[method]
    if match := _SA_RE.match(method):
        return f"DAGMaN, SA stage {match.group(1)}"
    if match := _PDR_RE.match(method):
        return f"DAGMaN, PDR {float(match.group(1)):.1f}"
    if match := _LOSS_RE.match(method):
        return f"DAGMaN, {match.group(1).upper()}"
    return method


def method_colour(method: str) -> str:
    """Hex colour of ``method``: fixed for the known methods, a stable hash-picked one otherwise."""
    if method in _COLOURS:
        return _COLOURS[method]
    digest = hashlib.sha1(method.encode()).digest()
    return _FALLBACK[digest[0] % len(_FALLBACK)]


def method_colours(methods: Iterable[str]) -> dict[str, str]:
    """``{method: colour}`` for ``methods``."""
    return {m: method_colour(m) for m in methods}


def sort_methods(methods: Iterable[str]) -> list[str]:
    """``methods`` without duplicates, in ``METHOD_ORDER``; unknown names last, alphabetically."""
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(set(methods), key=lambda m: (rank.get(m, len(rank)), m))


def method_family(method: str) -> str:
    """Experiment family of ``method``: "sa_stage" (P11-P13), "pdr" (P14-P18), "loss" (P19-P23) or "main".

    DAGMaN itself (P1) is "main"; it is also the reference point of every sweep (SA stage 3, PDR 0.7, all losses).
    """
    if _SA_RE.match(method):
        return "sa_stage"
    if _PDR_RE.match(method):
        return "pdr"
    if _LOSS_RE.match(method):
        return "loss"
    return "main"


def pdr_of(method: str) -> float | None:
    """The pretraining PDR of a PDR-sweep method: 0.7 for ``dagman`` (P1), X for ``dagman-pdrX``, else None."""
    if method == "dagman":
        return 0.7
    if match := _PDR_RE.match(method):
        return float(match.group(1))
    return None


#: Titles of the classification tasks (the config's ``classification.tasks`` names), for figures and tables.
TASK_TITLES = {
    "lidc": "Task 1: lung nodule malignancy (LIDC)",
    "outcome": "Task 3: outcome classification (labelled cohort)",
}


def task_title(task: str) -> str:
    """Title of a classification task; unknown names are shown as given."""
    return TASK_TITLES.get(str(task), f"Task: {task}")
