"""`variantctl history` and `variantctl audit verify`: what auditors ask."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from manager.cli.context import AppContext, pass_app
from manager.cli.render import atomic_output, emit, emit_record, output_option
from manager.registry.vocabulary import EVENT_FIELDS
from manager.views.rows import event_row

if TYPE_CHECKING:
    pass

TABLE_COLUMNS = ("seq", "at", "actor", "action", "subject", "reason")
RECORD_COLUMNS = EVENT_FIELDS


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
    from manager.clock import instant_range
    from manager.history import audit

    start, end = instant_range(since, until)
    flt = audit.HistoryFilter(
        endpoint=endpoint,
        rollout=rollout,
        model=model,
        action=action,
        actor=by,
        since=start,
        until=end,
        limit=limit if limit is not None or output != "table" else TABLE_LIMIT,
    )
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
    from manager.errors import NotFound
    from manager.history import audit

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


def _kept_head(expect_head: str | None) -> Any:
    from manager.history import audit

    try:
        return audit.Head.parse(expect_head) if expect_head is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expect-head") from None


def _tampered(message: str) -> NoReturn:
    click.echo(f"TAMPERED: {message}", err=True)
    sys.exit(1)


@audit_group.command("verify")
@click.option(
    "--expect-head",
    metavar="HASH",
    help="SEQ:HASH (or HASH) an earlier verify printed: it must still be part of the chain",
)
@click.option(
    "--file",
    "export_file",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    help="verify this export (jsonl, csv or cdevents) instead of the registry: no database needed",
)
@click.option(
    "--digests", metavar="DIR|s3://BUCKET/PREFIX", help="check the history against these signed digests"
)
@click.option(
    "--public-key",
    type=click.Path(path_type=Path, dir_okay=False),
    help="the digests' public key (`audit public-key` prints it) [default: from the signing key]",
)
@click.option(
    "--max-age", metavar="DURATION", help="fail when the newest digest is older than this (e.g. 2h)"
)
@click.option(
    "--allow-unanchored",
    is_flag=True,
    help="with --file: exit 0 for an export that is only self-consistent (nothing vouches for it)",
)
@click.option(
    "--partial",
    is_flag=True,
    help="with --file and --digests: the export is a range, so digests past its end are expected",
)
@pass_app
def verify(
    app: AppContext,
    expect_head: str | None,
    export_file: Path | None,
    digests: str | None,
    public_key: Path | None,
    max_age: str | None,
    allow_unanchored: bool,
    partial: bool,
) -> None:
    """Recompute the hash chain (of the registry, or of an export with --file), and check it against
    a kept head or signed digests. Exit 0 if intact, 1 naming the first problem."""
    from manager.clock import parse_duration
    from manager.history import audit
    from manager.history import digests as signed

    kept = _kept_head(expect_head)
    good: list[Any] = []
    if digests is not None:
        public = signed.load_public(public_key) if public_key else _public_from_signing_key()
        age = parse_duration(max_age) if max_age else None
        store = signed.store_for(digests)
        try:
            loaded = signed.load_all(store)
        except signed.CorruptDigest as exc:
            _tampered(f"{exc} (in {store.where})")
        problems, good = signed.check_digests(loaded, public, age)
        problems = [p.replace("there are no digests", f"{store.where} holds no digests") for p in problems]
        if problems and all(p.startswith(signed.STALE) for p in problems):
            # Only old: nothing found altered, but newer digests may have been deleted. Failing, and
            # named for what it is (issue 31: it said TAMPERED).
            click.echo(f"STALE: {problems[0]}", err=True)
            sys.exit(1)
        if problems:
            _tampered(problems[0] + "".join(f"\n  also: {p}" for p in problems[1:]))
    wanted = {d.last_seq for d in good}
    if export_file is not None:
        _verify_export(export_file, kept, good, wanted, allow_unanchored, partial)
        return
    verdict = audit.verify(app.database(), kept, collect=wanted)
    if verdict.ok and good:
        problems = signed.check_history(good, dict(verdict.hashes), 1, verdict.head_seq)
        if problems:
            _tampered(problems[0])
    if verdict.ok:
        anchored = f"; {len(good)} signed digests agree (to seq {max(wanted)})" if good else ""
        click.echo(
            f"ok: {verdict.count} events, chain intact, registry rows match{anchored}; "
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


def _public_from_signing_key() -> Any:
    from manager.history import digests as signed

    return signed.load_private(signed.default_key_path()).public_key()


def _verify_export(
    path: Path, kept: Any, good: list[Any], wanted: set[int], allow_unanchored: bool, partial: bool
) -> None:
    """The chain inside an export, its first link anchored by a kept head or digests. Starting at the
    genesis proves nothing by itself: anyone can write a consistent chain from seq 1."""
    from manager.errors import UserError
    from manager.history import audit, exports
    from manager.history import digests as signed

    result = exports.check(exports.read(path), wanted, kept.hash if kept is not None else None)
    if not result.ok:
        _tampered(f"{path}: {result.problem}")
    if result.count == 0:
        raise UserError(f"{path} holds no events")
    assert result.first_seq is not None and result.last_seq is not None
    anchors = []
    if result.first_seq == 1 and result.first_prev_hash != audit.GENESIS:
        _tampered(f"{path}: seq 1 does not chain from the genesis")
    if kept is not None:
        before = result.first_seq - 1
        matches = (kept.seq in (None, before) and kept.hash == result.first_prev_hash) or (
            result.found_at is not None and kept.seq in (None, result.found_at)
        )
        if not matches:
            _tampered(
                f"{path}: the kept head {kept.hash} is neither the export's first link nor one of its events"
            )
        anchors.append("the kept head matches")
    if good:
        hashes = dict(result.hashes)
        hashes[result.first_seq - 1] = result.first_prev_hash or ""
        inside = [d for d in good if result.first_seq - 1 <= d.last_seq <= result.last_seq]
        problems = signed.check_history(inside, hashes, result.first_seq - 1, result.last_seq)
        if problems:
            _tampered(f"{path}: {problems[0]}")
        if not inside:
            _tampered(
                f"{path}: no digest falls inside seqs {result.first_seq - 1}..{result.last_seq}; "
                "nothing anchors it"
            )
        beyond = [d for d in good if d.last_seq > result.last_seq]
        if beyond and not partial:
            last = max(beyond, key=lambda d: d.last_seq)
            _tampered(
                f"{path}: truncated: it ends at seq {result.last_seq}, but digest {last.describe()} vouches "
                f"for events to seq {last.last_seq} (an export of a range: pass --partial)"
            )
        anchors.append(f"{len(inside)} signed digests agree")
    if not anchors:
        said = (
            f"self-consistent, not anchored: {result.count} events (seqs {result.first_seq}.."
            f"{result.last_seq}), chain intact, but nothing vouches for its first link "
            f"{result.first_seq - 1}:{result.first_prev_hash}"
        )
        if allow_unanchored:
            click.echo(f"{said} (--allow-unanchored)")
            return
        click.echo(f"{said}; pass --expect-head or --digests (or --allow-unanchored)", err=True)
        sys.exit(1)
    click.echo(
        f"ok: {result.count} events (seqs {result.first_seq}..{result.last_seq}), chain intact, "
        f"{', '.join(anchors)}; last {result.last_seq}:{result.last_hash}"
    )


@audit_group.command("export")
@click.option("--since", metavar="TIME", help="from the first event at or after this (same forms as history)")
@click.option("--until", metavar="TIME", help="to the last event before this")
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv", "cdevents"]), default="jsonl", show_default=True
)
@click.option(
    "--output",
    "-o",
    "target",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    default="-",
    show_default=True,
    help="a file, or - for standard output",
)
@pass_app
def export(app: AppContext, since: str | None, until: str | None, fmt: str, target: Path) -> None:
    """Write a contiguous range of events with their hashes, for `audit verify --file` anywhere."""
    from manager.clock import instant_range
    from manager.errors import UserError
    from manager.history import exports

    start, end = instant_range(since, until)
    with app.database().read() as session:
        span = exports.seq_range(session, start, end)
        if span is None:
            raise UserError("no events in that range")
        with atomic_output(target) as out:
            count = exports.write(exports.rows(session, *span), fmt, out)
    click.echo(f"exported {count} events (seqs {span[0]}..{span[1]}) as {fmt}", err=True)


KEY_OPTION = click.option(
    "--key",
    "key_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="the Ed25519 signing key [env: VARIANTCTL_SIGNING_KEY; default: signing-key.pem in the data dir]",
)


@audit_group.command("keygen")
@KEY_OPTION
def keygen(key_path: Path | None) -> None:
    """Create the signing key for digests (never overwrites one) and print its public key."""
    from manager.history import digests as signed

    path = key_path or signed.default_key_path()
    click.echo(signed.generate_key(path), nl=False)
    click.echo(
        f"signing key written to {path} (keep it private; give auditors the public key above)", err=True
    )


@audit_group.command("public-key")
@KEY_OPTION
def public_key_command(key_path: Path | None) -> None:
    """Print the public key auditors check digests with."""
    from manager.history import digests as signed

    click.echo(
        signed.public_pem(signed.load_private(key_path or signed.default_key_path()).public_key()), nl=False
    )


@audit_group.command("digest")
@click.option(
    "--to", "location", required=True, metavar="DIR|s3://BUCKET/PREFIX", help="where digests are kept"
)
@KEY_OPTION
@pass_app
def digest(app: AppContext, location: str, key_path: Path | None) -> None:
    """Sign the history's head now: a digest chained to the previous one in the same place."""
    from manager.history import digests as signed

    private = signed.load_private(key_path or signed.default_key_path())
    made = signed.write_digest(app.database(), signed.store_for(location), private)
    click.echo(
        f"digest {made.name}: {made.covers()}, head {made.last_seq}:{made.body['head_hash']}, in {location}"
    )
