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
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from manager.clock import utcnow
from manager.registry.package_tables import PackageClaim, PackageWriteback  # re-exported
from manager.registry.schema import NAME_LENGTH, Base, check_in
from manager.registry.vocabulary import (
    ACTIVE_ROLLOUT_STATES,
    MODEL_STATUSES,
    PLATFORMS,
    ROLLOUT_INTENTS,
    ROLLOUT_STATES,
    RUN_OUTCOMES,
)
from manager.registry.work_tables import (  # re-exported: every table is importable from here
    CapturedInference,
    DaemonInstance,
    EndpointLease,
    GateCheck,
    IngestCursor,
    LeaderLease,
    PairedSum,
    PendingLabel,
    ReplayRequest,
    ScheduledRun,
    ShadowAnswer,
    WebhookCursor,
    WebhookDelivery,
    WebhookTarget,
)

__all__ = [
    "NAME_LENGTH",
    "Base",
    "CapturedInference",
    "DaemonInstance",
    "EndpointLease",
    "GateCheck",
    "IngestCursor",
    "LeaderLease",
    "PackageClaim",
    "PackageWriteback",
    "PairedSum",
    "PendingLabel",
    "ReplayRequest",
    "ScheduledRun",
    "ShadowAnswer",
    "WebhookCursor",
    "WebhookDelivery",
    "WebhookTarget",
]


class TrainingRun(Base):
    __tablename__ = "training_runs"
    __table_args__ = (CheckConstraint(check_in("outcome", RUN_OUTCOMES), name="outcome"),)

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
        CheckConstraint(check_in("status", MODEL_STATUSES), name="status"),
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
    # Lineage: the SageMaker model package this version is (registered there, or imported from it).
    model_package_arn: Mapped[str | None] = mapped_column(String(2048), index=True)
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
    __table_args__ = (CheckConstraint(check_in("platform", PLATFORMS), name="platform"),)

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
    # An operator's weights (`endpoints set-weights`), by variant, in force until the config changes.
    weights: Mapped[dict[str, Any] | None]

    current_config: Mapped[EndpointConfig | None] = relationship()


class Rollout(Base):
    __tablename__ = "rollouts"
    __table_args__ = (
        CheckConstraint(check_in("state", ROLLOUT_STATES), name="state"),
        CheckConstraint(f"intent IS NULL OR {check_in('intent', ROLLOUT_INTENTS)}", name="intent"),
        CheckConstraint("phase >= 0 AND step >= 0", name="position_nonnegative"),
        CheckConstraint("baseline_version_id <> candidate_version_id", name="distinct_versions"),
        # At most one active rollout per endpoint, enforced by the database itself.
        Index(
            "uq_rollouts_active_endpoint",
            "endpoint_id",
            unique=True,
            sqlite_where=text(check_in("state", ACTIVE_ROLLOUT_STATES)),
            postgresql_where=text(check_in("state", ACTIVE_ROLLOUT_STATES)),
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
    # a covariate's sums (`adjust: prePeriodModel`): of x, x squared, x times the value
    x_total: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    x_sq: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    xy: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


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
