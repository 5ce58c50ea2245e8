"""Invariants live in the schema, and each violation reads as one clear sentence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from manager.db import Database
from manager.errors import NotFound, UserError
from manager.registry import models
from manager.registry.errors import explain
from manager.registry.tables import (
    ConfigVariant,
    Endpoint,
    EndpointConfig,
    ModelVersion,
    Observation,
    Rollout,
)

pytestmark = pytest.mark.backends  # each test runs on SQLite and on PostgreSQL


def _model(session: Session, artifact: Path | str, name: str = "churn", **kw: object) -> ModelVersion:
    spec = models.NewVersion(name=name, artifact_uri=str(artifact), framework="sklearn", **kw)  # type: ignore[arg-type]
    return models.register(session, spec, "tester")


def _violation(database: Database, rows: list[object]) -> str:
    with pytest.raises(IntegrityError) as info, database.write() as session:
        session.add_all(rows)
        session.flush()
    return explain(info.value)


def test_versions_count_up_per_name(database: Database, artifact: Path) -> None:
    with database.write() as session:
        assert [_model(session, artifact).version for _ in range(3)] == [1, 2, 3]
        assert _model(session, artifact, name="fraud").version == 1


def test_duplicate_name_and_version_is_rejected(database: Database, artifact: Path) -> None:
    with database.write() as session:
        _model(session, artifact, version=4)
    with pytest.raises(IntegrityError) as info, database.write() as session:
        _model(session, artifact, version=4)
    assert explain(info.value) == "that model name and version are already registered"


def test_unknown_status_is_rejected_by_the_schema(database: Database) -> None:
    row = ModelVersion(name="m", version=1, framework="sklearn", artifact_uri="s3://b/k", status="live")
    assert _violation(database, [row]).startswith("model status must be one of candidate")


def test_negative_variant_weight_is_rejected(database: Database, artifact: Path) -> None:
    with database.write() as session:
        model_id = _model(session, artifact).id
    config = EndpointConfig(name="cfg-1", endpoint_name="ep")
    config.variants.append(
        ConfigVariant(
            variant_name="a", model_version_id=model_id, instance_type="ml.m5.large", initial_weight=-0.5
        )
    )
    assert _violation(database, [config]) == "variant weights must be 0 or more"


def test_zero_instances_is_rejected(database: Database, artifact: Path) -> None:
    with database.write() as session:
        model_id = _model(session, artifact).id
    config = EndpointConfig(name="cfg-1", endpoint_name="ep")
    config.variants.append(
        ConfigVariant(
            variant_name="a", model_version_id=model_id, instance_type="ml.m5.large", instance_count=0
        )
    )
    assert _violation(database, [config]) == "a variant needs at least 1 instance"


def test_duplicate_variant_names_in_one_config_are_rejected(database: Database, artifact: Path) -> None:
    with database.write() as session:
        model_id = _model(session, artifact).id
    config = EndpointConfig(name="cfg-1", endpoint_name="ep")
    for _ in range(2):
        config.variants.append(
            ConfigVariant(variant_name="a", model_version_id=model_id, instance_type="ml.m5.large")
        )
    assert _violation(database, [config]) == "variant names must be unique within a config"


def test_variant_of_a_missing_model_is_rejected_by_the_foreign_key(database: Database) -> None:
    config = EndpointConfig(name="cfg-1", endpoint_name="ep")
    config.variants.append(ConfigVariant(variant_name="a", model_version_id=999, instance_type="ml.m5.large"))
    assert _violation(database, [config]).startswith("it refers to a registry row that does not exist")


def test_model_in_use_cannot_be_deleted(database: Database, artifact: Path) -> None:
    with database.write() as session:
        model = _model(session, artifact)
        config = EndpointConfig(name="cfg-1", endpoint_name="ep")
        config.variants.append(
            ConfigVariant(variant_name="a", model_version_id=model.id, instance_type="ml.m5.large")
        )
        session.add(config)
    with pytest.raises(IntegrityError, match=r"(?i)foreign key"), database.write() as session:
        session.execute(text("DELETE FROM model_versions WHERE id = :id"), {"id": model.id})


def _endpoint_with_two_models(database: Database, artifact: Path) -> tuple[int, int, int]:
    with database.write() as session:
        a, b = _model(session, artifact), _model(session, artifact)
        endpoint = Endpoint(name="ep")
        session.add(endpoint)
        session.flush()
        return endpoint.id, a.id, b.id


def test_at_most_one_active_rollout_per_endpoint(database: Database, artifact: Path) -> None:
    endpoint_id, a, b = _endpoint_with_two_models(database, artifact)

    def rollout(state: str) -> Rollout:
        return Rollout(
            endpoint_id=endpoint_id,
            baseline_version_id=a,
            candidate_version_id=b,
            policy_yaml="{}",
            policy_hash="0" * 64,
            state=state,
        )

    with database.write() as session:
        session.add_all([rollout("promoted"), rollout("rolled_back"), rollout("running")])
    assert _violation(database, [rollout("paused")]) == "the endpoint already has an active rollout"


def test_rollout_needs_two_distinct_versions_and_a_known_state(database: Database, artifact: Path) -> None:
    endpoint_id, a, b = _endpoint_with_two_models(database, artifact)
    same = Rollout(
        endpoint_id=endpoint_id,
        baseline_version_id=a,
        candidate_version_id=a,
        policy_yaml="{}",
        policy_hash="0" * 64,
    )
    assert _violation(database, [same]) == "baseline and candidate must be different model versions"
    odd = Rollout(
        endpoint_id=endpoint_id,
        baseline_version_id=a,
        candidate_version_id=b,
        policy_yaml="{}",
        policy_hash="0" * 64,
        state="exploded",
    )
    assert _violation(database, [odd]) == "unknown rollout state"
    bad_intent = Rollout(
        endpoint_id=endpoint_id,
        baseline_version_id=a,
        candidate_version_id=b,
        policy_yaml="{}",
        policy_hash="0" * 64,
        intent="yolo",
    )
    assert _violation(database, [bad_intent]).startswith("rollout intent must be")


def test_observation_counts_cannot_be_negative(database: Database, artifact: Path) -> None:
    endpoint_id, a, b = _endpoint_with_two_models(database, artifact)
    with database.write() as session:
        r = Rollout(
            endpoint_id=endpoint_id,
            baseline_version_id=a,
            candidate_version_id=b,
            policy_yaml="{}",
            policy_hash="0" * 64,
        )
        session.add(r)
        session.flush()
        rollout_id = r.id
    now = datetime.now(UTC)
    obs = Observation(
        rollout_id=rollout_id,
        phase=0,
        variant_name="a",
        metric="accuracy",
        window_start=now,
        window_end=now + timedelta(minutes=1),
        n=-1,
    )
    assert _violation(database, [obs]) == "observation counts must be 0 or more"


def test_times_are_stored_as_utc_and_come_back_aware(database: Database, artifact: Path) -> None:
    plus_two = datetime(2026, 6, 1, 16, 0, tzinfo=timezone(timedelta(hours=2)))
    with database.write() as session:
        model = _model(session, artifact)
        model.created_at = plus_two
    with database.read() as session:
        back = session.get(ModelVersion, model.id)
        assert back is not None
        assert back.created_at == datetime(2026, 6, 1, 14, 0, tzinfo=UTC)
        assert back.created_at.tzinfo is UTC


def test_naive_times_are_refused(database: Database, artifact: Path) -> None:
    with pytest.raises(StatementError, match="naive datetime"), database.write() as session:
        model = _model(session, artifact)
        model.created_at = datetime(2026, 6, 1, 14, 0)
        session.flush()


@pytest.mark.parametrize("name", ["", "-lead", "trail-", "under_score", "x" * 64, "dot.ted"])
def test_model_names_follow_sagemaker_rules(database: Database, artifact: Path, name: str) -> None:
    with pytest.raises(UserError), database.write() as session:
        _model(session, artifact, name=name)


@pytest.mark.parametrize(
    "uri,message",
    [
        ("s3://bucket-only", "needs a bucket and a key"),
        ("gs://bucket/key", "scheme must be one of s3, file"),
        ("/nonexistent/model.joblib", "does not exist"),
    ],
)
def test_bad_artifact_uris_are_refused(database: Database, uri: str, message: str) -> None:
    with pytest.raises(UserError, match=message), database.write() as session:
        _model(session, uri)


def test_lookup_by_name_takes_the_newest_version(database: Database, artifact: Path) -> None:
    with database.write() as session:
        _model(session, artifact)
        _model(session, artifact, description="second")
    with database.read() as session:
        assert models.get(session, "churn").version == 2
        assert models.get(session, "churn:1").version == 1
        with pytest.raises(NotFound):
            models.get(session, "churn:3")
        with pytest.raises(UserError, match="NAME:VERSION"):
            models.get(session, "churn:latest")


def test_a_misspelt_model_is_named_as_missing_not_as_lacking_a_candidate(
    database: Database, artifact: Path
) -> None:
    """Issue 31, item 7: `churn` exists and `chrun` does not; the error says which, with a guess."""
    from manager.registry.rollouts import resolve_candidate

    with database.write() as session:
        models.register(session, models.NewVersion("churn", str(artifact), "sklearn"), "t")
    with database.read() as session:
        with pytest.raises(NotFound, match=r"no model 'chrun' in the registry; did you mean 'churn'\?"):
            resolve_candidate(session, "chrun", None)
        with pytest.raises(NotFound, match="model churn has no approved candidate to roll out"):
            resolve_candidate(session, "churn", None)


def test_metrics_are_shown_to_people_in_four_digits_per_split() -> None:
    """Issue 31, item 7: `models show` printed the metrics as a Python dict with 16 digits."""
    from manager.views.rows import metrics_text

    shown = metrics_text(
        {"validation": {"accuracy": 0.9473684210526315}, "test": {"roc_auc": 0.9940476190476191}}
    )
    assert shown == "validation: accuracy 0.9474; test: roc_auc 0.994"
    assert metrics_text({"auc": 0.91, "rows": 120}) == "auc 0.91, rows 120"
    assert metrics_text({}) == "-"
