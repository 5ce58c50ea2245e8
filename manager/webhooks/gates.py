"""Gate calls: each open gate check (`rollout.gates.hold` opened it when its rollout reached the gate)
is asked every `every` until it answers 2xx, its deadline passes or its rollout ends. Every call and
its answer go into the history (`gate.answered`), with the rollout as it stood."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager import policy as policies
from manager.clock import format_instant, parse_duration, utcnow
from manager.db import Database
from manager.errors import UserError
from manager.registry.rollouts import record_event, snapshot
from manager.registry.tables import GateCheck, Rollout
from manager.registry.vocabulary import ACTIVE_ROLLOUT_STATES
from manager.webhooks import events, send

log = logging.getLogger(__name__)


def call_due(database: Database, limit: int = 100) -> int:
    """Ask every gate that is due; how many were asked."""
    from manager import telemetry

    now = utcnow()
    with database.read() as session:
        calls = [c for c in _due(session, now, limit) if c is not None]
    if not calls:
        return 0
    with ThreadPoolExecutor(max_workers=min(8, len(calls)), thread_name_prefix="gate") as pool:
        answers = list(pool.map(lambda c: _ask(c[1], c[2]), calls))
    with database.write() as session:
        for (key, hook, _body), answer in zip(calls, answers, strict=True):
            row = session.get(GateCheck, key)
            if row is None or row.passed_at is not None or row.expired_at is not None:
                continue  # the deadline passed meanwhile: the reconciler has applied it
            rollout = session.get(Rollout, key[0])
            assert rollout is not None
            _record(session, rollout, row, hook, answer, utcnow())
    for answer in answers:
        telemetry.GATE_CALLS.labels("passed" if answer.ok else "held").inc()
    return len(calls)


def _due(
    session: Session, now: datetime, limit: int
) -> list[tuple[tuple[int, str], policies.Webhook, bytes] | None]:
    rows = session.execute(
        select(GateCheck, Rollout)
        .join(Rollout, Rollout.id == GateCheck.rollout_id)
        .where(
            GateCheck.passed_at.is_(None),
            GateCheck.expired_at.is_(None),
            GateCheck.next_call_at <= now,
            Rollout.state.in_(ACTIVE_ROLLOUT_STATES),
        )
        .order_by(GateCheck.next_call_at)
        .limit(limit)
    ).all()
    return [_call(check, rollout) for check, rollout in rows]


def _call(check: GateCheck, rollout: Rollout) -> tuple[tuple[int, str], policies.Webhook, bytes] | None:
    try:
        policy = policies.parse(rollout.policy_yaml)
    except UserError:
        return None
    hook = next((w for w in policy.webhooks if w.name == check.gate), None)
    if hook is None:
        return None
    body = {
        "gate": hook.name,
        "type": hook.type,
        "call": check.calls + 1,
        "opened_at": format_instant(check.opened_at),
        "deadline_at": format_instant(check.deadline_at),
        "rollout": {
            **events.who(rollout, policy.name),
            "candidate_variant": rollout.candidate_variant,
            **snapshot(rollout),
        },
        "metadata": hook.metadata,
    }
    return (check.rollout_id, check.gate), hook, json.dumps(body, sort_keys=True, default=str).encode()


def _ask(hook: policies.Webhook, body: bytes) -> send.Answer:
    headers = {"X-Variantctl-Event": "gate", "X-Variantctl-Gate": hook.type}
    timeout = parse_duration(hook.timeout).total_seconds()
    return send.post(hook.target, body, headers, timeout, hook.secret_env, hook.secret_file)


def _record(
    session: Session,
    rollout: Rollout,
    row: GateCheck,
    hook: policies.Webhook,
    answer: send.Answer,
    now: datetime,
) -> None:
    changed = row.calls == 0 or answer.status != row.last_status
    row.calls += 1
    row.last_called_at, row.last_status, row.last_answer = now, answer.status, answer.text
    row.next_call_at = now + parse_duration(hook.every)
    if answer.ok:
        row.passed_at = now
    if hook.type == "rollback" and not answer.ok and not changed:
        return  # asked for as long as the rollout runs: a repeated "no" is counted, not recorded
    said = f"HTTP {answer.status}" if answer.status else answer.text
    if hook.type == "rollback":
        reason = f"the rollback hook {hook.name!r} answered {said}: " + (
            "roll back" if answer.ok else f"go on (asked again in {hook.every})"
        )
    else:
        reason = f"the {hook.type} gate {hook.name!r} answered {said}: " + (
            "passed" if answer.ok else f"holding (asked again in {hook.every})"
        )
    payload: dict[str, Any] = {
        "gate": hook.name,
        "type": hook.type,
        "url": hook.shown,
        "call": row.calls,
        "status": answer.status or None,
        "answer": answer.text,
        "passed": answer.ok,
    }
    record_event(session, rollout, "daemon", "gate.answered", reason, payload, now)
