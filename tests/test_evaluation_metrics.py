"""The offline metrics are numpy for speed (the paired bootstrap scores thousands of resamples); here
they are held equal to scikit-learn's on random, tied, one-class and degenerate inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as m

from trainers.evaluation import compare, score


def sklearn_binary(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    """The reference: scikit-learn's metric functions, as `score` called them before (also
    benchmarks/offline_compare.py's baseline)."""
    predicted = (p >= 0.5).astype(np.float64)
    if metric == "accuracy":
        return float(m.accuracy_score(y, predicted))
    if metric == "f1":
        return float(m.f1_score(y, predicted, zero_division=0.0))
    if metric == "log_loss":
        return float(m.log_loss(y, np.column_stack([1 - p, p]), labels=[0, 1]))
    return float(m.roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def _binary_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    cases = []
    for n in (1, 2, 5, 40, 301):
        y = rng.integers(0, 2, n).astype(np.float64)
        cases.append((y, rng.random(n)))
        cases.append((y, np.round(rng.random(n), 1)))  # many ties
    cases.append((np.ones(6), rng.random(6)))  # one class: AUC undefined, F1 still defined
    cases.append((np.zeros(6), np.zeros(6)))  # nothing predicted positive: F1 is 0
    cases.append((np.array([0.0, 1.0, 1.0]), np.array([0.0, 1.0, 0.5])))  # p of exactly 0, 1 and 0.5
    return cases


@pytest.mark.parametrize("metric", ["accuracy", "f1", "log_loss", "roc_auc"])
def test_binary_metrics_equal_sklearns(metric: str) -> None:
    for y, p in _binary_cases():
        ours, theirs = score("binary", metric, y, p), sklearn_binary(metric, y, p)
        if np.isnan(theirs):
            assert np.isnan(ours), (metric, y, p)
        else:
            assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-12), (metric, y, p)


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2"])
def test_regression_metrics_equal_sklearns(metric: str) -> None:
    rng = np.random.default_rng(11)
    cases = [(rng.normal(size=n), rng.normal(size=n)) for n in (2, 9, 250)]
    cases += [(np.full(4, 3.0), np.full(4, 3.0)), (np.full(4, 3.0), np.arange(4.0))]  # constant y
    sk = {
        "rmse": lambda y, p: np.sqrt(m.mean_squared_error(y, p)),
        "mae": m.mean_absolute_error,
        "r2": m.r2_score,
    }[metric]
    for y, p in cases:
        assert score("regression", metric, y, p) == pytest.approx(float(sk(y, p)), rel=1e-12, abs=1e-12)


def test_the_bootstrap_interval_holds_the_difference_and_is_seeded() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400).astype(np.float64)
    a = np.clip(y * 0.3 + rng.random(400) * 0.7, 0, 1)  # weakly informative
    b = np.clip(y * 0.6 + rng.random(400) * 0.4, 0, 1)  # more so
    first, again = compare("binary", y, a, b, rounds=300), compare("binary", y, a, b, rounds=300)
    assert first == again
    auc = next(c for c in first if c.metric == "roc_auc")
    assert auc.low <= auc.difference <= auc.high
    assert auc.low > 0  # b is clearly better on these rows
