"""`audit verify` covers the registry's rows: after a real rollout on the local SageMaker, each edit
that bypasses the history (to a model's artifact or status, a config's variants, the config an
endpoint serves, a rollout's final state, a row added) is reported; the untouched registry passes.
Also: a registry from before the config events gets them from migration 0009 and is covered."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from manager.db import Database
from manager.history import audit
from manager.registry import migrate, models

from .rollout_support import CANARY, checkpointed, forced_promotion, make_world, policy_text


@pytest.fixture(scope="module")
def promoted(tmp_path_factory: pytest.TempPathFactory, artifacts: dict[str, Path]) -> Iterator[Path]:
    """A registry file after one forced promotion (checkpointed: one file holds everything)."""
    tmp = tmp_path_factory.mktemp("promoted")
    with make_world(tmp, artifacts) as world:
        forced_promotion(world, policy_text(CANARY, min_samples=10_000), "carol", "ship")
        db_path = world.db_path
    yield checkpointed(db_path)


def _copy(source: Path, tmp_path: Path) -> Database:
    target = tmp_path / "copy.db"
    shutil.copy(source, target)
    return Database(f"sqlite:///{target}")


def test_the_untouched_registry_passes(promoted: Path, tmp_path: Path) -> None:
    database = _copy(promoted, tmp_path)
    verdict = audit.verify(database)
    assert verdict.ok and verdict.rows == (), verdict.problem
    database.dispose()


@pytest.mark.parametrize(
    "statement,reported",
    [
        (
            "UPDATE model_versions SET artifact_uri = 's3://evil/model.tar.gz' WHERE version = 2",
            "model churn:2: artifact_uri is 's3://evil/model.tar.gz'",
        ),
        (
            "UPDATE model_versions SET status = 'approved' WHERE version = 1",
            "model churn:1: status is 'approved'",
        ),
        ("UPDATE model_versions SET framework = 'xgboost' WHERE version = 2", "framework is 'xgboost'"),
        ("UPDATE config_variants SET instance_count = 9", "differs from the history's record of it"),
        (
            "UPDATE endpoints SET current_config_id = (SELECT MIN(id) FROM endpoint_configs)",
            "endpoint churn-prod serves",
        ),
        ("UPDATE rollouts SET state = 'rolled_back', outcome = 'rolled_back'", "rollout 1 is rolled_back"),
        (
            "INSERT INTO model_versions (name, version, framework, artifact_uri, metrics, status, created_at)"
            " VALUES ('churn', 9, 'sklearn', 's3://evil/x', '{}', 'approved', '2026-01-01 00:00:00')",
            "model churn:9 is in the registry but the history never registered it",
        ),
        (
            "INSERT INTO endpoint_configs (name, endpoint_name, created_at)"
            " VALUES ('sneaky', 'churn-prod', '2026-01-01 00:00:00')",
            "endpoint config sneaky is in the registry but not in the history",
        ),
    ],
    ids=[
        "artifact",
        "status",
        "framework",
        "config-variant",
        "served-config",
        "final-state",
        "added-model",
        "added-config",
    ],
)
def test_each_registry_row_edit_is_reported(
    promoted: Path, tmp_path: Path, statement: str, reported: str
) -> None:
    database = _copy(promoted, tmp_path)
    with database.writer.begin() as conn:
        conn.execute(text(statement))
    verdict = audit.verify(database)
    assert not verdict.ok and any(reported in row for row in verdict.rows), verdict.rows
    database.dispose()


def test_a_registry_from_before_the_config_events_is_covered_after_upgrade(
    tmp_path: Path, artifact: Path
) -> None:
    database = Database(f"sqlite:///{tmp_path / 'old.db'}")
    migrate.upgrade(database, "0008")
    # What an earlier release wrote: rows, and no config events. Its model_versions table is the old
    # one (no columns added since), so the row goes in as SQL, with the event register() writes.
    uri = models.normalize_artifact_uri(str(artifact))
    with database.writer.begin() as conn:
        version_id = conn.execute(
            text(
                "INSERT INTO model_versions (name, version, framework, artifact_uri, metrics, status, "
                "created_at) VALUES ('m', 1, 'sklearn', :uri, '{}', 'candidate', '2026-01-01') RETURNING id"
            ),
            {"uri": uri},
        ).scalar_one()
    with database.write() as session:
        payload = {
            "artifact_uri": uri,
            "framework": "sklearn",
            "framework_version": None,
            "image_uri": None,
            "metrics": {},
            "dataset_fingerprint": None,
            "training_run": None,
            "status": "candidate",
        }
        audit.append(
            session, "alice", audit.Event("model.register", "model_version", "m:1", None, payload, None, "m")
        )
    with database.writer.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO endpoint_configs (id, name, endpoint_name, created_at) "
                "VALUES (1, 'c', 'ep', '2026-01-01')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO config_variants (config_id, variant_name, model_version_id, instance_type, "
                "instance_count, initial_weight, is_shadow) VALUES (1, 'a', :v, 'ml.m5.large', 1, 1.0, 0)"
            ),
            {"v": version_id},
        )
        conn.execute(
            text(
                "INSERT INTO endpoints (name, platform, current_config_id, created_at) "
                "VALUES ('ep', 'sagemaker', 1, '2026-01-01')"
            )
        )
    migrate.upgrade(database)
    assert audit.verify(database).ok
    actions = [e.action for e in audit.history(database, audit.HistoryFilter(actor="migration:0009"))]
    assert sorted(actions) == ["endpoint.config", "endpoint.serves"]
    with database.writer.begin() as conn:
        conn.execute(text("UPDATE config_variants SET instance_type = 'ml.p4d.24xlarge'"))
    assert not audit.verify(database).ok
    database.dispose()
