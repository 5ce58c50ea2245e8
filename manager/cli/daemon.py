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
@pass_app
def daemon(
    app: AppContext, tick: float, ingest_every: float, policies_dir: Path | None, once: bool, log_format: str
) -> None:
    """Reconcile rollouts, ingest ground truth and run scheduled retrains until SIGTERM."""
    from manager import daemon as runner

    runner.configure_logging(log_format)
    app.database()  # refuse a missing or old registry
    runner.run(app.settings.db_url, tick, ingest_every, policies_dir, once)
