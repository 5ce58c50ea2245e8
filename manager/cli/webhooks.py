"""`variantctl webhooks ...`: registry-wide event webhooks, and what was delivered or held."""

from __future__ import annotations

import click

from manager.cli.context import AppContext, pass_app
from manager.cli.render import emit, output_option

DELIVERY_COLUMNS = (
    "id",
    "hook",
    "kind",
    "event_seq",
    "rollout",
    "state",
    "attempts",
    "last_status",
    "next_attempt_at",
    "last_error",
    "url",
)


@click.group("webhooks")
def webhooks_group() -> None:
    """Event webhooks told of every rollout, their deliveries, and the gates rollouts wait at."""


@webhooks_group.command("add")
@click.argument("name")
@click.option(
    "--url", help="where each event is POSTed (kept in the registry: not for a URL that is a secret)"
)
@click.option(
    "--url-from",
    help="env:NAME or file:PATH: the daemon reads the URL there when it sends (for a Slack or Teams URL)",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "slack", "teams", "pagerduty", "email"]),
    default="json",
    show_default=True,
    help="slack: Slack's incoming-webhook JSON; teams: an Adaptive Card; pagerduty: Events API v2 (the "
    "routing key from --secret-env/--secret-file); email: --url smtp://host:port with --to and --from",
)
@click.option("--template", help="the line each event says, e.g. '$kind: $endpoint ($candidate) $link'")
@click.option("--to", "to", multiple=True, help="an email hook's recipient (repeat)")
@click.option("--from", "sender", help="an email hook's sender address")
@click.option(
    "--event",
    "kinds",
    multiple=True,
    help="only this kind of event (repeat; default: all): started, step_changed, paused, resumed,"
    " promoting, promoted, rolling_back, rolled_back, aborted, failed, sample_ratio_mismatch,"
    " data_problem, gate",
)
@click.option("--secret-env", help="the daemon's environment variable holding the signing secret")
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False),
    help="a file holding the signing secret (read by the daemon)",
)
@click.option("--timeout", default="5s", show_default=True, help="each attempt's timeout")
@pass_app
def add(
    app: AppContext,
    name: str,
    url: str | None,
    url_from: str | None,
    fmt: str,
    template: str | None,
    to: tuple[str, ...],
    sender: str | None,
    kinds: tuple[str, ...],
    secret_env: str | None,
    secret_file: str | None,
    timeout: str,
) -> None:
    """Tell NAME of every rollout's events, besides the webhooks each policy names."""
    from pydantic import ValidationError

    from manager import policy as policies
    from manager.clock import utcnow
    from manager.errors import UserError
    from manager.webhooks import deliveries

    fields: dict[str, object] = {
        "name": name,
        "url": url,
        "urlFrom": url_from,
        "format": fmt,
        "events": list(kinds),
        "timeout": timeout,
        "template": template,
        "to": list(to) or None,
        "from": sender,
    }
    fields.update({"secretEnv": secret_env, "secretFile": secret_file})
    try:
        spec = policies.Webhook.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "webhook"
        raise UserError(f"webhook {name!r}: {where}: {first['msg']}") from None
    with app.database().write() as session:
        deliveries.add_target(session, spec, app.actor, utcnow())
    click.echo(
        f"webhook {name} added: every rollout's events go to {spec.shown} from the daemon's next round"
    )


@webhooks_group.command("remove")
@click.argument("name")
@pass_app
def remove(app: AppContext, name: str) -> None:
    """Stop telling NAME (deliveries already made stay listed)."""
    from manager.clock import utcnow
    from manager.webhooks import deliveries

    with app.database().write() as session:
        deliveries.remove_target(session, name, app.actor, utcnow())
    click.echo(f"webhook {name} removed")


@webhooks_group.command("targets")
@output_option
@pass_app
def targets(app: AppContext, output: str) -> None:
    """The registry-wide event webhooks: each URL shown redacted, and whether it is kept inline or
    read by the daemon (`urlFrom`)."""
    from manager.policy.webhooks import shown
    from manager.registry.tables import WebhookTarget

    with app.database().read() as session:
        rows = [
            {
                "name": t.name,
                "url": shown(t.spec.get("url") or t.spec.get("urlFrom") or ""),
                "url_form": "from the daemon (urlFrom)"
                if t.spec.get("urlFrom")
                else "inline (shown redacted)",
                "format": t.spec.get("format", "json"),
                "events": ", ".join(t.spec.get("events") or ["all"]),
                "signed": bool(t.spec.get("secretEnv") or t.spec.get("secretFile")),
                "created_by": t.created_by,
                "created_at": t.created_at,
            }
            for t in session.query(WebhookTarget).order_by(WebhookTarget.name)
        ]
    emit(
        rows,
        ("name", "url", "url_form", "format", "events", "signed", "created_by", "created_at"),
        output,
        title="registry-wide webhooks",
        empty="no registry-wide webhooks (`variantctl webhooks add`); policies may name their own",
    )


@webhooks_group.command("list")
@click.option(
    "--failed", is_flag=True, help="only deliveries whose last attempt failed (retrying or given up)"
)
@click.option("--rollout", "rollout_id", type=int, help="only this rollout's")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@output_option
@pass_app
def list_deliveries(app: AppContext, failed: bool, rollout_id: int | None, limit: int, output: str) -> None:
    """Deliveries, newest first: delivered, pending (with the next attempt's time) or failed."""
    from manager.webhooks import deliveries

    with app.database().read() as session:
        rows = deliveries.listing(session, failed, rollout_id, limit)
    empty = "no failed deliveries" if failed else "no deliveries yet"
    emit(rows, DELIVERY_COLUMNS, output, title="webhook deliveries", empty=empty)


@webhooks_group.command("retry")
@click.argument("delivery_ids", nargs=-1, type=int)
@click.option("--all-failed", is_flag=True, help="every delivery that gave up")
@pass_app
def retry(app: AppContext, delivery_ids: tuple[int, ...], all_failed: bool) -> None:
    """Send deliveries that gave up again, from the daemon's next round."""
    from manager.clock import utcnow
    from manager.errors import UserError
    from manager.webhooks import deliveries

    if bool(delivery_ids) == all_failed:
        raise UserError("give delivery ids or --all-failed")
    with app.database().write() as session:
        n = deliveries.requeue(session, list(delivery_ids) or None, utcnow())
    click.echo(f"{n} deliveries queued again")


@webhooks_group.command("gates")
@click.option("--rollout", "rollout_id", type=int, help="only this rollout's")
@output_option
@pass_app
def gate_checks(app: AppContext, rollout_id: int | None, output: str) -> None:
    """The gates rollouts reached: calls, last answer, and whether each passed or hit its deadline."""
    from sqlalchemy import select

    from manager.registry.tables import GateCheck

    query = select(GateCheck).order_by(GateCheck.opened_at.desc())
    if rollout_id is not None:
        query = query.where(GateCheck.rollout_id == rollout_id)
    with app.database().read() as session:
        rows = [
            {
                "rollout": g.rollout_id,
                "gate": g.gate,
                "type": g.kind,
                "state": "passed" if g.passed_at else "expired" if g.expired_at else "waiting",
                "calls": g.calls,
                "last_status": g.last_status,
                "last_answer": (g.last_answer or "")[:80],
                "opened_at": g.opened_at,
                "deadline_at": g.deadline_at,
            }
            for g in session.scalars(query.limit(500))
        ]
    emit(
        rows,
        (
            "rollout",
            "gate",
            "type",
            "state",
            "calls",
            "last_status",
            "last_answer",
            "opened_at",
            "deadline_at",
        ),
        output,
        title="gates",
        empty="no rollout has reached a gate",
    )
