"""The covariate of `adjust: prePeriodModel`: a small model fitted on the baseline's labelled history
from *before* the rollout started, which predicts each request's outcome (the baseline's correctness,
or its loss) from the captured input alone. Applied to every request of the rollout, whichever variant
served it, it does not depend on the arm, and `stats.adjusted` subtracts what it explains.

It is fitted once, at the start, and never again during the rollout: `fit` refuses any row served at
or after the start. A model fitted on the rollout's own labelled requests has seen their outcomes,
the candidate's included; its predictions follow the arms, and the adjustment then cancels part of
the very difference under test (tests/test_adjusted.py measures that bias).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

MIN_ROWS = 200  # labelled requests of history; fewer, and the test is the unadjusted one


class PostStartData(ValueError):
    """History that reaches into the rollout."""


@dataclass(frozen=True)
class Covariate:
    estimator: Any
    pickled: bytes  # the fitted model as stored
    fingerprint: str  # sha256 of `pickled`: what the record names
    first_served: datetime
    last_served: datetime
    rows: int
    outcome: str  # what it predicts: "correct" (classifiers) or the loss measure
    fallback: float  # the history's mean outcome: x for a request whose input cannot be scored

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict(np.asarray(features, dtype=float)), dtype=float)

    def record(self) -> dict[str, Any]:
        """What the rollout's history keeps of it."""
        return {
            "fingerprint": self.fingerprint,
            "first_served": self.first_served.isoformat(),
            "last_served": self.last_served.isoformat(),
            "rows": self.rows,
            "outcome": self.outcome,
        }


def estimator(seed: int = 0) -> Any:
    """The model: gradient boosting, small and seeded (the same history gives the same covariate)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=100, random_state=seed)


def fit(
    features: np.ndarray,
    outcomes: np.ndarray,
    served_at: Sequence[datetime],
    started_at: datetime,
    outcome: str,
    seed: int = 0,
) -> Covariate:
    """The covariate from the baseline's history; PostStartData for a row served at or after the
    start, ValueError for too little history."""
    late = sum(1 for at in served_at if at >= started_at)
    if late:
        raise PostStartData(
            f"{late} of {len(served_at)} history rows were served at or after the rollout started"
            f" ({started_at.isoformat()}): a covariate fitted on them has seen the rollout's outcomes"
            " and would bias the difference it is meant to sharpen"
        )
    features, outcomes = np.asarray(features, dtype=float), np.asarray(outcomes, dtype=float)
    if not len(features) == len(outcomes) == len(served_at):
        raise ValueError("the history's features, outcomes and times must be as many")
    if len(outcomes) < MIN_ROWS:
        raise ValueError(
            f"{len(outcomes)} labelled requests of history before the start: at least {MIN_ROWS} are needed"
        )
    model = estimator(seed).fit(features, outcomes)
    pickled = pickle.dumps(model)
    return Covariate(
        model,
        pickled,
        hashlib.sha256(pickled).hexdigest(),
        min(served_at),
        max(served_at),
        len(outcomes),
        outcome,
        float(outcomes.mean()),
    )
