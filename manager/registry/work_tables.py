"""The tables the daemon works through: ingestion's cursors and waiting rows, replay requests, paired
sums, a shadow's answers, leases and leaders, scheduled runs, webhooks and their deliveries, and gate
checks. `manager.registry.tables` re-exports them beside the registry's own records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from manager.clock import utcnow
from manager.registry.schema import NAME_LENGTH, Base, check_in


class IngestCursor(Base):
    """How far ingestion has read one prefix, and what it could not read there."""

    __tablename__ = "ingest_cursors"
    __table_args__ = (CheckConstraint("malformed >= 0 AND records >= 0", name="counts_nonnegative"),)

    prefix: Mapped[str] = mapped_column(String(1024), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # capture | ground_truth
    position: Mapped[dict[str, Any]] = mapped_column(default=dict)
    records: Mapped[int] = mapped_column(default=0)
    malformed: Mapped[int] = mapped_column(default=0)
    # read here, then expired before it could be joined (a prediction never labelled, a label whose
    # prediction never came)
    expired: Mapped[int] = mapped_column(default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CapturedInference(Base):
    """A captured prediction: waiting for its label, then kept (joined, outputs dropped) until it expires,
    so that the same inference read again is recognised and never counted twice."""

    __tablename__ = "captured_inferences"

    endpoint: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    inference_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    variant: Mapped[str] = mapped_column(String(NAME_LENGTH))
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"))
    phase: Mapped[int]
    inference_at: Mapped[datetime]
    outputs: Mapped[str | None] = mapped_column(Text)
    joined: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    covariate: Mapped[float | None] = mapped_column(Float)  # the pre-period model's x, when adjusted


class CovariateModel(Base):
    """The pre-period model of a rollout with `adjust: prePeriodModel` (metrics/covariate.py), fitted
    once when its ingestion starts, or why there is none (the test is then the unadjusted one). The
    model is pickled; it is loaded only when its sha256 is the fingerprint the history recorded."""

    __tablename__ = "covariate_models"
    __table_args__ = (CheckConstraint("state IN ('fitted', 'none')", name="state"),)

    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[bytes | None] = mapped_column(LargeBinary)
    rows: Mapped[int] = mapped_column(default=0, server_default="0")
    first_served: Mapped[datetime | None]
    last_served: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(32))
    fallback: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    fitted_at: Mapped[datetime]


class PendingLabel(Base):
    """A label whose prediction has not been read yet."""

    __tablename__ = "pending_labels"

    endpoint: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    inference_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    labels: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class EndpointLease(Base):
    """Which daemon may act on an endpoint, until when: two daemons never act on the same rollout."""

    __tablename__ = "endpoint_leases"

    endpoint: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime]
    # Grows with each change of owner: a daemon acts only under the epoch it took the lease at.
    epoch: Mapped[int] = mapped_column(default=1, server_default="1")


REPLAY_STATES = ("queued", "done", "failed")


class ReplayRequest(Base):
    """One captured request in a rollout's replay plan: the baseline's captured answer and its label
    (when one came), then the candidate's answer to the same input. The input is kept only until it is
    sent. Keyed by the original inference id, so a request is paired, and counted, once."""

    __tablename__ = "replay_requests"
    __table_args__ = (
        CheckConstraint(check_in("state", REPLAY_STATES), name="state"),
        Index("ix_replay_requests_rollout_state", "rollout_id", "state", "inference_at"),
    )

    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True)
    inference_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    state: Mapped[str] = mapped_column(String(8), default="queued")
    inference_at: Mapped[datetime]
    request: Mapped[str | None] = mapped_column(Text)  # {"data", "encoding", "contentType"} until sent
    baseline_outputs: Mapped[str] = mapped_column(Text)
    labels: Mapped[str | None] = mapped_column(Text)
    candidate_outputs: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    replayed_at: Mapped[datetime | None]


class PairedSum(Base):
    """Sums over a rollout's pairs, per source (replay, shadow) and measure: the paired statistics
    read these, never the pairs. Added to in the transaction that records the pairs."""

    __tablename__ = "paired_sums"

    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True)
    source: Mapped[str] = mapped_column(String(8), primary_key=True)
    measure: Mapped[str] = mapped_column(String(32), primary_key=True)
    n: Mapped[float] = mapped_column(Float, default=0.0)
    sum_baseline: Mapped[float] = mapped_column(Float, default=0.0)
    sum_candidate: Mapped[float] = mapped_column(Float, default=0.0)
    sum_diff: Mapped[float] = mapped_column(Float, default=0.0)
    sum_diff_sq: Mapped[float] = mapped_column(Float, default=0.0)


class ShadowAnswer(Base):
    """A shadow variant's captured answer, filed under the production request's inference id: paired
    with the production answer (label-free at once, with the label when it joins), then kept, its
    outputs dropped, until it expires, so that it is read and counted once."""

    __tablename__ = "shadow_answers"

    endpoint: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    inference_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"))
    outputs: Mapped[str | None] = mapped_column(Text)
    compared: Mapped[bool] = mapped_column(Boolean, default=False)  # label-free evidence counted
    paired: Mapped[bool] = mapped_column(Boolean, default=False)  # the labelled pair counted
    expires_at: Mapped[datetime] = mapped_column(index=True)


class LeaderLease(Base):
    """Which daemon schedules (cron retrains, triggers, digests) on a registry several daemons share,
    until when, and under which epoch: the epoch grows with every change of holder."""

    __tablename__ = "leader_leases"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    epoch: Mapped[int] = mapped_column(default=1)
    acquired_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class DaemonInstance(Base):
    """A daemon that works this registry, and when it last said so (for `daemon status`)."""

    __tablename__ = "daemon_instances"

    instance: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    started_at: Mapped[datetime]
    seen_at: Mapped[datetime] = mapped_column(index=True)
    leader_epoch: Mapped[int | None]  # the epoch it leads under, if it leads
    ticked_at: Mapped[datetime | None]  # its last reconcile tick began (every daemon, SQLite's too)
    # how often it ticks: two of these (10 s at least) without a tick, and it is down
    tick_seconds: Mapped[float | None] = mapped_column(Float)


class ScheduledRun(Base):
    """A scheduled job's run for one scheduled time, claimed once: a second claim (another leader after
    a failover, or a run the job store replays) finds the row and does nothing."""

    __tablename__ = "scheduled_runs"

    job_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    scheduled_for: Mapped[datetime] = mapped_column(primary_key=True)
    instance: Mapped[str] = mapped_column(String(128))  # the daemon that ran it
    epoch: Mapped[int | None]  # the scheduler lease's epoch it ran under (None: a lone daemon)
    started_at: Mapped[datetime]


DELIVERY_STATES = ("pending", "delivered", "failed")


class WebhookTarget(Base):
    """A registry-wide event webhook, told of every rollout's events besides each policy's own
    (`variantctl webhooks add`)."""

    __tablename__ = "webhook_targets"

    name: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    spec: Mapped[dict[str, Any]]  # the policy's webhook schema, as JSON
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))


class WebhookDelivery(Base):
    """One event for one webhook, kept until delivered and after: sent at least once, under an
    idempotency key (`key`) the receiver deduplicates on; retried with exponential backoff."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(check_in("state", DELIVERY_STATES), name="state"),
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    hook: Mapped[str] = mapped_column(String(NAME_LENGTH))
    source: Mapped[str] = mapped_column(String(16))  # "policy" or "registry"
    url: Mapped[str] = mapped_column(String(2048))
    format: Mapped[str] = mapped_column(String(16))
    secret_env: Mapped[str | None] = mapped_column(String(128))
    secret_file: Mapped[str | None] = mapped_column(String(4096))
    timeout: Mapped[float] = mapped_column(Float)
    event_seq: Mapped[int] = mapped_column(index=True)
    rollout_id: Mapped[int | None] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]


class WebhookCursor(Base):
    """How far into the history the webhooks have been fanned out (the highest seq read)."""

    __tablename__ = "webhook_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int]


class GateCheck(Base):
    """A rollout's gate (a `confirm-rollout`, `pre-rollout` or `confirm-promotion` webhook): when the
    rollout reached it, how often it was asked and what it last answered, and how it ended."""

    __tablename__ = "gate_checks"

    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True)
    gate: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    opened_at: Mapped[datetime]
    deadline_at: Mapped[datetime]
    next_call_at: Mapped[datetime] = mapped_column(index=True)
    calls: Mapped[int] = mapped_column(default=0)
    last_called_at: Mapped[datetime | None]
    last_status: Mapped[int | None]
    last_answer: Mapped[str | None] = mapped_column(Text)
    passed_at: Mapped[datetime | None]
    expired_at: Mapped[datetime | None]
