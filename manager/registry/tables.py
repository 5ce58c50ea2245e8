"""The registry's tables, as SQLAlchemy 2 typed mappings.

Alembic owns the schema (see migrations/); `alembic check` in the tests keeps
these classes and the migrations in step. Invariants live in the schema:
uniqueness, foreign keys and CHECK constraints, each with a stable name so
that a violation can be reported in words (see registry/errors.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from manager.clock import utcnow
from manager.registry.types import UTCDateTime
from manager.registry.vocabulary import (
    ACTIVE_ROLLOUT_STATES,
    MODEL_STATUSES,
    PLATFORMS,
    ROLLOUT_INTENTS,
    ROLLOUT_STATES,
    RUN_OUTCOMES,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SageMaker's limit on endpoint, config, model and variant names.
NAME_LENGTH = 63


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}  # noqa: RUF012


class TrainingRun(Base):
    __tablename__ = "training_runs"
    __table_args__ = (CheckConstraint(_in("outcome", RUN_OUTCOMES), name="outcome"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trainer: Mapped[str] = mapped_column(String(64))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(String(16), default="running")
    error: Mapped[str | None] = mapped_column(Text)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        CheckConstraint(_in("status", MODEL_STATUSES), name="status"),
        CheckConstraint("version >= 1", name="version_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[int]
    framework: Mapped[str] = mapped_column(String(32))
    framework_version: Mapped[str | None] = mapped_column(String(32))
    artifact_uri: Mapped[str] = mapped_column(String(1024))
    image_uri: Mapped[str | None] = mapped_column(String(1024))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dataset_fingerprint: Mapped[str | None] = mapped_column(String(64))
    training_run_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id", ondelete="RESTRICT"))
    status: Mapped[str] = mapped_column(String(16), default="candidate")
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Lineage: the serving version this one was trained to replace.
    replaces_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"))

    training_run: Mapped[TrainingRun | None] = relationship()
    replaces: Mapped[ModelVersion | None] = relationship(remote_side=[id])

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


class EndpointConfig(Base):
    __tablename__ = "endpoint_configs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    endpoint_name: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    data_capture: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    variants: Mapped[list[ConfigVariant]] = relationship(
        back_populates="config", cascade="all, delete-orphan", order_by="ConfigVariant.id"
    )


class ConfigVariant(Base):
    __tablename__ = "config_variants"
    __table_args__ = (
        UniqueConstraint("config_id", "variant_name"),
        CheckConstraint("initial_weight >= 0", name="weight_nonnegative"),
        CheckConstraint("instance_count >= 1", name="instance_count_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    config_id: Mapped[int] = mapped_column(ForeignKey("endpoint_configs.id", ondelete="CASCADE"))
    variant_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"))
    instance_type: Mapped[str | None] = mapped_column(String(64))  # none: serverless
    instance_count: Mapped[int | None]
    initial_weight: Mapped[float] = mapped_column(Float, default=1.0)
    is_shadow: Mapped[bool] = mapped_column(Boolean, default=False)
    settings: Mapped[dict[str, Any] | None]  # the rest of SageMaker's ProductionVariant, as described

    config: Mapped[EndpointConfig] = relationship(back_populates="variants")
    model_version: Mapped[ModelVersion] = relationship()


class Endpoint(Base):
    __tablename__ = "endpoints"
    __table_args__ = (CheckConstraint(_in("platform", PLATFORMS), name="platform"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    platform: Mapped[str] = mapped_column(String(16), default="sagemaker")
    region: Mapped[str | None] = mapped_column(String(32))
    current_config_id: Mapped[int | None] = mapped_column(
        ForeignKey("endpoint_configs.id", ondelete="RESTRICT")
    )
    last_status: Mapped[str | None] = mapped_column(String(32))
    last_observed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    current_config: Mapped[EndpointConfig | None] = relationship()


class Rollout(Base):
    __tablename__ = "rollouts"
    __table_args__ = (
        CheckConstraint(_in("state", ROLLOUT_STATES), name="state"),
        CheckConstraint(f"intent IS NULL OR {_in('intent', ROLLOUT_INTENTS)}", name="intent"),
        CheckConstraint("phase >= 0 AND step >= 0", name="position_nonnegative"),
        CheckConstraint("baseline_version_id <> candidate_version_id", name="distinct_versions"),
        # At most one active rollout per endpoint, enforced by the database itself.
        Index(
            "uq_rollouts_active_endpoint",
            "endpoint_id",
            unique=True,
            sqlite_where=text(_in("state", ACTIVE_ROLLOUT_STATES)),
            postgresql_where=text(_in("state", ACTIVE_ROLLOUT_STATES)),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="RESTRICT"))
    baseline_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"))
    candidate_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"))
    policy_yaml: Mapped[str] = mapped_column(Text)
    policy_hash: Mapped[str] = mapped_column(String(64))
    phase: Mapped[int] = mapped_column(default=0)
    step: Mapped[int] = mapped_column(default=0)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    intent: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    phase_started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    # What the reconciler needs to pick up after a crash: the step's start, the candidate's share in
    # force, the platform change it meant to make (written before the call), and how far metrics were read.
    step_started_at: Mapped[datetime | None]
    weight: Mapped[float] = mapped_column(Float, default=0.0)
    pending: Mapped[dict[str, Any] | None]
    intent_reason: Mapped[str | None] = mapped_column(Text)
    metrics_cursor: Mapped[datetime | None]
    # The endpoint config that copies traffic to the candidate as a shadow variant, while a shadow step runs.
    shadow_config: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    # The variant names this rollout uses, fixed when it starts (the engine's, not the operator's);
    # the defaults are the names every rollout used before they were stored.
    baseline_variant: Mapped[str] = mapped_column(String(NAME_LENGTH), default="baseline")
    candidate_variant: Mapped[str] = mapped_column(String(NAME_LENGTH), default="candidate")
    # Consecutive ticks that failed to evaluate this rollout, the last error, and when to try again.
    failures: Mapped[int] = mapped_column(default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    retry_at: Mapped[datetime | None]
    # Who started it, and who asked for the intent it carries: the humans behind the daemon's decisions.
    started_by: Mapped[str | None] = mapped_column(String(128))
    intent_actor: Mapped[str | None] = mapped_column(String(128))
    # A replay step's plan once made: how many requests, what was left out and why, or why it could not run.
    replay: Mapped[dict[str, Any] | None]

    endpoint: Mapped[Endpoint] = relationship()
    baseline: Mapped[ModelVersion] = relationship(foreign_keys=[baseline_version_id])
    candidate: Mapped[ModelVersion] = relationship(foreign_keys=[candidate_version_id])


class Observation(Base):
    """Counts and sums per rollout, phase, variant, metric and window: never raw payloads."""

    __tablename__ = "observations"
    __table_args__ = (
        UniqueConstraint("rollout_id", "phase", "variant_name", "metric", "window_start"),
        CheckConstraint("n >= 0", name="n_nonnegative"),
        CheckConstraint("window_end >= window_start", name="window_ordered"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"))
    phase: Mapped[int]
    variant_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    metric: Mapped[str] = mapped_column(String(64))
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    n: Mapped[int] = mapped_column(default=0)
    total: Mapped[float] = mapped_column(Float, default=0.0)
    total_sq: Mapped[float] = mapped_column(Float, default=0.0)


class AuditEvent(Base):
    """Append-only and hash-chained: rows are never updated or deleted (triggers refuse it)."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_endpoint_at", "endpoint", "at"),
        Index("ix_audit_events_model_at", "model", "at"),
        Index("ix_audit_events_action_at", "action", "at"),
        Index("ix_audit_events_actor_at", "actor", "at"),
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_endpoint_action_at", "endpoint", "action", "at"),
        Index("ix_audit_events_subject_seq", "subject_type", "subject_id", "seq"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(256))
    endpoint: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    model: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    reason: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """The newest seq and hash, written with each append, so a truncated tail is detected."""

    __tablename__ = "audit_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int]
    hash: Mapped[str] = mapped_column(String(64))


class RolloutPhase(Base):
    """When each phase of a rollout began and ended, and its weights: maps an inference's time to a phase."""

    __tablename__ = "rollout_phases"

    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True)
    phase: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    weights: Mapped[dict[str, Any]] = mapped_column(default=dict)


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
        CheckConstraint(_in("state", REPLAY_STATES), name="state"),
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
        CheckConstraint(_in("state", DELIVERY_STATES), name="state"),
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    hook: Mapped[str] = mapped_column(String(NAME_LENGTH))
    source: Mapped[str] = mapped_column(String(16))  # "policy" or "registry"
    url: Mapped[str] = mapped_column(String(2048))
    format: Mapped[str] = mapped_column(String(8))
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
