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


def fields(body: dict[str, Any]) -> dict[str, str]:
    """What a hook's `template` may say of an event (policy.webhooks.TEMPLATE_FIELDS), as text."""
    r = body.get("rollout") or {}
    e = body["event"]
    said = {
        "kind": body["kind"],
        "rollout": r.get("id"),
        "endpoint": body.get("endpoint"),
        "candidate": r.get("candidate"),
        "baseline": r.get("baseline"),
        "state": r.get("state"),
        "weight": r.get("weight"),
        "reason": e.get("reason"),
        "actor": e.get("actor"),
        "action": e.get("action"),
        "seq": e.get("seq"),
        "link": body.get("link"),
        "text": body.get("text"),
    }
    return {k: "" if v is None else (f"{v:g}" if isinstance(v, float) else str(v)) for k, v in said.items()}


def render(body: dict[str, Any], spec: Any) -> dict[str, Any]:
    """The body a hook gets: its `template`'s line as the text, then in its `format`."""
    from string import Template

    if spec.template:
        body = {**body, "text": Template(spec.template).safe_substitute(fields(body))}
    if spec.format == "slack":
        return slack(body)
    if spec.format == "teams":
        return teams(body)
    if spec.format == "pagerduty":
        return pagerduty(body)
    if spec.format == "email":
        return email(body, spec.to, spec.sender)
    return body


def teams(body: dict[str, Any]) -> dict[str, Any]:
    """A Microsoft Teams message (a Workflows or incoming webhook): one Adaptive Card with the line,
    the event's facts and, with a dashboard, a link to the rollout's page. Teams renders a TextBlock's
    text as Markdown: the line is sent as plain text with Markdown's characters escaped."""
    e = body["event"]
    facts = [
        {"title": k, "value": str(e[k])} for k in ("seq", "at", "actor", "action") if e.get(k) is not None
    ]
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": _markdown_escaped(body["text"]), "wrap": True, "weight": "Bolder"},
            {"type": "FactSet", "facts": facts},
        ],
    }
    if body.get("link"):
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open the rollout", "url": body["link"]}]
    content = {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
    return {"type": "message", "attachments": [content]}


def _markdown_escaped(text: str) -> str:
    return "".join(f"\\{c}" if c in "\\`*_{}[]()#+-.!<>|~" else c for c in str(text))


SEVERITY = {
    "failed": "error",
    "rolled_back": "error",
    "sample_ratio_mismatch": "warning",
    "aborted": "warning",
}


def pagerduty(body: dict[str, Any]) -> dict[str, Any]:
    """A PagerDuty Events API v2 event (the routing key is added when it is sent, never stored): one
    alert per rollout (`dedup_key`), triggered by each event and resolved when the rollout promotes."""
    r = body.get("rollout") or {}
    e = body["event"]
    out: dict[str, Any] = {
        "event_action": "resolve" if body["kind"] == "promoted" else "trigger",
        "dedup_key": f"variantctl-rollout-{r.get('id')}" if r else f"variantctl-{e['subject']}",
        "payload": {
            "summary": str(body["text"])[:1024],
            "source": str(body.get("endpoint") or e["subject"]),
            "severity": SEVERITY.get(body["kind"], "info"),
            "timestamp": e["at"],
            "component": str(r.get("candidate") or ""),
            "group": str(body.get("endpoint") or ""),
            "class": body["kind"],
            "custom_details": {"event": e, "decision": body.get("decision"), "rollout": r},
        },
        "client": "variantctl",
    }
    if body.get("link"):
        out["client_url"] = body["link"]
        out["links"] = [{"href": body["link"], "text": "the rollout's page"}]
    return out


def email(body: dict[str, Any], to: list[str], sender: str) -> dict[str, Any]:
    """A plain-text email: the line as its subject, the event's facts and its link below."""
    e = body["event"]
    lines = [
        body["text"],
        "",
        *(f"{k}: {e[k]}" for k in ("seq", "at", "actor", "action", "reason", "hash") if e.get(k) is not None),
    ]
    if body.get("link"):
        lines += ["", f"the rollout's page: {body['link']}"]
    subject = " ".join(str(body["text"]).split())[:200]
    return {"to": list(to), "from": sender, "subject": f"[variantctl] {subject}", "text": "\n".join(lines)}
