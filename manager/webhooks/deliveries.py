"""Event webhooks: the history fanned out into deliveries, each sent until its receiver answers 2xx.

`fan_out` reads the history past the cursor and adds one delivery per event and subscribed hook (the
rollout's policy's own and the registry-wide ones), moving the cursor in the same transaction: an
event is fanned out once, or again after a crash (the delivery's key makes the second a no-op).
`deliver_due` sends what is due, several at a time, and records each answer; a failure waits
`retry`, twice that, ... up to 10 minutes, and after `ATTEMPTS` attempts the delivery is `failed`:
kept and listed (`variantctl webhooks list --failed`), still tried once an hour for `LATE_FOR` after
it was made (a receiver down for a weekend gets its events), and requeued at once by
`variantctl webhooks retry`.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from manager import policy as policies
from manager.clock import parse_duration, utcnow
from manager.db import Database, insert_for
from manager.errors import NotFound, UserError
from manager.history.redaction import shown
from manager.registry.tables import AuditEvent, Rollout, WebhookCursor, WebhookDelivery, WebhookTarget
from manager.webhooks import events, send

log = logging.getLogger(__name__)

ATTEMPTS = 12
BACKOFF_CAP = timedelta(minutes=10)
LATE_EVERY = timedelta(hours=1)  # how often a failed delivery is still tried
LATE_FOR = timedelta(days=3)  # for how long after the event
BATCH = 500  # events fanned out, or deliveries sent, per transaction
SENDERS = 8  # deliveries in flight at once
CURSOR = "events"


@dataclass(frozen=True)
class Hook:
    """A webhook as a delivery needs it, with where it was configured."""

    spec: policies.Webhook
    source: str  # "policy" or "registry"


def targets(session: Session) -> list[Hook]:
    """The registry-wide event webhooks."""
    return [
        Hook(policies.Webhook.model_validate(row.spec), "registry")
        for row in session.scalars(select(WebhookTarget).order_by(WebhookTarget.name))
    ]


def add_target(session: Session, spec: policies.Webhook, actor: str, now: datetime) -> None:
    from manager.history import audit

    if spec.gate:
        raise UserError("a registry-wide webhook is an event webhook; gates belong to a policy's `webhooks:`")
    if session.get(WebhookTarget, spec.name) is not None:
        raise UserError(f"a webhook named {spec.name!r} exists; remove it first to change it")
    stored = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    session.add(WebhookTarget(name=spec.name, spec=stored, created_at=now, created_by=actor))
    # The history keeps the hook, its URL redacted: it is read by anyone who reads the history.
    recorded = {**stored, "url": spec.shown} if spec.url is not None else stored
    audit.append(
        session,
        actor,
        audit.Event("webhook.added", "webhook", spec.name, None, {"webhook": recorded}),
        at=now,
    )


def remove_target(session: Session, name: str, actor: str, now: datetime) -> None:
    from manager.history import audit

    row = session.get(WebhookTarget, name)
    if row is None:
        raise NotFound(f"no registry-wide webhook named {name!r}")
    session.delete(row)
    audit.append(session, actor, audit.Event("webhook.removed", "webhook", name, None, {}), at=now)


def fan_out(database: Database, limit: int = BATCH, link: str | None = None) -> int:
    """One batch of history events past the cursor into deliveries; how many events were read. `link`:
    the dashboard's address, for each event's link to its rollout's page."""
    with database.write() as session:
        cursor = session.get(WebhookCursor, CURSOR, with_for_update=True)
        if cursor is None:
            cursor = WebhookCursor(name=CURSOR, seq=0)
            session.add(cursor)
        rows = list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.seq > cursor.seq).order_by(AuditEvent.seq).limit(limit)
            )
        )
        if not rows:
            return 0
        registry_hooks = targets(session)
        rollouts = _rollouts(session, rows)
        now = utcnow()
        values = []
        for row in rows:
            kind = events.kind_of(row.action, row.reason)
            if kind is None:
                continue
            rollout = rollouts.get(row.subject_id) if row.subject_type == "rollout" else None
            own = [] if rollout is None else [Hook(w, "policy") for w in rollout[1].webhooks if not w.gate]
            for hook in own + registry_hooks:
                if hook.spec.events and kind not in hook.spec.events:
                    continue
                if hook.spec.type == "post-rollout" and kind not in policies.FINAL_KINDS:
                    continue
                key = f"{hook.source}:{hook.spec.name}:{row.seq}"
                message = events.body(row, kind, key, None if rollout is None else rollout[0], link)
                message = events.render(message, hook.spec)
                values.append(_delivery(hook, key, row, kind, message, now))
        for start in range(0, len(values), BATCH):
            table = WebhookDelivery.__table__
            session.execute(
                insert_for(session)(table).values(values[start : start + BATCH]).on_conflict_do_nothing()
            )
        cursor.seq = rows[-1].seq
        return len(rows)


def _delivery(
    hook: Hook, key: str, row: AuditEvent, kind: str, message: dict[str, Any], now: datetime
) -> dict[str, Any]:
    spec = hook.spec
    return {
        "key": key,
        "hook": spec.name,
        "source": hook.source,
        "url": spec.target,
        "format": spec.format,
        "secret_env": spec.secret_env,
        "secret_file": spec.secret_file,
        "timeout": parse_duration(spec.timeout).total_seconds(),
        "event_seq": row.seq,
        "rollout_id": int(row.subject_id) if row.subject_type == "rollout" else None,
        "kind": kind,
        "body": json.dumps(message, sort_keys=True, ensure_ascii=False, default=str),
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def _rollouts(
    session: Session, rows: list[AuditEvent]
) -> dict[str, tuple[dict[str, Any], policies.RolloutPolicy]]:
    """Each rollout the events are about: who it is (for the body) and its policy (for its hooks)."""
    ids = {int(r.subject_id) for r in rows if r.subject_type == "rollout" and r.subject_id.isdigit()}
    out: dict[str, tuple[dict[str, Any], policies.RolloutPolicy]] = {}
    parsed: dict[str, policies.RolloutPolicy] = {}
    for rollout in session.scalars(select(Rollout).where(Rollout.id.in_(ids))) if ids else ():
        try:
            policy = parsed.get(rollout.policy_hash) or policies.parse(rollout.policy_yaml)
        except UserError:
            continue  # a policy that no longer parses has no hooks; the registry-wide ones still hear
        parsed[rollout.policy_hash] = policy
        out[str(rollout.id)] = (events.who(rollout, policy.name), policy)
    return out


@dataclass(frozen=True)
class Sent:
    delivered: int = 0
    failed: int = 0


def deliver_due(database: Database, retry: timedelta, limit: int = BATCH) -> Sent:
    """Send every delivery that is due (up to `limit`), `SENDERS` at a time; record each answer."""
    from manager import telemetry

    now = utcnow()
    with database.read() as session:
        due = list(
            session.scalars(
                select(WebhookDelivery)
                .where(
                    WebhookDelivery.next_attempt_at <= now,
                    (WebhookDelivery.state == "pending")
                    | ((WebhookDelivery.state == "failed") & (WebhookDelivery.created_at > now - LATE_FOR)),
                )
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
                .limit(limit)
            )
        )
        session.expunge_all()
    if not due:
        return Sent()
    with ThreadPoolExecutor(max_workers=min(SENDERS, len(due)), thread_name_prefix="webhook") as pool:
        answers = list(pool.map(_send, due))
    delivered = failed = 0
    with database.write() as session:
        now = utcnow()
        for row, answer in zip(due, answers, strict=True):
            attempts = row.attempts + 1
            values: dict[str, Any] = {"attempts": attempts, "last_status": answer.status or None}
            if answer.ok:
                values.update(state="delivered", delivered_at=now, last_error=None)
                delivered += 1
            else:
                values["last_error"] = (
                    f"HTTP {answer.status}: {answer.text}" if answer.status else answer.text
                )
                values["next_attempt_at"] = now + min(retry * 2 ** (attempts - 1), BACKOFF_CAP)
                if attempts == 1:  # said once per delivery, with the hook; the retries are counted
                    log.warning(
                        "webhook %s: event %s (%s) not delivered: %s; retried with backoff",
                        row.hook,
                        row.event_seq,
                        row.kind,
                        values["last_error"],
                        extra={"fields": {"webhook": row.hook, "seq": row.event_seq}},
                    )
                if attempts >= ATTEMPTS:
                    values["state"], values["next_attempt_at"] = "failed", now + LATE_EVERY
                    if attempts == ATTEMPTS:
                        log.warning(
                            "webhook %s: event %s failed %d attempts (%s); tried hourly from now",
                            row.hook,
                            row.event_seq,
                            attempts,
                            values["last_error"],
                        )
                failed += 1
            session.execute(update(WebhookDelivery).where(WebhookDelivery.id == row.id).values(**values))
    telemetry.WEBHOOK_ATTEMPTS.labels("delivered").inc(delivered)
    telemetry.WEBHOOK_ATTEMPTS.labels("failed").inc(failed)
    return Sent(delivered, failed)


def _send(row: WebhookDelivery) -> send.Answer:
    if row.format == "email":
        return send.mail(row.url, json.loads(row.body), row.timeout, row.secret_env, row.secret_file)
    if row.format == "pagerduty":  # the routing key is the hook's secret, added now and never stored
        return send.pagerduty(row.url, json.loads(row.body), row.timeout, row.secret_env, row.secret_file)
    headers = {
        "Idempotency-Key": row.key,
        "X-Variantctl-Delivery": row.key,
        "X-Variantctl-Event": row.kind,
        "X-Variantctl-Seq": str(row.event_seq),
    }
    return send.post(row.url, row.body.encode(), headers, row.timeout, row.secret_env, row.secret_file)


def listing(
    session: Session, failed: bool = False, rollout: int | None = None, limit: int | None = 100
) -> list[dict[str, Any]]:
    """Deliveries, newest first: with `failed`, those whose last attempt failed and that are not
    delivered (still retrying, or given up)."""
    query = select(WebhookDelivery).order_by(WebhookDelivery.id.desc())
    if failed:
        query = query.where(WebhookDelivery.state != "delivered", WebhookDelivery.attempts > 0)
    if rollout is not None:
        query = query.where(WebhookDelivery.rollout_id == rollout)
    if limit is not None:
        query = query.limit(limit)
    return [
        {
            "id": d.id,
            "hook": d.hook,
            "source": d.source,
            "kind": d.kind,
            "event_seq": d.event_seq,
            "rollout": d.rollout_id,
            "state": d.state,
            "attempts": d.attempts,
            "last_status": d.last_status,
            "last_error": d.last_error,
            "next_attempt_at": None if d.state == "delivered" else d.next_attempt_at,
            "delivered_at": d.delivered_at,
            "key": d.key,
            # Redacted when given inline, `from env:NAME` / `from file:PATH` when the daemon reads it.
            "url": shown(d.url),
        }
        for d in session.scalars(query)
    ]


def prune(database: Database, keep: timedelta, limit: int = 5000) -> int:
    """Forget deliveries delivered more than `keep` ago (at most `limit` a round); a failed or pending
    one stays until it is sent. The history keeps every event they carried."""
    cutoff = utcnow() - keep
    with database.write() as session:
        old = select(WebhookDelivery.id).where(
            WebhookDelivery.state == "delivered", WebhookDelivery.delivered_at < cutoff
        )
        ids = list(session.scalars(old.limit(limit)))
        if ids:
            session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids)))
    return len(ids)


def counts(session: Session) -> dict[str, int]:
    """Deliveries by state (for /metrics)."""
    rows = session.execute(select(WebhookDelivery.state, func.count()).group_by(WebhookDelivery.state))
    return {state: int(n) for state, n in rows}


def requeue(session: Session, ids: list[int] | None, now: datetime) -> int:
    """Failed deliveries sent again from now (all of them when `ids` is None); how many."""
    query = update(WebhookDelivery).where(WebhookDelivery.state == "failed")
    if ids is not None:
        query = query.where(WebhookDelivery.id.in_(ids))
    result = session.execute(query.values(state="pending", attempts=0, next_attempt_at=now))
    return int(getattr(result, "rowcount", 0) or 0)
