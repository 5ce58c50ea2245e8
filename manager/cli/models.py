"""`variantctl models register|list|show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from manager.cli.context import AppContext, pass_app
from manager.cli.render import emit, emit_record, output_option
from manager.errors import UserError
from manager.registry.vocabulary import MODEL_STATUSES
from manager.views.rows import headline, metrics_text, model_row

if TYPE_CHECKING:
    pass

LIST_COLUMNS: tuple[str, ...] = ("model", "status", "framework", "artifact_uri", "metrics", "created_at")


def parse_metrics(pairs: tuple[str, ...], metrics_file: Path | None) -> dict[str, Any]:
    """`--metric auc=0.93` pairs over an optional JSON file of metrics."""
    metrics: dict[str, Any] = {}
    if metrics_file is not None:
        try:
            loaded = json.loads(metrics_file.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read metrics from {metrics_file}: {exc}") from None
        if not isinstance(loaded, dict):
            raise UserError(f"{metrics_file} must hold a JSON object of metric names to values")
        metrics.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"invalid --metric {pair!r}: use NAME=NUMBER, e.g. auc=0.93")
        try:
            metrics[key] = float(value)
        except ValueError:
            raise UserError(f"invalid --metric {pair!r}: {value!r} is not a number") from None
    return metrics


@click.group("models")
def models_group() -> None:
    """Model versions in the registry."""


@models_group.command("register")
@click.argument("name")
@click.option(
    "--artifact",
    "artifact_uri",
    required=True,
    help="s3://bucket/key/model.tar.gz, file:///path, or a local path",
)
@click.option("--framework", required=True, help="e.g. sklearn, xgboost")
@click.option("--framework-version", help="e.g. 1.9.1")
@click.option("--image-uri", help="serving container image")
@click.option(
    "--metric", "metric_pairs", multiple=True, metavar="NAME=NUMBER", help="an offline metric; repeatable"
)
@click.option(
    "--metrics-file", type=click.Path(path_type=Path, dir_okay=False), help="JSON object of offline metrics"
)
@click.option("--fingerprint", "dataset_fingerprint", help="sha256 of the training data")
@click.option("--description")
@click.option("--status", default="candidate", show_default=True, type=click.Choice(MODEL_STATUSES))
@click.option("--version", type=click.IntRange(min=1), help="default: the next version of NAME")
@output_option
@pass_app
def register(
    app: AppContext,
    name: str,
    artifact_uri: str,
    framework: str,
    framework_version: str | None,
    image_uri: str | None,
    metric_pairs: tuple[str, ...],
    metrics_file: Path | None,
    dataset_fingerprint: str | None,
    description: str | None,
    status: str,
    version: int | None,
    output: str,
) -> None:
    """Register an existing model artifact as a new version of NAME."""
    from manager.registry import models
    from manager.registry.vocabulary import ModelStatus

    spec = models.NewVersion(
        name=name,
        artifact_uri=artifact_uri,
        framework=framework,
        framework_version=framework_version,
        image_uri=image_uri,
        metrics=parse_metrics(metric_pairs, metrics_file),
        dataset_fingerprint=dataset_fingerprint,
        description=description,
        status=cast("ModelStatus", status),  # click.Choice(MODEL_STATUSES) checked it
        version=version,
    )
    database = app.database()
    with database.write() as session:
        row = models.register(session, spec, app.actor)
        record = model_row(row)
    if output == "table":
        click.echo(f"registered {record['model']} ({record['status']}) from {record['artifact_uri']}")
    else:
        emit_record(record, output)


@models_group.command("list")
@click.option("--name", help="only versions of this model")
@click.option("--status", type=click.Choice(MODEL_STATUSES))
@output_option
@pass_app
def list_models(app: AppContext, name: str | None, status: str | None, output: str) -> None:
    """List model versions, newest version first."""
    from manager.registry import models

    with app.database().read() as session:
        rows = [model_row(r) for r in models.list_versions(session, name, status)]
    if output == "table":
        for row in rows:
            row["metrics"] = headline(row["metrics"])
        columns = LIST_COLUMNS
    else:
        columns = tuple(rows[0]) if rows else LIST_COLUMNS
    emit(rows, columns, output, title="models", empty="no models registered")


@models_group.command("show")
@click.argument("ref", metavar="NAME[:VERSION]")
@output_option
@pass_app
def show(app: AppContext, ref: str, output: str) -> None:
    """Show one model version (the newest when VERSION is omitted), with its model package and the
    outcomes written back to it."""
    from manager.registry import models
    from manager.views.rows import writebacks_of

    with app.database().read() as session:
        version = models.get(session, ref)
        record = model_row(version)
        if version.model_package_arn:
            record["package_writebacks"] = writebacks_of(session, version)
    if output == "table":  # people read 4 significant digits per split; json and csv keep every digit
        record["metrics"] = metrics_text(record["metrics"])
        if "package_writebacks" in record:
            record["package_writebacks"] = "; ".join(record["package_writebacks"]) or "none yet"
    emit_record(record, output, title=record["model"])


@models_group.command("import")
@click.option("--model-package-arn", "arn", required=True, help="a versioned SageMaker model package")
@click.option("--name", help="the model it is a version of [default: the package's group]")
@output_option
@pass_app
def import_package(app: AppContext, arn: str, name: str | None, output: str) -> None:
    """Register an existing SageMaker model package as a version, with the package as its lineage:
    Approved packages come in approved, Rejected ones rejected, the rest as candidates."""
    from manager.platforms.factory import model_registry
    from manager.rollout.packages import import_existing

    if not arn.startswith("arn:") or ":model-package/" not in arn:
        raise UserError(
            f"--model-package-arn {arn!r} is not a model package ARN "
            "(arn:aws:sagemaker:REGION:ACCOUNT:model-package/GROUP/N)"
        )
    database = app.database()
    package = model_registry().describe(arn)
    with database.write() as session:
        version, new = import_existing(session, package, name or package.group, app.actor)
        record = model_row(version)
    emit_record(record, output, title=record["model"])
    if output == "table":
        said = "imported" if new else "already imported as"
        click.echo(f"{said} {record['model']} ({record['status']}) from model package {package.ref}")


def _decide(app: AppContext, ref: str, to: str, reason: str) -> None:
    from manager.errors import UserError
    from manager.registry import models
    from manager.registry.vocabulary import MODEL_TRANSITIONS

    with app.database().write() as session:
        version = models.get(session, ref)
        # a serving version stops serving through a rollout or `endpoints forget`, not by a word here
        if version.status == "serving" or to not in MODEL_TRANSITIONS.get(version.status, ()):  # type: ignore[call-overload]
            raise UserError(f"{version.ref} is {version.status}; it cannot be {to} now")
        if version.status == to:
            raise UserError(f"{version.ref} is already {to}")
        before = version.status
        models.transition(session, version, to, app.actor, reason=reason, action=f"model.{to}")  # type: ignore[arg-type]
        ref = version.ref
    click.echo(f"{ref}: {before} -> {to}")


@models_group.command("approve")
@click.argument("ref", metavar="NAME:VERSION")
@click.option("--reason", required=True, help="why (recorded in the history)")
@pass_app
def approve(app: AppContext, ref: str, reason: str) -> None:
    """Approve a version for rollout (a rejected one too, e.g. after an operator's abort)."""
    _decide(app, ref, "approved", reason)


@models_group.command("reject")
@click.argument("ref", metavar="NAME:VERSION")
@click.option("--reason", required=True, help="why (recorded in the history)")
@pass_app
def reject(app: AppContext, ref: str, reason: str) -> None:
    """Reject a version: no rollout will start with it."""
    _decide(app, ref, "rejected", reason)


@models_group.command("compare")
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--data", "source", required=True, metavar="CSV|sklearn:NAME", help="data to hold out from")
@click.option("--test", "test_fraction", type=click.FloatRange(0.05, 0.5), default=0.2, show_default=True)
@click.option("--split-seed", type=int, default=42, show_default=True, help="the split seed used in training")
@click.option(
    "--rounds", type=click.IntRange(100, 100_000), default=2000, show_default=True, help="bootstrap resamples"
)
@click.option("--seed", type=int, default=0, show_default=True)
@output_option
@pass_app
def compare(
    app: AppContext,
    a: str,
    b: str,
    source: str,
    test_fraction: float,
    split_seed: int,
    rounds: int,
    seed: int,
    output: str,
) -> None:
    """Offline metrics of A and B on the same held-out rows, with a 95% paired-bootstrap interval on B - A."""
    from rich.progress import Progress

    from manager.registry import models
    from trainers.datasets import load, split
    from trainers.evaluation import compare as paired
    from trainers.evaluation import load_local, predict

    with app.database().read() as session:
        first, second = models.get(session, a), models.get(session, b)
        refs, uris = (first.ref, second.ref), (first.artifact_uri, second.artifact_uri)
    data = load(source)
    held_out = split(data, 0.2, test_fraction, split_seed)
    scores = [predict(load_local(uri), held_out.x_test, data.task) for uri in uris]
    with Progress(transient=True, disable=output != "table") as bar:
        task = bar.add_task("bootstrap", total=rounds)
        results = paired(
            data.task,
            held_out.y_test,
            scores[0],
            scores[1],
            rounds,
            seed,
            progress=lambda done: bar.update(task, completed=done),
        )
    rows = [
        {
            "metric": r.metric,
            refs[0]: round(r.a, 4),
            refs[1]: round(r.b, 4),
            "B - A": round(r.difference, 4),
            "95% CI": f"[{r.low:+.4f}, {r.high:+.4f}]",
            "ci_low": r.low,
            "ci_high": r.high,
        }
        for r in results
    ]
    columns = (
        ("metric", refs[0], refs[1], "B - A", "95% CI")
        if output == "table"
        else ("metric", refs[0], refs[1], "B - A", "ci_low", "ci_high")
    )
    emit(
        rows, columns, output, title=f"{refs[0]} (A) vs {refs[1]} (B) on {len(held_out.y_test)} held-out rows"
    )
