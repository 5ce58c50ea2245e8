"""`variantctl endpoints list|show`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from manager.cli.context import AppContext, pass_app
from manager.cli.render import emit, emit_record, output_option
from manager.clock import format_instant, parse_instant
from manager.views.rows import endpoint_row

if TYPE_CHECKING:
    from manager.platforms.base import EndpointState

AT_RECORD_COLUMNS = (
    "endpoint",
    "at",
    "status",
    "config",
    "config_by",
    "capture",
    "variants",
    "rollout",
    "status_by",
    "exact",
    "note",
)
LIST_COLUMNS = ("endpoint", "platform", "region", "status", "config", "variants", "observed_at")


@click.group("endpoints")
def endpoints_group() -> None:
    """Endpoints and the variants they serve."""


AT_HELP = "as of this instant, from the history: ISO 8601 (naive is UTC) or a duration ago (7d, 2h)"
AT_COLUMNS = ("endpoint", "status", "config", "variants", "rollout", "since")


def _source(source: Any) -> str | None:
    if source is None:
        return None
    return f"seq {source.seq} {source.action} by {source.actor} at {source.at:%Y-%m-%d %H:%M:%S}" + (
        f": {source.reason}" if source.reason else ""
    )


def _variants_text(state: Any) -> dict[str, str]:
    out = {}
    for v in state.variants:
        lineage = v.lineage
        origin = (
            f"training run {lineage['training_run']}"
            if lineage.get("training_run") is not None
            else "no training run"
        )
        if lineage.get("dataset_fingerprint"):
            origin += f", data {str(lineage['dataset_fingerprint'])[:12]}"
        if lineage.get("model_package"):
            from manager.views.rows import package_lineage

            origin += f", model package {package_lineage(lineage['model_package'])}"
        share = "shadow" if v.shadow else f"{v.share:.4g}%"
        out[v.variant] = f"{v.model} {share} ({origin})"
    return out


def _rollout_text(state: Any) -> str | None:
    r = state.rollout
    if r is None:
        return None
    phase = f", phase {r.phase} at {r.weight:g}%" if r.phase is not None else ""
    versus = f"{r.candidate} vs {r.baseline}"
    return f"{r.rollout} {r.state}: step {r.step}{phase}; {versus}, started by {r.started_by}"


def at_row(state: Any) -> dict[str, Any]:
    return {
        "endpoint": state.endpoint,
        "status": state.status,
        "config": state.config,
        "variants": _variants_text(state),
        "rollout": _rollout_text(state),
        "since": f"seq {state.config_by.seq}" if state.config_by else None,
    }


def _at_record(state: Any) -> dict[str, Any]:
    """One endpoint at an instant, for people: each part with the event that put it in place."""
    record: dict[str, Any] = {
        "endpoint": state.endpoint,
        "at": state.at,
        "status": state.status,
        "status set by": _source(state.status_by),
        "config": state.config,
        "config set by": _source(state.config_by),
        "capture": state.capture,
    }
    for variant, text in _variants_text(state).items():
        record[f"variant {variant}"] = text
    moved = {
        v.weight_by for v in state.variants if v.weight_by is not None and v.weight_by != state.config_by
    }
    for source in sorted(moved, key=lambda s: s.seq):
        record["weights set by"] = _source(source)
    if state.rollout is not None:
        record["rollout"] = _rollout_text(state)
        record["rollout started by"] = _source(state.rollout.started)
        record["rollout's last event"] = _source(state.rollout.last)
    else:
        record["rollout"] = "none in progress"
    if not state.exact:
        record["exact"] = f"no: {state.note}"
    return record


@endpoints_group.command("list")
@click.option("--at", "at_text", metavar="TIME", help=AT_HELP)
@output_option
@pass_app
def list_endpoints(app: AppContext, output: str, at_text: str | None) -> None:
    """List endpoints with their current config and variants (or as they were at --at)."""
    from manager.registry import endpoints

    if at_text is not None:
        from manager.history import timeline

        at = parse_instant(at_text)
        with app.database().read() as session:
            states = timeline.endpoints_at(session, at)
        if output == "table":
            rows = [at_row(s) for s in states]
            emit(
                rows,
                AT_COLUMNS,
                output,
                title=f"endpoints at {format_instant(at)}",
                empty="no endpoints then",
            )
        else:
            emit([s.record() for s in states], AT_RECORD_COLUMNS, output, empty="no endpoints then")
        return
    from manager.registry import rollouts

    with app.database().read() as session:
        active = {v.endpoint: v for v in rollouts.views(session)}
        rows = [endpoint_row(r, active.get(r.name)) for r in endpoints.list_endpoints(session)]
    emit(rows, LIST_COLUMNS, output, title="endpoints", empty="no endpoints yet")


@endpoints_group.command("show")
@click.argument("name")
@click.option("--at", "at_text", metavar="TIME", help=AT_HELP)
@output_option
@pass_app
def show(app: AppContext, name: str, output: str, at_text: str | None) -> None:
    """Show one endpoint: now, or what it served at --at and the events that put it in place."""
    from manager.registry import endpoints

    if at_text is not None:
        from manager.errors import NotFound
        from manager.history import timeline

        at = parse_instant(at_text)
        with app.database().read() as session:
            state = timeline.state_at(session, name, at)
        if state is None:
            raise NotFound(f"the history knows no endpoint {name!r} at {format_instant(at)}")
        emit_record(_at_record(state) if output == "table" else state.record(), output, title=name)
        return

    from manager.registry import rollouts

    with app.database().read() as session:
        running = rollouts.active_on(session, name)
        record = endpoint_row(
            endpoints.get(session, name), rollouts.RolloutView.of(running) if running else None
        )
        ingest = endpoints.ingest_status(session, name)
    if output == "table":
        record.pop("variant_details")
        record["ingested records"] = ingest["records_read"]
        record["malformed skipped"] = ingest["malformed_skipped"]
        record["waiting for labels"] = ingest["predictions_waiting_for_labels"]
        record["expired unjoined"] = ingest["expired_unjoined"]
        record["read errors"] = "; ".join(ingest["read_errors"]) or None
    else:
        record["ingestion"] = ingest
    emit_record(record, output, title=name)


@endpoints_group.command("status")
@click.argument("name")
@click.option("--wait", is_flag=True, help="wait until the endpoint is no longer Creating or Updating")
@click.option(
    "--timeout", type=click.FloatRange(min=0), default=1800, show_default=True, help="seconds to wait"
)
@click.option(
    "--poll", type=click.FloatRange(min=0.05), default=5.0, show_default=True, help="seconds between looks"
)
@output_option
@pass_app
def live_status(app: AppContext, name: str, wait: bool, timeout: float, poll: float, output: str) -> None:
    """The endpoint as SageMaker reports it now (AWS, or AWS_ENDPOINT_URL such as the local SageMaker).
    A managed endpoint's status in the registry is updated too (`endpoints list` shows it)."""
    import sys

    from rich.console import Console

    from manager.platforms import factory
    from manager.platforms.base import PlatformError
    from manager.platforms.traffic import wait_for

    platform = factory.platform()
    state = platform.describe(name)
    if state is None:
        from manager.errors import NotFound

        raise NotFound(f"SageMaker has no endpoint {name!r}")
    if wait and state.busy:
        console = Console(stderr=True)
        with console.status(f"{name}: {state.status}") as spinner:

            def show(current: EndpointState) -> None:
                spinner.update(
                    f"{name}: {current.status}"
                    + (f" -> {current.pending_config}" if current.pending_config else "")
                )

            try:
                state = wait_for(platform, name, lambda s: not s.busy, timeout, poll, show)
            except PlatformError as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(1)
    record = {
        "endpoint": state.name,
        "status": state.status,
        "config": state.config_name,
        "pending_config": state.pending_config,
        "failure_reason": state.failure_reason,
        "variants": {
            v.name: f"weight {v.current_weight:g} ({share:.1%})"
            for v, share in zip(state.variants, state.shares().values(), strict=True)
        },
    }
    _remember(app, state)
    emit_record(record, output, title=name)
    if state.broken:
        sys.exit(1)


def _remember(app: AppContext, state: EndpointState) -> None:
    """The observed status into the registry, when there is one that manages this endpoint."""
    from manager.clock import utcnow
    from manager.errors import UserError
    from manager.registry import endpoints

    try:
        database = app.database()
    except UserError:
        return  # no registry here (or an old one): a live look needs none
    with database.write() as session:
        endpoints.observe(session, state.name, state.status, state.region, utcnow())
    from manager.rollout.endpoints import settle

    settle(database, state, app.actor)


@endpoints_group.command("create")
@click.argument("name")
@click.option("--model", "model_ref", required=True, metavar="NAME[:VERSION]", help="the version to serve")
@click.option("--variant", default="baseline", show_default=True)
@click.option("--instance-type", default="ml.m5.large", show_default=True)
@click.option("--instance-count", type=click.IntRange(1, 100), default=1, show_default=True)
@click.option("--capture", metavar="S3_URI", help="turn data capture on, to this destination")
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0), default=1800, show_default=True)
@pass_app
def create(
    app: AppContext,
    name: str,
    model_ref: str,
    variant: str,
    instance_type: str,
    instance_count: int,
    capture: str | None,
    wait: bool,
    timeout: float,
) -> None:
    """Create an endpoint serving one registered version, and manage it from now on. Waits until
    SageMaker has decided: exit 0 when it serves, 1 with SageMaker's reason when it failed."""
    from rich.console import Console

    from manager.platforms import factory
    from manager.rollout import endpoints

    with app.database().read() as session:
        model_ref = endpoints.deployable(session, model_ref).ref  # `sugar` said as `sugar:2`
    platform = factory.platform()
    options: dict[str, Any] = {
        "variant": variant,
        "instance_type": instance_type,
        "instance_count": instance_count,
        "capture": capture,
    }
    if not wait:
        config = endpoints.create(app.database(), platform, name, model_ref, app.actor, **options)
        click.echo(
            f"endpoint {name} is being created with config {config} to serve {model_ref}; "
            f"`variantctl endpoints status {name} --wait` records when it serves"
        )
        return
    with Console(stderr=True).status(f"{name}: creating") as spinner:
        state = endpoints.create_and_wait(
            app.database(),
            platform,
            name,
            model_ref,
            app.actor,
            timeout=timeout,
            on_poll=lambda s: spinner.update(f"{name}: {s.status}"),
            **options,
        )
    click.echo(f"endpoint {name}: {state.status}, serving {model_ref} (config {state.config_name})")


@endpoints_group.command("forget")
@click.argument("name")
@click.option("--reason", required=True, help="recorded in the history")
@click.option(
    "--delete-endpoint", is_flag=True, help="also delete the endpoint on SageMaker (e.g. one that Failed)"
)
@pass_app
def forget(app: AppContext, name: str, reason: str, delete_endpoint: bool) -> None:
    """Stop managing an endpoint (the history keeps everything it did)."""
    from manager.rollout import endpoints

    platform = None
    if delete_endpoint:
        from manager.platforms import factory

        platform = factory.platform()
    endpoints.forget(app.database(), platform, name, app.actor, reason)
    deleted = (
        " and its SageMaker endpoint is being deleted (it shows Deleting until gone)"
        if delete_endpoint
        else " (SageMaker's endpoint is untouched)"
    )
    click.echo(f"endpoint {name} is no longer managed{deleted}")


@endpoints_group.command("adopt")
@click.argument("name")
@click.option("--framework", default="sklearn", show_default=True, help="for versions registered on the way")
@pass_app
def adopt(app: AppContext, name: str, framework: str) -> None:
    """Manage an endpoint that already runs on SageMaker, as `DescribeEndpoint` reports it. Each
    variant's model is the registry version with the same artifact, or one registered from it."""
    from manager.platforms import factory
    from manager.rollout import endpoints

    refs = endpoints.adopt(app.database(), factory.platform(), name, app.actor, framework)
    click.echo(f"endpoint {name} is managed now, serving {', '.join(refs)}")


from manager.cli import endpoint_ops  # noqa: E402 - its commands join this group

endpoint_ops.register(endpoints_group)
