"""Which history events a webhook is told of, and the body it gets. Pure: no I/O.

The body is fixed when the event is fanned out and sent byte for byte on every attempt, so that its
signature and its idempotency key (`id`) stay the same across retries."""

from __future__ import annotations

import json
from typing import Any

from manager.clock import format_instant
from manager.rollout.verdicts import SRM_REASON

# A history action -> the event kind webhooks subscribe to (policy.WebhookEvent).
KINDS = {
    "rollout.start": "started",
    # step_changed: once per change of the candidate's share in force (deployed at its first weight, then
    # each new phase) or of its shadow copy; `rollout.advance` (a step done) and `rollout.set_weight` (a
    # change asked for) are not sent too (issue 31: 9 events for 3 weight changes).
    "rollout.deployed": "step_changed",
    "rollout.phase": "step_changed",
    "rollout.shadowing": "step_changed",
    "rollout.shadow_ended": "step_changed",
    "rollout.pause": "paused",
    "rollout.paused_on_errors": "paused",
    "rollout.resume": "resumed",
    "rollout.promote": "promoting",
    "rollout.promoted": "promoted",
    "rollout.rollback": "rolling_back",
    "rollout.rolled_back": "rolled_back",
    "rollout.aborted": "aborted",
    "rollout.failed": "failed",
    "rollout.failing": "failed",
    "rollout.replay_refused": "data_problem",
    "gate.opened": "gate",
    "gate.answered": "gate",
    "gate.deadline": "gate",
}
ICONS = {
    "started": ":rocket:",
    "step_changed": ":arrow_forward:",
    "paused": ":double_vertical_bar:",
    "resumed": ":arrow_forward:",
    "promoting": ":hourglass:",
    "promoted": ":white_check_mark:",
    "rolling_back": ":hourglass:",
    "rolled_back": ":leftwards_arrow_with_hook:",
    "aborted": ":no_entry:",
    "failed": ":x:",
    "sample_ratio_mismatch": ":warning:",
    "data_problem": ":warning:",
    "gate": ":construction:",
}


def kind_of(action: str, reason: str | None) -> str | None:
    """The kind of event a history action is to webhooks; None for one they are not told of."""
    kind = KINDS.get(action)
    if kind in ("paused", "rolling_back") and (reason or "").startswith(SRM_REASON):
        return "sample_ratio_mismatch"
    return kind


def who(rollout: Any, policy: str) -> dict[str, Any]:
    """A rollout as webhooks name it (events and gates alike)."""
    return {
        "id": rollout.id,
        "endpoint": rollout.endpoint.name,
        "baseline": rollout.baseline.ref,
        "candidate": rollout.candidate.ref,
        "policy": policy,
    }


def body(
    event: Any, kind: str, key: str, rollout: dict[str, Any] | None, link: str | None = None
) -> dict[str, Any]:
    """The JSON body of one event: what happened, to which rollout and endpoint, the decision and the
    evidence the history holds for it, the event's place in the chain (seq, hash), and with `link`
    (the dashboard's address) the rollout's page."""
    payload = json.loads(event.payload)
    snapshot = payload.pop("rollout", None)
    out: dict[str, Any] = {
        "id": key,
        "kind": kind,
        "event": {
            "seq": event.seq,
            "at": format_instant(event.at),
            "actor": event.actor,
            "action": event.action,
            "subject": f"{event.subject_type}/{event.subject_id}",
            "reason": event.reason,
            "hash": event.hash,
        },
        "rollout": None if rollout is None else {**rollout, **(snapshot or {})},
        "endpoint": None if rollout is None else rollout["endpoint"],
        "decision": {"action": event.action, "reason": event.reason, "evidence": payload},
        "link": f"{link}/rollouts/{rollout['id']}" if link and rollout is not None else None,
    }
    out["text"] = line(out)
    return out


def line(body: dict[str, Any]) -> str:
    """One readable line: what happened to which rollout, and why."""
    r = body["rollout"] or {}
    what = body["kind"].replace("_", " ")
    where = f"rollout {r.get('id')} on {r.get('endpoint')}" if r else body["event"]["subject"]
    models = f" ({r['candidate']} beside {r['baseline']})" if r.get("candidate") else ""
    reason = body["event"]["reason"]
    asked = (body["decision"].get("evidence") or {}).get("requested_by") or {}
    by = f" by {asked['actor']}" if asked.get("actor") else ""
    return f"{where}{models}: {what}{by}" + (f": {reason}" if reason else "")


def slack_escape(text: str) -> str:
    """Text as Slack shows it, never as markup: `&`, `<` and `>` escaped as Slack's formatting guide
    says, so a reason holding `<!channel>` or `<https://evil|a link>` notifies no one and links nowhere."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(body: dict[str, Any]) -> dict[str, Any]:
    """Slack's incoming-webhook JSON: the line, and the event's seq, time and actor beneath it."""
    text = slack_escape(f"{ICONS.get(body['kind'], '')} {body['text']}".strip())
    e = {k: slack_escape(str(v)) for k, v in body["event"].items() if k in ("seq", "at", "actor", "action")}
    # Slack's link syntax, <url|text>: the address is ours (a validated setting) with its |, < and >
    # escaped all the same
    opened = f" · <{slack_escape(body['link']).replace('|', '%7C')}|open>" if body.get("link") else ""
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"seq {e['seq']} · {e['at']} · {e['actor']} · `{e['action']}`{opened}",
                    }
                ],
            },
        ],
    }
