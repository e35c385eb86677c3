"""Tests of the classification metrics against scikit-learn, direct loops and hand-worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dagman.tasks.metrics import (
    bootstrap_auc_ci,
    delong_covariance,
    delong_test,
    paired_bootstrap_test,
    roc_auc,
    threshold_metrics,
    youden_threshold,
)


def _sample(n: int, seed: int, ties: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two correlated score vectors; rounding makes ties."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    y[:2], y[2:4] = 1, 0
    a = y * 0.8 + rng.normal(size=n)
    b = 0.6 * a + 0.8 * rng.normal(size=n)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    return y, a, b


def _direct_delong(y: np.ndarray, *scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. (1988) from the definitions: O(m n) kernel, structural components, sample covariances."""
    v10, v01, aucs = [], [], []
    for s in scores:
        pos, neg = s[y == 1], s[y == 0]
        psi = np.array([[1.0 if p > q else 0.5 if p == q else 0.0 for q in neg] for p in pos])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
        aucs.append(psi.mean())
    m, n = int((y == 1).sum()), int((y == 0).sum())
    return np.array(aucs), np.atleast_2d(np.cov(np.array(v10))) / m + np.atleast_2d(np.cov(np.array(v01))) / n


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_with_ties(seed: int) -> None:
    """roc_auc equals scikit-learn's roc_auc_score, ties included."""
    y, a, _ = _sample(60, seed)
    assert roc_auc(y, a) == pytest.approx(roc_auc_score(y, a), abs=1e-12)


def test_auc_refuses_a_single_class() -> None:
    """An AUC of one class is undefined and raises a plain-language error."""
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1, 1], [0.1, 0.2, 0.3])


def test_bootstrap_ci_matches_a_direct_loop() -> None:
    """The vectorised stratified bootstrap equals a loop of roc_auc_score over the same draws."""
    y, a, _ = _sample(50, 3)
    n_boot, seed = 300, 7
    low, high = bootstrap_auc_ci(y, a, n_bootstrap=n_boot, seed=seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    rng = np.random.default_rng(seed)
    pos_draws = rng.integers(0, pos.size, size=(n_boot, pos.size))
    neg_draws = rng.integers(0, neg.size, size=(n_boot, neg.size))
    aucs = []
    for b in range(n_boot):
        rows = np.concatenate([pos[pos_draws[b]], neg[neg_draws[b]]])
        aucs.append(roc_auc_score(y[rows], a[rows]))
    expected = np.percentile(aucs, [2.5, 97.5])
    assert (low, high) == pytest.approx(tuple(expected), abs=1e-12)
    assert low < roc_auc(y, a) < high


def test_delong_hand_worked_example() -> None:
    """Positives 0.9, 0.8, 0.4 and negatives 0.7, 0.3: AUC = 5/6 and DeLong variance = 1/18.

    By hand: V10 = (1, 1, 1/2) for the positives, V01 = (2/3, 1) for the negatives; S10 = 1/12, S01 = 1/18;
    var = S10 / 3 + S01 / 2 = 1/36 + 1/36 = 1/18.
    """
    aucs, cov = delong_covariance([1, 1, 1, 0, 0], [0.9, 0.8, 0.4, 0.7, 0.3])
    assert aucs[0] == pytest.approx(5 / 6, abs=1e-12)
    assert cov[0, 0] == pytest.approx(1 / 18, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 4])
def test_fast_delong_matches_the_direct_computation(seed: int) -> None:
    """Sun & Xu's midrank algorithm gives the same AUCs and covariance as the O(m n) definition (with ties)."""
    y, a, b = _sample(45, seed)
    c = np.round(a + b, 1)
    fast_aucs, fast_cov = delong_covariance(y, a, b, c)
    direct_aucs, direct_cov = _direct_delong(y, a, b, c)
    np.testing.assert_allclose(fast_aucs, direct_aucs, atol=1e-12)
    np.testing.assert_allclose(fast_cov, direct_cov, atol=1e-12)
    np.testing.assert_allclose(fast_aucs, [roc_auc_score(y, s) for s in (a, b, c)], atol=1e-12)


def test_delong_test_statistic_and_edge_cases() -> None:
    """z = dAUC / sqrt(var_a + var_b - 2 cov); p two-sided normal; identical scores give p = 1; antisymmetric."""
    y, a, b = _sample(80, 5)
    result = delong_test(y, a, b)
    aucs, cov = _direct_delong(y, a, b)
    z = (aucs[0] - aucs[1]) / math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert result.z == pytest.approx(z, abs=1e-10)
    assert result.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), abs=1e-12)
    swapped = delong_test(y, b, a)
    assert swapped.z == pytest.approx(-result.z) and swapped.p_value == pytest.approx(result.p_value)
    same = delong_test(y, a, a)
    assert same.z == 0.0 and same.p_value == 1.0
    strong = delong_test(y, y + 0.01 * np.arange(y.size) % 1, np.random.default_rng(0).normal(size=y.size))
    assert strong.p_value < 1e-4


def test_paired_bootstrap_matches_a_direct_loop() -> None:
    """The paired bootstrap p-value equals the one from a loop over the same draws; identical scores give p = 1."""
    y, a, b = _sample(40, 6)
    n_boot, seed = 200, 3
    diff, p = paired_bootstrap_test(y, a, b, n_bootstrap=n_boot, seed=seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    rng = np.random.default_rng(seed)
    pos_draws = rng.integers(0, pos.size, size=(n_boot, pos.size))
    neg_draws = rng.integers(0, neg.size, size=(n_boot, neg.size))
    observed = roc_auc_score(y, a) - roc_auc_score(y, b)
    diffs = []
    for i in range(n_boot):
        rows = np.concatenate([pos[pos_draws[i]], neg[neg_draws[i]]])
        diffs.append(roc_auc_score(y[rows], a[rows]) - roc_auc_score(y[rows], b[rows]))
    extreme = np.sum(np.abs(np.array(diffs) - observed) >= abs(observed) - 1e-12)
    assert diff == pytest.approx(observed, abs=1e-12)
    assert p == pytest.approx((1 + extreme) / (n_boot + 1))
    assert paired_bootstrap_test(y, a, a, n_bootstrap=50)[1] == 1.0


def test_youden_threshold_and_rates() -> None:
    """Youden picks the score that separates best; rates follow the confusion counts at that threshold."""
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    threshold = youden_threshold(y, s)
    # >= 0.6 gives TPR 3/4, FPR 0 (J = 0.75); >= 0.4 gives TPR 1, FPR 1/4 (J = 0.75): the higher one wins
    assert threshold == 0.6
    rates = threshold_metrics(y, s, threshold)
    assert (rates.tp, rates.fp, rates.tn, rates.fn) == (3, 0, 4, 1)
    assert rates.sensitivity == rates.recall == 0.75
    assert rates.specificity == 1.0 and rates.precision == 1.0
    assert threshold_metrics(y, s, 2.0).precision == 0.0
