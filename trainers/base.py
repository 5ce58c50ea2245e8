"""The Trainer protocol, what a training produces, and its registration with lineage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from manager.registry import models
from manager.registry.tables import ModelVersion, TrainingRun
from trainers.config import TrainConfig
from trainers.datasets import Dataset, Task

# (evaluations done, evaluations planned, this evaluation's score, best score so far)
Progress = Callable[[int, int, float, float], None]


@dataclass(frozen=True)
class TrainingResult:
    trainer: str
    model_name: str
    artifact_uri: str
    framework: str
    framework_version: str
    task: Task
    hyperparameters: dict[str, Any]
    dataset_source: str
    dataset_fingerprint: str
    dataset_rows: int
    shift: str | None
    metrics: dict[str, dict[str, float]]  # {"validation": {...}, "test": {...}}
    objective: str
    started_at: datetime
    finished_at: datetime
    image_uri: str | None = None
    search: dict[str, Any] = field(default_factory=dict)  # strategy, jobs, best score, job names
    dataset_location: str = ""  # where `variantctl traffic` can read the rows again

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    @classmethod
    def of(
        cls,
        trainer: str,
        config: TrainConfig,
        data: Dataset,
        *,
        artifact_uri: str,
        framework: tuple[str, str],
        hyperparameters: dict[str, Any],
        metrics: dict[str, dict[str, float]],
        started_at: datetime,
        finished_at: datetime,
        search: dict[str, Any],
        image_uri: str | None = None,
    ) -> TrainingResult:
        """A result whose model, objective and dataset lineage come from the config and the data."""
        return cls(
            trainer=trainer,
            model_name=config.model,
            artifact_uri=artifact_uri,
            framework=framework[0],
            framework_version=framework[1],
            task=data.task,
            hyperparameters=hyperparameters,
            dataset_source=data.source,
            dataset_fingerprint=data.fingerprint,
            dataset_rows=data.rows,
            shift=data.shift,
            metrics=metrics,
            objective=config.objective.metric,
            started_at=started_at,
            finished_at=finished_at,
            image_uri=image_uri,
            search=search,
            dataset_location=data.location,
        )


class Trainer(Protocol):
    name: str

    def train(
        self, config: TrainConfig, data: Dataset, progress: Progress | None = None
    ) -> TrainingResult: ...


def register(
    session: Session, result: TrainingResult, actor: str, replaces: ModelVersion | None = None
) -> ModelVersion:
    """The training run and a `candidate` model version with its lineage, in one transaction."""
    run = TrainingRun(
        trainer=result.trainer,
        hyperparameters=result.hyperparameters,
        inputs={
            "dataset": result.dataset_source,
            "location": result.dataset_location or result.dataset_source,
            "fingerprint": result.dataset_fingerprint,
            "rows": result.dataset_rows,
            "shift": result.shift,
            "task": result.task,
            "objective": result.objective,
            "search": result.search,
        },
        started_at=result.started_at,
        finished_at=result.finished_at,
        outcome="succeeded",
    )
    session.add(run)
    session.flush()
    version = models.register(
        session,
        models.NewVersion(
            name=result.model_name,
            artifact_uri=result.artifact_uri,
            framework=result.framework,
            framework_version=result.framework_version,
            image_uri=result.image_uri,
            metrics=result.metrics,
            dataset_fingerprint=result.dataset_fingerprint,
            training_run_id=run.id,
            description=f"trained by {result.trainer} on {result.dataset_source}"
            + (f" shifted {result.shift}" if result.shift else ""),
        ),
        actor,
    )
    version.replaces_id = replaces.id if replaces else None
    session.flush()
    models.record_event(
        session,
        version,
        actor,
        "model.train",
        f"{result.trainer} training on {result.dataset_source}",
        {
            "training_run": run.id,
            "replaces": replaces.ref if replaces else None,
            "fingerprint": result.dataset_fingerprint,
            "objective": result.objective,
            "metrics": result.metrics,
            "hyperparameters": result.hyperparameters,
            "seconds": result.seconds,
        },
    )
    return version


def current_baseline(session: Session, name: str) -> ModelVersion | None:
    """What a new candidate of `name` is meant to replace: the serving version, else the newest approved."""
    for status in ("serving", "approved"):
        versions = models.list_versions(session, name, status)
        if versions:
            return versions[0]
    return None
