"""Binary classification metrics for Tasks 1 and 3: AUC with a bootstrap CI, threshold choice, DeLong.

- :func:`roc_auc`: area under the ROC curve (scikit-learn's ``roc_auc_score``), ties counted as one half.
- :func:`bootstrap_auc_ci`: percentile CI of the AUC from a stratified bootstrap (positives and negatives
  resampled separately, so every replicate keeps the class counts and has a defined AUC).
- :func:`youden_threshold`: the operating point chosen on validation data (maximum of TPR - FPR).
- :func:`threshold_metrics`: sensitivity, specificity, precision and recall at a given threshold.
- :func:`delong_covariance` / :func:`delong_test`: the fast DeLong algorithm (Sun & Xu 2014, IEEE Signal
  Processing Letters 21(11)) for the covariance of correlated AUCs and the paired two-sided test of
  DeLong, DeLong & Clarke-Pearson (1988, Biometrics 44(3)).
- :func:`paired_bootstrap_test`: the paired bootstrap alternative (same resampled cases for both methods).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "roc_auc",
    "bootstrap_auc_ci",
    "bootstrap_indices",
    "youden_threshold",
    "ThresholdMetrics",
    "threshold_metrics",
    "delong_covariance",
    "DelongResult",
    "delong_test",
    "paired_bootstrap_test",
]


def _check_binary(labels: Sequence[int] | np.ndarray, *scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Labels as a 0/1 int array, checked against the score arrays' lengths and for both classes."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got values {sorted(set(y.tolist()))[:5]}")
    for s in scores:
        if np.shape(s) != y.shape:
            raise ValueError(f"scores of shape {np.shape(s)} do not match labels of shape {y.shape}")
        if not np.isfinite(np.asarray(s, dtype=float)).all():
            raise ValueError("scores hold NaN or infinite values")
    if y.min() == y.max():
        raise ValueError(
            f"the AUC needs both classes, but all {y.size} labels are {int(y[0]) if y.size else '-'}"
        )
    return y.astype(np.int64)


def roc_auc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``); raises when one class is missing."""
    from sklearn.metrics import roc_auc_score

    y = _check_binary(labels, scores)
    return float(roc_auc_score(y, np.asarray(scores, dtype=float)))


def bootstrap_indices(
    labels: Sequence[int] | np.ndarray, n_bootstrap: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified bootstrap draws: (positive indices, negative indices, positive draws, negative draws).

    The draws come from ``np.random.default_rng(seed)``: first a (n_bootstrap, n_pos) array of
    ``integers(0, n_pos)``, then a (n_bootstrap, n_neg) array of ``integers(0, n_neg)``; replicate ``b`` uses
    ``positives[pos_draws[b]]`` and ``negatives[neg_draws[b]]``. A plain loop with the same generator calls
    reproduces every replicate exactly.
    """
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be at least 1, got {n_bootstrap}")
    y = _check_binary(labels)
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    rng = np.random.default_rng(seed)
    pos_draws = rng.integers(0, positives.size, size=(n_bootstrap, positives.size))
    neg_draws = rng.integers(0, negatives.size, size=(n_bootstrap, negatives.size))
    return positives, negatives, pos_draws, neg_draws


def _draw_counts(draws: np.ndarray, size: int) -> np.ndarray:
    """How often each of ``size`` items is drawn in each replicate: (B, size) counts from (B, k) draws."""
    n_rep = draws.shape[0]
    flat = (draws + np.arange(n_rep)[:, None] * size).ravel()
    return np.bincount(flat, minlength=n_rep * size).reshape(n_rep, size).astype(np.float64)


def _pair_kernel(pos_scores: np.ndarray, neg_scores: np.ndarray) -> np.ndarray:
    """Mann-Whitney kernel (n_pos, n_neg): 1 where the positive scores higher, 1/2 on ties, else 0."""
    diff = pos_scores[:, None] - neg_scores[None, :]
    return (diff > 0).astype(np.float64) + 0.5 * (diff == 0)


def _bootstrap_aucs(
    scores: np.ndarray, positives: np.ndarray, negatives: np.ndarray, pos_w: np.ndarray, neg_w: np.ndarray
) -> np.ndarray:
    """AUC of every bootstrap replicate at once: (pos counts @ kernel * neg counts) / (n_pos * n_neg).

    The AUC of a resampled set is the count-weighted mean of the Mann-Whitney kernel over (positive, negative)
    pairs, so all replicates come from one matrix product instead of one ROC computation each.
    """
    kernel = _pair_kernel(scores[positives], scores[negatives])
    return ((pos_w @ kernel) * neg_w).sum(axis=1) / (positives.size * negatives.size)


def bootstrap_auc_ci(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    *,
    n_bootstrap: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile confidence interval of the AUC from a stratified bootstrap (see :func:`bootstrap_indices`).

    Args:
        labels: 0/1 labels.
        scores: predicted scores (higher = more likely positive).
        n_bootstrap: replicates.
        level: coverage (0.95 gives the 2.5th and 97.5th percentiles, numpy's linear interpolation).
        seed: seed of the draws.

    Returns:
        (low, high).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    s = np.asarray(scores, dtype=float)
    y = _check_binary(labels, s)
    positives, negatives, pos_draws, neg_draws = bootstrap_indices(y, n_bootstrap, seed)
    aucs = _bootstrap_aucs(
        s,
        positives,
        negatives,
        _draw_counts(pos_draws, positives.size),
        _draw_counts(neg_draws, negatives.size),
    )
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(aucs, [tail, 100 - tail])
    return float(low), float(high)


def youden_threshold(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """The score threshold maximising Youden's J = sensitivity + specificity - 1 (choose it on validation).

    Candidates are the observed scores (scikit-learn's ``roc_curve`` without dropping points); a case is
    called positive when its score is >= the threshold. Among equal J the highest threshold wins (fewest
    positive calls).
    """
    from sklearn.metrics import roc_curve

    s = np.asarray(scores, dtype=float)
    y = _check_binary(labels, s)
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    finite = np.isfinite(thresholds)
    j = np.where(finite, tpr - fpr, -np.inf)
    return float(thresholds[int(np.argmax(j))])


@dataclass(frozen=True)
class ThresholdMetrics:
    """Confusion counts and rates at one threshold (a score >= threshold is a positive call).

    ``precision`` is 0 when nothing is called positive (scikit-learn's ``zero_division=0``); ``recall`` equals
    ``sensitivity`` and is reported under both names because the papers' tables use both.
    """

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: float
    specificity: float
    precision: float
    recall: float

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict for JSON and CSV rows."""
        return asdict(self)


def threshold_metrics(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float
) -> ThresholdMetrics:
    """Sensitivity, specificity, precision and recall of ``scores >= threshold`` against ``labels``."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels).astype(np.int64)
    if y.shape != s.shape or not np.isin(y, (0, 1)).all():
        raise ValueError(f"need 0/1 labels and scores of one shape, got {y.shape} and {s.shape}")
    called = s >= threshold
    tp = int(np.sum(called & (y == 1)))
    fp = int(np.sum(called & (y == 0)))
    tn = int(np.sum(~called & (y == 0)))
    fn = int(np.sum(~called & (y == 1)))

    def ratio(a: int, b: int) -> float:
        return a / b if b else 0.0

    sensitivity = ratio(tp, tp + fn)
    return ThresholdMetrics(
        threshold=float(threshold),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        sensitivity=sensitivity,
        specificity=ratio(tn, tn + fp),
        precision=ratio(tp, tp + fp),
        recall=sensitivity,
    )


def _midranks(x: np.ndarray) -> np.ndarray:
    """Midranks (1-based, ties share their mean rank) of each row of ``x`` (k, N)."""
    from scipy.stats import rankdata

    return rankdata(x, method="average", axis=1)


def delong_covariance(
    labels: Sequence[int] | np.ndarray, *scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of k score vectors on the same cases and their DeLong covariance matrix (fast algorithm).

    Sun & Xu (2014): with midranks ``tz`` over all cases, ``tx`` within positives and ``ty`` within negatives,
    AUC = (mean tz over positives - (m + 1) / 2) / n; the structural components are V10 = (tz - tx) / n per
    positive and V01 = 1 - (tz - ty) / m per negative; covariance = S10 / m + S01 / n (sample covariances).

    Returns:
        (aucs of shape (k,), covariance of shape (k, k)).
    """
    if not scores:
        raise ValueError("delong_covariance needs at least one score vector")
    stacked = np.vstack([np.asarray(s, dtype=float) for s in scores])
    y = _check_binary(labels, *stacked)
    pos, neg = stacked[:, y == 1], stacked[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's variance needs at least 2 positives and 2 negatives, got {m} and {n}")
    tx, ty = _midranks(pos), _midranks(neg)
    tz = _midranks(np.hstack([pos, neg]))
    aucs = (tz[:, :m].mean(axis=1) - (m + 1) / 2.0) / n
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


@dataclass(frozen=True)
class DelongResult:
    """Paired DeLong test of AUC(a) against AUC(b) on the same cases (two-sided)."""

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float


def delong_test(
    labels: Sequence[int] | np.ndarray,
    scores_a: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
) -> DelongResult:
    """DeLong's test that two correlated AUCs on the same cases are equal (two-sided normal p-value).

    z = (AUC_a - AUC_b) / sqrt(var_a + var_b - 2 cov_ab). Identical score vectors give z = 0 and p = 1.
    """
    aucs, cov = delong_covariance(labels, scores_a, scores_b)
    variance = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    difference = float(aucs[0] - aucs[1])
    se = math.sqrt(max(variance, 0.0))
    if se <= 1e-15:
        z, p = 0.0, 1.0
    else:
        z = difference / se
        p = math.erfc(abs(z) / math.sqrt(2.0))
    return DelongResult(float(aucs[0]), float(aucs[1]), difference, se, float(z), float(p))


def paired_bootstrap_test(
    labels: Sequence[int] | np.ndarray,
    scores_a: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
    *,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Paired stratified bootstrap test of AUC(a) - AUC(b): both methods scored on the same resampled cases.

    The p-value is two-sided from the bootstrap distribution centred on the observed difference d:
    p = (1 + #{|d_b - d| >= |d|}) / (B + 1).

    Returns:
        (observed difference AUC_a - AUC_b, p-value).
    """
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    y = _check_binary(labels, a, b)
    positives, negatives, pos_draws, neg_draws = bootstrap_indices(y, n_bootstrap, seed)
    pos_w, neg_w = _draw_counts(pos_draws, positives.size), _draw_counts(neg_draws, negatives.size)
    diffs = _bootstrap_aucs(a, positives, negatives, pos_w, neg_w) - _bootstrap_aucs(
        b, positives, negatives, pos_w, neg_w
    )
    observed = roc_auc(y, a) - roc_auc(y, b)
    extreme = int(np.sum(np.abs(diffs - observed) >= abs(observed) - 1e-12))
    return float(observed), float((1 + extreme) / (n_bootstrap + 1))
