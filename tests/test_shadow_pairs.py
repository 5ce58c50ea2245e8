"""Shadow steps paired: the local SageMaker captures the shadow's answer to each copied request under
the production request's inference id; ingestion pairs the two answers (label-free at once, with the
label when it comes), and the paired tests judge the candidate while it serves nobody."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sklearn.datasets import load_breast_cancer
from sqlalchemy import func, select

from manager.demo.loadgen import LabelWriter, Traffic
from manager.groundtruth.ingest import GroundTruthIngestor, QualitySpec
from manager.history import audit
from manager.registry.tables import PairedSum, ShadowAnswer
from manager.rollout.reconcile import Reconciler

from .test_replay import ENDPOINT, ReplayWorld, replay_world

POLICY = """
name: shadow-paired
target:
  endpoint: fraud-prod
  candidateVariant: candidate
  candidate: {model: fraud, version: 2}
  captureDestination: CAPTURE
  groundTruth: LABELS
labelsIndependentOfServing: true
steps:
  - shadow: {percent: 100, duration: DURATION}
  - analysis: {}
metrics:
  - {name: accuracy, source: quality, measure: accuracy, kind: proportion, higherIsBetter: true,
     role: primary, test: {margin: 0.02}, minSamples: 50}
decisions: {maxDuration: 5m, plannedSamples: 300}
"""


def _run(world: ReplayWorld, duration: str, timeout: float = 90) -> tuple[int, str, float]:
    text = (
        POLICY.replace("CAPTURE", world.capture.as_uri())
        .replace("LABELS", world.labels.as_uri())
        .replace("DURATION", duration)
    )
    rollout_id = world.start(text)
    reconciler = Reconciler(world.database, world.platform, None, owner="test")
    ingestor = GroundTruthIngestor(world.database, settle=timedelta(seconds=1))
    quality = QualitySpec(
        ENDPOINT, world.capture.as_uri(), world.labels.as_uri(), label_ttl=timedelta(hours=1)
    )
    x, y = load_breast_cancer(return_X_y=True)
    traffic = Traffic(
        world.host.client("sagemaker-runtime"),
        ENDPOINT,
        x,
        y,
        LabelWriter(str(world.labels)),
        label_delay=0.2,
    )
    workers = traffic.start()
    highest = 0.0
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ingestor.run(quality)
            reconciler.tick()
            row = world.rollout(rollout_id)
            if row.state in ("pending", "running"):
                highest = max(highest, world.candidate_share())
            if row.state in ("promoted", "rolled_back", "paused", "aborted"):
                return rollout_id, row.state, highest
            time.sleep(0.2)
    finally:
        traffic.stop.set()
        for w in workers:
            w.join(timeout=10)
    raise AssertionError(f"rollout {rollout_id} stayed {world.rollout(rollout_id).state}")


def _sums(world: ReplayWorld, rollout_id: int) -> dict[str, PairedSum]:
    with world.database.read() as session:
        rows = list(session.scalars(select(PairedSum).where(PairedSum.rollout_id == rollout_id)))
        for row in rows:
            session.expunge(row)
    assert {r.source for r in rows} <= {"shadow"}
    return {r.measure: r for r in rows}


def test_a_worse_shadow_is_rolled_back_on_pairs_while_it_serves_nobody(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with replay_world(tmp_path, artifacts, baseline="logistic", candidate="prior") as world:
        rollout_id, state, highest = _run(world, "10m")
        assert state == "rolled_back" and highest == 0.0
        sums = _sums(world, rollout_id)
        assert sums["accuracy"].sum_baseline > sums["accuracy"].sum_candidate
        # the label-free comparison counted every pair it saw, at least as many as the labelled ones
        assert sums["agreement"].n >= sums["accuracy"].n
        events = audit.history(world.database, audit.HistoryFilter(endpoint=ENDPOINT, limit=500))
        rollback = next(e for e in events if e.action == "rollout.rollback")
        evidence = json.loads(rollback.payload)
        assert "worse" in (rollback.reason or "")
        assert evidence["paired"]["source"] == "shadow" and 0 < evidence["paired"]["agreement_rate"] < 1
        accuracy = evidence["metrics"]["accuracy"]
        assert accuracy["design"] == "paired"
        # A harm is anytime-valid: it may be declared before minSamples (which gates a pass only), on
        # however many pairs had arrived by the look that saw it. What the decision needs is that the
        # whole interval lies below -margin, on the pairs it names, no more than were counted.
        assert accuracy["improvement_high"] < -accuracy["margin"]
        assert 0 < accuracy["pairs"] <= sums["accuracy"].n
        # what never met a label is counted when it expires, never dropped silently
        with world.database.read() as session:
            unpaired = session.scalar(
                select(func.count()).select_from(ShadowAnswer).where(ShadowAnswer.paired.is_(False))
            )
        later = GroundTruthIngestor(world.database, clock=lambda: datetime.now(UTC) + timedelta(hours=2))
        report = later.run(
            QualitySpec(ENDPOINT, world.capture.as_uri(), world.labels.as_uri(), label_ttl=timedelta(hours=1))
        )
        assert report.expired_shadow_answers == unpaired
        with world.database.read() as session:
            assert session.scalar(select(func.count()).select_from(ShadowAnswer)) == 0


def test_a_better_shadow_is_promoted_on_its_pairs_after_the_shadow_step(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with replay_world(tmp_path, artifacts, baseline="prior", candidate="logistic") as world:
        rollout_id, state, highest = _run(world, "4s")
        assert state == "promoted" and highest == 0.0
        reason = world.rollout(rollout_id).reason or ""
        assert "shadowed pairs" in reason
        sums = _sums(world, rollout_id)
        assert sums["accuracy"].sum_candidate > sums["accuracy"].sum_baseline
