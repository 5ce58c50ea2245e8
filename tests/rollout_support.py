"""A world for rollout tests: the local SageMaker, a registry, two registered versions, an endpoint."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from manager import policy as policies
from manager.db import Database
from manager.local_sagemaker import LocalSageMaker
from manager.metrics.cloudwatch import CloudWatchSource
from manager.platforms.sagemaker import SageMakerPlatform
from manager.registry import migrate, models
from manager.registry.tables import Rollout
from manager.rollout import endpoints, launch
from manager.rollout.reconcile import Reconciler

from .local_sagemaker_support import first_row

ENDPOINT = "churn-prod"
POLICY = f"""
name: test-policy
target:
  endpoint: {ENDPOINT}
  candidateVariant: candidate
  candidate: {{model: churn, version: 2}}
steps: STEPS
metrics:
  - {{name: 5xx, role: primary, source: cloudwatch, measure: errors_5xx, kind: errors, higherIsBetter: false,
     minSamples: MIN, onNoData: pass}}
decisions: {{maxDuration: 5m}}
"""
GATED = "[{setWeight: {percent: 20}}, {pause: {}}, {setWeight: {percent: 50}}, {analysis: {}}]"
CANARY = (
    "[{setWeight: {percent: 20}}, {analysis: {final: false}}, {setWeight: {percent: 50}}, {analysis: {}}]"
)


def policy_text(steps: str = CANARY, min_samples: int = 0) -> str:
    return POLICY.replace("STEPS", steps).replace("MIN", str(min_samples))


class RolloutRows:
    """Starting a rollout from policy text, and reading its row back, on a world's `database`."""

    database: Database

    def start(self, text: str) -> int:
        policy = policies.parse(text)
        with self.database.write() as session:
            return launch.start(session, policy, text, "tester", datetime.now(UTC)).id

    def rollout(self, rollout_id: int) -> Rollout:
        with self.database.read() as session:
            row = session.get(Rollout, rollout_id)
            assert row is not None
            session.expunge(row)
            return row


@dataclass
class World(RolloutRows):
    host: LocalSageMaker
    database: Database
    platform: SageMakerPlatform
    db_path: Path  # the SQLite file (when the registry is SQLite)
    db: str = ""  # what `--db` takes: the file, or the PostgreSQL URL
    stop: threading.Event = field(default_factory=threading.Event)

    def reconciler(self, owner: str = "test") -> Reconciler:
        source = CloudWatchSource(self.host.client("cloudwatch"), lag=timedelta(seconds=1), period=1)
        return Reconciler(self.database, self.platform, source, owner=owner)

    def set_aside_waiting_candidate(self) -> None:
        """Reject the approved churn:2 this world starts with: a cron retrain skips while an approved
        version waits, never rolled out (it would only pile up versions)."""
        with self.database.write() as session:
            waiting = models.get(session, "churn:2")
            models.transition(session, waiting, "rejected", "tester", reason="set aside for a retrain")

    def tick_until(
        self,
        rollout_id: int,
        states: tuple[str, ...],
        reconciler: Reconciler | None = None,
        timeout: float = 60,
    ) -> Rollout:
        reconciler = reconciler or self.reconciler()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reconciler.tick()
            row = self.rollout(rollout_id)
            if row.state in states:
                return row
            time.sleep(0.1)
        raise AssertionError(f"rollout {rollout_id} stayed {self.rollout(rollout_id).state}, wanted {states}")

    @contextmanager
    def traffic(self) -> Iterator[None]:
        runtime = self.host.client("sagemaker-runtime")

        def send() -> None:
            while not self.stop.is_set():
                with suppress(Exception):
                    runtime.invoke_endpoint(EndpointName=ENDPOINT, ContentType="text/csv", Body=first_row())

        worker = threading.Thread(target=send, daemon=True)
        worker.start()
        try:
            yield
        finally:
            self.stop.set()
            worker.join(timeout=5)


@contextmanager
def make_world(
    tmp_path: Path, artifacts: dict[str, Path], candidate: str = "logistic", url: str | None = None
) -> Iterator[World]:
    """`url`: the registry (the `db_url` fixture gives SQLite, or PostgreSQL for `backends` tests)."""
    db_path = tmp_path / "registry.db"
    url = url or f"sqlite:///{db_path}"
    database = Database(url)
    migrate.upgrade(database)
    with database.write() as session:
        models.register(session, models.NewVersion("churn", str(artifacts["logistic"]), "sklearn"), "t")
        models.register(
            session, models.NewVersion("churn", str(artifacts[candidate]), "sklearn", status="approved"), "t"
        )
    with LocalSageMaker(tmp_path / "sagemaker", provision_delay=0.1, metric_bucket_seconds=1) as host:
        platform = SageMakerPlatform(host.client("sagemaker"))
        endpoints.create_and_wait(database, platform, ENDPOINT, "churn:1", "tester", poll=0.05)
        yield World(host, database, platform, db_path, str(db_path) if url.startswith("sqlite") else url)
    database.dispose()


def platform_matches_registry(world: World) -> dict[str, Any]:
    """The endpoint's config and variants as the platform has them, checked against the registry."""
    from sqlalchemy import select

    from manager.registry.tables import Endpoint

    state = world.platform.describe(ENDPOINT)
    assert state is not None and not state.busy
    with world.database.read() as session:
        endpoint = session.scalar(select(Endpoint).where(Endpoint.name == ENDPOINT))
        assert endpoint is not None and endpoint.current_config is not None
        registered = {v.variant_name: v.model_version.ref for v in endpoint.current_config.variants}
        assert state.config_name == endpoint.current_config.name, (
            state.config_name,
            endpoint.current_config.name,
        )
    assert sorted(v.name for v in state.variants) == sorted(registered)
    return registered


def forced_promotion(world: World, text: str, actor: str, reason: str) -> int:
    """A rollout started under `text`, running, then promoted by `actor`'s forced promotion."""
    from manager.registry import rollouts

    rollout_id = world.start(text)
    world.tick_until(rollout_id, ("running",))
    with world.database.write() as session:
        rollouts.set_intent(session, rollout_id, "promote", reason, actor)
    world.tick_until(rollout_id, ("promoted",))
    return rollout_id


def checkpointed(db_path: Path) -> Path:
    """The SQLite file with its WAL folded in, so that a copy of the one file holds everything."""
    import sqlite3

    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return db_path
