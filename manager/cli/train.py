"""`variantctl train`: train a candidate, register it with its lineage, and gate it offline."""

from __future__ import annotations

import sys
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
    output: str,
) -> None:
    """Train a candidate model. Exits 1 when the offline gate rejects it."""
    from manager import yamlconfig
    from trainers.config import TrainConfig
    from trainers.datasets import load

    config = yamlconfig.load(config_path, TrainConfig)
    database = app.database()  # refuse a missing or old registry before spending time on training
    data = load(source, shift, seed)
    result, scorer = _run(trainer, config, data, quiet=output != "table")
    version, outcome = _register_and_gate(app, database, config, data, result, scorer, replaces, no_gate)
    record: dict[str, Any] = {
        "model": version["ref"],
        "status": version["status"],
        "artifact_uri": result.artifact_uri,
        "replaces": version["replaces"],
        "dataset": result.dataset_source,
        "fingerprint": result.dataset_fingerprint,
        "objective": f"{result.objective} = {result.search.get('best_score', float('nan')):.4f} (validation)",
        "test": result.metrics["test"],
        "hyperparameters": result.hyperparameters,
        "seconds": round(result.seconds, 2),
        "gate": outcome,
    }
    emit_record(record, output, title=f"trained {version['ref']}")
    if version["status"] == "rejected":
        click.echo(f"error: {version['ref']} rejected: {outcome}", err=True)
        sys.exit(1)


def _run(trainer: str, config: Any, data: Any, quiet: bool) -> tuple[Any, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from trainers.gate import Scorer, local_scorer, sagemaker_scorer
    from trainers.sklearn_local import SklearnTrainer

    runner: Any
    scorer: Scorer
    if trainer == "sklearn":
        runner, scorer = SklearnTrainer(), local_scorer(data.task)
    else:
        from trainers.sagemaker_job import SageMakerTrainer

        runner = SageMakerTrainer.connect(config)
        scorer = sagemaker_scorer(runner, config)
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

        return runner.train(config, data, on_step), scorer


def _register_and_gate(
    app: AppContext,
    database: Any,
    config: Any,
    data: Any,
    result: Any,
    scorer: Any,
    replaces: str | None,
    no_gate: bool,
) -> tuple[dict[str, Any], str]:
    from manager.registry import models
    from trainers.base import current_baseline, register
    from trainers.gate import offline_gate

    with database.write() as session:
        baseline = models.get(session, replaces) if replaces else current_baseline(session, config.model)
        version = register(session, result, app.actor, baseline)
        outcome = "not run (--no-gate)"
        if not no_gate and config.gate is not None:
            verdict = offline_gate(session, config, data, version, baseline, scorer, app.actor)
            outcome = verdict.sentence() if verdict else "passed: nothing approved or serving to compare with"
        return {
            "ref": version.ref,
            "status": version.status,
            "replaces": baseline.ref if baseline else None,
            "test": version.metrics.get("test", {}),
        }, outcome
