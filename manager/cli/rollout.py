"""`variantctl rollout ...`, `policy validate`, `daemon` and `demo`: intents in, reconciliation out."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from manager.cli.context import AppContext, pass_app
from manager.cli.render import emit, emit_record, output_option

# The names of manager.simulate.SCENARIOS, kept here so that `--help` imports no numpy.
SCENARIO_NAMES = (
    "aa-accuracy",
    "aa-latency",
    "aa-5xx",
    "accuracy+2pp",
    "accuracy-2pp",
    "accuracy-5pp",
    "latency+5%",
    "5xx-0.5%-to-1.5%",
)
COLUMNS = (
    "rollout",
    "endpoint",
    "baseline",
    "candidate",
    "state",
    "step",
    "phase",
    "weight",
    "intent",
    "reason",
)


def rollout_row(rollout: Any) -> dict[str, Any]:
    return {
        "rollout": rollout.id,
        "endpoint": rollout.endpoint.name,
        "baseline": rollout.baseline.ref,
        "candidate": rollout.candidate.ref,
        "state": rollout.state,
        "step": rollout.step,
        "phase": rollout.phase,
        "weight": rollout.weight,
        "intent": rollout.intent,
        "reason": rollout.reason,
        "created_at": rollout.created_at,
        "finished_at": rollout.finished_at,
        "policy_hash": rollout.policy_hash,
    }


@click.group("policy")
def policy_group() -> None:
    """Rollout policies."""


@policy_group.command("validate")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@output_option
def validate(path: Path, output: str) -> None:
    """Check a policy; print the plan it implies."""
    from manager import policy as policies

    policy, _ = policies.load(path)
    rows = policies.describe_plan(policy)
    if output != "table":
        emit(rows, ("step", "what", "until"), output)
        return
    emit(rows, ("step", "what", "until"), output, title=f"{policy.name}: {policy.target.endpoint}")
    metrics = [
        {
            "metric": m.name,
            "role": m.role + (" (dry run)" if m.dry_run else ""),
            "source": m.source,
            "test": m.test.type,
            "margin": m.test.margin,
            "alpha": m.alpha,
            "min samples": m.min_samples,
            "no data": m.on_no_data,
        }
        for m in policy.metrics
    ]
    emit(metrics, tuple(metrics[0]), output, title="metrics")
    d = policy.decisions
    click.echo(
        f"longest possible duration: {policies.longest_duration(policy)}; at most {d.max_samples} samples "
        f"per arm; inconclusive -> {d.on_inconclusive}; promotion by {d.promotion.mode}"
    )


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
    from manager.registry import rollouts

    policy, text = policies.load(path)
    with app.database().write() as session:
        record = rollout_row(rollouts.start(session, policy, text, app.actor, utcnow()))
    if output == "table":
        click.echo(
            f"rollout {record['rollout']} started: {record['candidate']} beside {record['baseline']} on "
            f"{record['endpoint']}; `variantctl daemon` carries it out"
        )
    else:
        emit_record(record, output)


@rollout_group.command("list")
@click.option("--all", "everything", is_flag=True, help="finished rollouts too")
@output_option
@pass_app
def list_rollouts(app: AppContext, everything: bool, output: str) -> None:
    """Rollouts, newest first."""
    from sqlalchemy import select

    from manager.registry.tables import Rollout
    from manager.registry.vocabulary import ACTIVE_ROLLOUT_STATES

    with app.database().read() as session:
        stmt = select(Rollout).order_by(Rollout.id.desc())
        if not everything:
            stmt = stmt.where(Rollout.state.in_(ACTIVE_ROLLOUT_STATES))
        rows = [rollout_row(r) for r in session.scalars(stmt)]
    emit(rows, COLUMNS, output, title="rollouts", empty="no active rollouts (--all for finished ones)")


def _status(app: AppContext, rollout_id: int) -> dict[str, Any]:
    from manager import policy as policies
    from manager.errors import NotFound
    from manager.registry import rollouts
    from manager.registry.tables import Rollout

    with app.database().read() as session:
        rollout = session.get(Rollout, rollout_id)
        if rollout is None:
            raise NotFound(f"no rollout {rollout_id}")
        policy = policies.parse(rollout.policy_yaml)
        record = rollout_row(rollout)
        data = rollouts.phase_data(
            session,
            rollout_id,
            [m.measure for m in policy.metrics],
            policy.target.baseline_variant,
            policy.target.candidate_variant,
        )
    plan = policies.describe_plan(policy)
    record["next"] = plan[rollout.step]["what"] if rollout.step < len(plan) else "promote"
    metrics = {}
    from manager.rollout.decide import judge

    for metric in policy.metrics:
        verdict = judge(metric, data.get(metric.measure, []), rollout.phase, policy, harm_only=False)
        metrics[metric.name] = {"status": verdict.status, **verdict.evidence}
    record["metrics"] = metrics
    return record


@rollout_group.command("status")
@click.argument("rollout_id", type=int)
@output_option
@pass_app
def status(app: AppContext, rollout_id: int, output: str) -> None:
    """Phase, weights, samples per arm, and each metric's interval."""
    record = _status(app, rollout_id)
    if output == "table":
        metrics = record.pop("metrics")
        emit_record(record, output, title=f"rollout {rollout_id}")
        emit(
            [{"metric": k, **_metric_cells(v)} for k, v in metrics.items()],
            ("metric", "status", "baseline", "candidate", "interval"),
            output,
            title="metrics (current phase)",
        )
    else:
        sys.stdout.write(json.dumps(record, default=str, indent=2) + "\n")


def _metric_cells(v: dict[str, Any]) -> dict[str, str]:
    if "e_value" in v:
        return {
            "status": v["status"],
            "baseline": f"{v['baseline_errors']:g}/{v['baseline_requests']:g}",
            "candidate": f"{v['candidate_errors']:g}/{v['candidate_requests']:g}",
            "interval": f"e-value {v['e_value']:.3g} (reject at {v['threshold']:g})",
        }
    if "baseline_mean" not in v:
        return {"status": v["status"], "baseline": "-", "candidate": "-", "interval": "-"}
    interval = (
        f"[{v['improvement_low']:+.4f}, {v['improvement_high']:+.4f}] vs -{v['margin']:g}"
        if "improvement_low" in v
        else ""
    )
    return {
        "status": v["status"],
        "baseline": f"{v['baseline_mean']:.4g} (n={v['baseline_n']:g})",
        "candidate": f"{v['candidate_mean']:.4g} (n={v['candidate_n']:g})",
        "interval": interval,
    }


@rollout_group.command("watch")
@click.argument("rollout_id", type=int)
@click.option(
    "--every", type=click.FloatRange(0.2), default=2.0, show_default=True, help="seconds between looks"
)
@pass_app
def watch(app: AppContext, rollout_id: int, every: float) -> None:
    """A live view until the rollout ends (Ctrl-C to stop watching; the rollout goes on)."""
    import time

    from rich.console import Group
    from rich.live import Live
    from rich.table import Table

    def view() -> tuple[Any, str]:
        record = _status(app, rollout_id)
        head = Table(show_header=False, box=None)
        for key in (
            "endpoint",
            "baseline",
            "candidate",
            "state",
            "step",
            "phase",
            "weight",
            "next",
            "reason",
        ):
            head.add_row(key, str(record.get(key) if record.get(key) is not None else ""))
        table = Table(title="metrics (current phase)")
        for column in ("metric", "status", "baseline", "candidate", "interval"):
            table.add_column(column)
        for name, v in record["metrics"].items():
            cells = _metric_cells(v)
            table.add_row(name, cells["status"], cells["baseline"], cells["candidate"], cells["interval"])
        return Group(head, table), record["state"]

    with Live(view()[0], refresh_per_second=4) as live:
        while True:
            renderable, state = view()
            live.update(renderable)
            if state in ("promoted", "rolled_back", "aborted", "failed"):
                return
            time.sleep(every)


def _intent(app: AppContext, rollout_id: int, intent: str, reason: str | None) -> None:
    from manager.registry import rollouts

    with app.database().write() as session:
        rollouts.set_intent(session, rollout_id, intent, reason, app.actor)
    click.echo(f"rollout {rollout_id}: {intent} requested; the daemon acts within one tick")


def _intent_command(intent: str, summary: str) -> None:
    """`rollout pause|resume|abort ID [--reason]`: each writes one intent, nothing more."""

    @click.argument("rollout_id", type=int)
    @click.option("--reason", help="recorded in the history")
    @pass_app
    def command(app: AppContext, rollout_id: int, reason: str | None) -> None:
        _intent(app, rollout_id, intent, reason)

    command.__doc__ = summary
    rollout_group.command(intent)(command)


_intent_command("pause", "Hold the rollout where it is.")
_intent_command("resume", "Continue a paused rollout (or release a manual gate).")
_intent_command("abort", "Roll back now.")


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


@click.command("daemon")
@click.option(
    "--tick", type=click.FloatRange(0.1), default=15.0, show_default=True, help="seconds between ticks"
)
@click.option("--ingest-every", type=click.FloatRange(0.1), default=60.0, show_default=True)
@click.option(
    "--policies",
    "policies_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="a directory of policies whose cron triggers retrain and roll out",
)
@click.option("--once", is_flag=True, help="one ingestion and one tick, then exit")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_app
def daemon(
    app: AppContext, tick: float, ingest_every: float, policies_dir: Path | None, once: bool, log_format: str
) -> None:
    """Reconcile rollouts, ingest ground truth and run scheduled retrains until SIGTERM."""
    from manager import daemon as runner

    runner.configure_logging(log_format)
    app.database()  # refuse a missing or old registry
    runner.run(app.settings.db_url, tick, ingest_every, policies_dir, once)


@click.command("demo")
@click.option(
    "--scenario",
    type=click.Choice(["promote", "regression", "error-spike"]),
    default="promote",
    show_default=True,
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path(".variantctl/demo"),
    show_default=True,
    help="the demo's own registry, local SageMaker state, capture and labels",
)
def demo(scenario: str, workdir: Path) -> None:
    """The whole product on this machine: train, deploy, roll out under live traffic, decide."""
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from manager import demo as runner
    from manager.errors import UserError

    marker = workdir / ".variantctl-demo"
    if workdir.exists() and any(workdir.iterdir()):
        if not marker.exists():
            raise UserError(f"{workdir} is not empty and not a demo directory; choose another --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    marker.touch()
    console = Console()
    table = Table(title=f"rollout ({scenario})")
    for column in ("state", "step", "phase", "candidate %", "requests", "last action"):
        table.add_column(column)
    with Live(table, console=console, refresh_per_second=4, transient=False) as live:

        def on_tick(s: dict[str, Any]) -> None:
            table.add_row(
                s["state"],
                str(s["step"]),
                str(s["phase"]),
                f"{s['weight']:g}",
                str(s["sent"]),
                f"{s['did']} {s['detail']}"[:60],
            )
            live.refresh()

        result = runner.run(workdir.absolute(), scenario, on_tick, say=lambda m: console.print(m))
    console.print()
    console.print(
        f"[5/6] [bold]{result['outcome']}[/bold]: {result['reason']} "
        f"({result['requests']} requests, {result['failed_requests']} failed)"
    )
    metrics = result["evidence"].get("metrics", {})
    for name, v in metrics.items():
        cells = _metric_cells(v)
        console.print(
            f"      {name}: {cells['status']}; baseline {cells['baseline']}, candidate {cells['candidate']}"
            f"{'; ' + cells['interval'] if cells['interval'] else ''}"
        )
    console.print(
        f"[6/6] the history: variantctl --db {workdir / 'registry.db'} history --endpoint churn-demo"
    )
    if result["outcome"] not in ("promoted", "rolled_back"):
        sys.exit(1)


@click.command("simulate")
@click.option("--policy", "path", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--scenario",
    type=click.Choice(SCENARIO_NAMES),
    help="a named scenario (or describe one with --kind/--baseline/--effect)",
)
@click.option(
    "--kind", type=click.Choice(["proportion", "mean", "errors"]), help="the stream: rates, values or errors"
)
@click.option("--baseline", type=float, help="the baseline's rate, or its median for lognormal values")
@click.option(
    "--effect",
    type=float,
    default=0.0,
    show_default=True,
    help="added to the rate; for values, the relative change of the mean",
)
@click.option("--sigma", type=float, default=0.5, show_default=True, help="lognormal shape, for values")
@click.option("--higher-is-better/--lower-is-better", default=True, show_default=True)
@click.option(
    "--traffic", type=click.FloatRange(min=1), default=1000, show_default=True, help="requests per minute"
)
@click.option("--label-delay", type=click.FloatRange(min=0), default=0, show_default=True, help="minutes")
@click.option(
    "--check-every",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="requests per arm between looks, at an even split",
)
@click.option("--max-per-arm", type=click.IntRange(min=100), default=20_000, show_default=True)
@click.option("--runs", type=click.IntRange(min=10), default=2000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--processes", type=click.IntRange(min=1), default=2, show_default=True)
@output_option
def simulate(
    path: Path,
    scenario: str | None,
    kind: str | None,
    baseline: float | None,
    effect: float,
    sigma: float,
    higher_is_better: bool,
    traffic: float,
    label_delay: float,
    check_every: int,
    max_per_arm: int,
    runs: int,
    seed: int,
    processes: int,
    output: str,
) -> None:
    """How often a policy promotes, rolls back or stays undecided on synthetic streams (through `decide`)."""
    from rich.progress import Progress

    from manager import policy as policies
    from manager.errors import UserError
    from manager.simulate import SCENARIOS, Scenario, Streams, metric_for
    from manager.simulate import simulate as monte_carlo

    policy, text = policies.load(path)
    if scenario:
        chosen = SCENARIOS[scenario]
    elif kind and baseline is not None:
        chosen = Scenario("custom", kind, baseline, effect, sigma, higher_is_better)  # type: ignore[arg-type]
    else:
        raise UserError("give --scenario, or --kind and --baseline (with --effect)")
    try:
        metric_for(policy, chosen)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    streams = Streams(traffic, label_delay, check_every, max_per_arm)
    with Progress(transient=True, disable=output != "table") as bar:
        task = bar.add_task(f"{chosen.name}: {runs} runs", total=runs)
        summary = monte_carlo(
            text,
            chosen,
            streams,
            runs,
            seed,
            processes,
            progress=lambda done: bar.update(task, completed=done),
        )
    record = {
        "scenario": summary.scenario,
        "truth": summary.truth,
        "runs": summary.runs,
        "p_promote": summary.promote,
        "p_rollback": summary.rollback,
        "p_undecided": summary.undecided,
        "se_promote": summary.se(summary.promote),
        "se_rollback": summary.se(summary.rollback),
        "se_undecided": summary.se(summary.undecided),
        "median_samples_per_arm": summary.median_per_arm,
        "p90_samples_per_arm": summary.p90_per_arm,
        "median_minutes": summary.median_minutes,
        "p90_minutes": summary.p90_minutes,
        "harm_exposure": summary.exposure,
    }
    if output != "table":
        emit_record(record, output)
        return
    shown = {
        "scenario": f"{summary.scenario} (the candidate is {summary.truth})",
        "P(promote)": f"{summary.promote:.4f} ± {record['se_promote']:.4f}",
        "P(rollback)": f"{summary.rollback:.4f} ± {record['se_rollback']:.4f}",
        "P(undecided)": f"{summary.undecided:.4f} ± {record['se_undecided']:.4f}",
        "samples per arm to a decision": f"median {summary.median_per_arm:,.0f}, "
        f"p90 {summary.p90_per_arm:,.0f}",
        "minutes to a decision": f"median {summary.median_minutes:,.1f}, p90 {summary.p90_minutes:,.1f}",
        "harm exposure": f"{summary.exposure:,.0f} requests served by the worse model (mean)",
    }
    emit_record(shown, "table", title=f"{policy.name}: {runs} seeded runs")
