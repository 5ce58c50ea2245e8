"""The offline gate: candidate and baseline scored on the same held-out rows, before any rollout.

Local artifacts are loaded and scored here; S3 artifacts (SageMaker training) are scored by a batch
transform job. A failing candidate is marked `rejected` and never reaches an endpoint; either way
the numbers go into the history.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from manager.errors import UserError
from manager.names import model_name
from manager.platforms.base import ModelSpec
from manager.registry import models
from manager.registry.tables import ModelVersion
from trainers.config import TrainConfig
from trainers.datasets import Dataset, Task, split
from trainers.evaluation import GateResult, all_metrics, gate, load_local, predict

Scorer = Callable[[ModelVersion, np.ndarray], np.ndarray]


def local_scorer(task: Task) -> Scorer:
    return lambda version, x: predict(load_local(version.artifact_uri), x, task)


def sagemaker_scorer(trainer: Any, config: TrainConfig) -> Scorer:
    """Scores from a SageMaker batch transform of the version's model (created if missing)."""
    job = config.sagemaker
    assert job is not None

    def scores(version: ModelVersion, x: np.ndarray) -> np.ndarray:
        if not version.image_uri:
            raise UserError(f"{version.ref} has no serving image URI; register it with --image-uri")
        model = ModelSpec(
            model_name(version.name, version.version), version.image_uri, version.artifact_uri, job.role_arn
        )
        result: np.ndarray = trainer.batch_scores(model, x, job.bucket, job.instance_type)
        return result

    return scores


def offline_gate(
    session: Session,
    config: TrainConfig,
    data: Dataset,
    candidate: ModelVersion,
    baseline: ModelVersion | None,
    scorer: Scorer,
    actor: str,
) -> GateResult | None:
    """Score both on the held-out split, set the candidate's status, and record the evidence."""
    assert config.gate is not None
    held_out = split(data, config.split.validation, config.split.test, config.split.seed)
    candidate_scores = scorer(candidate, held_out.x_test)
    if not candidate.metrics.get("test"):
        candidate.metrics = {
            **candidate.metrics,
            "test": all_metrics(data.task, held_out.y_test, candidate_scores),
        }
    verdict = None
    if baseline is not None:
        verdict = gate(
            data.task,
            config.gate.metric,
            config.gate.margin,
            held_out.y_test,
            candidate_scores,
            scorer(baseline, held_out.x_test),
        )
    record_gate(session, candidate, baseline, verdict, actor)
    return verdict


def record_gate(
    session: Session,
    candidate: ModelVersion,
    baseline: ModelVersion | None,
    result: GateResult | None,
    actor: str,
) -> bool:
    """Approve or reject the candidate on the gate's numbers, and put the evidence in the history."""
    passed = result is None or result.passed
    models.transition(
        session,
        candidate,
        "approved" if passed else "rejected",
        actor,
        action="model.gate",
        reason=result.sentence()
        if result is not None
        else "offline gate passed: no approved or serving version to compare with",
        payload={
            "baseline_version": baseline.ref if baseline else None,
            "evidence": result.as_evidence() if result is not None else None,
        },
    )
    return passed
