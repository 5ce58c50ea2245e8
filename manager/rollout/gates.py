"""Gates: what the reconciler asks of a policy's `confirm-rollout`, `pre-rollout` and
`confirm-promotion` webhooks before it goes on. It never calls them itself (the daemon's webhook job
does, `webhooks.gates`, so that a slow gate holds its own rollout and never the tick); it opens a
gate check when a rollout first reaches the gate, reads the answers recorded there, and applies the
policy's deadline.

Where each holds, as in Flagger: `confirm-rollout` before the candidate is deployed; `pre-rollout`
before the candidate gets live traffic (the first weight above 0, or a promotion), with the
candidate already deployed at weight 0 so that a load test can reach it; `confirm-promotion` before
an analysis promotes. A way back to the baseline is never held, nor an operator's forced promotion.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager import policy as policies
from manager.clock import format_instant, parse_duration
from manager.registry.rollouts import record_event
from manager.registry.tables import GateCheck, Rollout
from manager.rollout.verdicts import Decision


@dataclass(frozen=True)
class Hold:
    """What the gates of one kind say now: go on, wait, or stop (`abort` on a deadline)."""

    verdict: Literal["pass", "wait", "abort"]
    reason: str = ""


PASS = Hold("pass")


def kinds_for(decision: Decision, weight_now: float) -> tuple[policies.GateType, ...]:
    """The gates a decision must get past before it is applied."""
    if decision.action == "promote":
        if decision.forced:
            return ()  # the operator who forced it is the gate, and is recorded
        return ("pre-rollout", "confirm-promotion") if weight_now == 0 else ("confirm-promotion",)
    if decision.action == "set_weight" and (decision.weight or 0) > 0 and weight_now == 0:
        return ("pre-rollout",)
    return ()


def hold(
    session: Session,
    rollout: Rollout,
    policy: policies.RolloutPolicy,
    kinds: tuple[policies.GateType, ...],
    actor: str,
    now: datetime,
) -> Hold:
    """Open the gates of `kinds` the rollout reaches for the first time (the daemon's webhook job asks
    them from then on) and say whether they let it pass. A gate past its deadline applies its
    `onDeadline`: proceed (recorded) or abort."""
    hooks = [w for w in policy.webhooks if w.type in kinds]
    if not hooks:
        return PASS
    rows = _checks(session, rollout, hooks)
    waiting: list[tuple[policies.Webhook, GateCheck]] = []
    for hook in hooks:
        row = rows.get(hook.name)
        if row is None:
            row = GateCheck(
                rollout_id=rollout.id,
                gate=hook.name,
                kind=hook.type,
                opened_at=now,
                deadline_at=now + parse_duration(hook.deadline),
                next_call_at=now,
                calls=0,
            )
            session.add(row)
            reason = (
                f"waiting for the {hook.type} gate {hook.name!r} to answer 2xx (deadline {hook.deadline})"
            )
            opened = {"gate": hook.name, "type": hook.type, "url": hook.url, "deadline": hook.deadline}
            record_event(session, rollout, actor, "gate.opened", reason, opened, now)
        if row.passed_at is not None:
            continue
        if row.expired_at is None and now >= row.deadline_at:
            row.expired_at = now
            why = (
                f"the {hook.type} gate {hook.name!r} did not answer 2xx by its deadline"
                f" ({hook.deadline}, {row.calls} calls, last answer {_answer(row)})"
            )
            payload = {
                "gate": hook.name,
                "type": hook.type,
                "calls": row.calls,
                "last_status": row.last_status,
                "action": hook.on_deadline,
            }
            if hook.on_deadline == "proceed":
                row.passed_at = now
                record_event(session, rollout, actor, "gate.deadline", f"{why}: proceeding", payload, now)
                continue
            record_event(session, rollout, actor, "gate.deadline", f"{why}: aborting", payload, now)
        if row.expired_at is not None:
            return Hold("abort", f"the {hook.type} gate {hook.name!r} did not pass by its deadline")
        waiting.append((hook, row))
    if not waiting:
        return PASS
    hook, row = waiting[0]
    return Hold(
        "wait",
        f"waiting for the {hook.type} gate {hook.name!r}: {row.calls} calls, last answer {_answer(row)};"
        f" deadline {format_instant(row.deadline_at)}",
    )


def _checks(session: Session, rollout: Rollout, hooks: list[policies.Webhook]) -> dict[str, GateCheck]:
    """The rollout's gate checks of these hooks, by hook name."""
    names = [w.name for w in hooks]
    query = select(GateCheck).where(GateCheck.rollout_id == rollout.id, GateCheck.gate.in_(names))
    return {r.gate: r for r in session.scalars(query)}


def _answer(row: GateCheck) -> str:
    return (
        "none yet"
        if row.last_status is None
        else f"HTTP {row.last_status}"
        if row.last_status
        else "no answer"
    )


ASKED_FOR = timedelta(days=366)  # a rollback hook has no deadline: it is asked while the rollout runs


def rollback_asked(
    session: Session, rollout: Rollout, policy: policies.RolloutPolicy, actor: str, now: datetime
) -> Decision | None:
    """Flagger's rollback hooks: each is asked (by the webhook job) every `every` from when the rollout
    runs; the first 2xx answer rolls it back. Opens the checks the first time; the rollback, if asked."""
    hooks = [w for w in policy.webhooks if w.type == "rollback"]
    if not hooks or rollout.state not in ("running", "paused"):
        return None
    rows = _checks(session, rollout, hooks)
    for hook in hooks:
        row = rows.get(hook.name)
        if row is None:
            session.add(
                GateCheck(
                    rollout_id=rollout.id,
                    gate=hook.name,
                    kind=hook.type,
                    opened_at=now,
                    deadline_at=now + ASKED_FOR,
                    next_call_at=now,
                    calls=0,
                )
            )
            said = {"gate": hook.name, "type": hook.type, "url": hook.shown, "every": hook.every}
            why = f"asking the rollback hook {hook.name!r} every {hook.every} while the rollout runs"
            record_event(session, rollout, actor, "gate.opened", why, said, now)
        elif row.passed_at is not None:
            return Decision(
                "rollback",
                f"the rollback hook {hook.name!r} answered HTTP {row.last_status}: rolling back",
                {"gate": [hook.name]},
            )
    return None
