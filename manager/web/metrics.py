"""`/metrics`: this process's counters (`manager.telemetry`) and gauges read from the registry at each
scrape: rollouts by state, endpoint leases by holder, the scheduler's leader, ingestion's records,
malformed records and lag per endpoint, webhook deliveries by state and gates waiting."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from manager import telemetry
from manager.clock import utcnow
from manager.db import Database
from manager.registry.tables import (
    EndpointLease,
    GateCheck,
    IngestCursor,
    LeaderLease,
    Rollout,
    WebhookDelivery,
)
from manager.registry.vocabulary import ROLLOUT_STATES
from manager.registry.work_tables import DELIVERY_STATES
from manager.web.metrics_rollouts import RolloutCollector

log = logging.getLogger(__name__)


class RegistryCollector(Collector):
    """Gauges of the registry as it is at the scrape (one read transaction, a few GROUP BYs)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("variantctl_registry_up", "1 when the registry could be read at this scrape.")
        try:
            families = self._read()
        except Exception as exc:  # a scrape reports the registry down; it never fails the whole page
            log.warning("metrics: could not read the registry: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list[Any]:
        now = utcnow()
        with self.database.read() as session:
            states = dict(session.execute(select(Rollout.state, func.count()).group_by(Rollout.state)).all())
            leases = session.execute(
                select(EndpointLease.owner, func.count())
                .where(EndpointLease.expires_at > now)
                .group_by(EndpointLease.owner)
            ).all()
            leaders = session.scalars(select(LeaderLease).where(LeaderLease.expires_at > now)).all()
            ingest = session.execute(
                select(
                    IngestCursor.endpoint,
                    IngestCursor.kind,
                    func.sum(IngestCursor.records),
                    func.sum(IngestCursor.malformed),
                    func.max(IngestCursor.updated_at),
                ).group_by(IngestCursor.endpoint, IngestCursor.kind)
            ).all()
            deliveries = dict(
                session.execute(
                    select(WebhookDelivery.state, func.count()).group_by(WebhookDelivery.state)
                ).all()
            )
            waiting = session.scalar(
                select(func.count())
                .select_from(GateCheck)
                .join(Rollout, Rollout.id == GateCheck.rollout_id)
                .where(
                    GateCheck.passed_at.is_(None),
                    GateCheck.expired_at.is_(None),
                    Rollout.finished_at.is_(None),
                )
            )
        rollouts = GaugeMetricFamily("variantctl_rollouts", "Rollouts by state.", labels=["state"])
        for state in ROLLOUT_STATES:
            rollouts.add_metric([state], states.get(state, 0))
        held = GaugeMetricFamily(
            "variantctl_endpoint_leases",
            "Unexpired endpoint leases, by the daemon holding them.",
            labels=["owner"],
        )
        for owner, n in leases:
            held.add_metric([owner], n)
        leader = GaugeMetricFamily(
            "variantctl_scheduler_leader", "The scheduler's leader and its epoch.", labels=["holder", "epoch"]
        )
        for lease in leaders:
            leader.add_metric([lease.holder, str(lease.epoch)], 1)
        records = GaugeMetricFamily(
            "variantctl_ingest_records", "Records ingestion has read.", labels=["endpoint", "kind"]
        )
        malformed = GaugeMetricFamily(
            "variantctl_ingest_malformed_records",
            "Malformed records ingestion counted and skipped.",
            labels=["endpoint", "kind"],
        )
        lag = GaugeMetricFamily(
            "variantctl_ingest_lag_seconds",
            "Seconds since ingestion last moved on for this endpoint and kind.",
            labels=["endpoint", "kind"],
        )
        for endpoint, kind, n, bad, updated in ingest:
            records.add_metric([endpoint, kind], n or 0)
            malformed.add_metric([endpoint, kind], bad or 0)
            if updated is not None:
                lag.add_metric([endpoint, kind], max(0.0, (now - updated).total_seconds()))
        queue = GaugeMetricFamily(
            "variantctl_webhook_deliveries", "Webhook deliveries by state.", labels=["state"]
        )
        for kept in DELIVERY_STATES:
            queue.add_metric([kept], deliveries.get(kept, 0))
        gates = GaugeMetricFamily("variantctl_gates_waiting", "Gates active rollouts wait at.")
        gates.add_metric([], waiting or 0)
        return [rollouts, held, leader, records, malformed, lag, queue, gates]


class Exposition:
    """The /metrics body: this process's counters, then the registry's gauges."""

    def __init__(self, database: Database) -> None:
        self.gauges = CollectorRegistry(auto_describe=False)
        self.gauges.register(RegistryCollector(database))
        self.gauges.register(RolloutCollector(database))

    def __call__(self) -> tuple[bytes, str]:
        return generate_latest(telemetry.REGISTRY) + generate_latest(self.gauges), CONTENT_TYPE_LATEST
