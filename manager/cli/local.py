"""`variantctl local-sagemaker serve`: the embedded SageMaker, CloudWatch and Runtime host."""

from __future__ import annotations

from pathlib import Path

import click

from manager.config import ENV_LOCAL_CLOCK


@click.group("local-sagemaker")
def local_group() -> None:
    """The local SageMaker: real endpoints, served on this machine, for boto3."""


@local_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="0 picks a free port"
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="where endpoints, configs and captured data live "
    "[default: ~/.local/share/variantctl/local-sagemaker]",
)
@click.option(
    "--provision-delay",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="seconds an endpoint stays Creating/Updating",
)
@click.option("--metric-bucket-seconds", type=click.IntRange(min=1), default=60, show_default=True)
@click.option(
    "--clock",
    type=click.Choice(["real", "held"]),
    default="real",
    show_default=True,
    envvar=ENV_LOCAL_CLOCK,
    help="held: the host's clock stands still until POST /_local/clock moves it (tests)",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    envvar="VARIANTCTL_LOCAL_ALLOWED_HOSTS",
    help="another name requests may give as Host (loopback names and the bound address always work); "
    "any other Host is refused, against DNS rebinding",
)
def serve(
    host: str,
    port: int,
    state_dir: Path | None,
    provision_delay: float,
    metric_bucket_seconds: int,
    clock: str,
    allowed_hosts: tuple[str, ...],
) -> None:
    """Serve until interrupted; prints the URL to give boto3 as endpoint_url."""
    from manager.config import data_dir
    from manager.errors import UserError
    from manager.local_sagemaker.server import serve as run

    directory = state_dir or data_dir() / "local-sagemaker"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot use state directory {directory}: {exc.strerror}") from None

    if host not in ("127.0.0.1", "::1", "localhost"):
        click.echo(
            f"warning: listening on {host}, not loopback: anyone who can reach it may create models, "
            "and the local SageMaker unpickles model artifacts (running their code). It has no "
            "authentication; serve only trusted artifacts, on a trusted network.",
            err=True,
        )

    def ready(url: str) -> None:
        click.echo(f"local SageMaker listening on {url} (state in {directory})")
        if clock == "held":
            click.echo(f'its clock is held: POST {url}/_local/clock {{"advance": SECONDS}} moves it')
        click.echo("point boto3 at it:")
        services = ("SAGEMAKER", "SAGEMAKER_RUNTIME", "CLOUDWATCH", "S3", "CLOUDWATCH_LOGS")
        for service in (*services, "APPLICATION_AUTO_SCALING"):
            click.echo(f"  export AWS_ENDPOINT_URL_{service}={url}")
        click.echo(f"  (or AWS_ENDPOINT_URL={url} for every service, as the SageMaker SDK needs)")
        click.echo(
            "  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1"
        )

    try:
        run(
            directory,
            host,
            port,
            provision_delay,
            metric_bucket_seconds,
            ready,
            "held" if clock == "held" else "real",
            allowed_hosts,
        )
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
