"""The loop scheduled jobs exist for: rollout after rollout on one endpoint under one unchanged policy
file, whatever variant names the previous rollout left serving."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from manager import daemon
from manager.cli.main import cli
from manager.history import audit
from manager.registry import models

from .local_sagemaker_support import flaky_artifact
from .rollout_support import ENDPOINT, World, make_world, platform_matches_registry

pytestmark = pytest.mark.backends  # the daemon's work on SQLite and on PostgreSQL

# No variant names: the engine picks them. The 5xx metric rolls a failing candidate back.
POLICY = f"""
name: nightly
target:
  endpoint: {ENDPOINT}
  candidate: {{model: churn, newestApproved: true}}
steps: [{{setWeight: {{percent: 50}}}}, {{analysis: {{}}}}]
metrics:
  - {{name: 5xx, source: cloudwatch, measure: errors_5xx, kind: errors, higherIsBetter: false,
     role: primary, minSamples: 30, onNoData: pass}}
decisions: {{maxDuration: 5m}}
"""


@pytest.fixture
def flaky(artifacts: dict[str, Path], tmp_path: Path) -> Path:
    return flaky_artifact(tmp_path / "flaky.joblib", artifacts["logistic"], 0.5)


def _approve(world: World, artifact: Path) -> str:
    with world.database.write() as session:
        version = models.register(session, models.NewVersion("churn", str(artifact), "sklearn"), "t")
        models.transition(session, version, "approved", "t", reason="test")
        return version.ref


def _serving(world: World) -> dict[str, str]:
    return platform_matches_registry(world)


@pytest.mark.slow
def test_four_rollouts_in_a_row_with_one_policy_file(
    tmp_path: Path, artifacts: dict[str, Path], db_url: str, flaky: Path
) -> None:
    policy = tmp_path / "nightly.yaml"
    policy.write_text(POLICY)
    with make_world(tmp_path, artifacts, url=db_url) as world, world.traffic():
        outcomes, served = [], []
        for artifact in (None, artifacts["logistic"], flaky, artifacts["prior"]):
            ref = _approve(world, artifact) if artifact is not None else "churn:2"
            started = CliRunner().invoke(
                cli, ["--db", world.db, "rollout", "start", "--policy", str(policy), "-o", "json"]
            )
            assert started.exit_code == 0, started.output
            record = json.loads(started.stdout)
            assert record["candidate"] == ref
            assert record["candidate_variant"] == f"churn-v{ref.split(':')[1]}"
            assert record["baseline_variant"] in _serving(world)
            done = world.tick_until(record["rollout"], ("promoted", "rolled_back"), timeout=90)
            outcomes.append(done.state)
            served.append(_serving(world))
    assert outcomes == ["promoted", "promoted", "rolled_back", "promoted"]
    # every survivor keeps the baseline's variant name (and hosting); the registry says which model
    assert served == [
        {"baseline": "churn:2"},
        {"baseline": "churn:3"},
        {"baseline": "churn:3"},
        {"baseline": "churn:5"},
    ]
    assert audit.verify(world.database).ok


def _run_trigger(world: World, folder: Path) -> None:
    daemon.RUNTIMES[world.database.url] = daemon.runtime.Runtime(world.database, world.reconciler(), None)
    try:
        daemon.trigger_job(world.database.url, str(folder))
    finally:
        del daemon.RUNTIMES[world.database.url]


def test_the_new_candidate_trigger_starts_rollout_after_rollout(
    tmp_path: Path, artifacts: dict[str, Path], db_url: str
) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "auto.yaml").write_text(
        POLICY.replace("minSamples: 30", "minSamples: 0") + "trigger: {type: newApprovedCandidate}\n"
    )
    with make_world(tmp_path, artifacts, url=db_url) as world:
        for expected in ("churn:2", "churn:3"):
            if expected == "churn:3":
                _approve(world, artifacts["logistic"])
            _run_trigger(world, folder)
            [started] = audit.history(world.database, audit.HistoryFilter(action="rollout.start", limit=1))
            assert json.loads(started.payload)["candidate"] == expected
            world.tick_until(int(started.subject_id), ("promoted",))
        assert _serving(world) == {"baseline": "churn:3"}


def test_a_trigger_that_cannot_start_says_why_once(
    tmp_path: Path, artifacts: dict[str, Path], db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    # The endpoint serves one variant; naming another as the baseline cannot work while it serves two.
    text = (
        POLICY.replace(f"endpoint: {ENDPOINT}", "endpoint: nowhere")
        + "trigger: {type: newApprovedCandidate}\n"
    )
    (folder / "auto.yaml").write_text(text)
    with make_world(tmp_path, artifacts, url=db_url) as world:
        with caplog.at_level("WARNING", logger="variantctl.daemon"):
            _run_trigger(world, folder)
            _run_trigger(world, folder)
        refused = audit.history(world.database, audit.HistoryFilter(action="trigger.refused"))
        assert len(refused) == 1 and "no endpoint 'nowhere'" in (refused[0].reason or "")
        assert json.loads(refused[0].payload)["candidate"] == "churn:2"
        warnings = [r for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 2 and "cannot start a rollout of churn:2" in warnings[0].getMessage()


def _nightly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A nightly cron retrain policy whose runs are for two nights in turn (each run is for its own
    scheduled time; two runs in one second off schedule would be claimed once, as they should be:
    tests/test_daemon_jobs.py)."""
    train = tmp_path / "train.yaml"
    train.write_text(
        f"model: churn\nestimator: logistic_regression\nobjective: {{metric: roc_auc}}\n"
        f"output: {tmp_path / 'artifacts'}\n"
    )
    policy = tmp_path / "nightly.yaml"
    policy.write_text(
        POLICY.replace("minSamples: 30", "minSamples: 0")
        + "trigger:\n  type: cron\n  cron: '0 3 * * *'\n"
        + f"  retrain: {{data: 'sklearn:breast_cancer', config: '{train}'}}\n"
    )
    nights = [datetime(2026, 12, 1, 3, tzinfo=UTC), datetime(2026, 12, 2, 3, tzinfo=UTC)]
    monkeypatch.setattr(daemon.runtime, "last_fire_time", lambda _cron, _now, _lookback: nights.pop(0))
    return policy


def test_a_cron_retrain_twice_gives_two_rollouts_that_both_complete(
    tmp_path: Path, artifacts: dict[str, Path], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = _nightly(tmp_path, monkeypatch)
    with make_world(tmp_path, artifacts, url=db_url) as world:
        world.set_aside_waiting_candidate()
        for _ in range(2):
            daemon.RUNTIMES[world.database.url] = daemon.runtime.Runtime(
                world.database, world.reconciler(), None
            )
            try:
                daemon.retrain_job(world.database.url, str(policy), "retrain:nightly")
            finally:
                del daemon.RUNTIMES[world.database.url]
            [started] = audit.history(world.database, audit.HistoryFilter(action="rollout.start", limit=1))
            assert world.tick_until(int(started.subject_id), ("promoted",)).state == "promoted"
        starts = audit.history(world.database, audit.HistoryFilter(action="rollout.start"))
        assert [json.loads(e.payload)["candidate"] for e in reversed(starts)] == ["churn:3", "churn:4"]
        assert _serving(world) == {"baseline": "churn:4"}


def test_a_retrain_stopped_short_of_its_rollout_is_rolled_out_by_the_next_run(
    tmp_path: Path, artifacts: dict[str, Path], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A night's retrain approves its version, then loses the scheduler's lease before the rollout
    (fenced): the next night's run rolls that version out instead of skipping it, or training again."""
    from manager.registry import leader

    policy = _nightly(tmp_path, monkeypatch)
    fences = {"calls": 0}
    real_fence = daemon.runtime.fence

    def lost_after_training(url: str, session: object) -> None:
        fences["calls"] += 1
        if fences["calls"] == 2:  # the check after training, on the first night
            raise leader.NotLeading("the scheduler's lease moved on while training")
        real_fence(url, session)

    monkeypatch.setattr(daemon.runtime, "fence", lost_after_training)
    with make_world(tmp_path, artifacts, url=db_url) as world:
        world.set_aside_waiting_candidate()
        daemon.RUNTIMES[world.database.url] = daemon.runtime.Runtime(world.database, world.reconciler(), None)
        try:
            with pytest.raises(leader.NotLeading):
                daemon.retrain_job(world.database.url, str(policy), "retrain:nightly")
            assert not audit.history(world.database, audit.HistoryFilter(action="rollout.start"))
            daemon.retrain_job(world.database.url, str(policy), "retrain:nightly")
        finally:
            del daemon.RUNTIMES[world.database.url]
        [resumed] = audit.history(world.database, audit.HistoryFilter(action="trigger.resumed"))
        assert "churn:3, approved by an earlier run of retrain:nightly" in (resumed.reason or "")
        [started] = audit.history(world.database, audit.HistoryFilter(action="rollout.start"))
        assert json.loads(started.payload)["candidate"] == "churn:3"
        assert len(audit.history(world.database, audit.HistoryFilter(action="model.gate"))) == 1, (
            "trained once"
        )
        assert world.tick_until(int(started.subject_id), ("promoted",)).state == "promoted"


def test_a_poisoned_rollout_never_stops_a_healthy_one(
    tmp_path: Path, artifacts: dict[str, Path], db_url: str
) -> None:
    """A rollout whose stored policy no longer parses (as after a bad edit of the registry) fails every
    tick; the healthy rollout beside it finishes on time, and the poisoned one ends paused with its error."""
    from datetime import timedelta

    from sqlalchemy import update

    from manager.registry.tables import Rollout
    from manager.rollout import endpoints
    from manager.rollout.reconcile import Reconciler
    from manager.rollout.records import MAX_FAILURES

    from .rollout_support import CANARY, policy_text

    with make_world(tmp_path, artifacts, url=db_url) as world:
        endpoints.create_and_wait(world.database, world.platform, "churn-two", "churn:1", "t", poll=0.05)
        poisoned = world.start(policy_text(CANARY))
        healthy = world.start(policy_text(CANARY).replace(f"endpoint: {ENDPOINT}", "endpoint: churn-two"))
        world.tick_until(poisoned, ("running",))
        with world.database.write() as session:
            session.execute(
                update(Rollout).where(Rollout.id == poisoned).values(policy_yaml="steps: [", policy_hash="x")
            )
        reconciler = Reconciler(
            world.database, world.platform, world.reconciler().metrics, owner="test", retry_base=timedelta(0)
        )
        done = world.tick_until(healthy, ("promoted",), reconciler=reconciler)
        assert done.state == "promoted"
        for _ in range(MAX_FAILURES):
            reconciler.tick()
        row = world.rollout(poisoned)
        assert row.state == "paused" and row.failures >= MAX_FAILURES
        assert row.last_error is not None and "not valid YAML" in row.last_error
        [event] = audit.history(world.database, audit.HistoryFilter(action="rollout.paused_on_errors"))
        assert event.subject_id == str(poisoned) and "not valid YAML" in (event.reason or "")
        status = CliRunner().invoke(cli, ["--db", world.db, "rollout", "list", "-o", "json"])
        [listed] = json.loads(status.stdout)
        assert listed["rollout"] == poisoned and listed["state"] == "paused" and "YAML" in listed["reason"]


def test_a_pending_rollout_whose_policy_no_longer_parses_ends_paused_and_is_said_once(
    tmp_path: Path, artifacts: dict[str, Path], db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 31, item 12: it stayed `pending` for ever, and ingestion logged the same error each run.
    Now it is paused after MAX_FAILURES ticks with its error; ingestion says it once; and a resume
    after the repair goes back to deploying (pending), never straight to running."""
    from datetime import timedelta

    from sqlalchemy import update

    from manager.registry.tables import Rollout
    from manager.rollout.reconcile import Reconciler
    from manager.rollout.records import MAX_FAILURES

    from .rollout_support import CANARY, policy_text

    with make_world(tmp_path, artifacts, url=db_url) as world:
        text = policy_text(CANARY)
        rollout_id = world.start(text)
        with world.database.write() as session:
            good = session.get(Rollout, rollout_id)
            assert good is not None and good.state == "pending"
            kept = (good.policy_yaml, good.policy_hash)
            session.execute(update(Rollout).where(Rollout.id == rollout_id).values(policy_yaml="steps: ["))
        reconciler = Reconciler(
            world.database, world.platform, world.reconciler().metrics, owner="test", retry_base=timedelta(0)
        )
        for _ in range(MAX_FAILURES):
            reconciler.tick()
        row = world.rollout(rollout_id)
        assert row.state == "paused" and "not valid YAML" in (row.last_error or "")
        daemon.RUNTIMES[world.database.url] = daemon.runtime.Runtime(world.database, reconciler, None)
        try:
            with caplog.at_level("ERROR", logger="variantctl.daemon"):
                for _ in range(3):
                    daemon.ingest_job(world.database.url)
        finally:
            del daemon.RUNTIMES[world.database.url]
            daemon.jobs.ingest.REPORTED.clear()
        said = [r for r in caplog.records if f"ingest for rollout {rollout_id} failed" in r.getMessage()]
        assert len(said) == 1
        with world.database.write() as session:  # repaired, then resumed by an operator
            session.execute(
                update(Rollout)
                .where(Rollout.id == rollout_id)
                .values(policy_yaml=kept[0], policy_hash=kept[1], intent="resume", intent_actor="op")
            )
        reconciler.tick()
        assert world.rollout(rollout_id).state == "pending", "not deployed yet: deploying comes first"
        assert world.tick_until(rollout_id, ("running", "promoted")).state in ("running", "promoted")
