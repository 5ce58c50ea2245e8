"""`variantctl rollout ...`: operator intents in (the daemon reconciles), status out."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from manager.cli.context import AppContext, pass_app
from manager.cli.render import atomic_output, emit, emit_record, metric_cells, output_option
from manager.cli.rollout_views import paired_cells, watch_view
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
        _acts(app, record["endpoint"])
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
    from manager.history import report_html

    with app.database().read() as session:
        record = reports.build(session, rollout_id)
    text = report_html.render_html(record) if fmt == "html" else reports.to_json(record) + "\n"
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
    if wait and record.get("daemon") and not record["daemon"]["alive"]:
        click.echo(f"warning: {record['daemon']['said']}; waiting all the same", err=True)
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
        daemon = record.pop("daemon", None)
        if daemon is not None:
            record["daemon"] = daemon["said"] if daemon["alive"] else f"DOWN: {daemon['said']}"
        package = record.pop("model_package", None)
        if package:
            record["model_package"] = f"{package['version']}; outcome written back: {package['writeback']}"
        emit_record(record, output, title=f"rollout {rollout_id}")
        if paired:
            emit_record(paired_cells(paired), output, title="paired (replay)")
        emit(
            [{"metric": k, **metric_cells(v)} for k, v in metrics.items()],
            ("metric", "status", "baseline", "candidate", "interval"),
            output,
            title="metrics (current phase)",
        )
    else:
        sys.stdout.write(json.dumps(record, default=str, indent=2) + "\n")
    _finish(record)


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
    with Live(watch_view(record), refresh_per_second=4) as live:
        while not is_final(record["state"]):
            time.sleep(every)
            record = _status(app, rollout_id)
            live.update(watch_view(record))
    click.echo(f"rollout {rollout_id}: {record['state']}: {record.get('reason') or ''}")
    _finish(record)


def _intent(app: AppContext, rollout_id: int, intent: OperatorIntent, reason: str | None) -> None:
    from manager.views import intents

    with app.database().write() as session:
        endpoint = intents.request(session, rollout_id, intent, reason, app.actor).endpoint.name
    click.echo(f"rollout {rollout_id}: {intent} requested; {_acts(app, endpoint)}")


def _acts(app: AppContext, endpoint: str) -> str:
    """Who acts on what was just written: the daemon within a tick, or, when no daemon has ticked the
    endpoint lately, a warning on stderr and "nobody yet" (issue 31: the promise was made regardless)."""
    from manager.registry import liveness

    with app.database().read() as session:
        said = liveness.check(session, endpoint).warning()
    if said is None:
        return "the daemon acts within one tick"
    click.echo(said, err=True)
    return "no daemon is running to act on it yet"


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
        endpoint = rollout.endpoint.name
    kept = "rejected" if reject_candidate else "kept approved (`rollout retry` tries it again)"
    click.echo(f"rollout {rollout_id}: abort requested; {_acts(app, endpoint)}; candidate {kept}")


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
        policy = launch.pinned(
            policies.parse(old.policy_yaml, f"rollout {rollout_id}'s policy"), old.candidate
        )
        record = RolloutView.of(launch.start(session, policy, old.policy_yaml, app.actor, utcnow())).record()
    if output == "table":
        click.echo(
            f"rollout {record['rollout']} started: a retry of rollout {rollout_id} ({record['candidate']})"
        )
        _acts(app, record["endpoint"])
    else:
        emit_record(record, output)


@rollout_group.command("promote")
@click.argument("rollout_id", type=int)
@click.option("--full", is_flag=True, help="skip every step left, the analysis too, and promote now")
@click.option("--reason", required=True, help="why (recorded in the history)")
@pass_app
def promote(app: AppContext, rollout_id: int, full: bool, reason: str) -> None:
    """End the current step now and go on with the next, as Argo Rollouts' promote does (at the last
    step: promote). --full promotes at once, without the analysis. Both are recorded with your name."""
    if not full:
        _intent(app, rollout_id, "skip", reason)
        return
    _intent(app, rollout_id, "promote", reason)
    click.echo(
        f"warning: rollout {rollout_id} will be promoted WITHOUT its analysis; recorded in the history",
        err=True,
    )
