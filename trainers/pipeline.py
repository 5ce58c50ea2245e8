"""The one retrain pipeline, for `variantctl train` and the daemon's cron retrains alike:
train -> register with lineage -> gate offline -> approved or rejected, every step in the history.

With no offline gate (`--no-gate`, or a train.yaml without `gate:`), the version is approved with a
`model.gate` event that says so: the rollout's online analysis is then its only gate. A scheduled
retrain and an operator's `train` therefore leave the same status for the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from manager.db import Database
from manager.registry import models
from trainers.base import Progress, Trainer, TrainingResult, current_baseline, register
from trainers.config import TrainConfig
from trainers.datasets import Dataset
from trainers.gate import Scorer, offline_gate

NOTHING_TO_COMPARE = "nothing approved or serving to compare with"
NO_GATE = "no offline gate: approved for a rollout, whose online analysis is its only gate"


@dataclass(frozen=True)
class Retrained:
    """A trained, registered and gated version, as `train` reports it."""

    ref: str
    status: str
    replaces: str | None
    gate: str  # one sentence: the gate's verdict, or why there was none
    result: TrainingResult
    package: str | None = None  # the model package it was registered as, and its approval status
    package_status: str | None = None

    @property
    def approved(self) -> bool:
        return self.status == "approved"


def retrain(
    database: Database,
    trainer: Trainer,
    scorer: Scorer,
    config: TrainConfig,
    data: Dataset,
    actor: str,
    *,
    replaces: str | None = None,
    gate: bool = True,
    progress: Progress | None = None,
    registry: Any = None,
) -> Retrained:
    """Train a candidate of `config.model` on `data`, register it, and gate it against what it replaces
    (`replaces`, else the serving version, else the newest approved)."""
    result = trainer.train(config, data, progress)
    with database.write() as session:
        baseline = models.get(session, replaces) if replaces else current_baseline(session, config.model)
        version = register(session, result, actor, baseline)
        if gate and config.gate is not None:
            verdict = offline_gate(session, config, data, version, baseline, scorer, actor)
            sentence = verdict.sentence() if verdict else f"passed: {NOTHING_TO_COMPARE}"
        else:
            skipped = "--no-gate" if config.gate is not None else "no gate in train.yaml"
            models.transition(
                session,
                version,
                "approved",
                actor,
                action="model.gate",
                reason=NO_GATE,
                payload={"reason": skipped},
            )
            sentence = f"not run ({skipped}); approved for its rollout"
        done = Retrained(version.ref, version.status, baseline.ref if baseline else None, sentence, result)
    if config.model_package is None:
        return done
    from trainers.packages import register_package

    if registry is None:
        from manager.platforms.factory import model_registry

        registry = model_registry()
    package = config.model_package
    arn, status = register_package(
        database, registry, done.ref, package.group, package.approval, done.gate, actor
    )
    return replace(done, package=arn, package_status=status)
