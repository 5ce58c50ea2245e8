"""Local scikit-learn training with a seeded hyperparameter search, like SageMaker's tuner but on
this machine: random or successive-halving search over ranges from train.yaml, scored on the
validation split; the best model is refit on the training split and saved atomically (joblib, plus
a JSON sidecar of its metadata)."""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from manager.clock import utcnow
from manager.errors import UserError
from trainers.base import Progress, TrainingResult
from trainers.config import Range, Search, TrainConfig
from trainers.datasets import Dataset, Splits, Task, split
from trainers.evaluation import MAXIMIZE, all_metrics, better, check_metric, predict, score

PREFIX = "model__"


def build(estimator: str, task: Task, params: dict[str, Any], seed: int = 0) -> Any:
    """A pipeline whose last step is named `model`, so every hyperparameter is `model__<name>`."""
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    regression = task == "regression"
    if estimator == "logistic_regression":
        if regression:
            raise UserError(
                "logistic_regression is a classifier; for a regression target use ridge, "
                "hist_gradient_boosting or random_forest"
            )
        steps = [("scale", StandardScaler()), ("model", LogisticRegression(max_iter=2000))]
    elif estimator == "ridge":
        if not regression:
            raise UserError(
                "ridge is a regressor; for a classification target use logistic_regression, "
                "hist_gradient_boosting or random_forest"
            )
        steps = [("scale", StandardScaler()), ("model", Ridge())]
    elif estimator == "hist_gradient_boosting":
        model = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
        steps = [("model", model(random_state=seed))]
    elif estimator == "random_forest":
        forest = RandomForestRegressor if regression else RandomForestClassifier
        steps = [("model", forest(n_estimators=100, random_state=seed, n_jobs=1))]
    else:
        raise UserError(f"unknown model type {estimator!r}")
    pipeline = Pipeline(steps)
    return with_params(pipeline, params)


def with_params(pipeline: Any, params: dict[str, Any]) -> Any:
    valid = sorted(
        k[len(PREFIX) :]
        for k in pipeline.get_params()
        if k.startswith(PREFIX) and "__" not in k[len(PREFIX) :]
    )
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise UserError(
            f"{type(pipeline.named_steps['model']).__name__} has no hyperparameter "
            f"{', '.join(unknown)}; it has {', '.join(valid)}"
        )
    try:
        return pipeline.set_params(**{PREFIX + k: v for k, v in params.items()})
    except (ValueError, TypeError) as exc:
        raise UserError(f"invalid hyperparameters {params}: {exc}") from None


class _LogInt:
    """An integer drawn log-uniformly from [low, high] (SageMaker's Logarithmic integer range)."""

    def __init__(self, low: float, high: float) -> None:
        from scipy.stats import loguniform

        self.dist = loguniform(low, high + 1)
        self.low, self.high = int(low), int(high)

    def rvs(self, random_state: Any = None) -> int:
        return int(min(self.high, max(self.low, math.floor(self.dist.rvs(random_state=random_state)))))


def distribution(r: Range) -> Any:
    from scipy.stats import loguniform, randint, uniform

    if r.type == "categorical":
        return list(r.values or [])
    assert r.min is not None and r.max is not None
    if r.type == "integer":
        return _LogInt(r.min, r.max) if r.scale == "log" else randint(int(r.min), int(r.max) + 1)
    if r.min == r.max:
        return [r.min]
    return loguniform(r.min, r.max) if r.scale == "log" else uniform(r.min, r.max - r.min)


def _fit_and_score(
    pipeline: Any,
    params: dict[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    splits: Splits,
    task: Task,
    metric: str,
) -> tuple[float, Any]:
    from sklearn.base import clone

    model = with_params(clone(pipeline), params)
    model.fit(x, y)
    value = score(task, metric, splits.y_val, predict(model, splits.x_val, task))
    return value, model


class SklearnTrainer:
    name = "sklearn"

    def train(self, config: TrainConfig, data: Dataset, progress: Progress | None = None) -> TrainingResult:
        check_metric(data.task, config.objective.metric, data.x)
        started = utcnow()
        base = build(config.estimator, data.task, config.params, seed=config.split.seed)
        splits = split(data, config.split.validation, config.split.test, config.split.seed)
        if config.search is None:
            value, model = _fit_and_score(
                base, {}, splits.x_train, splits.y_train, splits, data.task, config.objective.metric
            )
            best_params: dict[str, Any] = {}
            searched: dict[str, Any] = {"strategy": "none", "jobs": 1, "best_score": value}
            if progress:
                progress(1, 1, value, value)
        else:
            best_params, searched = self._search(
                base, config.search, splits, data.task, config.objective.metric, progress
            )
            value, model = _fit_and_score(
                base, best_params, splits.x_train, splits.y_train, splits, data.task, config.objective.metric
            )
        metrics = {
            "validation": all_metrics(data.task, splits.y_val, predict(model, splits.x_val, data.task)),
            "test": all_metrics(data.task, splits.y_test, predict(model, splits.x_test, data.task)),
        }
        hyperparameters = {**config.params, **best_params}
        finished = utcnow()
        import sklearn

        sidecar = {
            "model": config.model,
            "estimator": config.estimator,
            "task": data.task,
            "hyperparameters": hyperparameters,
            "framework": "sklearn",
            "framework_version": sklearn.__version__,
            "features": data.features,
            "dataset": data.source,
            "fingerprint": data.fingerprint,
            "shift": data.shift,
            "metrics": metrics,
            "objective": config.objective.metric,
            "trained_at": finished.isoformat(),
        }
        artifact = save_artifact(Path(config.output), config.model, data.fingerprint, model, sidecar)
        return TrainingResult.of(
            self.name,
            config,
            data,
            artifact_uri=artifact.as_uri(),
            framework=("sklearn", sklearn.__version__),
            hyperparameters=_plain(hyperparameters),
            metrics=metrics,
            started_at=started,
            finished_at=finished,
            search=searched,
        )

    def _search(
        self, base: Any, search: Search, splits: Splits, task: Task, metric: str, progress: Progress | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        from sklearn.model_selection import ParameterSampler

        space = {name: distribution(r) for name, r in search.ranges.items()}
        with_params(base, {name: _example(r) for name, r in search.ranges.items()})  # every name exists
        candidates = list(ParameterSampler(space, n_iter=search.max_jobs, random_state=search.seed))
        rows_total = len(splits.y_train)
        plan = (
            [(rows_total, len(candidates))]
            if search.strategy == "random"
            else _halving_plan(len(candidates), rows_total, search.halving_factor)
        )
        planned = sum(count for _, count in plan)
        order = np.random.default_rng(search.seed).permutation(rows_total)
        worst = -math.inf if MAXIMIZE[metric] else math.inf
        best_value, best_params, done, alive = math.nan, candidates[0], 0, candidates
        for size, count in plan:
            rows = order[:size]
            scored = []
            for params in alive[:count]:
                value, _ = _fit_and_score(
                    base, params, splits.x_train[rows], splits.y_train[rows], splits, task, metric
                )
                done += 1
                scored.append((value if math.isfinite(value) else worst, params))
                final_round = size == rows_total
                if final_round and (math.isnan(best_value) or better(metric, value, best_value)):
                    best_value, best_params = value, params
                if progress:
                    progress(done, planned, value, value if math.isnan(best_value) else best_value)
            scored.sort(key=lambda pair: pair[0], reverse=MAXIMIZE[metric])
            alive = [params for _, params in scored]
        return _plain(dict(best_params)), {
            "strategy": search.strategy,
            "jobs": done,
            "best_score": best_value,
        }


def _halving_plan(candidates: int, rows: int, factor: int) -> list[tuple[int, int]]:
    """(training rows, candidates) per round: each round keeps the best 1/factor on factor times the data;
    the last round uses every training row."""
    rounds = max(1, math.ceil(math.log(candidates, factor))) if candidates > 1 else 1
    plan, alive = [], candidates
    for r in range(rounds + 1):
        size = rows if r == rounds else max(10, rows // factor ** (rounds - r))
        plan.append((min(rows, size), alive))
        if r < rounds:
            alive = max(1, math.ceil(alive / factor))
    return plan


def _example(r: Range) -> Any:
    if r.type == "categorical":
        return (r.values or [None])[0]
    assert r.min is not None
    return int(r.min) if r.type == "integer" else r.min


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe hyperparameters (numpy scalars become Python numbers)."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}


def save_artifact(
    output: Path, model_name: str, fingerprint: str, model: Any, sidecar: dict[str, Any]
) -> Path:
    """`<output>/<model>/<time>-<fingerprint>/model.joblib` and `model.json`, written in a hidden
    directory then renamed into place: a crash leaves no half-written model where one is looked for."""
    import joblib

    stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
    final = output.expanduser().absolute() / model_name / f"{stamp}-{fingerprint[:8]}"
    staging = final.parent / f".{final.name}.{uuid.uuid4().hex}.partial"
    try:
        staging.mkdir(parents=True)
        joblib.dump(model, staging / "model.joblib")
        (staging / "model.json").write_text(json.dumps(sidecar, indent=2, sort_keys=True, default=str))
        os.rename(staging, final)
    except OSError as exc:
        raise UserError(f"cannot write the model under {output}: {exc.strerror or exc}") from None
    finally:
        if staging.exists():
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return final / "model.joblib"
