"""`variantctl dashboard`: the web dashboard over the registry."""

from __future__ import annotations

from pathlib import Path

import click

from manager.cli.context import AppContext, pass_app


@click.command("dashboard")
@click.option("--host", default="127.0.0.1", show_default=True, help="the address to listen on")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="operators' `NAME TOKEN` lines: with it, signed-in operators may pause, resume, approve,"
    " abort and promote (without it the dashboard is read-only)",
)
@click.option(
    "--poll",
    type=click.FloatRange(0.5, 3600),
    default=2.0,
    show_default=True,
    help="seconds between live updates",
)
@pass_app
def dashboard(app: AppContext, host: str, port: int, token_file: Path | None, poll: float) -> None:
    """Endpoints, rollouts (live, with their charts), models and the history in a browser; /metrics
    for Prometheus. Read-only unless given --token-file."""
    import socket

    from manager.errors import UserError
    from manager.web import auth, serve

    app.database()  # refuse a missing or old registry before listening
    operators = auth.Operators.from_file(token_file) if token_file is not None else None
    for warning in auth.warnings(operators, host):
        click.echo(f"warning: {warning}", err=True)
    serving = serve.server(app.settings.db_url, host, port, operators, poll)
    serve.reload_on_sighup(operators)
    try:
        with socket.create_server((host, port)):
            pass  # in use, or not an address of this machine: one line, not a traceback
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    mode = f"{len(operators.tokens)} operators may act" if operators else "read-only"
    click.echo(f"dashboard on http://{host}:{port}/ ({mode}); Ctrl-C to stop", err=True)
    serving.run()
