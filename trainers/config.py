"""train.yaml: what to train, how to search, and the offline gate, validated by pydantic."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from manager.names import RESOURCE_NAME

Estimator = Literal["logistic_regression", "hist_gradient_boosting", "random_forest", "ridge"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(Strict):
    """A hyperparameter range, as SageMaker's HyperparameterTuner takes them."""

    type: Literal["integer", "continuous", "categorical"]
    min: float | None = None
    max: float | None = None
    values: list[Any] | None = None
    scale: Literal["linear", "log"] = "linear"

    @model_validator(mode="after")
    def _check(self) -> Range:
        if self.type == "categorical":
            if not self.values:
                raise ValueError("a categorical range needs a non-empty list of values")
            return self
        if self.min is None or self.max is None:
            raise ValueError(f"an {self.type} range needs min and max")
        if self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        if self.scale == "log" and self.min <= 0:
            raise ValueError("a log-scale range needs min > 0")
        if self.type == "integer" and (self.min != int(self.min) or self.max != int(self.max)):
            raise ValueError("an integer range needs whole-number min and max")
        return self


class Search(Strict):
    strategy: Literal["random", "halving"] = "random"
    max_jobs: int = Field(10, ge=1, le=1000)
    seed: int = 0
    halving_factor: int = Field(3, ge=2)
    ranges: dict[str, Range]

    @field_validator("ranges")
    @classmethod
    def _not_empty(cls, ranges: dict[str, Range]) -> dict[str, Range]:
        if not ranges:
            raise ValueError("the search space is empty: give at least one range, or drop `search`")
        return ranges


class Objective(Strict):
    metric: Literal["accuracy", "roc_auc", "log_loss", "f1", "rmse", "mae", "r2"]


class Split(Strict):
    validation: float = Field(0.2, gt=0, lt=0.5)
    test: float = Field(0.2, gt=0, lt=0.5)
    seed: int = 42


class Gate(Strict):
    """The candidate must be at least as good as the baseline on the same held-out set, within margin."""

    metric: Literal["accuracy", "roc_auc", "log_loss", "f1", "rmse", "mae", "r2"]
    margin: float = Field(0.0, ge=0)


class Tuning(Strict):
    max_jobs: int = Field(10, ge=1, le=500)
    max_parallel_jobs: int = Field(2, ge=1, le=100)
    objective: Literal["validation:auc", "validation:rmse", "validation:logloss", "validation:error"]
    ranges: dict[str, Range]

    @field_validator("ranges")
    @classmethod
    def _not_empty(cls, ranges: dict[str, Range]) -> dict[str, Range]:
        if not ranges:
            raise ValueError("the tuning search space is empty")
        return ranges


class SageMakerJob(Strict):
    role_arn: str = Field(pattern=r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-/]{1,512}$")
    bucket: str = Field(pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$")
    instance_type: str = Field("ml.m5.large", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    xgboost_version: str = "1.7-1"
    region: str | None = None
    max_runtime_seconds: int = Field(3600, ge=60, le=432000)
    hyperparameters: dict[str, str | int | float] = Field(default_factory=dict)
    tuning: Tuning | None = None


class ModelPackage(Strict):
    """Register each trained version in this SageMaker model package group: `manual` leaves a version
    the gate passed PendingManualApproval for a person, `auto` approves it; the gate's rejects are
    registered Rejected."""

    group: str = Field(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    approval: Literal["manual", "auto"] = "manual"


class TrainConfig(Strict):
    model: str
    estimator: Estimator = "hist_gradient_boosting"
    params: dict[str, Any] = Field(default_factory=dict)
    objective: Objective
    search: Search | None = None
    split: Split = Field(default_factory=Split)
    output: str = "./artifacts"
    sagemaker: SageMakerJob | None = None
    gate: Gate | None = None
    model_package: ModelPackage | None = None

    @field_validator("model")
    @classmethod
    def _model_name(cls, name: str) -> str:
        if not RESOURCE_NAME.match(name):
            raise ValueError(
                "model name must be 1-63 letters, digits and hyphens, starting and ending alphanumeric"
            )
        return name
