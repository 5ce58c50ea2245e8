"""Integrity errors from the database, said in words a user understands."""

from __future__ import annotations

import re

from sqlalchemy.exc import IntegrityError

MESSAGES = {
    "uq_model_versions_name_version": "that model name and version are already registered",
    "ck_model_versions_status": "model status must be one of candidate, approved, serving, retired, rejected",
    "ck_model_versions_version_positive": "model version must be 1 or more",
    "ck_training_runs_outcome": "training run outcome must be running, succeeded or failed",
    "uq_endpoint_configs_name": "an endpoint config with that name already exists",
    "uq_config_variants_config_id_variant_name": "variant names must be unique within a config",
    "ck_config_variants_weight_nonnegative": "variant weights must be 0 or more",
    "ck_config_variants_instance_count_positive": "a variant needs at least 1 instance",
    "uq_endpoints_name": "an endpoint with that name is already registered",
    "ck_endpoints_platform": "endpoint platform must be sagemaker",
    "ck_rollouts_state": "unknown rollout state",
    "ck_rollouts_intent": "rollout intent must be pause, resume, abort or promote",
    "ck_rollouts_position_nonnegative": "rollout phase and step must be 0 or more",
    "ck_rollouts_distinct_versions": "baseline and candidate must be different model versions",
    "uq_rollouts_active_endpoint": "the endpoint already has an active rollout",
    "ck_observations_n_nonnegative": "observation counts must be 0 or more",
    "ck_observations_window_ordered": "an observation window must end after it starts",
    "uq_audit_events_hash": "an audit event with that hash already exists",
    "ck_ingest_cursors_counts_nonnegative": "ingestion counts must be 0 or more",
    "ck_audit_head_single_row": "the audit head has a single row",
}

# SQLite names the columns of a unique index rather than the index itself.
_SQLITE_UNIQUE = {
    "model_versions.name, model_versions.version": "uq_model_versions_name_version",
    "endpoint_configs.name": "uq_endpoint_configs_name",
    "config_variants.config_id, config_variants.variant_name": "uq_config_variants_config_id_variant_name",
    "endpoints.name": "uq_endpoints_name",
    "rollouts.endpoint_id": "uq_rollouts_active_endpoint",
    "audit_events.hash": "uq_audit_events_hash",
    "audit_events.seq": "pk_audit_events",
}


def constraint_name(exc: IntegrityError) -> str | None:
    """The violated constraint's name, from PostgreSQL's diagnostics or SQLite's message."""
    diag = getattr(exc.orig, "diag", None)
    if diag is not None and getattr(diag, "constraint_name", None):
        return str(diag.constraint_name)
    message = str(exc.orig)
    if match := re.match(r"CHECK constraint failed: (\w+)", message):
        return match.group(1)
    if match := re.match(r"UNIQUE constraint failed: (.+)$", message):
        return _SQLITE_UNIQUE.get(match.group(1).strip())
    return None


def explain(exc: IntegrityError) -> str:
    """One line: what rule was broken."""
    name = constraint_name(exc)
    if name in MESSAGES:
        return MESSAGES[name]
    message = str(exc.orig)
    if "FOREIGN KEY" in message or "foreign key" in message:
        return "it refers to a registry row that does not exist, or is still referred to"
    if match := re.match(r"NOT NULL constraint failed: (\S+)", message):
        return f"{match.group(1)} is required"
    return f"the registry refused the change: {message}"
