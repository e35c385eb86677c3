"""The papers' reported numbers, as data, for the tables' "paper" columns (never targets for synthetic data).

Values from /work/shared/EXPERIMENTS.md "Numbers the papers report", checked against the preprint
(papers/smart-preprint-fulltext.txt; SMART is the preprint's name for DAGMaN); each group names its table.
The preprint's cluster tables also give the sd over classes / class pairs, kept here as (mean, sd).
Method keys are the registry names of :mod:`dagman.ssl.methods`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "PaperNumbers",
    "CLASSIFICATION_AUC",
    "CLUSTER_DISTANCES",
    "ZEROSHOT_DICE",
    "KEY_DEVELOPMENTS_FT_AUC",
    "LOSS_ABLATION_FT_AUC",
    "SA_PLACEMENT",
    "VIT_SWIN",
    "classification_task_numbers",
]


@dataclass(frozen=True)
class PaperNumbers:
    """Numbers of one paper table.

    Attributes:
        source: where they are printed, e.g. "preprint Table II".
        values: key (usually a method name, or (method, mode)) -> number or tuple of numbers.
    """

    source: str
    values: dict

    def get(self, key, default=None):
        return self.values.get(key, default)


#: Tasks 1 and 3 (EXPERIMENTS D1, D2): AUC per (method, mode), 100 % regime.
CLASSIFICATION_AUC: dict[str, PaperNumbers] = {
    "lidc": PaperNumbers(
        "preprint Table II (LIDC nodule malignancy)",
        {
            ("attmask", "lp"): 0.593,
            ("attmask", "ft"): 0.785,
            ("mst", "lp"): 0.575,
            ("mst", "ft"): 0.732,
            ("ibot", "lp"): 0.620,
            ("ibot", "ft"): 0.819,
            ("smit", "lp"): 0.629,
            ("smit", "ft"): 0.859,
            ("dagman", "lp"): 0.642,
            ("dagman", "ft"): 0.895,
        },
    ),
    "outcome": PaperNumbers(
        "preprint Table III (immunotherapy response)",
        {
            ("attmask", "lp"): 0.570,
            ("attmask", "ft"): 0.660,
            ("mst", "lp"): 0.550,
            ("mst", "ft"): 0.630,
            ("ibot", "lp"): 0.580,
            ("ibot", "ft"): 0.630,
            ("smit", "lp"): 0.620,
            ("smit", "ft"): 0.660,
            ("dagman", "lp"): 0.660,
            ("dagman", "ft"): 0.740,
        },
    ),
}

#: Task 4 (EXPERIMENTS D4): UMAP-space ((intra mean, sd), (inter mean, sd)) per method.
CLUSTER_DISTANCES = PaperNumbers(
    "preprint Table I (OrganMNIST3D, UMAP space)",
    {
        "attmask": ((1.59, 0.41), (2.95, 1.37)),
        "mst": ((2.22, 0.47), (3.47, 1.98)),
        "ibot": ((2.13, 0.37), (3.29, 2.07)),
        "smit": ((1.53, 0.45), (3.73, 2.74)),
        "dagman-no-nt": ((1.43, 0.49), (4.18, 2.74)),
        "dagman-no-sa": ((1.46, 0.30), (5.17, 2.98)),
        "dagman": ((1.28, 0.57), (5.93, 3.30)),
    },
)

#: Zero-shot localisation (EXPERIMENTS D5): Dice (mean, sd) over 21 tumours.
ZEROSHOT_DICE = PaperNumbers(
    "preprint section V-E (zero-shot localisation)",
    {"dagman": (0.62, 0.32), "attmask": (0.51, 0.34)},
)

#: NT x SA grid (EXPERIMENTS D7): LIDC fine-tuning AUC.
KEY_DEVELOPMENTS_FT_AUC = PaperNumbers(
    "preprint Table IVa (LIDC, fine-tuning)",
    {"smit": 0.859, "dagman-no-sa": 0.882, "dagman-no-nt": 0.875, "dagman": 0.895},
)

#: Loss ablation (EXPERIMENTS D8): LIDC fine-tuning AUC per loss subset.
LOSS_ABLATION_FT_AUC = PaperNumbers(
    "preprint Table IVb (LIDC, fine-tuning)",
    {
        "dagman-loss-amip": 0.859,
        "dagman-loss-amip+ampd": 0.869,
        "dagman-loss-amip+ampd+aitd": 0.878,
        "dagman-loss-amip+aitd+gitd": 0.865,
        "dagman-loss-ampd+aitd+gitd": 0.829,
        "dagman": 0.895,
    },
)

#: SA placement (EXPERIMENTS D9): per method {"lp": AUC, "ft": AUC, "intra": (mean, sd), "inter": (mean, sd)}.
SA_PLACEMENT = PaperNumbers(
    "preprint Table V (LIDC AUC; OrganMNIST3D UMAP distances)",
    {
        "dagman-sa1": {"lp": 0.581, "ft": 0.597, "intra": (1.83, 0.41), "inter": (2.78, 1.56)},
        "dagman-sa2": {"lp": 0.615, "ft": 0.647, "intra": (1.66, 0.58), "inter": (5.21, 3.75)},
        "dagman": {"lp": 0.642, "ft": 0.895, "intra": (1.28, 0.57), "inter": (5.93, 3.30)},
        "dagman-sa4": {"lp": 0.605, "ft": 0.684, "intra": (1.41, 0.30), "inter": (4.12, 2.51)},
    },
)

#: ViT vs Swin: LIDC AUC {"lp", "ft"} per method; preprint Table VI, and Table II for AttMask and MST (ViT).
VIT_SWIN = PaperNumbers(
    "preprint Table VI (Table II for AttMask, MST)",
    {
        "attmask": {"lp": 0.593, "ft": 0.785},
        "mst": {"lp": 0.575, "ft": 0.732},
        "smit-vit": {"lp": 0.643, "ft": 0.816},
        "dagman-vit": {"lp": 0.662, "ft": 0.847},
        "ibot": {"lp": 0.620, "ft": 0.819},
        "ibot-dagman": {"lp": 0.656, "ft": 0.881},
        "smit": {"lp": 0.629, "ft": 0.859},
        "dagman": {"lp": 0.642, "ft": 0.895},
    },
)


def classification_task_numbers(task: str) -> PaperNumbers | None:
    """The paper's AUC table for a classification task name ("lidc": Task 1, "outcome": Task 3), else None."""
    return CLASSIFICATION_AUC.get(task)
