"""`variantctl daemon`: reconcile, ingest and retrain until SIGTERM (see `manager.daemon`)."""

from __future__ import annotations

from pathlib import Path

import click

from manager.cli.context import AppContext, pass_app


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
@pass_app
def daemon(
    app: AppContext,
    tick: float,
    ingest_every: float,
    policies_dir: Path | None,
    once: bool,
    log_format: str,
    digests_to: str | None,
    digest_every: str,
    signing_key: Path | None,
) -> None:
    """Reconcile rollouts, ingest ground truth, run scheduled retrains and sign the history until SIGTERM."""
    from manager import daemon as runner
    from manager import digests
    from manager.clock import parse_duration

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
    runner.run(app.settings.db_url, tick, ingest_every, policies_dir, once, schedule)
