"""Splits: patient-level test / CV / nested few-shot sets, stratified, reproducible, generic over columns."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest

from dagman.cohorts import splits_cli
from dagman.cohorts.splits import (
    check_splits,
    fewshot_column,
    fold_keys,
    heldout_keys,
    make_splits,
    read_splits,
    write_splits,
)


def _cohort(n_patients: int = 300, positive: float = 0.22, seed: int = 0) -> pd.DataFrame:
    """A nodule-like table: 1-5 items per patient, labels correlated within a patient."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        patient_positive = rng.random() < positive * 1.5
        for n in range(int(rng.integers(1, 6))):
            label = int(rng.random() < (0.55 if patient_positive else 0.05))
            rows.append({"key": f"P{p:04d}_n{n}", "patient_id": f"P{p:04d}", "label": label})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return _cohort()


@pytest.fixture(scope="module")
def splits(cohort: pd.DataFrame) -> pd.DataFrame:
    return make_splits(cohort, test_size=250, n_folds=3, fractions=(0.25, 0.5), seed=7)


def test_all_invariants_hold(splits: pd.DataFrame) -> None:
    """Patient-disjoint parts, stratified folds (within 5 points), nested whole-patient few-shot subsets."""
    assert check_splits(splits) == {
        "groups_disjoint": True,
        "test_not_in_training": True,
        "folds_stratified": True,
        "fewshot_nested": True,
        "fewshot_groups_whole": True,
    }


def test_no_patient_in_two_parts(splits: pd.DataFrame) -> None:
    """Each patient lies in exactly one of {test, fold 1, fold 2, fold 3}."""
    part = np.where(splits["set"] == "test", 0, splits["fold"])
    assert (pd.Series(part).groupby(splits["group"]).nunique() == 1).all()
    assert set(splits.loc[splits["set"] == "train", "fold"]) == {1, 2, 3}


def test_class_fraction_of_each_part_within_five_points(splits: pd.DataFrame) -> None:
    """The malignant fraction of the test set and of each fold is within 5 points of the whole."""
    overall = splits["label"].mean()
    parts = [splits[splits["set"] == "test"]] + [
        splits[(splits["set"] == "train") & (splits["fold"] == f)] for f in (1, 2, 3)
    ]
    for part in parts:
        assert abs(part["label"].mean() - overall) <= 0.05


def test_test_size_count_is_reached_closely(splits: pd.DataFrame) -> None:
    """A test size given as a count is matched to within one patient's items."""
    assert abs(int((splits["set"] == "test").sum()) - 250) <= 5


def test_fewshot_subsets_are_nested_in_fold_and_sized(splits: pd.DataFrame) -> None:
    """25 % subset within 50 % subset within the training fold, about the right sizes, never test rows."""
    for fold in (1, 2, 3):
        train_keys, val_keys = fold_keys(splits, fold)
        half, _ = fold_keys(splits, fold, 0.5)
        quarter, _ = fold_keys(splits, fold, 0.25)
        assert set(quarter) < set(half) < set(train_keys)
        assert not set(train_keys) & set(val_keys)
        assert abs(len(half) / len(train_keys) - 0.5) < 0.05
        assert abs(len(quarter) / len(train_keys) - 0.25) < 0.05
        assert not set(train_keys + val_keys) & set(heldout_keys(splits))
        test_rows = splits["set"] == "test"
        assert not splits.loc[test_rows, fewshot_column(0.25, fold)].any()


def test_same_seed_gives_byte_identical_files_and_other_seed_differs(cohort: pd.DataFrame, tmp_path) -> None:
    """Two runs with one seed write identical bytes; another seed gives another split."""
    settings = {"seed": 7}
    paths = []
    for run in ("a", "b"):
        table = make_splits(cohort, test_size=0.25, seed=7)
        paths.append(write_splits(table, tmp_path / run, settings))
    for first, second in zip(*paths, strict=True):
        assert first.read_bytes() == second.read_bytes()
    other = make_splits(cohort, test_size=0.25, seed=8)
    assert not other["set"].equals(read_splits(tmp_path / "a")["set"])


def test_generic_columns_string_labels_and_missing_labels() -> None:
    """Any key/group/label column names work; rows without a label are left out; string labels stratify."""
    table = _cohort(120, seed=3).rename(columns={"key": "case", "patient_id": "subject", "label": "outcome"})
    table["outcome"] = np.where(table["outcome"] == 1, "responder", "non-responder").astype(object)
    table.loc[table.index[:7], "outcome"] = None
    result = make_splits(
        table, key_col="case", group_col="subject", label_col="outcome", test_size=0.2, seed=1
    )
    assert len(result) == len(table) - 7
    assert set(result["label"]) == {"responder", "non-responder"}
    checks = check_splits(result, max_class_deviation=0.1)
    assert all(checks.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label_col": "nope"}, "no column 'nope'"),
        ({"test_size": 10_000}, "test items"),
        ({"fractions": (0.5, 1.0)}, "strictly between 0 and 1"),
        ({"n_folds": 1}, "at least 2"),
    ],
)
def test_bad_arguments_raise_plain_errors(cohort: pd.DataFrame, kwargs: dict, message: str) -> None:
    """Wrong columns, sizes or fractions fail up front with a message naming the problem."""
    with pytest.raises(ValueError, match=message):
        make_splits(cohort, **kwargs)


def test_cli_writes_csv_and_json_summary(cohort: pd.DataFrame, tmp_path) -> None:
    """`dagman splits` writes splits.csv and a splits.json whose checks all pass."""
    import json

    cohort.to_csv(tmp_path / "nodules.csv", index=False)
    parser = argparse.ArgumentParser()
    splits_cli.add_arguments(parser)
    args = parser.parse_args(
        [
            "--table",
            str(tmp_path / "nodules.csv"),
            "--out",
            str(tmp_path / "splits"),
            "--test-size",
            "0.2",
            "--seed",
            "3",
        ]
    )
    assert splits_cli.run(args) == 0
    summary = json.loads((tmp_path / "splits" / "splits.json").read_text())
    assert all(summary["checks"].values())
    assert summary["parts"]["all"]["items"] == len(cohort)
    assert len(read_splits(tmp_path / "splits")) == len(cohort)


def test_tiny_cohort_never_gets_an_empty_fewshot_subset() -> None:
    """With a handful of patients (the demo), every few-shot subset still holds at least one patient."""
    tiny = _cohort(8, positive=0.5, seed=5)
    result = make_splits(tiny, test_size=0.2, seed=0)
    for fold in (1, 2, 3):
        for fraction in (0.25, 0.5):
            assert result[fewshot_column(fraction, fold)].sum() > 0
    checks = check_splits(result)
    assert checks["groups_disjoint"] and checks["fewshot_nested"] and checks["test_not_in_training"]
