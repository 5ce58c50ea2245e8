"""`variantctl endpoints history` (what an endpoint served, when, for how long, under which rollout)
and `variantctl endpoints set-weights` (an operator's weights, recorded; never under a rollout)."""

from __future__ import annotations

import click

from manager.cli.context import AppContext, pass_app
from manager.cli.render import emit, output_option


def register(group: click.Group) -> None:
    group.add_command(history)
    group.add_command(set_weights)


@click.command("history")
@click.argument("name")
@output_option
@pass_app
def history(app: AppContext, name: str, output: str) -> None:
    """What NAME has served, oldest first: each config from when until when, its models, who put it
    there and under which rollout, and the history event's seq (`history show SEQ`)."""
    from manager.history import served

    with app.database().read() as session:
        rows = served.served(session, name)
    emit(
        rows, served.COLUMNS, output, title=f"{name}: what it served", empty=f"{name} has served nothing yet"
    )


@click.command("set-weights")
@click.argument("name")
@click.argument("weights", nargs=-1, metavar="VARIANT=WEIGHT...")
@click.option("--reason", required=True, help="why (recorded in the history)")
@click.option("--timeout", type=click.FloatRange(min=0), default=1800, show_default=True, help="seconds")
@pass_app
def set_weights(app: AppContext, name: str, weights: tuple[str, ...], reason: str, timeout: float) -> None:
    """Set NAME's variant weights by hand (relative: a share is a weight over the sum), as the SageMaker
    console does: recorded in the history with your name and reason, and refused while a rollout owns
    the endpoint. They hold until its config changes."""
    from rich.console import Console

    from manager.platforms import factory
    from manager.rollout import weights as operator_weights

    wanted = operator_weights.parse(weights)
    operator_weights.planned(app.database(), name, wanted)  # refused before any call to SageMaker
    with Console(stderr=True).status(f"{name}: updating weights") as spinner:
        done = operator_weights.apply(
            app.database(),
            factory.platform(),
            name,
            wanted,
            app.actor,
            reason,
            timeout,
            lambda s: spinner.update(f"{name}: {s.status}"),
        )
    shares = ", ".join(f"{v} {share:g}%" for v, share in done["shares"].items())
    click.echo(f"endpoint {name} serves {shares} (weights {done['weights']}); recorded in the history")
