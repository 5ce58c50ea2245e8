"""Issue 31's notifications: message templates per hook, and Microsoft Teams (an Adaptive Card),
PagerDuty Events API v2 (the routing key added at send time, never stored) and email over SMTP beside
JSON and Slack, each delivered during a real rollout to a real receiver on 127.0.0.1 (an HTTP server,
and aiosmtpd's SMTP server). A hook that cannot mean anything is refused."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from manager import policy as policies
from manager.registry.tables import WebhookDelivery
from manager.webhooks import worker

from .rollout_support import CANARY, ENDPOINT, make_world, policy_text
from .webhook_support import receiver

ROUTING_KEY = "R0UTINGKEY0123456789abcdefghijkl"


@contextmanager
def smtp_server() -> Iterator[tuple[int, list[Any]]]:
    """aiosmtpd on a free port of 127.0.0.1; yields the port and the messages it accepted."""
    from aiosmtpd.controller import Controller

    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, received
    finally:
        controller.stop()


def test_templates_teams_pagerduty_and_email_are_delivered(
    tmp_path: Path, artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PD_KEY", ROUTING_KEY)
    with receiver() as http, smtp_server() as (port, mails), make_world(tmp_path, artifacts) as world:
        hooks = (
            f"  - {{name: ops, url: '{http.url}/json', events: [promoted],"
            " template: '$kind on $endpoint: $candidate replaced $baseline (seq $seq)'}\n"
            f"  - {{name: team, url: '{http.url}/teams', format: teams, events: [promoted]}}\n"
            f"  - {{name: pager, url: '{http.url}/pd', format: pagerduty, secretEnv: PD_KEY,"
            " events: [started, promoted]}\n"
            f"  - {{name: mail, url: 'smtp://127.0.0.1:{port}', format: email, to: [ops@example.com],"
            " from: variantctl@example.com, events: [promoted]}\n"
        )
        rollout_id = world.start(policy_text(CANARY) + "webhooks:\n" + hooks)
        world.tick_until(rollout_id, ("promoted",))

        def delivered() -> bool:
            with world.database.read() as session:
                states = list(session.scalars(select(WebhookDelivery.state)))
            return len(states) == 5 and set(states) == {"delivered"}

        deadline = time.monotonic() + 60
        while not delivered():
            assert time.monotonic() < deadline, "not every notification was delivered"
            worker.run(world.database, timedelta(milliseconds=50))
            time.sleep(0.05)

        by_path = {r.path: [q for q in http.requests if q.path == r.path] for r in http.requests}
        [ops] = by_path["/json"]
        assert ops.json["text"].startswith(f"promoted on {ENDPOINT}: churn:2 replaced churn:1 (seq ")

        [team] = by_path["/teams"]
        card = team.json["attachments"][0]
        assert team.json["type"] == "message"
        assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
        assert card["content"]["type"] == "AdaptiveCard" and "promoted" in card["content"]["body"][0]["text"]

        pages = [r.json for r in by_path["/pd"]]
        assert [p["event_action"] for p in pages] == ["trigger", "resolve"]  # one alert, resolved
        assert {p["dedup_key"] for p in pages} == {f"variantctl-rollout-{rollout_id}"}
        assert all(p["routing_key"] == ROUTING_KEY for p in pages)
        assert pages[0]["payload"]["source"] == ENDPOINT and pages[0]["payload"]["severity"] == "info"
        with world.database.read() as session:  # the key is never stored
            bodies = list(session.scalars(select(WebhookDelivery.body)))
        assert not any(ROUTING_KEY in b for b in bodies)

        [mail] = mails
        message = message_from_bytes(mail.content)
        assert mail.rcpt_tos == ["ops@example.com"] and message["From"] == "variantctl@example.com"
        assert message["Subject"].startswith(f"[variantctl] rollout {rollout_id} on {ENDPOINT}")
        assert "promoted" in message["Subject"] and "seq:" in message.get_payload()


@pytest.mark.parametrize(
    "hook,message",
    [
        ("{name: h, url: 'http://x.example', template: 'hi $nobody'}", "$nobody is not a field"),
        ("{name: h, url: 'http://x.example', template: 'costs $'}", "not a template"),
        ("{name: h, url: 'smtp://mail.example:25', format: email, to: [a@b.example]}", "needs `to`"),
        (
            "{name: h, url: 'http://x.example', format: email, to: [a@b.example], from: c@d.example}",
            "smtp://",
        ),
        ("{name: h, url: 'smtp://mail.example:25', to: [a@b.example]}", "are for `format: email`"),
        ("{name: h, url: 'http://x.example', format: pagerduty}", "needs its routing key"),
        ("{name: h, url: 'smtp://m.example', format: email, to: [nobody], from: c@d.example}", "to.0"),
        ("{name: h, type: pre-rollout, url: 'http://x.example', template: '$kind'}", "are for events"),
    ],
)
def test_a_hook_that_cannot_mean_anything_is_refused(hook: str, message: str) -> None:
    with pytest.raises(Exception, match=message.replace("$", r"\$").replace("(", r"\(")):
        policies.parse(policy_text(CANARY) + f"webhooks:\n  - {hook}\n")


def test_a_rollback_hook_rolls_back_and_a_post_rollout_hook_is_told_once(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    """Flagger's `rollback` hook (asked while the rollout runs; a 2xx rolls it back) and `post-rollout`
    hook (told once the rollout has ended)."""
    from manager.history import audit

    def answer(request: Any, calls: int) -> int:
        return (
            200
            if request.path == "/rollback" and calls >= 3
            else (404 if request.path == "/rollback" else 200)
        )

    with receiver(answer) as http, make_world(tmp_path, artifacts) as world:
        hooks = (
            f"  - {{name: load-test-alarm, type: rollback, url: '{http.url}/rollback', every: 100ms}}\n"
            f"  - {{name: cleanup, type: post-rollout, url: '{http.url}/post'}}\n"
        )
        rollout_id = world.start(policy_text(CANARY, min_samples=1_000_000) + "webhooks:\n" + hooks)
        reconciler, deadline = world.reconciler(), time.monotonic() + 90
        while world.rollout(rollout_id).state not in ("rolled_back", "promoted"):
            assert time.monotonic() < deadline, world.rollout(rollout_id).state
            reconciler.tick()
            worker.run(world.database, timedelta(milliseconds=50))
            time.sleep(0.05)
        row = world.rollout(rollout_id)
        assert row.state == "rolled_back"
        assert row.reason == "the rollback hook 'load-test-alarm' answered HTTP 200: rolling back"
        answered = sorted(
            audit.history(world.database, audit.HistoryFilter(action="gate.answered")), key=lambda e: e.seq
        )
        assert [a.reason for a in answered] == [  # the first "no", then the "yes": repeats are counted
            "the rollback hook 'load-test-alarm' answered HTTP 404: go on (asked again in 100ms)",
            "the rollback hook 'load-test-alarm' answered HTTP 200: roll back",
        ]
        deadline = time.monotonic() + 30
        while not [r for r in http.requests if r.path == "/post"]:
            assert time.monotonic() < deadline, "the post-rollout hook was never told"
            worker.run(world.database, timedelta(milliseconds=50))
            time.sleep(0.05)
        worker.run(world.database, timedelta(milliseconds=50))
        [told] = [r.json for r in http.requests if r.path == "/post"]
        assert told["kind"] == "rolled_back" and told["rollout"]["id"] == rollout_id
