"""Offline metrics, the offline gate, and paired-bootstrap comparisons of two models."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from manager.errors import UserError
from trainers.datasets import Task

MAXIMIZE = {
    "accuracy": True,
    "roc_auc": True,
    "f1": True,
    "r2": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
}
CLASSIFICATION_METRICS = ("accuracy", "roc_auc", "log_loss", "f1")
REGRESSION_METRICS = ("rmse", "mae", "r2")


def metrics_for(task: Task) -> tuple[str, ...]:
    return REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS


def check_metric(task: Task, metric: str, x: np.ndarray | None = None) -> None:
    """Refused when `metric` does not fit the task the target implies; given the features `x`, the
    message says where the target may really be (issue 31: a CSV with its label last read as regression,
    and the user was told only that roc_auc does not apply)."""
    if metric not in metrics_for(task):
        raise UserError(
            f"metric {metric!r} does not apply to {task} models; use one of {', '.join(metrics_for(task))}"
            + (_target_hint(task, x) if x is not None else "")
        )


def _target_hint(task: Task, x: np.ndarray) -> str:
    """Where a classification target may be when the first column reads as regression (or the reverse)."""
    if task != "regression":
        return (
            " (the first column, read as the target, holds only a few whole values, so the data reads as "
            f"{task}; the target goes first, with no header, as SageMaker's CSV takes it)"
        )
    labelled = [
        i
        for i in range(x.shape[1])
        if 2 <= np.unique(x[:, i]).size <= 20 and np.all(np.equal(np.mod(x[:, i], 1), 0))
    ]
    said = " (the first column, read as the target, holds continuous values, so the data reads as regression"
    if not labelled:
        return said + ")"
    last = labelled[-1]
    where = "the last column" if last == x.shape[1] - 1 else f"column {last + 2}"
    values = np.unique(x[:, last]).size
    return (
        f"{said}; {where} holds {values} whole values, like a class label: the target goes first, "
        "with no header, as SageMaker's CSV takes it)"
    )


def predict(model: Any, x: np.ndarray, task: Task) -> np.ndarray:
    """Scores as the endpoint serves them: P(positive) for binary, class probabilities for
    multiclass, values for regression."""
    if task == "regression":
        return np.asarray(model.predict(x), dtype=np.float64)
    proba = np.asarray(model.predict_proba(x), dtype=np.float64)
    return proba[:, 1] if task == "binary" else proba


def score(task: Task, metric: str, y: np.ndarray, scores: np.ndarray) -> float:
    """One metric, as scikit-learn computes it. Binary and regression metrics are plain numpy (the
    paired bootstrap scores thousands of resamples, and sklearn's input checks cost a millisecond a
    call); tests/test_evaluation_metrics.py holds them equal to sklearn's."""
    if task == "binary":
        return _binary(metric, np.asarray(y, dtype=np.float64), np.asarray(scores, dtype=np.float64))
    if task == "regression":
        return _regression(metric, np.asarray(y, dtype=np.float64), np.asarray(scores, dtype=np.float64))
    return _multiclass(metric, y, scores)


def _binary(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    positive = y == 1
    predicted = p >= 0.5
    if metric == "accuracy":
        return float(np.mean(predicted == positive))
    if metric == "f1":
        tp = float(np.sum(predicted & positive))
        wrong = float(np.sum(predicted != positive))
        return 0.0 if tp == 0 else 2 * tp / (2 * tp + wrong)  # sklearn's zero_division: 0
    if metric == "log_loss":
        eps = np.finfo(p.dtype).eps
        clipped = np.clip(p, eps, 1 - eps)
        return float(-np.mean(np.where(positive, np.log(clipped), np.log1p(-clipped))))
    n_pos = int(np.sum(positive))
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata  # Mann-Whitney: AUC from average ranks (ties count half)

    ranks = rankdata(p)
    return float((np.sum(ranks[positive]) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _regression(metric: str, y: np.ndarray, predicted: np.ndarray) -> float:
    residual = y - predicted
    if metric == "rmse":
        return float(np.sqrt(np.mean(residual**2)))
    if metric == "mae":
        return float(np.mean(np.abs(residual)))
    ss_res, ss_tot = float(np.sum(residual**2)), float(np.sum((y - np.mean(y)) ** 2))
    if ss_tot == 0:
        return 1.0 if ss_res == 0 else 0.0  # sklearn's force_finite
    return 1 - ss_res / ss_tot


def _multiclass(metric: str, y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn import metrics as m

    if metric == "accuracy":
        return float(m.accuracy_score(y, np.argmax(scores, axis=1)))
    if metric == "f1":
        return float(m.f1_score(y, np.argmax(scores, axis=1), average="macro"))
    if metric == "log_loss":
        return float(m.log_loss(y, scores, labels=list(range(scores.shape[1]))))
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(m.roc_auc_score(y, scores, multi_class="ovr"))


def all_metrics(task: Task, y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {metric: score(task, metric, y, scores) for metric in metrics_for(task)}


def better(metric: str, a: float, b: float) -> bool:
    return a > b if MAXIMIZE[metric] else a < b


@dataclass(frozen=True)
class GateResult:
    passed: bool
    metric: str
    candidate: float
    baseline: float
    margin: float
    rows: int

    @property
    def difference(self) -> float:
        """Candidate minus baseline, signed so that positive is better."""
        raw = self.candidate - self.baseline
        return raw if MAXIMIZE[self.metric] else -raw

    def as_evidence(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "improvement": self.difference,
            "margin": self.margin,
            "rows": self.rows,
            "passed": self.passed,
        }

    def sentence(self) -> str:
        verdict = "passed" if self.passed else "failed"
        return (
            f"offline gate {verdict}: {self.metric} candidate {self.candidate:.4f} vs baseline "
            f"{self.baseline:.4f} (improvement {self.difference:+.4f}, allowed margin {self.margin:g}, "
            f"{self.rows} held-out rows)"
        )


def gate(
    task: Task,
    metric: str,
    margin: float,
    y: np.ndarray,
    candidate_scores: np.ndarray,
    baseline_scores: np.ndarray,
) -> GateResult:
    """Candidate at least as good as the baseline within `margin`, both scored on the same rows."""
    check_metric(task, metric)
    c, b = score(task, metric, y, candidate_scores), score(task, metric, y, baseline_scores)
    improvement = (c - b) if MAXIMIZE[metric] else (b - c)
    return GateResult(improvement >= -margin, metric, c, b, margin, len(y))


@dataclass(frozen=True)
class Comparison:
    metric: str
    a: float
    b: float
    difference: float  # b - a
    low: float
    high: float


def compare(
    task: Task,
    y: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    rounds: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    progress: Callable[[int], None] | None = None,
) -> list[Comparison]:
    """Every metric for A and B, with a paired-bootstrap interval on B - A (same resampled rows)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    draws = {metric: [] for metric in metrics_for(task)}  # type: dict[str, list[float]]
    for i in range(rounds):
        rows = rng.integers(0, n, n)
        for metric in draws:
            diff = score(task, metric, y[rows], scores_b[rows]) - score(task, metric, y[rows], scores_a[rows])
            if np.isfinite(diff):
                draws[metric].append(diff)
        if progress is not None:
            progress(i + 1)
    tail = (1 - confidence) / 2 * 100
    out = []
    for metric, diffs in draws.items():
        a, b = score(task, metric, y, scores_a), score(task, metric, y, scores_b)
        low, high = np.percentile(diffs, [tail, 100 - tail]) if diffs else (float("nan"), float("nan"))
        out.append(Comparison(metric, a, b, b - a, float(low), float(high)))
    return out


def load_local(uri: str) -> Any:
    """A joblib model from a `file://` URI or a path; S3 artifacts are evaluated by batch transform."""
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    import joblib

    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise UserError(f"{uri} is not a local artifact: evaluate it with a SageMaker batch transform")
    path = Path(unquote(parsed.path) if parsed.scheme else uri)
    try:
        return joblib.load(path)
    except FileNotFoundError:
        raise UserError(f"model artifact {path} does not exist") from None
    except Exception as exc:  # unpickling can fail in many ways; each is the same problem to the user
        raise UserError(f"cannot load model artifact {path}: {type(exc).__name__}: {exc}") from None
