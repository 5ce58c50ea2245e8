"""`variantctl rollout undo`: back to a previous version, as a recorded rollout (`rollout.undo`)."""

from __future__ import annotations

from pathlib import Path

import click

from manager.cli.context import AppContext, pass_app


@click.command("undo")
@click.argument("endpoint")
@click.option("--to-version", type=click.IntRange(min=1), help="this version of the serving model")
@click.option(
    "--policy",
    "path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="the policy to go back under [default: the endpoint's last rollout's]",
)
@click.option("--reason", required=True, help="why (recorded in the history)")
@pass_app
def undo(app: AppContext, endpoint: str, to_version: int | None, path: Path | None, reason: str) -> None:
    """Go back to the version the last promotion on ENDPOINT replaced (or --to-version N), as a rollout
    under a policy: its steps and checks apply, and the history says it is an undo."""
    from manager.clock import utcnow
    from manager.rollout import undo as undoing

    text = path.read_text() if path is not None else None
    with app.database().write() as session:
        rollout = undoing.start(session, endpoint, to_version, text, reason, app.actor, utcnow())
        said = f"rollout {rollout.id} started: undo to {rollout.candidate.ref} beside {rollout.baseline.ref}"
    click.echo(f"{said} on {endpoint}; `variantctl daemon` carries it out")
