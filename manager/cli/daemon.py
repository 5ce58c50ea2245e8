"""`variantctl daemon`: reconcile, ingest and retrain until SIGTERM (see `manager.daemon`); and
`variantctl daemon status`: the daemons working a registry, the scheduler's leader, the leases."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from manager.cli.context import AppContext, pass_app
from manager.cli.render import emit, emit_record, output_option


@click.group("daemon", invoke_without_command=True)
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
@click.option(
    "--http",
    "http_address",
    metavar="HOST:PORT",
    help="also serve the dashboard and /metrics there (e.g. 127.0.0.1:8080)",
)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="with --http: operators' `NAME TOKEN` lines, who may act from the dashboard",
)
@click.option(
    "--dashboard-url",
    metavar="URL",
    help="the dashboard as people reach it, for the link in each webhook event "
    "[env: VARIANTCTL_DASHBOARD_URL; default with --http: its address]",
)
@click.option("--once", is_flag=True, help="one ingestion and one tick, then exit")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option(
    "--digests-to",
    metavar="DIR|s3://BUCKET/PREFIX",
    help="write a signed digest of the history there every --digest-every (see `audit digest`)",
)
@click.option("--digest-every", metavar="DURATION", default="1h", show_default=True)
@click.option(
    "--signing-key",
    type=click.Path(path_type=Path, dir_okay=False),
    help="the digests' Ed25519 key [env: VARIANTCTL_SIGNING_KEY; default: signing-key.pem in the data dir]",
)
@click.option(
    "--instance-id",
    metavar="NAME",
    help="this daemon's name among several on one PostgreSQL registry [default: host:pid]",
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(3.0, 3600.0),
    default=30.0,
    show_default=True,
    help="seconds the scheduler's leader lease lasts (PostgreSQL); it is renewed every third of that",
)
@click.pass_context
@pass_app
def daemon(
    app: AppContext,
    ctx: click.Context,
    tick: float,
    ingest_every: float,
    policies_dir: Path | None,
    once: bool,
    log_format: str,
    digests_to: str | None,
    digest_every: str,
    signing_key: Path | None,
    instance_id: str | None,
    lease_ttl: float,
    http_address: str | None,
    token_file: Path | None,
    dashboard_url: str | None,
) -> None:
    """Reconcile rollouts, ingest ground truth, run scheduled retrains and sign the history until SIGTERM.

    On a PostgreSQL registry several daemons may run: each reconciles the rollouts whose endpoint lease
    it holds, and one, elected in the registry, runs the scheduled jobs. `daemon status` shows them."""
    if ctx.invoked_subcommand is not None:
        return
    from manager import daemon as runner
    from manager.clock import parse_duration
    from manager.history import digests

    runner.configure_logging(log_format)
    schedule = None
    if digests_to is not None:
        every = parse_duration(digest_every).total_seconds()
        if every < 1:
            raise click.BadParameter("give at least 1s", param_hint="--digest-every")
        key = signing_key or digests.default_key_path()
        digests.load_private(key)  # refuse a missing or wrong key now, not at the first digest
        schedule = runner.DigestSchedule(digests_to, every, str(key))
    app.database()  # refuse a missing or old registry
    if instance_id is not None and not 0 < len(instance_id) <= 128:
        raise click.BadParameter("give 1-128 characters", param_hint="--instance-id")
    if dashboard_url is not None:
        os.environ["VARIANTCTL_DASHBOARD_URL"] = dashboard_url  # read, and checked, with the other knobs
    from manager.config import DaemonTuning

    DaemonTuning.from_env()  # a bad knob (or URL) is refused before anything starts
    if token_file is not None and http_address is None:
        raise click.BadParameter("serves no dashboard without --http", param_hint="--token-file")
    if http_address is not None:
        from manager.web import auth, serve

        host, port = serve.parse_address(http_address)
        if once:
            raise click.BadParameter("--once runs one tick and exits: it serves nothing", param_hint="--http")
        # a bad token file is refused before anything starts
        operators = auth.Operators.from_file(token_file) if token_file is not None else None
        for warning in auth.warnings(operators, host):
            click.echo(f"warning: {warning}", err=True)
        serve.start_in_thread(app.settings.db_url, host, port, operators)
        serve.reload_on_sighup(operators)
        click.echo(f"dashboard and /metrics on http://{host}:{port}/", err=True)
        _link_default(dashboard_url, host, port)
    runner.run(app.settings.db_url, tick, ingest_every, policies_dir, once, schedule, instance_id, lease_ttl)


def _link_default(given: str | None, host: str, port: int) -> None:
    """Webhook links point at the dashboard this daemon serves, unless an address is given."""
    import socket

    if given is None and not os.environ.get("VARIANTCTL_DASHBOARD_URL"):
        shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
        shown = f"[{shown}]" if ":" in shown else shown
        os.environ["VARIANTCTL_DASHBOARD_URL"] = f"http://{shown}:{port}"


@daemon.command("status")
@output_option
@pass_app
def status(app: AppContext, output: str) -> None:
    """The daemons that work this registry (alive: seen within a minute), the scheduler's leader and
    its epoch, and who holds each endpoint's lease until when."""
    from datetime import timedelta

    from sqlalchemy import select

    from manager.registry import leader
    from manager.registry.tables import DaemonInstance, EndpointLease

    database = app.database()
    with database.read() as session:
        now = leader.database_now(session)
        lease = leader.leader(session)
        daemons = list(session.scalars(select(DaemonInstance).order_by(DaemonInstance.instance)))
        endpoints = list(session.scalars(select(EndpointLease).order_by(EndpointLease.endpoint)))
        rows = [
            {
                "daemon": d.instance,
                "host": d.host,
                "pid": d.pid,
                "alive": now - d.seen_at <= timedelta(minutes=1),
                "leads": lease is not None and lease.holder == d.instance and lease.expires_at > now,
                "seen_at": d.seen_at,
                "ticked_at": d.ticked_at,  # its last reconcile tick (None: it has not ticked yet)
                "tick_seconds": d.tick_seconds,
                "started_at": d.started_at,
            }
            for d in daemons
        ]
        held = [
            {
                "endpoint": e.endpoint,
                "holder": e.owner,
                "expires_at": e.expires_at,
                "held": e.expires_at > now,
            }
            for e in endpoints
        ]
        record: dict[str, Any] = {
            "leader": lease.holder if lease is not None and lease.expires_at > now else None,
            "epoch": lease.epoch if lease is not None else None,
            "lease_expires_at": lease.expires_at if lease is not None else None,
            "daemons": rows,
            "endpoint_leases": held,
        }
    if output == "json":
        import json

        click.echo(json.dumps(record, default=str, indent=2))
        return
    emit_record(
        {k: record[k] for k in ("leader", "epoch", "lease_expires_at")}, output, title="scheduler leader"
    )
    columns = ("daemon", "host", "pid", "alive", "leads", "seen_at", "ticked_at")
    emit(rows, columns, output, title="daemons")
    emit(
        record["endpoint_leases"],
        ("endpoint", "holder", "expires_at", "held"),
        output,
        title="endpoint leases",
    )
