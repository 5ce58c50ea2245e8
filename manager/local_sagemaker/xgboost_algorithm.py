"""SageMaker's built-in XGBoost algorithm, as its container behaves, run with the `xgboost` package.

Training (algorithm mode): channels `train` (required) and `validation` as headerless, target-first
CSV (`text/csv`) or libsvm (the container's default content type); hyperparameters as strings,
checked as the container checks them, unknown or invalid ones failing the job with a `ClientError:`
reason; one log line per round (`[3]#011train-rmse:...#011validation-rmse:...`); the model saved
as `xgboost-model` (XGBoost's own format) inside `model.tar.gz`.

Serving: `xgboost-model` is loaded with `Booster.load_model` (or, as the container also accepts,
unpickled); CSV answers are comma-joined on an endpoint and one per line in a batch transform,
as the container's `SAGEMAKER_BATCH` mode does; JSON answers are `{"predictions": [{"score": ...}]}`.

`xgboost` is imported only when a job or an XGBoost model needs it (the `sagemaker` extra).
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODEL_FILE = "xgboost-model"


def is_xgboost_image(image: str | None) -> bool:
    """Any image URI the SageMaker SDK returns for `xgboost`: `<registry>/sagemaker-xgboost:1.7-1`,
    or the first version's `<registry>/xgboost:1`."""
    repository = str(image or "").rsplit("/", 1)[-1].split("@")[0].split(":")[0]
    return repository in ("sagemaker-xgboost", "xgboost")


class ClientError(Exception):
    """The job's input or hyperparameters are wrong: FailureReason `ClientError: ...`."""


class AlgorithmError(Exception):
    """The algorithm itself failed: FailureReason `AlgorithmError: ...`."""


def _number(kind: type, low: float | None = None, high: float | None = None, open_low: bool = False) -> Any:
    def check(name: str, raw: str) -> Any:
        try:
            value = kind(float(raw)) if kind is int and re.fullmatch(r"-?\d+(\.0*)?", raw) else kind(raw)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise ClientError(f"Hyperparameter {name}: {raw!r} is not {noun}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ClientError(f"Hyperparameter {name}: {raw!r} is not a finite number")
        too_low = low is not None and (value <= low if open_low else value < low)
        if too_low or (high is not None and value > high):
            left = "(" if open_low else "["
            raise ClientError(
                f"Hyperparameter {name}: value {raw} not in range {left}{low}, "
                f"{'inf' if high is None else high}]"
            )
        return value

    return check


def _choice(*allowed: str) -> Any:
    def check(name: str, raw: str) -> str:
        if raw not in allowed:
            raise ClientError(f"Hyperparameter {name}: value {raw} not in {list(allowed)}")
        return raw

    return check


def _text(name: str, raw: str) -> str:
    return raw


OBJECTIVES = (
    "binary:logistic",
    "binary:logitraw",
    "binary:hinge",
    "count:poisson",
    "multi:softmax",
    "multi:softprob",
    "rank:pairwise",
    "rank:ndcg",
    "rank:map",
    "reg:linear",
    "reg:squarederror",
    "reg:squaredlogerror",
    "reg:logistic",
    "reg:pseudohubererror",
    "reg:absoluteerror",
    "reg:gamma",
    "reg:tweedie",
    "survival:cox",
)
EVAL_METRICS = (
    "rmse", "rmsle", "mae", "mape", "mphe", "logloss", "error", "merror", "mlogloss", "auc", "aucpr",
    "ndcg", "map", "poisson-nloglik", "gamma-nloglik", "cox-nloglik", "gamma-deviance", "tweedie-nloglik",
)  # fmt: skip

HYPERPARAMETERS: dict[str, Callable[[str, str], Any]] = {
    "num_round": _number(int, 1),
    "num_class": _number(int, 2),
    "objective": _choice(*OBJECTIVES),
    "eta": _number(float, 0, 1),
    "gamma": _number(float, 0),
    "max_depth": _number(int, 0),
    "min_child_weight": _number(float, 0),
    "max_delta_step": _number(float, 0),
    "subsample": _number(float, 0, 1, open_low=True),
    "colsample_bytree": _number(float, 0, 1, open_low=True),
    "colsample_bylevel": _number(float, 0, 1, open_low=True),
    "colsample_bynode": _number(float, 0, 1, open_low=True),
    "lambda": _number(float, 0),
    "alpha": _number(float, 0),
    "scale_pos_weight": _number(float, 0, open_low=True),
    "base_score": _number(float),
    "max_bin": _number(int, 2),
    "max_leaves": _number(int, 0),
    "grow_policy": _choice("depthwise", "lossguide"),
    "tree_method": _choice("auto", "exact", "approx", "hist"),
    "booster": _choice("gbtree", "gblinear", "dart"),
    "sketch_eps": _number(float, 0, 1, open_low=True),
    "seed": _number(int),
    "nthread": _number(int, 1),
    "verbosity": _number(int, 0, 3),
    "early_stopping_rounds": _number(int, 1),
    "eval_metric": _text,
    "tweedie_variance_power": _number(float, 1, 2, open_low=True),
    "sample_type": _choice("uniform", "weighted"),
    "normalize_type": _choice("tree", "forest"),
    "rate_drop": _number(float, 0, 1),
    "skip_drop": _number(float, 0, 1),
    "one_drop": _choice("0", "1"),
    "csv_weights": _choice("0", "1"),
    "monotone_constraints": _text,
    "interaction_constraints": _text,
    "_tuning_objective_metric": _text,
}
# Passed to xgboost.train as they are named (the rest are the container's own).
CONTAINER_ONLY = {"num_round", "early_stopping_rounds", "csv_weights", "_tuning_objective_metric"}


def check_hyperparameters(raw: dict[str, Any]) -> dict[str, Any]:
    """The container's validation: (parsed values) or ClientError."""
    unknown = sorted(k for k in raw if k not in HYPERPARAMETERS and not k.startswith("sagemaker_"))
    if unknown:
        listed = ", ".join(repr(k) for k in unknown)
        raise ClientError(
            f"Additional hyperparameters are not allowed ({listed} "
            f"{'were' if len(unknown) > 1 else 'was'} unexpected)"
        )
    if "num_round" not in raw:
        raise ClientError("Missing required hyperparameter: num_round")
    values = {k: HYPERPARAMETERS[k](k, str(v)) for k, v in raw.items() if k in HYPERPARAMETERS}
    objective = values.get("objective", "reg:squarederror")
    if objective.startswith("multi:") and "num_class" not in values:
        raise ClientError(f"Required hyperparameter: num_class (objective {objective})")
    if "eval_metric" in values:
        metrics = [m.strip() for m in values["eval_metric"].split(",") if m.strip()]
        bad = [m for m in metrics if m.split("@")[0] not in EVAL_METRICS]
        if bad or not metrics:
            raise ClientError(
                f"Hyperparameter eval_metric: value {values['eval_metric']} not in {list(EVAL_METRICS)}"
            )
        values["eval_metric"] = metrics
    return values


# ---- data --------------------------------------------------------------------------------------------


def channel_files(path: Path) -> list[Path]:
    """An S3Prefix channel's objects: the file itself, or every file under the directory."""
    if path.is_file():
        return [path]
    parent, stem = path.parent, path.name
    found = []
    if path.is_dir():
        found = [p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    elif parent.is_dir():  # a key prefix that is not a whole path segment
        for p in sorted(parent.iterdir()):
            if p.name.startswith(stem):
                found += [p] if p.is_file() else [q for q in sorted(p.rglob("*")) if q.is_file()]
    return found


def read_csv(files: list[Path], channel: str) -> tuple[np.ndarray, np.ndarray]:
    rows: list[list[float]] = []
    for file in files:
        for number, line in enumerate(file.read_text().splitlines(), 1):
            if not line.strip():
                raise ClientError(
                    f"Blank line encountered in input ({channel} channel, {file.name}:{number})"
                )
            try:
                rows.append([float(v) if v.strip() else math.nan for v in line.split(",")])
            except ValueError:
                raise ClientError(
                    f"Non-numeric value in {channel} channel, {file.name} line {number}: CSV input must "
                    "have no header and the target in the first column"
                ) from None
    if not rows:
        raise ClientError(f"No data in the {channel} channel")
    if len({len(r) for r in rows}) != 1:
        raise ClientError(f"Rows of different lengths in the {channel} channel")
    data = np.asarray(rows, dtype=np.float64)
    return data[:, 1:], data[:, 0]


def load_channel(files: list[Path], content_type: str, channel: str) -> Any:
    import xgboost as xgb

    kind = (content_type or "libsvm").split(";")[0].strip().lower()
    if kind in ("text/csv", "csv"):
        x, y = read_csv(files, channel)
        return xgb.DMatrix(x, label=y, missing=math.nan)
    if kind in ("libsvm", "text/libsvm", "text/x-libsvm"):
        try:
            return xgb.DMatrix(f"{files[0]}?format=libsvm") if len(files) == 1 else _libsvm_many(files)
        except xgb.core.XGBoostError as exc:
            raise ClientError(f"cannot read libsvm data in the {channel} channel: {exc}") from None
    raise ClientError(
        f"Content type {content_type} is not supported by the local XGBoost: use text/csv or libsvm"
    )


def _libsvm_many(files: list[Path]) -> Any:
    import tempfile

    import xgboost as xgb

    with tempfile.NamedTemporaryFile("w", suffix=".libsvm", delete=False) as out:
        for f in files:
            out.write(f.read_text())
    try:
        return xgb.DMatrix(f"{out.name}?format=libsvm")
    finally:
        os.unlink(out.name)


# ---- training ------------------------------------------------------------------------------------------


@dataclass
class Trained:
    booster: Any
    final_metrics: dict[str, float]


def train(
    hyperparameters: dict[str, Any],
    channels: dict[str, tuple[list[Path], str]],
    log: Callable[[str], None],
    nthread: int | None = None,
) -> Trained:
    """Run `xgboost.train` as the container does; channels map a name to (files, content type)."""
    import xgboost as xgb

    values = check_hyperparameters(hyperparameters)
    if "train" not in channels:
        raise ClientError("Channel 'train' is required; the XGBoost algorithm reads 'train' and 'validation'")
    extra = sorted(set(channels) - {"train", "validation"})
    if extra:
        raise ClientError(
            f"Unexpected channel(s) {extra}: the XGBoost algorithm reads 'train' and 'validation'"
        )
    dtrain = load_channel(*channels["train"], "train")
    evals = [(dtrain, "train")]
    if "validation" in channels:
        dval = load_channel(*channels["validation"], "validation")
        if dval.num_col() != dtrain.num_col():
            raise ClientError(
                f"The validation channel has {dval.num_col()} features and train has {dtrain.num_col()}"
            )
        evals.append((dval, "validation"))
    elif "early_stopping_rounds" in values:
        raise ClientError("early_stopping_rounds needs a validation channel")
    params = {k: v for k, v in values.items() if k not in CONTAINER_ONLY}
    if params.get("objective") == "reg:linear":  # the container's alias, gone from xgboost
        params["objective"] = "reg:squarederror"
    params.setdefault("verbosity", 0)
    if nthread and "nthread" not in params:
        params["nthread"] = nthread
    log(f"Train matrix has {dtrain.num_row()} rows and {dtrain.num_col()} columns")
    if len(evals) > 1:
        log(f"Validation matrix has {evals[1][0].num_row()} rows")
    history: dict[str, dict[str, list[float]]] = {}

    class Lines(xgb.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            parts = [
                f"{data}-{metric}:{values[-1]:.5f}"
                for data, metrics in evals_log.items()
                for metric, values in metrics.items()
            ]
            log(f"[{epoch}]#011" + "#011".join(parts))
            return False

    try:
        booster = xgb.train(
            params,
            dtrain,
            num_boost_round=values["num_round"],
            evals=evals,
            evals_result=history,
            early_stopping_rounds=values.get("early_stopping_rounds"),
            verbose_eval=False,
            callbacks=[Lines()],
        )
    except xgb.core.XGBoostError as exc:
        message = str(exc).strip().splitlines()
        raise ClientError(f"XGBoost rejected the job: {message[-1] if message else exc}") from None
    final = {
        f"{data}:{metric}": float(values[-1])
        for data, metrics in history.items()
        for metric, values in metrics.items()
    }
    return Trained(booster, final)


def archive(booster: Any) -> bytes:
    """`model.tar.gz` as the container writes it: one `xgboost-model` file, in XGBoost's format."""
    raw = bytes(booster.save_raw("ubj"))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(MODEL_FILE)
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    return buffer.getvalue()


# ---- serving -------------------------------------------------------------------------------------------


class XGBoostModel:
    """An `xgboost-model` file, answering as the container does."""

    def __init__(self, booster: Any) -> None:
        self.booster = booster
        self.n_features = int(booster.num_features())
        self.objective_name = str(json.loads(booster.save_config())["learner"]["objective"]["name"])

    def predict(self, rows: np.ndarray) -> list[Any]:
        import xgboost as xgb

        predicted = self.booster.predict(xgb.DMatrix(rows, missing=math.nan), validate_features=False)
        if predicted.ndim == 2:
            return [[float(v) for v in row] for row in predicted]
        return [float(v) for v in predicted]


def load(path: Path) -> XGBoostModel:
    import xgboost as xgb

    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(path.read_bytes()))  # JSON or UBJSON, told apart by content
    except xgb.core.XGBoostError:
        with path.open("rb") as f:
            booster = pickle.load(f)  # the container writes pickles in some versions, and reads them
        if not isinstance(booster, xgb.Booster):
            raise ValueError(
                f"{path.name} holds a {type(booster).__name__}, not an XGBoost Booster"
            ) from None
    return XGBoostModel(booster)
