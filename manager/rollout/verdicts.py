"""The decision core's closed result types: what a look at a rollout decides (`Decision`, one of a
closed set of actions) and what each metric's test says (`MetricVerdict`, one of a closed set of
statuses), each with its evidence. Control flags travel as fields, never inside the evidence, which
is what the history records and the report shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypedDict

Action = Literal[
    "wait", "set_weight", "shadow", "unshadow", "advance", "pause", "resume", "promote", "rollback"
]


@dataclass(frozen=True)
class RolloutState:
    state: str  # one of vocabulary.ROLLOUT_STATES
    step: int
    phase: int
    weight: float  # the candidate's percent of traffic in force now
    started_at: datetime
    step_started_at: datetime
    phase_started_at: datetime
    endpoint_ready: bool = True  # InService, with the weights the rollout set
    intent: str | None = None
    intent_reason: str | None = None
    shadowing: bool = False  # a shadow variant receives copies of the traffic
    ratio_paused: bool = False  # paused on a sample ratio mismatch: a resume starts the phase afresh


class Evidence(TypedDict, total=False):
    """What a decision rests on, as the history records it beside the decision: a closed set of keys
    (each metric's own evidence is its verdict's record)."""

    step: int
    phase: int
    weight: float
    metrics: dict[str, dict[str, Any]]  # metric -> its verdict's record (`MetricVerdict.record`)
    paired: dict[str, Any]  # the pairs a replay or a shadow made, per source
    sample_ratio: dict[str, dict[str, Any]]  # check -> the split expected and observed
    replay_errors: dict[str, Any]  # the candidate's error rate on the replayed requests
    intent: str  # the operator intent the decision carries out
    gate: list[str]  # the gates that refused the decision...
    held: str  # ... and the decision they held
    state: str  # a decision taken outside a look (an abort, a missed deadline): the rollout's state
    since: str  # ... and, for a missed progress deadline, when the change was asked for


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    evidence: Evidence = field(default_factory=lambda: Evidence())
    weight: float | None = None  # for set_weight, and the shadow's percent for shadow
    next_step: int | None = None  # for advance and resume
    forced: bool = False  # a promotion the operator forced: it skips the analysis and the gates
    restart_phase: bool = False  # a resume after a sample ratio mismatch: the statistics start afresh

    @property
    def final(self) -> bool:
        return self.action in ("promote", "rollback")


@dataclass(frozen=True)
class MetricVerdict:
    """One metric's status at one look, with its evidence."""

    metric: str
    status: Literal["pass", "fail", "inconclusive", "no_data"]
    evidence: dict[str, Any]
    dry_run: bool
    samples_met: bool

    def record(self) -> dict[str, Any]:
        """The verdict as the decision's evidence and the history keep it."""
        return {**self.evidence, "status": self.status, "dry_run": self.dry_run}


Status = Literal["pass", "fail", "inconclusive", "no_data"]


SRM_REASON = "sample ratio mismatch"
