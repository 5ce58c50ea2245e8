"""The auditor's questions, one command each: `endpoints show|list --at`, `history --rollout`,
`history show SEQ`, `history --endpoint` with the served models' training and gate events, and
`rollout show --policy` checked against its hash. On a real demo registry (slow) and on a registry
with a forced promotion and an abort (fast)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from manager.clock import format_instant
from manager.db import Database
from manager.demo import scenarios as demo
from manager.history import audit
from manager.registry import models, rollouts

from .conftest import Cli
from .rollout_support import CANARY, ENDPOINT, checkpointed, forced_promotion, make_world, policy_text


def _events(db: Path, **flt: Any) -> list[Any]:
    database = Database(f"sqlite:///{db}")
    try:
        return audit.history(database, audit.HistoryFilter(limit=None, **flt))
    finally:
        database.dispose()


def _show_at(cli: Cli, name: str, at: Any) -> dict[str, Any]:
    result = cli("endpoints", "show", name, "--at", format_instant(at), "-o", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.slow
def test_at_before_during_and_after_the_demo_rollout(demo_promoted: Path) -> None:
    cli = Cli(demo_promoted)
    events = sorted(_events(demo_promoted, endpoint=demo.ENDPOINT), key=lambda e: e.seq)
    by_action = {e.action: e for e in events}  # the last of each
    start = next(e for e in events if e.action == "rollout.start")
    phases = [e for e in events if e.action == "rollout.phase"]
    promoted = by_action["rollout.promoted"]

    before = _show_at(cli, demo.ENDPOINT, start.at - timedelta(microseconds=1))
    assert before["rollout"] is None and before["exact"]
    assert [(v["model"], v["share"]) for v in before["variants"]] == [("churn:1", 100.0)]
    assert before["variants"][0]["lineage"]["training_run"] == 1

    for phase in phases:  # during: the candidate's share is the phase's, with the event that set it
        during = _show_at(cli, demo.ENDPOINT, phase.at)
        weight = json.loads(phase.payload)["weight"]
        shares = {v["model"]: v["share"] for v in during["variants"]}
        assert shares == {"churn:1": 100.0 - weight, "churn:2": weight}
        assert during["rollout"]["state"] == "running" and during["rollout"]["started_by"] == "demo"
        assert {v["weight_by"]["seq"] for v in during["variants"]} == {phase.seq}

    after = _show_at(cli, demo.ENDPOINT, promoted.at)
    assert after["rollout"] is None
    assert [(v["model"], v["share"]) for v in after["variants"]] == [("churn:2", 100.0)]
    assert after["config_by"]["action"] == "endpoint.serves"
    now = cli("endpoints", "show", demo.ENDPOINT, "-o", "json")
    assert json.loads(now.output)["config"] == after["config"]

    listed = cli("endpoints", "list", "--at", format_instant(phases[0].at))
    assert listed.exit_code == 0 and "churn:2 " in listed.output and "running" in listed.output
    first = events[0].at - timedelta(seconds=1)
    nothing = cli("endpoints", "list", "--at", format_instant(first))
    assert nothing.exit_code == 0 and "no endpoints then" in nothing.output
    missing = cli("endpoints", "show", demo.ENDPOINT, "--at", format_instant(first))
    assert missing.exit_code == 2 and missing.output.startswith("error: the history knows no endpoint")


@pytest.fixture(scope="module")
def two_rollouts(tmp_path_factory: pytest.TempPathFactory, artifacts: dict[str, Path]) -> Iterator[Path]:
    """Rollout 1 forced through by carol (promoted); rollout 2 aborted by dave; churn:4 never served."""
    tmp = tmp_path_factory.mktemp("two")
    with make_world(tmp, artifacts) as world:
        forced_promotion(world, policy_text(CANARY, min_samples=10_000), "carol", "ship it")
        with world.database.write() as session:
            for status in ("approved", "approved"):  # churn:3 rolled out next; churn:4 never
                spec = models.NewVersion("churn", str(artifacts["prior"]), "sklearn", status=status)
                models.register(session, spec, "trainer")
        second = world.start(policy_text(CANARY, min_samples=10_000).replace("version: 2", "version: 3"))
        world.tick_until(second, ("running",))
        with world.database.write() as session:
            rollouts.set_intent(session, second, "abort", "pager", "dave")
        world.tick_until(second, ("aborted",))
        db_path = world.db_path
    yield checkpointed(db_path)


def test_history_of_one_rollout_holds_its_events_and_what_it_caused(two_rollouts: Path) -> None:
    cli = Cli(two_rollouts)
    result = cli("history", "--rollout", "1", "-o", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {(r["subject_type"], r["subject_id"]) for r in rows if r["subject_type"] == "rollout"} == {
        ("rollout", "1")
    }
    actions = {r["action"] for r in rows}
    assert {"rollout.start", "operator.promote", "rollout.promote", "rollout.promoted"} <= actions
    assert {"endpoint.config", "endpoint.serves", "model.status"} <= actions
    started = min(r["at"] for r in rows if r["action"] == "rollout.start")
    assert all(r["at"] >= started for r in rows)
    assert cli("history", "--rollout", "99", "-o", "json").output.strip() == "[]"


def test_a_decision_names_the_humans_behind_it(two_rollouts: Path) -> None:
    promote = next(e for e in _events(two_rollouts, rollout=1) if e.action == "rollout.promote")
    payload = json.loads(promote.payload)
    assert payload["requested_by"] == {"intent": "promote", "actor": "carol", "reason": "ship it"}
    assert payload["rollout"]["started_by"] == "tester" and promote.actor != "carol"
    rollback = next(e for e in _events(two_rollouts, rollout=2) if e.action == "rollout.rollback")
    assert json.loads(rollback.payload)["requested_by"]["actor"] == "dave"


def test_history_show_prints_one_event_whole(two_rollouts: Path) -> None:
    cli = Cli(two_rollouts)
    event = next(e for e in _events(two_rollouts, rollout=1) if e.action == "rollout.promote")
    shown = cli("history", "show", str(event.seq), "-o", "json")
    assert shown.exit_code == 0, shown.output
    record = json.loads(shown.output)
    assert (record["seq"], record["hash"], record["prev_hash"]) == (event.seq, event.hash, event.prev_hash)
    assert record["payload"] == json.loads(event.payload)
    table = cli("history", "show", str(event.seq))
    assert f"hash       {event.hash}" in table.output and '"requested_by": {' in table.output
    missing = cli("history", "show", "999999")
    assert missing.exit_code == 2 and missing.output == "error: no event 999999 in the history\n"


def test_history_of_an_endpoint_includes_how_its_models_were_made(two_rollouts: Path) -> None:
    cli = Cli(two_rollouts)
    rows = json.loads(cli("history", "--endpoint", ENDPOINT, "-o", "json").output)
    registered = {r["subject_id"] for r in rows if r["action"] == "model.register"}
    assert registered == {"churn:1", "churn:2", "churn:3"}  # churn:4 never served there
    assert all(r["endpoint"] in (ENDPOINT, None) for r in rows)
    counted = cli("history", "--endpoint", ENDPOINT, "--limit", "3")
    assert f"showing the newest 3 of {len(rows)} matching events" in counted.output


def test_rollout_show_policy_is_checked_against_its_hash(two_rollouts: Path, tmp_path: Path) -> None:
    shown = Cli(two_rollouts)("rollout", "show", "1", "--policy")
    assert shown.exit_code == 0, shown.output
    assert "the text matches its hash and the history" in shown.output
    assert "name: test-policy" in shown.output
    copy = tmp_path / "copy.db"
    shutil.copy(two_rollouts, copy)
    conn = sqlite3.connect(copy)
    conn.execute(
        "UPDATE rollouts SET policy_yaml = replace(policy_yaml, 'maxDuration: 5m', 'maxDuration: 9h')"
    )
    conn.commit()
    conn.close()
    tampered = Cli(copy)("rollout", "show", "1", "--policy")
    assert tampered.exit_code == 1
    assert (
        "error: rollout 1's policy: the stored text does not hash to the stored policy_hash"
        in tampered.output
    )
