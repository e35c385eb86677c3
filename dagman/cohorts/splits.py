"""Patient-level, label-stratified, seeded splits: held-out test, k-fold CV, nested few-shot subsets.

Generic over cohorts (LIDC nodules, the labelled Task 3 cohort): the caller names the key, group (patient)
and label columns. The result is one table, written once and read by every method, so all methods see the
same data (as nnU-Net's ``splits_final.json``).

Layout of ``splits.csv`` (one row per labelled item):

- ``key``, ``group``, ``label``: the item, its group (patient) and its label, copied from the input table;
- ``set``: ``test`` (held out, never used for training or model selection) or ``train``;
- ``fold``: for ``train`` rows, the CV fold (1..k) in which the row is *validation*; 0 for ``test`` rows;
- ``fewshot{P}_fold{F}`` (e.g. ``fewshot25_fold1``): 1 when the row is in the P % training subset of fold F.
  Fold F trains on ``set == "train" and fold != F``; the P % subsets hold whole groups, are stratified by
  label, and are nested (25 % within 50 % within the full training fold).

Use :func:`fold_keys` and :func:`heldout_keys` to read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dagman.io.atomic import write_csv_atomic, write_json_atomic

__all__ = [
    "make_splits",
    "check_splits",
    "summarize_splits",
    "fewshot_column",
    "fold_keys",
    "heldout_keys",
    "write_splits",
    "read_splits",
]


def fewshot_column(fraction: float, fold: int) -> str:
    """Name of the few-shot membership column for ``fraction`` (0.25 -> 25) of training fold ``fold``."""
    return f"fewshot{round(fraction * 100):d}_fold{fold}"


def _normalise_labels(labels: pd.Series) -> pd.Series:
    """Integer-valued numeric labels (0.0/1.0 after a CSV round trip with gaps) become ints; others stay."""
    if pd.api.types.is_numeric_dtype(labels):
        values = labels.to_numpy(dtype=float)
        if np.all(values == np.round(values)):
            return pd.Series(values.astype(np.int64), index=labels.index)
    return labels


def _group_counts(groups: pd.Series, labels: pd.Series, classes: Sequence[Any]) -> pd.DataFrame:
    """Items per class for each group (rows: groups in sorted order, columns: classes)."""
    counts = pd.crosstab(groups, labels).reindex(columns=list(classes), fill_value=0)
    return counts.sort_index()


def _select_groups(counts: pd.DataFrame, target: np.ndarray, rng: np.random.Generator) -> list[Any]:
    """Whole groups whose per-class item counts come as close as greedily possible to ``target``.

    Groups are visited in a seeded random order; a group is taken when it reduces the L1 distance between
    the running per-class counts and the target. Taking groups whole keeps a patient's items together;
    matching per-class targets stratifies by label.
    """
    values = counts.to_numpy(dtype=float)
    current = np.zeros(values.shape[1])
    chosen = []
    order = rng.permutation(len(values))
    for index in order:
        candidate = current + values[index]
        if np.abs(candidate - target).sum() < np.abs(current - target).sum():
            chosen.append(counts.index[index])
            current = candidate
    if not chosen and len(values):
        # tiny cohorts: a subset is never empty; take the one group closest to the target
        distance = np.abs(values[order] - target).sum(axis=1)
        chosen.append(counts.index[order[int(distance.argmin())]])
    return sorted(chosen)


def make_splits(
    table: pd.DataFrame,
    *,
    key_col: str = "key",
    group_col: str = "patient_id",
    label_col: str = "label",
    test_size: float | int = 0.2,
    n_folds: int = 3,
    fractions: Sequence[float] = (0.25, 0.5),
    seed: int = 0,
) -> pd.DataFrame:
    """Split ``table`` into a held-out test set, ``n_folds`` CV folds and nested few-shot training subsets.

    Rows without a label (e.g. nodules a label rule excludes) are left out. Every step keeps groups whole.

    Args:
        table: one row per item, with the key, group and label columns.
        key_col, group_col, label_col: names of those columns.
        test_size: items in the held-out test set, as a fraction of the labelled items (0 < x < 1) or a count
            (an integer >= 1; the paper held out 1,000 LIDC nodules). Reached as closely as whole groups allow.
        n_folds: CV folds on the rest (StratifiedGroupKFold).
        fractions: few-shot fractions of each training fold (each in (0, 1)); nested, smaller within larger.
        seed: the one seed all random choices derive from.

    Returns:
        The splits table described in the module docstring, sorted by key.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    for column in (key_col, group_col, label_col):
        if column not in table.columns:
            raise ValueError(
                f"split table has no column {column!r}; columns are {', '.join(map(str, table.columns))}"
            )
    labelled = table[table[label_col].notna()]
    if labelled[key_col].duplicated().any():
        duplicated = labelled.loc[labelled[key_col].duplicated(), key_col].head(3).tolist()
        raise ValueError(f"key column {key_col!r} has duplicate values, e.g. {duplicated}")
    if not all(0 < f < 1 for f in fractions):
        raise ValueError(f"few-shot fractions must lie strictly between 0 and 1, got {list(fractions)}")
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    frame = pd.DataFrame(
        {
            "key": labelled[key_col].astype(str).to_numpy(),
            "group": labelled[group_col].astype(str).to_numpy(),
            "label": _normalise_labels(labelled[label_col]).to_numpy(),
        }
    ).sort_values("key", kind="stable", ignore_index=True)
    n_items = len(frame)
    n_test = round(test_size * n_items) if isinstance(test_size, float) and test_size < 1 else int(test_size)
    if not 0 < n_test < n_items:
        raise ValueError(f"test_size {test_size!r} gives {n_test} test items out of {n_items} labelled items")
    classes = sorted(frame["label"].unique().tolist())

    # held-out test set: whole patients, per-class counts matched to the overall class fractions
    counts = _group_counts(frame["group"], frame["label"], classes)
    class_fraction = counts.sum().to_numpy(dtype=float) / n_items
    test_groups = set(_select_groups(counts, n_test * class_fraction, np.random.default_rng([seed, 0])))
    frame["set"] = np.where(frame["group"].isin(test_groups), "test", "train")

    # k-fold CV on the rest; fold = the fold in which a row is validation
    frame["fold"] = 0
    train = frame.index[frame["set"] == "train"]
    cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    labels_train, groups_train = frame.loc[train, "label"].astype(str), frame.loc[train, "group"]
    for fold, (_, val) in enumerate(cv.split(np.zeros(len(train)), labels_train, groups_train), start=1):
        frame.loc[train[val], "fold"] = fold

    # few-shot subsets of each training fold, drawn largest first, each from the previous: nested
    for fold in range(1, n_folds + 1):
        in_fold = (frame["set"] == "train") & (frame["fold"] != fold)
        fold_counts = _group_counts(frame.loc[in_fold, "group"], frame.loc[in_fold, "label"], classes)
        pool = fold_counts
        for fraction in sorted(fractions, reverse=True):
            rng = np.random.default_rng([seed, fold, round(fraction * 1000)])
            chosen = _select_groups(pool, fraction * fold_counts.sum().to_numpy(dtype=float), rng)
            frame[fewshot_column(fraction, fold)] = (in_fold & frame["group"].isin(chosen)).astype(int)
            pool = pool.loc[chosen]
    fewshot = [fewshot_column(f, fold) for fold in range(1, n_folds + 1) for f in sorted(fractions)]
    return frame[["key", "group", "label", "set", "fold", *fewshot]]


def _fractions_and_folds(splits: pd.DataFrame) -> tuple[list[float], list[int]]:
    """The few-shot fractions and folds present in a splits table (from its column names)."""
    fractions, folds = set(), set(int(f) for f in splits.loc[splits["set"] == "train", "fold"].unique())
    for column in splits.columns:
        if column.startswith("fewshot"):
            percent, fold = column.removeprefix("fewshot").split("_fold")
            fractions.add(int(percent) / 100)
            folds.add(int(fold))
    return sorted(fractions), sorted(folds)


def check_splits(splits: pd.DataFrame, max_class_deviation: float = 0.05) -> dict[str, bool]:
    """The invariants every splits table must satisfy, each as a named boolean.

    - ``groups_disjoint``: no group appears in two of {test, fold 1, ..., fold k};
    - ``test_not_in_training``: no test row is in any fold's training or few-shot set;
    - ``folds_stratified``: each fold's and the test set's class fractions are within ``max_class_deviation``
      of the whole labelled set's;
    - ``fewshot_nested``: P % subset within the larger subsets within the training fold, for every fold;
    - ``fewshot_groups_whole``: a few-shot subset never takes part of a group.
    """
    fractions, folds = _fractions_and_folds(splits)
    parts = [splits.loc[splits["set"] == "test", "group"]] + [
        splits.loc[(splits["set"] == "train") & (splits["fold"] == f), "group"] for f in folds
    ]
    seen: set[str] = set()
    disjoint = True
    for part in parts:
        groups = set(part)
        disjoint &= not (groups & seen)
        seen |= groups
    overall = splits["label"].value_counts(normalize=True)
    stratified = True
    for part in [splits[splits["set"] == "test"]] + [
        splits[(splits["set"] == "train") & (splits["fold"] == f)] for f in folds
    ]:
        share = part["label"].value_counts(normalize=True).reindex(overall.index, fill_value=0.0)
        stratified &= bool((share - overall).abs().max() <= max_class_deviation)
    test = splits["set"] == "test"
    columns = [c for c in splits.columns if c.startswith("fewshot")]
    nested = whole = True
    for fold in folds:
        previous = (splits["set"] == "train") & (splits["fold"] != fold)
        for fraction in sorted(fractions, reverse=True):
            member = splits[fewshot_column(fraction, fold)].astype(bool)
            nested &= bool((member <= previous).all())
            groups_in = set(splits.loc[member, "group"])
            whole &= bool(member[splits["group"].isin(groups_in) & previous].all())
            previous = member
    return {
        "groups_disjoint": bool(disjoint),
        "test_not_in_training": bool(not splits.loc[test, columns].to_numpy().any())
        and bool((splits.loc[test, "fold"] == 0).all()),
        "folds_stratified": bool(stratified),
        "fewshot_nested": bool(nested),
        "fewshot_groups_whole": bool(whole),
    }


def summarize_splits(splits: pd.DataFrame, settings: dict[str, Any]) -> dict[str, Any]:
    """A JSON-ready summary: settings, item/group/class counts per part, few-shot sizes and the checks."""
    fractions, folds = _fractions_and_folds(splits)

    def describe(part: pd.DataFrame) -> dict[str, Any]:
        counts = part["label"].value_counts().sort_index()
        return {
            "items": len(part),
            "groups": int(part["group"].nunique()),
            "classes": {str(label): int(n) for label, n in counts.items()},
            "class_fractions": {str(label): round(n / max(len(part), 1), 4) for label, n in counts.items()},
        }

    parts = {"all": describe(splits), "test": describe(splits[splits["set"] == "test"])}
    for fold in folds:
        parts[f"fold{fold}_validation"] = describe(
            splits[(splits["set"] == "train") & (splits["fold"] == fold)]
        )
        parts[f"fold{fold}_train"] = describe(splits[(splits["set"] == "train") & (splits["fold"] != fold)])
        for fraction in fractions:
            column = fewshot_column(fraction, fold)
            parts[column] = describe(splits[splits[column].astype(bool)])
    return {"settings": settings, "parts": parts, "checks": check_splits(splits)}


def fold_keys(splits: pd.DataFrame, fold: int, fraction: float = 1.0) -> tuple[list[str], list[str]]:
    """(training keys, validation keys) of CV ``fold``; ``fraction`` < 1 picks the nested few-shot subset."""
    train = (splits["set"] == "train") & (splits["fold"] != fold)
    if not ((splits["set"] == "train") & (splits["fold"] == fold)).any():
        raise ValueError(f"fold {fold} is not in the splits table")
    if fraction < 1.0:
        column = fewshot_column(fraction, fold)
        if column not in splits.columns:
            raise ValueError(
                f"few-shot fraction {fraction} of fold {fold} is not in the splits table ({column})"
            )
        train &= splits[column].astype(bool)
    validation = (splits["set"] == "train") & (splits["fold"] == fold)
    return splits.loc[train, "key"].tolist(), splits.loc[validation, "key"].tolist()


def heldout_keys(splits: pd.DataFrame) -> list[str]:
    """Keys of the held-out test set (used only for the final evaluation)."""
    return splits.loc[splits["set"] == "test", "key"].tolist()


def write_splits(splits: pd.DataFrame, out_dir: str | Path, settings: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``splits.csv`` and ``splits.json`` (summary with the checks) into ``out_dir``, atomically.

    Stratification is best effort (tiny cohorts cannot reach it; ``checks.folds_stratified`` reports it);
    the other checks are guarantees.

    Raises:
        ValueError: when a guaranteed check fails (the files are not written then).
    """
    summary = summarize_splits(splits, settings)
    failed = [name for name, ok in summary["checks"].items() if not ok and name != "folds_stratified"]
    if failed:
        raise ValueError(f"splits fail the checks {failed} (summary: {summary['parts']})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / "splits.csv", out_dir / "splits.json"
    write_csv_atomic(csv_path, splits, lineterminator="\n")
    write_json_atomic(json_path, summary, sort_keys=True)
    return csv_path, json_path


def read_splits(path: str | Path) -> pd.DataFrame:
    """Read ``splits.csv`` (or the folder holding it) with keys and groups as strings."""
    path = Path(path)
    path = path / "splits.csv" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"splits file {path} is missing (run `dagman splits` first)")
    splits = pd.read_csv(path, dtype={"key": str, "group": str})
    return splits.assign(label=_normalise_labels(splits["label"]))
