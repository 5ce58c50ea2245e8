"""`variantctl history` and `variantctl audit verify`: what auditors ask."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from manager.cli.context import AppContext, pass_app
from manager.cli.render import emit, emit_record, output_option

if TYPE_CHECKING:
    from manager.registry.tables import AuditEvent

TABLE_COLUMNS = ("seq", "at", "actor", "action", "subject", "reason")
RECORD_COLUMNS = (
    "seq",
    "at",
    "actor",
    "action",
    "subject_type",
    "subject_id",
    "endpoint",
    "model",
    "reason",
    "payload",
    "prev_hash",
    "hash",
)


def event_row(row: AuditEvent) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "at": row.at,
        "actor": row.actor,
        "action": row.action,
        "subject": f"{row.subject_type}/{row.subject_id}",
        "subject_type": row.subject_type,
        "subject_id": row.subject_id,
        "endpoint": row.endpoint,
        "model": row.model,
        "reason": row.reason,
        "payload": json.loads(row.payload),
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


TABLE_LIMIT = 50


@click.group("history", invoke_without_command=True)
@click.option(
    "--endpoint", help="events about this endpoint, and the training and gate events of the models it served"
)
@click.option(
    "--rollout",
    type=click.IntRange(min=1),
    help="this rollout's events, and the config and model events it caused",
)
@click.option("--model", help="events about this model (any version)")
@click.option("--action", help="e.g. model.register, rollout.promote")
@click.option("--actor", "by", help="events by this actor")
@click.option("--since", metavar="TIME", help="ISO 8601 (naive is UTC) or a duration ago: 7d, 2h")
@click.option("--until", metavar="TIME", help="exclusive; same forms as --since")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="at most this many events [default: 50 in a table; every match in json and csv]",
)
@output_option
@pass_app
@click.pass_context
def history(
    ctx: click.Context,
    app: AppContext,
    endpoint: str | None,
    rollout: int | None,
    model: str | None,
    action: str | None,
    by: str | None,
    since: str | None,
    until: str | None,
    limit: int | None,
    output: str,
) -> None:
    """The deployment history, newest first (`history show SEQ` for one event, whole)."""
    if ctx.invoked_subcommand is not None:
        return
    from manager import audit
    from manager.clock import parse_instant, utcnow
    from manager.errors import UserError

    now = utcnow()
    flt = audit.HistoryFilter(
        endpoint=endpoint,
        rollout=rollout,
        model=model,
        action=action,
        actor=by,
        since=parse_instant(since, now) if since else None,
        until=parse_instant(until, now) if until else None,
        limit=limit if limit is not None or output != "table" else TABLE_LIMIT,
    )
    if flt.since and flt.until and flt.since >= flt.until:
        raise UserError(f"--since ({since}) must be before --until ({until})")
    rows = [event_row(r) for r in audit.history(app.database(), flt)]
    columns = TABLE_COLUMNS if output == "table" else RECORD_COLUMNS
    emit(rows, columns, output, title="history", empty="no events match")
    if output == "table" and flt.limit is not None and len(rows) == flt.limit:
        total = audit.history_count(app.database(), flt)
        if total > len(rows):
            click.echo(
                f"showing the newest {len(rows)} of {total} matching events; --limit N, or -o csv for all",
                err=True,
            )


@history.command("show")
@click.argument("seq", type=click.IntRange(min=1))
@output_option
@pass_app
def show_event(app: AppContext, seq: int, output: str) -> None:
    """One event, whole: every field, its payload pretty-printed, and its place in the chain."""
    from manager import audit
    from manager.errors import NotFound

    row = audit.event(app.database(), seq)
    if row is None:
        raise NotFound(f"no event {seq} in the history")
    record = event_row(row)
    if output != "table":
        emit_record({k: record[k] for k in RECORD_COLUMNS}, output)
        return
    payload = record.pop("payload")
    for key in ("subject_type", "subject_id"):
        record.pop(key)
    emit_record(record, output, title=f"event {seq}")
    click.echo("payload:")
    click.echo(json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False))


@click.group("audit")
def audit_group() -> None:
    """Check that the history was not altered."""


@audit_group.command("verify")
@click.option(
    "--expect-head",
    metavar="HASH",
    help="SEQ:HASH (or HASH) an earlier verify printed: it must still be part of the chain",
)
@pass_app
def verify(app: AppContext, expect_head: str | None) -> None:
    """Recompute the hash chain. Exit 0 if intact, 1 naming the first bad seq."""
    from manager import audit

    try:
        kept = audit.Head.parse(expect_head) if expect_head is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expect-head") from None
    verdict = audit.verify(app.database(), kept)
    if verdict.ok:
        click.echo(
            f"ok: {verdict.count} events, chain intact, registry rows match; "
            f"head {verdict.head_seq}:{verdict.head_hash} (keep it; pass it to --expect-head later)"
        )
        return
    if verdict.rows:
        click.echo(f"TAMPERED: {verdict.problem}", err=True)
        for line in verdict.rows[1:]:
            click.echo(f"  also: {line}", err=True)
        sys.exit(1)
    click.echo(
        f"TAMPERED at seq {verdict.first_bad_seq}: {verdict.problem} "
        f"({verdict.count} events verified before it)",
        err=True,
    )
    sys.exit(1)
