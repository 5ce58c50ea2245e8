"""`variantctl traffic`: rehearsal requests to an endpoint, and their ground truth later."""

from __future__ import annotations

import click

from manager.cli.context import AppContext, pass_app


@click.command("traffic")
@click.argument("endpoint")
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=20,
    show_default=True,
    help="requests per second (0: unpaced)",
)
@click.option("--duration", default="60s", show_default=True, help="how long: 90s, 10m, 1h")
@click.option(
    "--data",
    metavar="CSV|sklearn:NAME",
    help="rows to send (the target first, no header); the target is the label "
    "[default: the data the endpoint's serving model was trained on]",
)
@click.option(
    "--labels",
    metavar="LOCATION",
    help="write ground truth here: a directory, file:///dir or s3://bucket/prefix",
)
@click.option(
    "--label-delay", default="5s", show_default=True, help="how long after each request its label is written"
)
@click.option(
    "--label-noise",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="share of binary labels flipped",
)
@click.option("--threads", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="which rows are drawn")
@pass_app
def traffic(
    app: AppContext,
    endpoint: str,
    rate: float,
    duration: str,
    data: str | None,
    labels: str | None,
    label_delay: str,
    label_noise: float,
    threads: int,
    seed: int,
) -> None:
    """Send requests to ENDPOINT through boto3 (each with an inference id) and write their labels in
    Model Monitor's format, to rehearse a policy as the demo does. Point boto3 at the local SageMaker
    with AWS_ENDPOINT_URL (see `variantctl local-sagemaker serve`)."""
    import sys

    from rich.console import Console

    from manager.clock import parse_duration
    from manager.demo.loadgen import LabelWriter, Traffic
    from manager.platforms import aws
    from trainers.datasets import load

    seconds = parse_duration(duration).total_seconds()
    delay = parse_duration(label_delay).total_seconds()
    dataset = load(data or _training_data(app, endpoint))
    writer = LabelWriter(labels) if labels else None
    runtime = aws.client("sagemaker-runtime")
    sender = Traffic(runtime, endpoint, dataset.x, dataset.y, writer, rate, delay, label_noise, threads, seed)
    console = Console(stderr=True)
    with console.status(f"{endpoint}: sending") as spinner:
        sender.run(
            seconds,
            lambda t: spinner.update(f"{endpoint}: {t.sent} sent, {t.failed} failed, {t.labelled} labelled"),
        )
    errors = ", ".join(
        f"{code} x{n}: {sender.first_errors[code]}" if code in sender.first_errors else f"{code} x{n}"
        for code, n in sorted(sender.errors.items())
    )
    click.echo(
        f"{endpoint}: {sender.sent} requests answered, {sender.failed} failed"
        + (f" ({errors})" if errors else "")
        + (f", {sender.labelled} labels written to {labels}" if labels else "")
    )
    if sender.sent == 0 and sender.failed:
        sys.exit(1)


def _training_data(app: AppContext, endpoint: str) -> str:
    """Where the rows the endpoint's serving model was trained on can be read again, or one line
    saying what to pass: a model's own training rows are rows it accepts."""
    from pathlib import Path

    from manager.errors import UserError
    from manager.registry import endpoints

    with app.database().read() as session:
        row = endpoints.get(session, endpoint)
        config = row.current_config
        variants = sorted(config.variants, key=lambda v: -v.initial_weight) if config is not None else []
        seen: list[str] = []
        for variant in variants:
            version = variant.model_version
            label, run = version.ref, version.training_run
            inputs = run.inputs if run is not None else {}
            location = inputs.get("location") or inputs.get("dataset")
            if not location:
                seen.append(f"{label} was registered, not trained here")
            elif location.startswith("sklearn:") or Path(location).is_file():
                return str(location)
            else:
                seen.append(f"{label} was trained on {location}, which is not here")
    why = "; ".join(seen) or f"{endpoint} serves no model this registry knows"
    raise UserError(f"cannot tell which rows {endpoint} accepts ({why}): pass --data CSV|sklearn:NAME")
