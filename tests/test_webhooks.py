"""Webhooks against a real HTTP receiver on 127.0.0.1, with real rollouts on the local SageMaker:
event deliveries signed, retried and deduplicated; gates holding, releasing and timing out."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from manager.cli.main import cli
from manager.history import audit
from manager.registry.tables import GateCheck, WebhookDelivery
from manager.rollout.reconcile import Reconciler
from manager.webhooks import deliveries, events, worker

from .rollout_support import CANARY, ENDPOINT, World, make_world, platform_matches_registry, policy_text
from .webhook_support import receiver

SECRET = b"s3cret-for-tests"
FAST = timedelta(milliseconds=50)


def hooked(hooks: str, steps: str = CANARY) -> str:
    return policy_text(steps) + "webhooks:\n" + hooks


def rounds_until(
    world: World, done: object, reconciler: Reconciler | None = None, timeout: float = 60
) -> None:
    """Reconcile and run the webhook job (as the daemon does, on their own schedules) until `done()`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reconciler is not None:
            reconciler.tick()
        worker.run(world.database, FAST)
        if done():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {done}")


def delivery_rows(world: World) -> list[WebhookDelivery]:
    with world.database.read() as session:
        rows = list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))
        session.expunge_all()
    return rows


def test_event_kinds_map_history_actions() -> None:
    assert events.kind_of("rollout.promoted", None) == "promoted"
    assert events.kind_of("rollout.phase", "phase 1: candidate at 20%") == "step_changed"
    assert events.kind_of("rollout.pause", "sample ratio mismatch: the candidate got ...") == (
        "sample_ratio_mismatch"
    )
    assert events.kind_of("rollout.pause", "paused by the operator: x") == "paused"
    assert events.kind_of("operator.pause", None) is None  # the decision that follows is the event
    assert events.kind_of("model.register", None) is None


def test_events_are_signed_retried_and_arrive_once_after_dedup(
    tmp_path: Path,
    artifacts: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A receiver that fails each delivery twice gets every event; deduplicated by idempotency key,
    each exactly once; every body's signature verifies; the Slack target gets Slack's JSON."""
    monkeypatch.setenv("HOOK_SECRET", SECRET.decode())
    with (
        receiver(lambda _r, n: 500 if n <= 2 else 200) as flaky,
        receiver() as slack,
        make_world(tmp_path, artifacts) as world,
    ):
        runner = CliRunner()
        added = runner.invoke(
            cli,
            [
                "--db",
                str(world.db_path),
                "webhooks",
                "add",
                "chat",
                "--url",
                f"{slack.url}/slack",
                "--format",
                "slack",
                "--event",
                "promoted",
                "--event",
                "rolled_back",
            ],
        )
        assert added.exit_code == 0, added.output
        text = hooked(f"  - {{name: ops, url: '{flaky.url}/events', secretEnv: HOOK_SECRET}}\n")
        rollout_id = world.start(text)
        world.tick_until(rollout_id, ("promoted",))
        rounds_until(
            world, lambda: all(d.state == "delivered" for d in delivery_rows(world)) and delivery_rows(world)
        )

        rows = delivery_rows(world)
        ops = [d for d in rows if d.hook == "ops"]
        kinds = [d.kind for d in ops]
        assert kinds[0] == "started" and "step_changed" in kinds and kinds[-1] == "promoted", kinds
        assert all(d.attempts == 3 for d in ops)  # two failures, then delivered
        # issue 31, item 8: each failed delivery is said once, at warning, naming its hook
        said = [r for r in caplog.records if "not delivered" in r.getMessage()]
        assert len(said) == len(ops) and all(r.levelname == "WARNING" for r in said)
        assert all(r.getMessage().startswith("webhook ops: event ") for r in said)
        got = [r for r in flaky.requests if r.path == "/events"]
        assert len(got) == 3 * len(ops)
        assert all(r.signed_by(SECRET) for r in got)
        assert not any(r.signed_by(b"another secret") for r in got)
        assert sorted(flaky.accepted) == sorted(d.key for d in ops)
        assert all(len(accepted) == 1 for accepted in flaky.accepted.values())  # once each after dedup
        bodies = [flaky.accepted[d.key][0].json for d in ops]
        assert [b["event"]["seq"] for b in bodies] == sorted(b["event"]["seq"] for b in bodies)
        promoted = bodies[-1]
        assert promoted["rollout"]["id"] == rollout_id and promoted["endpoint"] == ENDPOINT
        assert promoted["rollout"]["state"] == "promoted" and promoted["rollout"]["candidate"] == "churn:2"
        assert promoted["decision"]["action"] == "rollout.promoted"
        event = audit.event(world.database, promoted["event"]["seq"])
        assert event is not None and event.hash == promoted["event"]["hash"]

        [to_chat] = [d for d in rows if d.hook == "chat"]
        assert to_chat.kind == "promoted" and to_chat.attempts == 1
        [message] = [r.json for r in slack.requests]
        assert set(message) == {"text", "blocks"} and "promoted" in message["text"]
        assert f"rollout {rollout_id} on {ENDPOINT}" in message["text"]
        assert "X-Variantctl-Signature-256" not in slack.requests[0].headers  # no secret: unsigned

        # Run again: nothing is fanned out or sent twice.
        before = len(flaky.requests)
        worker.run(world.database, FAST)
        assert len(flaky.requests) == before and len(delivery_rows(world)) == len(rows)


def test_a_delivery_that_gives_up_is_listed_and_can_be_sent_again(
    tmp_path: Path, artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deliveries, "ATTEMPTS", 3)
    healthy = {"yes": False}
    with (
        receiver(lambda _r, _n: 200 if healthy["yes"] else 503) as down,
        make_world(tmp_path, artifacts) as world,
    ):
        runner = CliRunner()
        db = ["--db", str(world.db_path)]
        assert (
            runner.invoke(
                cli, [*db, "webhooks", "add", "pager", "--url", down.url, "--event", "started"]
            ).exit_code
            == 0
        )
        world.start(policy_text(CANARY))
        rounds_until(world, lambda: [d.state for d in delivery_rows(world)] == ["failed"])
        [row] = delivery_rows(world)
        assert row.attempts == 3 and row.last_status == 503 and "HTTP 503" in (row.last_error or "")
        listed = runner.invoke(cli, [*db, "webhooks", "list", "--failed", "--output", "json"])
        assert listed.exit_code == 0, listed.output
        [shown] = json.loads(listed.output)
        assert (shown["hook"], shown["kind"], shown["state"], shown["attempts"]) == (
            "pager",
            "started",
            "failed",
            3,
        )

        assert worker.run(world.database, FAST, keep=timedelta(0)).pruned == 0  # a failed one is kept
        healthy["yes"] = True
        requeued = runner.invoke(cli, [*db, "webhooks", "retry", "--all-failed"])
        assert requeued.exit_code == 0 and "1 deliveries queued again" in requeued.output
        rounds_until(world, lambda: [d.state for d in delivery_rows(world)] == ["delivered"])
        assert len(down.accepted) == 1
        assert (
            json.loads(runner.invoke(cli, [*db, "webhooks", "list", "--failed", "--output", "json"]).output)
            == []
        )
        # Delivered ones are forgotten after the daemon's keep time (the history keeps the events).
        assert worker.run(world.database, FAST, keep=timedelta(days=1)).pruned == 0
        assert worker.run(world.database, FAST, keep=timedelta(0)).pruned == 1
        assert delivery_rows(world) == []


def test_the_daemon_still_tries_a_failed_delivery_later(
    tmp_path: Path, artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past its quick retries a delivery is `failed` and still tried (hourly; here every 0.2 s), so a
    receiver down for a while gets its event without anyone requeuing it."""
    monkeypatch.setattr(deliveries, "ATTEMPTS", 2)
    monkeypatch.setattr(deliveries, "LATE_EVERY", timedelta(milliseconds=200))
    healthy = {"yes": False}
    with (
        receiver(lambda _r, _n: 200 if healthy["yes"] else 502) as down,
        make_world(tmp_path, artifacts) as world,
    ):
        db = ["--db", str(world.db_path)]
        assert (
            CliRunner()
            .invoke(cli, [*db, "webhooks", "add", "later", "--url", down.url, "--event", "started"])
            .exit_code
            == 0
        )
        world.start(policy_text(CANARY))
        rounds_until(world, lambda: [d.state for d in delivery_rows(world)] == ["failed"])
        rounds_until(world, lambda: delivery_rows(world)[0].attempts >= 4)  # still tried while failed
        healthy["yes"] = True
        rounds_until(world, lambda: [d.state for d in delivery_rows(world)] == ["delivered"])
        assert len(down.accepted) == 1


def test_gates_hold_while_they_answer_403_and_release_on_200(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    """confirm-rollout holds the deployment, pre-rollout the first traffic, confirm-promotion the
    promotion; each call and answer is in the history."""
    open_gates: set[str] = set()

    def answer(request: object, _n: int) -> int:
        return 200 if request.path.strip("/") in open_gates else 403  # type: ignore[attr-defined]

    with receiver(answer) as gate, make_world(tmp_path, artifacts) as world:
        hooks = "".join(
            f"  - {{name: {kind}, type: {kind}, url: '{gate.url}/{kind}', every: 100ms, deadline: 10m}}\n"
            for kind in ("confirm-rollout", "pre-rollout", "confirm-promotion")
        )
        rollout_id = world.start(hooked(hooks))
        reconciler = world.reconciler()

        def calls(name: str) -> int:
            with world.database.read() as session:
                row = session.get(GateCheck, (rollout_id, name))
                return 0 if row is None else row.calls

        rounds_until(world, lambda: calls("confirm-rollout") >= 3, reconciler)
        assert world.rollout(rollout_id).state == "pending"
        before = world.platform.describe(ENDPOINT)
        assert before is not None and before.config_name == platform_config_before(world)
        open_gates.add("confirm-rollout")
        rounds_until(world, lambda: calls("pre-rollout") >= 3, reconciler)
        held = world.rollout(rollout_id)
        assert (held.state, held.weight) == ("running", 0.0)  # deployed, no traffic yet
        open_gates.add("pre-rollout")
        rounds_until(world, lambda: calls("confirm-promotion") >= 3, reconciler)
        assert world.rollout(rollout_id).state == "running"
        open_gates.add("confirm-promotion")
        rounds_until(world, lambda: world.rollout(rollout_id).state == "promoted", reconciler)
        assert platform_matches_registry(world) == {"baseline": "churn:2"}

        answered = audit.history(world.database, audit.HistoryFilter(action="gate.answered", limit=None))
        statuses: dict[str, list[int | None]] = {json.loads(e.payload)["gate"]: [] for e in answered}
        for e in sorted(answered, key=lambda e: e.seq):
            statuses[json.loads(e.payload)["gate"]].append(json.loads(e.payload)["status"])
        for name in ("confirm-rollout", "pre-rollout", "confirm-promotion"):
            assert statuses[name][-1] == 200 and set(statuses[name][:-1]) == {403}, statuses[name]
        assert len([r for r in gate.requests if r.path == "/confirm-rollout"]) == len(
            statuses["confirm-rollout"]
        )
        body = gate.requests[0].json
        assert body["type"] == "confirm-rollout" and body["rollout"]["id"] == rollout_id
        assert audit.verify(world.database).ok


def platform_config_before(world: World) -> str:
    """The endpoint's config in the registry (the one it had before the rollout)."""
    from manager.registry.tables import Endpoint

    with world.database.read() as session:
        endpoint = session.scalar(select(Endpoint).where(Endpoint.name == ENDPOINT))
        assert endpoint is not None and endpoint.current_config is not None
        return endpoint.current_config.name


def test_a_gate_that_never_answers_hits_its_deadline_and_the_policy_action(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with receiver(lambda _r, _n: None, hang=3) as silent, make_world(tmp_path, artifacts) as world:
        hooks = (
            f"  - {{name: approve, type: confirm-rollout, url: '{silent.url}/approve', timeout: 200ms,"
            " every: 100ms, deadline: 1s, onDeadline: abort}\n"
        )
        rollout_id = world.start(hooked(hooks))
        reconciler = world.reconciler()
        rounds_until(world, lambda: world.rollout(rollout_id).state == "aborted", reconciler)
        row = world.rollout(rollout_id)
        assert "did not pass by its deadline" in (row.reason or "")
        assert platform_matches_registry(world) == {"baseline": "churn:1"}  # never deployed
        [deadline] = audit.history(world.database, audit.HistoryFilter(action="gate.deadline"))
        assert json.loads(deadline.payload)["action"] == "abort"
        answered = audit.history(world.database, audit.HistoryFilter(action="gate.answered", limit=None))
        assert answered and all(json.loads(e.payload)["status"] is None for e in answered)
        assert all("no answer" in json.loads(e.payload)["answer"] for e in answered)


def test_a_pre_rollout_gate_past_its_deadline_proceeds_when_the_policy_says_so(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with receiver(lambda _r, _n: 500) as failing, make_world(tmp_path, artifacts) as world:
        hooks = (
            f"  - {{name: load-test, type: pre-rollout, url: '{failing.url}/load', every: 100ms,"
            " deadline: 1s, onDeadline: proceed}\n"
        )
        rollout_id = world.start(hooked(hooks))
        rounds_until(world, lambda: world.rollout(rollout_id).state == "promoted", world.reconciler())
        [deadline] = audit.history(world.database, audit.HistoryFilter(action="gate.deadline"))
        assert "proceeding" in (deadline.reason or "")
        assert failing.requests  # it was asked, and answered 500 each time


def test_one_step_changed_per_weight_a_named_operator_and_a_link(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    """Issue 31, item 8: step_changed came 2-3 times per weight change; `paused` did not say who paused;
    no payload linked to the dashboard."""
    from manager.registry import rollouts

    with receiver() as hook, make_world(tmp_path, artifacts) as world:
        rollout_id = world.start(hooked(f"  - {{name: ops, url: '{hook.url}/events'}}\n"))
        world.tick_until(rollout_id, ("running",))
        with world.database.write() as session:
            rollouts.set_intent(session, rollout_id, "pause", "checking the pager", "alice")
        world.tick_until(rollout_id, ("paused",))
        with world.database.write() as session:
            rollouts.set_intent(session, rollout_id, "resume", None, "alice")
        world.tick_until(rollout_id, ("promoted",))
        base = "https://variantctl.example.com"

        def sent() -> list[dict[str, object]]:
            return [r.json for r in hook.requests]

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(b["kind"] == "promoted" for b in sent()):
            worker.run(world.database, FAST, link=base)
            time.sleep(0.05)
        bodies = sent()
        # deliveries go out in parallel and may arrive out of order: a receiver orders them by event.seq
        steps = sorted(
            (b for b in bodies if b["kind"] == "step_changed"),
            key=lambda b: b["event"]["seq"],  # type: ignore[index]
        )
        # deployed beside the baseline at 0%, then CANARY's 20% and 50%: one event per change, in order
        # (before: the advance of each step was sent as well)
        weights = [b["rollout"]["weight"] for b in steps]  # type: ignore[index]
        assert weights == [0.0, 20.0, 50.0], [b["event"] for b in steps]
        [paused] = [b for b in bodies if b["kind"] == "paused"]
        assert f"rollout {rollout_id} on {ENDPOINT} (churn:2 beside churn:1): paused by alice" in str(
            paused["text"]
        )
        assert {b["link"] for b in bodies} == {f"{base}/rollouts/{rollout_id}"}
        slack = events.slack(paused)
        assert f"<{base}/rollouts/{rollout_id}|open>" in json.dumps(slack)
