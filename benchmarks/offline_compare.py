"""`variantctl models compare`'s paired bootstrap: seconds for 2000 resamples of every binary metric on
breast_cancer's 569 rows, with the numpy metrics (trainers.evaluation.score) against scikit-learn's
metric functions in the same run (what compare called before issue 26). Medians of --repeat runs and
their ratio; both must give the same intervals.

    python benchmarks/offline_compare.py [--rounds 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_evaluation_metrics import sklearn_binary
from trainers import evaluation


def sklearn_score(task: str, metric: str, y: np.ndarray, p: np.ndarray) -> float:
    return sklearn_binary(metric, y, p)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    x, y = load_breast_cancer(return_X_y=True)
    y = y.astype(np.float64)
    a = make_pipeline(StandardScaler(), LogisticRegression(C=0.01)).fit(x, y).predict_proba(x)[:, 1]
    b = make_pipeline(StandardScaler(), LogisticRegression(C=1.0)).fit(x, y).predict_proba(x)[:, 1]
    timings: dict[str, list[float]] = {"sklearn": [], "numpy": []}
    results = {}
    for _ in range(args.repeat):
        for name in ("sklearn", "numpy"):
            patch = (
                mock.patch.object(evaluation, "score", sklearn_score)
                if name == "sklearn"
                else mock.MagicMock()
            )
            with patch:
                start = time.perf_counter()
                results[name] = evaluation.compare("binary", y, a, b, rounds=args.rounds)
                timings[name].append(time.perf_counter() - start)
    for ours, theirs in zip(results["numpy"], results["sklearn"], strict=True):
        assert abs(ours.low - theirs.low) < 1e-9 and abs(ours.high - theirs.high) < 1e-9, (ours, theirs)
    base, new = statistics.median(timings["sklearn"]), statistics.median(timings["numpy"])
    print(f"paired bootstrap, {args.rounds} resamples x 4 metrics, {len(y)} rows, median of {args.repeat}:")
    print(f"  sklearn metrics (baseline): {base:7.2f} s")
    print(f"  numpy metrics:              {new:7.2f} s   ({base / new:.1f}x faster; same intervals)")


if __name__ == "__main__":
    main()
