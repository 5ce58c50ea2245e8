"""The pre-period covariate in the daemon's ingestion (`adjust: prePeriodModel`): fitted once, before the
rollout's first ingestion, on the baseline's captured requests from before the start joined to their
labels (never on the rollout's own), recorded in the history with its fingerprint; every captured
prediction of the rollout gets its x from its input, the observations carry x's sums, and the verdict
is adjusted. Without history, it says so and the test is the unadjusted one; a model whose bytes no
longer match the recorded fingerprint is not loaded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, update

from manager import policy as policies
from manager.daemon.jobs.ingest import _covariate
from manager.db import Database
from manager.groundtruth.ingest import GroundTruthIngestor, QualitySpec
from manager.history import audit
from manager.registry import covariates, observations
from manager.registry.tables import Rollout
from manager.registry.work_tables import CovariateModel
from manager.rollout.judge import judge

from .groundtruth_support import capture_line, label_line
from .registry_fixtures import bare_rollout

pytestmark = pytest.mark.backends

POLICY = (
    Path(__file__).resolve().parent.parent / "examples" / "policies" / "benchmark-adjusted.yaml"
).read_text()


class Traffic:
    """Requests whose correctness (the model always answers 1) follows their first feature."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root, self.rng, self.count = root, np.random.default_rng(seed), 0

    def serve(self, variant: str, at: datetime, n: int, worse: float = 0.0, labelled: bool = True) -> None:
        captures, labels = [], []
        for _ in range(n):
            self.count += 1
            features = self.rng.normal(size=3).tolist()
            correct = features[0] + 0.6 * self.rng.normal() > -1.0 + worse
            request = ",".join(f"{v:.6f}" for v in features)
            captures.append(capture_line(f"r{self.count}", at, "0.9", request=request))
            labels.append(label_line(f"r{self.count}", str(int(correct))))
        hour = at.strftime("%Y/%m/%d/%H")
        self._append(self.root / "capture" / "ep" / variant / hour / f"{at:%M%S%f}.jsonl", captures)
        if labelled:
            self._append(self.root / "labels" / hour / f"{variant}-{at:%M%S%f}.jsonl", labels)

    @staticmethod
    def _append(path: Path, lines: list[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            handle.write("".join(line + "\n" for line in lines))


def _setup(
    database: Database, tmp_path: Path, started: datetime
) -> tuple[int, QualitySpec, GroundTruthIngestor]:
    rollout_id = bare_rollout(database, started, weights={"baseline": 50, "candidate": 50})
    with database.write() as session:
        session.execute(update(Rollout).where(Rollout.id == rollout_id).values(created_at=started))
    spec = QualitySpec("ep", (tmp_path / "capture").as_uri(), (tmp_path / "labels").as_uri())
    clock = lambda: started + timedelta(minutes=40)  # noqa: E731
    return (
        rollout_id,
        spec,
        GroundTruthIngestor(database, clock=clock, settle=timedelta(0), lookback=timedelta(days=3)),
    )


def test_a_covariate_fitted_before_the_start_adjusts_the_rollouts_verdict(
    database: Database, tmp_path: Path
) -> None:
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=40)
    rollout_id, spec, ingestor = _setup(database, tmp_path, started)
    traffic = Traffic(tmp_path, seed=1)
    for minutes in range(1, 121, 4):  # two hours of the baseline's labelled history: 30 x 20 requests
        traffic.serve("baseline", started - timedelta(minutes=minutes), 20)
    history = traffic.count
    for minutes in range(1, 31):  # the rollout itself: 30 minutes, both variants, the candidate worse
        traffic.serve("baseline", started + timedelta(minutes=minutes, seconds=5), 40)
        traffic.serve("candidate", started + timedelta(minutes=minutes, seconds=5), 40, worse=0.3)

    _covariate(ingestor, rollout_id, spec, "accuracy", {})
    _covariate(ingestor, rollout_id, spec, "accuracy", {})  # once: never refitted during the rollout
    with database.read() as session:
        rows = list(session.scalars(select(CovariateModel)))
        assert len(rows) == 1 and rows[0].state == "fitted"
        assert rows[0].rows == history  # the baseline's requests before the start, and none after
        assert rows[0].last_served < started
    events = audit.history(database, audit.HistoryFilter(action=covariates.EVENT, limit=None))
    recorded = json.loads(events[0].payload)
    assert len(events) == 1 and recorded["fingerprint"] == rows[0].fingerprint and recorded["rows"] == history

    report = ingestor.run(spec)
    assert report.joined == 30 * 80
    with database.read() as session:
        data = observations.phase_data(session, rollout_id, ["accuracy"], "baseline", "candidate")["accuracy"]
    base, cand = data[0].baseline, data[0].candidate
    assert base.n == cand.n == 1200 and base.x_sq > 0 and cand.xy != 0
    policy = policies.parse(POLICY)
    verdict = judge(policy.metrics[0], data, 0, policy, harm_only=False)
    assert verdict.evidence["adjusted"] is True
    assert verdict.evidence["variance_explained"] > 0.2  # the first feature explains correctness
    assert verdict.evidence["improvement_high"] < verdict.evidence["unadjusted_improvement_high"] + 1e-9


def test_without_history_it_is_said_and_the_test_is_unadjusted(database: Database, tmp_path: Path) -> None:
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=40)
    rollout_id, spec, ingestor = _setup(database, tmp_path, started)
    traffic = Traffic(tmp_path, seed=2)
    for minutes in range(1, 11):
        traffic.serve("baseline", started + timedelta(minutes=minutes), 20)
        traffic.serve("candidate", started + timedelta(minutes=minutes), 20)
    _covariate(ingestor, rollout_id, spec, "accuracy", {})
    with database.read() as session:
        row = session.scalars(select(CovariateModel)).one()
    assert row.state == "none" and "no captured requests of baseline" in (row.reason or "")
    ingestor.run(spec)
    with database.read() as session:
        data = observations.phase_data(session, rollout_id, ["accuracy"], "baseline", "candidate")["accuracy"]
    assert data[0].baseline.n == 200 and data[0].baseline.x_sq == 0
    policy = policies.parse(POLICY)
    assert judge(policy.metrics[0], data, 0, policy, harm_only=False).evidence["adjusted"] is False


def test_a_model_altered_after_it_was_recorded_is_not_loaded(database: Database, tmp_path: Path) -> None:
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=40)
    rollout_id, spec, ingestor = _setup(database, tmp_path, started)
    traffic = Traffic(tmp_path, seed=3)
    for minutes in range(1, 61, 2):
        traffic.serve("baseline", started - timedelta(minutes=minutes), 10)
    _covariate(ingestor, rollout_id, spec, "accuracy", {})
    with database.read() as session:
        assert set(covariates.for_endpoint(session, "ep", {})) == {rollout_id}
    with database.write() as session:
        row = session.get(CovariateModel, rollout_id)
        assert row is not None and row.model is not None
        session.execute(
            update(CovariateModel)
            .where(CovariateModel.rollout_id == rollout_id)
            .values(model=row.model + b"x")
        )
    with database.read() as session:
        assert covariates.for_endpoint(session, "ep", {}) == {}
