"""`variantctl train`: train a candidate, register it with its lineage, and gate it offline."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from manager.cli.context import AppContext, pass_app
from manager.cli.render import emit_record, output_option


@click.command("train")
@click.option("--trainer", type=click.Choice(["sklearn", "sagemaker"]), default="sklearn", show_default=True)
@click.option(
    "--data",
    "source",
    required=True,
    metavar="CSV|sklearn:NAME",
    help="CSV with the target first and no header, or sklearn:breast_cancer|diabetes|wine|digits",
)
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="train.yaml (see examples/training/)",
)
@click.option("--shift", help="simulate drift: noise:SIGMA, resample:FRACTION or scale:FACTOR")
@click.option("--seed", type=int, default=0, show_default=True, help="seed for --shift")
@click.option(
    "--replaces",
    metavar="NAME:VERSION",
    help="the version this candidate is meant to replace [default: the serving, else newest approved]",
)
@click.option("--no-gate", is_flag=True, help="register without the offline gate")
@click.option(
    "--model-package-group",
    metavar="GROUP",
    help="also register it as a model package in this SageMaker Model Registry group (created if missing)",
)
@click.option(
    "--package-approval",
    type=click.Choice(["manual", "auto"]),
    help="a version the gate passes: PendingManualApproval (manual) or Approved (auto) [default: the "
    "config's model_package.approval, else manual]",
)
@output_option
@pass_app
def train(
    app: AppContext,
    trainer: str,
    source: str,
    config_path: Path,
    shift: str | None,
    seed: int,
    replaces: str | None,
    no_gate: bool,
    model_package_group: str | None,
    package_approval: str | None,
    output: str,
) -> None:
    """Train a candidate model. Exits 1 when the offline gate rejects it."""
    from manager.config import yamlfile as yamlconfig
    from trainers.config import TrainConfig
    from trainers.datasets import load
    from trainers.pipeline import retrain

    config = _with_package(yamlconfig.load(config_path, TrainConfig), model_package_group, package_approval)
    database = app.database()  # refuse a missing or old registry before spending time on training
    data = load(source, shift, seed)
    runner, scorer = _trainer(trainer, config, data)
    with _progress(config, quiet=output != "table") as on_step:
        done = retrain(
            database,
            runner,
            scorer,
            config,
            data,
            app.actor,
            replaces=replaces,
            gate=not no_gate,
            progress=on_step,
        )
    result = done.result
    record: dict[str, Any] = {
        "model": done.ref,
        "status": done.status,
        "artifact_uri": result.artifact_uri,
        "replaces": done.replaces,
        "dataset": result.dataset_source,
        "fingerprint": result.dataset_fingerprint,
        "objective": f"{result.objective} = {result.search.get('best_score', float('nan')):.4f} (validation)",
        "test": result.metrics["test"],
        "hyperparameters": result.hyperparameters,
        "seconds": round(result.seconds, 2),
        "gate": done.gate,
    }
    if done.package:
        record["model_package"] = f"{done.package} ({done.package_status})"
    emit_record(record, output, title=f"trained {done.ref}")
    if done.status == "rejected":
        click.echo(f"error: {done.ref} rejected: {done.gate}", err=True)
        sys.exit(1)


def _with_package(config: Any, group: str | None, approval: str | None) -> Any:
    """The config with `--model-package-group` / `--package-approval` applied (checked as the config's
    own `model_package` is)."""
    from pydantic import ValidationError

    from manager.errors import UserError
    from trainers.config import ModelPackage

    if group is None and approval is None:
        return config
    current = config.model_package
    if group is None and current is None:
        raise UserError("--package-approval needs --model-package-group (or model_package in the config)")
    try:
        package = ModelPackage(
            group=group or current.group, approval=approval or (current.approval if current else "manual")
        )
    except ValidationError:
        raise UserError(
            f"--model-package-group {group!r}: 1-63 letters, digits and hyphens, "
            "starting and ending alphanumeric"
        ) from None
    return config.model_copy(update={"model_package": package})


def _trainer(trainer: str, config: Any, data: Any) -> tuple[Any, Any]:
    from trainers.gate import local_scorer, sagemaker_scorer
    from trainers.sklearn_local import SklearnTrainer

    if trainer == "sklearn":
        return SklearnTrainer(), local_scorer(data.task)
    from trainers.sagemaker_job import SageMakerTrainer

    runner = SageMakerTrainer.connect(config)
    return runner, sagemaker_scorer(runner, config)


@contextmanager
def _progress(config: Any, quiet: bool) -> Iterator[Callable[[int, int, float, float], None]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("best {task.fields[best]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=quiet, transient=False) as bar:
        task = bar.add_task(f"{config.model} search", total=None, best="-")

        def on_step(done: int, planned: int, value: float, best: float) -> None:
            bar.update(task, completed=done, total=planned, best=f"{config.objective.metric} {best:.4f}")

        yield on_step
