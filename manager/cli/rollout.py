"""`variantctl rollout ...`: operator intents in (the daemon reconciles), status out."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from manager.cli.context import AppContext, pass_app
from manager.cli.render import atomic_output, emit, emit_record, metric_cells, output_option
from manager.views.rows import ROLLOUT_COLUMNS

if TYPE_CHECKING:
    from manager.views.intents import OperatorIntent


@click.group("rollout")
def rollout_group() -> None:
    """Start, watch and steer rollouts (the daemon acts within one tick)."""


@rollout_group.command("start")
@click.option("--policy", "path", required=True, type=click.Path(path_type=Path, dir_okay=False))
@output_option
@pass_app
def start(app: AppContext, path: Path, output: str) -> None:
    """Start a rollout under a policy."""
    from manager import policy as policies
    from manager.clock import utcnow
    from manager.registry.rollouts import RolloutView, going_back
    from manager.rollout import launch

    policy, text = policies.load(path)
    with app.database().write() as session:
        row = launch.start(session, policy, text, app.actor, utcnow())
        record = RolloutView.of(row).record()
        backwards = going_back(row.baseline, row.candidate)
    if output == "table":
        click.echo(
            f"rollout {record['rollout']} started: {record['candidate']} beside {record['baseline']} on "
            f"{record['endpoint']}; `variantctl daemon` carries it out"
        )
        if backwards:
            click.echo(
                f"note: {record['candidate']} is older than {record['baseline']}, which it would replace",
                err=True,
            )
    else:
        emit_record(record, output)


@rollout_group.command("list")
@click.option("--all", "everything", is_flag=True, help="finished rollouts too")
@output_option
@pass_app
def list_rollouts(app: AppContext, everything: bool, output: str) -> None:
    """Rollouts, newest first."""
    from manager.registry import rollouts

    with app.database().read() as session:
        rows = [v.record() for v in rollouts.views(session, everything)]
    emit(
        rows, ROLLOUT_COLUMNS, output, title="rollouts", empty="no active rollouts (--all for finished ones)"
    )


@rollout_group.command("show")
@click.argument("rollout_id", type=int)
@click.option(
    "--policy",
    "with_policy",
    is_flag=True,
    help="print the policy text it ran under, checked against its hash",
)
@output_option
@pass_app
def show(app: AppContext, rollout_id: int, with_policy: bool, output: str) -> None:
    """One rollout as recorded: who started it, its candidate, state and outcome. With --policy, the
    policy text it ran under, checked against the hash in its row and in its `rollout.start` event
    (exit 1 when they disagree); hook URLs given inline are shown redacted."""
    from manager.history.redaction import redact_urls
    from manager.registry import rollouts

    with app.database().read() as session:
        view = rollouts.view(session, rollout_id)
        problems = rollouts.policy_problems(session, rollout_id)
    record = view.record()
    record["policy_check"] = "; ".join(problems) or "the text matches its hash and the history"
    if with_policy and output == "table":
        emit_record({k: record[k] for k in ("rollout", "endpoint", "policy_hash", "policy_check")}, output)
        click.echo("---")
        click.echo(redact_urls(view.policy_yaml).rstrip("\n"))
    else:
        if with_policy:
            record["policy_yaml"] = redact_urls(view.policy_yaml)
        emit_record(record, output, title=f"rollout {rollout_id}")
    if problems:
        click.echo(f"error: rollout {rollout_id}'s policy: {problems[0]}", err=True)
        sys.exit(1)


@rollout_group.command("report")
@click.argument("rollout_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["html", "json"]), default="html", show_default=True)
@click.option(
    "--output",
    "-o",
    "target",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    help="a file, or - for standard output [default: rollout-ID.html or .json]",
)
@pass_app
def report(app: AppContext, rollout_id: int, fmt: str, target: Path | None) -> None:
    """The rollout's decision record: policy, steps, each metric's statistics over time as charts, the
    decision and its numbers, operator actions, and the history events with their hashes. The HTML
    page is self-contained: it opens without network access."""
    from manager.history import report as reports

    with app.database().read() as session:
        record = reports.build(session, rollout_id)
    text = reports.render_html(record) if fmt == "html" else reports.to_json(record) + "\n"
    target = target or Path(f"rollout-{rollout_id}.{fmt}")
    with atomic_output(target) as out:
        out.write(text)
    if str(target) == "-":
        return
    points = sum(len(m["points"]) for m in record["metrics"])
    click.echo(
        f"wrote {target}: {len(record['events'])} events, {len(record['metrics'])} metrics ({points} looks)",
        err=True,
    )


def _status(app: AppContext, rollout_id: int) -> dict[str, Any]:
    from manager.rollout.status import status

    with app.database().read() as session:
        return status(session, rollout_id).record()


def _finish(record: dict[str, Any]) -> None:
    """The exit code of a rollout that has ended: 0 promoted, 3 rolled back or aborted, 4 failed."""
    from manager.rollout.status import EXIT_BY_OUTCOME

    if record["state"] in EXIT_BY_OUTCOME:
        code = EXIT_BY_OUTCOME[record["state"]]
        if code:
            sys.exit(code)


@rollout_group.command("status")
@click.argument("rollout_id", type=int)
@click.option("--wait", is_flag=True, help="wait until the rollout ends; exit by its outcome")
@click.option("--timeout", type=click.FloatRange(min=0), default=86400, show_default=True, help="seconds")
@click.option(
    "--every", type=click.FloatRange(0.1), default=5.0, show_default=True, help="seconds between looks"
)
@output_option
@pass_app
def status(app: AppContext, rollout_id: int, wait: bool, timeout: float, every: float, output: str) -> None:
    """Phase, weights, samples per arm, and each metric's interval. Exit 0 while it runs or once
    promoted, 3 when rolled back or aborted, 4 when failed; with --wait, 1 on timeout."""
    import time

    from manager.registry.vocabulary import is_final

    record = _status(app, rollout_id)
    deadline = time.monotonic() + timeout
    while wait and not is_final(record["state"]):
        if time.monotonic() >= deadline:
            click.echo(
                f"error: rollout {rollout_id} is still {record['state']} after {timeout:g} s", err=True
            )
            sys.exit(1)
        time.sleep(every)
        record = _status(app, rollout_id)
    if output == "table":
        metrics = record.pop("metrics")
        for key in ("steps", "ingest"):
            record.pop(key)
        paired = record.pop("paired")
        package = record.pop("model_package", None)
        if package:
            record["model_package"] = f"{package['version']}; outcome written back: {package['writeback']}"
        emit_record(record, output, title=f"rollout {rollout_id}")
        if paired:
            emit_record(_paired_cells(paired), output, title="paired (replay)")
        emit(
            [{"metric": k, **metric_cells(v)} for k, v in metrics.items()],
            ("metric", "status", "baseline", "candidate", "interval"),
            output,
            title="metrics (current phase)",
        )
    else:
        sys.stdout.write(json.dumps(record, default=str, indent=2) + "\n")
    _finish(record)


def _watch_view(record: dict[str, Any]) -> Any:
    """The header, the step list, each metric against its minimum, why it waits, ingest health."""
    from rich.console import Group
    from rich.table import Table

    from manager.clock import utcnow

    now = utcnow()
    created = record["created_at"]
    ended = record.get("finished_at") or now
    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    head.add_row(
        f"rollout {record['rollout']}",
        f"{record['candidate']} beside {record['baseline']} on {record['endpoint']}"
        f", policy {record['policy']}",
    )
    head.add_row("state", f"{record['state']}, candidate at {record['weight']:g}%")
    head.add_row(
        "started",
        f"{created:%Y-%m-%d %H:%M:%S} UTC, {_ago(ended - created)} ago"
        if not record.get("finished_at")
        else f"{created:%Y-%m-%d %H:%M:%S} UTC, ran {_ago(ended - created)}",
    )
    head.add_row("updated", f"{now:%H:%M:%S} UTC")
    if record.get("reason"):
        head.add_row("why", str(record["reason"]))
    if record.get("last_error"):
        head.add_row("error", f"{record['last_error']} ({record['failures']} failed ticks)")
    package = record.get("model_package")
    if package:
        head.add_row("package", f"{package['version']}; outcome written back: {package['writeback']}")
    ingest = record.get("ingest")
    if ingest is not None:
        head.add_row(
            "ingest",
            f"{ingest['records_read']} records, {ingest['malformed_skipped']} malformed, "
            f"{ingest['predictions_waiting_for_labels']} waiting for labels"
            + (
                f", last read {_ago(now - ingest['last_read_at'])} ago"
                if ingest.get("last_read_at")
                else ", not read yet"
            )
            + (f"; read errors: {'; '.join(ingest['read_errors'])}" if ingest["read_errors"] else ""),
        )
    paired = record.get("paired")
    if paired:
        for key, value in _paired_cells(paired).items():
            head.add_row(key, str(value))
    steps = _steps_table(record["steps"])
    metrics = Table(title="metrics (current phase)")
    for column in ("metric", "status", "samples", "baseline", "candidate", "interval"):
        metrics.add_column(column)
    for name, v in record["metrics"].items():
        cells = metric_cells(v)
        samples = v.get("pairs") or min(
            float(v.get("baseline_n", v.get("baseline_requests", 0)) or 0),
            float(v.get("candidate_n", v.get("candidate_requests", 0)) or 0),
        )
        label = f"{name} (dry run)" if v.get("dry_run") else f"{name} ({v.get('role', '')})"
        metrics.add_row(
            label,
            cells["status"],
            f"{samples:,.0f} / {v['min_samples']:,}",
            cells["baseline"],
            cells["candidate"],
            cells["interval"],
        )
    return Group(head, steps, metrics)


def _paired_cells(paired: dict[str, Any]) -> dict[str, Any]:
    """A replay's progress and what its pairs show without labels, as short lines."""
    out: dict[str, Any] = {}
    if "planned" in paired:
        out["replay"] = (
            f"{paired['done']} of {paired['planned']} sent, {paired['queued']} queued,"
            f" {paired['failed']} failed, {paired.get('candidate_errors', 0)} answered with an error"
        )
        skipped = paired.get("skipped") or {}
        if skipped:
            out["left out"] = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in skipped.items())
        if paired.get("refused"):
            out["refused"] = paired["refused"]
    if "agreement_rate" in paired:
        out["agreement"] = f"{paired['agreement_rate']:.1%} of {paired['compared']} predictions"
    shift = paired.get("prediction_shift")
    if shift:
        out["score shift"] = f"{shift['mean']:+.4f} [{shift['low']:+.4f}, {shift['high']:+.4f}]"
    if "candidate_latency_ms" in paired:
        out["candidate latency"] = f"{paired['candidate_latency_ms']:.1f} ms (replayed, mean)"
    return out


def _ago(delta: Any) -> str:
    seconds = int(delta.total_seconds())
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


@rollout_group.command("watch")
@click.argument("rollout_id", type=int)
@click.option(
    "--every", type=click.FloatRange(0.2), default=2.0, show_default=True, help="seconds between looks"
)
@pass_app
def watch(app: AppContext, rollout_id: int, every: float) -> None:
    """A live view until the rollout ends (Ctrl-C to stop watching; the rollout goes on). Exits 0 on
    promotion, 3 on rollback or abort, 4 on failure."""
    import time

    from rich.live import Live

    from manager.registry.vocabulary import is_final

    record = _status(app, rollout_id)
    with Live(_watch_view(record), refresh_per_second=4) as live:
        while not is_final(record["state"]):
            time.sleep(every)
            record = _status(app, rollout_id)
            live.update(_watch_view(record))
    click.echo(f"rollout {rollout_id}: {record['state']}: {record.get('reason') or ''}")
    _finish(record)


def _intent(app: AppContext, rollout_id: int, intent: OperatorIntent, reason: str | None) -> None:
    from manager.views import intents

    with app.database().write() as session:
        intents.request(session, rollout_id, intent, reason, app.actor)
    click.echo(f"rollout {rollout_id}: {intent} requested; the daemon acts within one tick")


def _intent_command(intent: OperatorIntent) -> None:
    """`rollout pause|resume|approve ID [--reason]`: each writes one intent, nothing more."""
    from manager.views.intents import INTENT_HELP

    @click.argument("rollout_id", type=int)
    @click.option("--reason", help="recorded in the history")
    @pass_app
    def command(app: AppContext, rollout_id: int, reason: str | None) -> None:
        _intent(app, rollout_id, intent, reason)

    command.__doc__ = INTENT_HELP[intent].capitalize() + "."
    rollout_group.command(intent)(command)


for _simple in ("pause", "resume", "approve"):  # abort and promote have options of their own, below
    _intent_command(_simple)


@rollout_group.command("abort")
@click.argument("rollout_id", type=int)
@click.option("--reason", help="recorded in the history")
@click.option(
    "--reject-candidate",
    is_flag=True,
    help="also mark the candidate rejected (by default it stays approved, to retry later)",
)
@pass_app
def abort(app: AppContext, rollout_id: int, reason: str | None, reject_candidate: bool) -> None:
    """Roll back now: the endpoint ends on the baseline alone. The candidate stays approved unless
    --reject-candidate says otherwise."""
    from manager.registry import models, rollouts

    with app.database().write() as session:
        rollout = rollouts.set_intent(session, rollout_id, "abort", reason, app.actor)
        if reject_candidate and rollout.candidate.status != "rejected":
            why = f"rejected with the abort of rollout {rollout_id}: {reason or 'no reason given'}"
            models.transition(
                session, rollout.candidate, "rejected", app.actor, reason=why, action="model.rejected"
            )
    kept = "rejected" if reject_candidate else "kept approved (`rollout retry` tries it again)"
    click.echo(f"rollout {rollout_id}: abort requested; the daemon acts within one tick; candidate {kept}")


@rollout_group.command("retry")
@click.argument("rollout_id", type=int)
@output_option
@pass_app
def retry(app: AppContext, rollout_id: int, output: str) -> None:
    """Start a new rollout of a finished rollout's candidate, under the same policy text."""
    from manager import policy as policies
    from manager.clock import utcnow
    from manager.errors import NotFound, UserError
    from manager.registry.rollouts import RolloutView
    from manager.registry.tables import Rollout
    from manager.registry.vocabulary import is_final
    from manager.rollout import launch

    with app.database().write() as session:
        old = session.get(Rollout, rollout_id)
        if old is None:
            raise NotFound(f"no rollout {rollout_id}")
        if not is_final(old.state):
            raise UserError(f"rollout {rollout_id} is {old.state}; retry a rollout that has ended")
        policy = policies.parse(old.policy_yaml, f"rollout {rollout_id}'s policy")
        pinned = policy.model_copy(
            update={
                "target": policy.target.model_copy(
                    update={
                        "candidate": policies.Candidate.model_validate(
                            {"model": old.candidate.name, "version": old.candidate.version}
                        )
                    }
                )
            }
        )
        record = RolloutView.of(launch.start(session, pinned, old.policy_yaml, app.actor, utcnow())).record()
    if output == "table":
        click.echo(
            f"rollout {record['rollout']} started: a retry of rollout {rollout_id} ({record['candidate']})"
        )
    else:
        emit_record(record, output)


@rollout_group.command("promote")
@click.argument("rollout_id", type=int)
@click.option("--full", is_flag=True, required=True, help="confirm: skip the analysis and promote")
@click.option("--reason", required=True, help="why the analysis is skipped (recorded in the history)")
@pass_app
def promote(app: AppContext, rollout_id: int, full: bool, reason: str) -> None:
    """Promote without the analysis. Recorded loudly."""
    _intent(app, rollout_id, "promote", reason)
    click.echo(
        f"warning: rollout {rollout_id} will be promoted WITHOUT its analysis; recorded in the history",
        err=True,
    )


def _steps_table(rows: list[dict[str, Any]]) -> Any:
    """The plan's steps, each marked done, now or next; once a rollout ends, where it ended and what
    it never reached."""
    from rich.table import Table

    steps = Table(title="steps", show_header=False, box=None)
    marks = {
        "done": "[green]done[/green]",
        "current": "[bold yellow]now[/bold yellow]",
        "next": "[dim]next[/dim]",
    }
    for step in rows:
        state = step["state"]
        mark = marks.get(state) or (
            f"[red]{state}[/red]" if state.startswith("ended") else f"[dim]{state}[/dim]"
        )
        steps.add_row(mark, step["what"])
    return steps
