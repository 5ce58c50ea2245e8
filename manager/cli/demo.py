"""`variantctl demo`: the whole loop on this machine, shown live (see `manager.demo.scenarios`)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from manager.cli.render import metric_cells


@click.command("demo")
@click.option(
    "--scenario",
    type=click.Choice(["promote", "regression", "error-spike", "replay", "slow-candidate"]),
    default="promote",
    show_default=True,
)
@click.option(
    "--trainer",
    type=click.Choice(["sklearn", "sagemaker"]),
    default="sklearn",
    show_default=True,
    help="sagemaker: XGBoost models trained, tuned and gated by local SageMaker jobs "
    "(needs the sagemaker extra)",
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path(".variantctl/demo"),
    show_default=True,
    help="the demo's own registry, local SageMaker state, capture and labels",
)
def demo(scenario: str, trainer: str, workdir: Path) -> None:
    """The whole product on this machine: train, deploy, roll out under live traffic, decide."""
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from manager.demo import scenarios as runner
    from manager.errors import UserError

    marker = workdir / ".variantctl-demo"
    if workdir.exists() and any(workdir.iterdir()):
        if not marker.exists():
            raise UserError(f"{workdir} is not empty and not a demo directory; choose another --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    marker.touch()
    console = Console()
    table = Table(title=f"rollout ({scenario})")
    for column in ("state", "step", "phase", "candidate %", "requests", "last action"):
        table.add_column(column)
    with Live(table, console=console, refresh_per_second=4, transient=False) as live:

        def on_tick(tick: runner.DemoTick) -> None:
            r, last = tick.rollout, tick.last
            table.add_row(
                r.state,
                str(r.step),
                str(r.phase),
                f"{r.weight:g}",
                str(tick.sent),
                f"{last.did} {last.detail}"[:60] if last else "-",
            )
            live.refresh()

        result = runner.run(
            workdir.absolute(), scenario, on_tick, say=lambda m: console.print(m), trainer=trainer
        )
    console.print()
    console.print(
        f"[5/6] [bold]{result['outcome']}[/bold]: {result['reason']} "
        f"({result['requests']} requests, {result['failed_requests']} failed)"
    )
    metrics = result["evidence"].get("metrics", {})
    for name, v in metrics.items():
        cells = metric_cells(v)
        console.print(
            f"      {name}: {cells['status']}; baseline {cells['baseline']}, candidate {cells['candidate']}"
            f"{'; ' + cells['interval'] if cells['interval'] else ''}"
        )
    paired = result["evidence"].get("paired")
    if paired:
        agreement = paired.get("agreement_rate")
        console.print(
            f"      pairs: {paired.get('done', 0):,} of {paired.get('planned', 0):,} captured requests"
            " replayed to the candidate at weight 0 (nobody was served by it)"
            + (f"; the two models agree on {agreement:.1%} of them" if agreement is not None else "")
        )
    console.print(
        f"[6/6] the history: variantctl --db {workdir / 'registry.db'} history --endpoint churn-demo"
    )
    if result["outcome"] not in ("promoted", "rolled_back"):
        sys.exit(1)
