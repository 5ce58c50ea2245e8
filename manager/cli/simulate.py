"""`variantctl simulate`: a policy's decision quality on seeded synthetic streams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from manager.cli.render import emit_record, output_option

# The names of manager.rollout.simulate.SCENARIOS, kept here so that `--help` imports no numpy
# (tests/test_cli.py keeps the two equal).
SCENARIO_NAMES = (
    "aa-accuracy",
    "aa-latency",
    "aa-5xx",
    "accuracy+2pp",
    "accuracy-2pp",
    "accuracy-5pp",
    "latency+5%",
    "5xx-0.5%-to-1.5%",
    "aa-p90",
    "p90+10%",
    "mean+10%-p90-same",
)


@click.command("simulate")
@click.option("--policy", "path", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--scenario",
    type=click.Choice(SCENARIO_NAMES),
    help="a named scenario (or describe one with --kind/--baseline/--effect)",
)
@click.option(
    "--kind",
    type=click.Choice(["proportion", "mean", "errors", "quantile"]),
    help="the stream: rates, values, errors, or latencies against a quantile guardrail",
)
@click.option("--baseline", type=float, help="the baseline's rate, or its median for lognormal values")
@click.option(
    "--effect",
    type=float,
    default=0.0,
    show_default=True,
    help="added to the rate; for values, the relative change of the mean",
)
@click.option("--sigma", type=float, default=0.5, show_default=True, help="lognormal shape, for values")
@click.option("--higher-is-better/--lower-is-better", default=True, show_default=True)
@click.option(
    "--traffic", type=click.FloatRange(min=1), default=1000, show_default=True, help="requests per minute"
)
@click.option("--label-delay", type=click.FloatRange(min=0), default=0, show_default=True, help="minutes")
@click.option(
    "--check-every",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="requests per arm between looks, at an even split",
)
@click.option(
    "--max-per-arm",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="stop a run at this many requests per arm (0: only the policy's own maxSamples and maxDuration)",
)
@click.option(
    "--disagreement",
    type=click.FloatRange(0, 1, min_open=True),
    help="simulate the paired design (the policy's replay step): the share of requests on which"
    " exactly one model is right",
)
@click.option(
    "--rho",
    type=click.FloatRange(-0.99, 0.99),
    help="a covariate for each request correlated this much with the outcome (what a pre-period model"
    " predicts); with a metric that has `adjust: prePeriodModel`, labels are shown with and without it",
)
@click.option("--runs", type=click.IntRange(min=10), default=2000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--processes", type=click.IntRange(min=1), default=2, show_default=True)
@output_option
def simulate(
    path: Path,
    scenario: str | None,
    kind: str | None,
    baseline: float | None,
    effect: float,
    sigma: float,
    higher_is_better: bool,
    traffic: float,
    label_delay: float,
    check_every: int,
    max_per_arm: int,
    disagreement: float | None,
    rho: float | None,
    runs: int,
    seed: int,
    processes: int,
    output: str,
) -> None:
    """How often a policy promotes, rolls back or stays undecided on synthetic streams (through `decide`)."""
    from rich.progress import Progress

    from manager import policy as policies
    from manager.errors import UserError
    from manager.rollout.simulate import (
        SCENARIOS,
        Scenario,
        Streams,
        check_covariate,
        check_paired,
        metric_for,
        unadjusted_text,
    )
    from manager.rollout.simulate import simulate as monte_carlo

    policy, text = policies.load(path)
    if scenario:
        chosen = SCENARIOS[scenario]
    elif kind and baseline is not None:
        chosen = Scenario("custom", kind, baseline, effect, sigma, higher_is_better)  # type: ignore[arg-type]
    else:
        raise UserError("give --scenario, or --kind and --baseline (with --effect)")
    from dataclasses import replace

    chosen = replace(chosen, disagreement=disagreement, rho=rho)
    try:
        target = metric_for(policy, chosen)
        check_paired(policy, chosen)
        check_covariate(policy, chosen)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    streams = Streams(traffic, label_delay, check_every, max_per_arm)
    texts = {"": text}
    if target.adjust != "none":
        texts["unadjusted"] = unadjusted_text(policy, target.name)
    summaries = {}
    with Progress(transient=True, disable=output != "table") as bar:
        for what, policy_text in texts.items():
            task = bar.add_task(f"{chosen.name}{' ' + what if what else ''}: {runs} runs", total=runs)
            summaries[what] = monte_carlo(
                policy_text,
                chosen,
                streams,
                runs,
                seed,
                processes,
                progress=lambda done, task=task: bar.update(task, completed=done),
            )
    summary = summaries[""]
    record = _record(summary, target, policy, disagreement, max_per_arm)
    if "unadjusted" in summaries:
        record["unadjusted"] = _adjustment_record(summaries["unadjusted"], summary, rho)
    if output != "table":
        emit_record(record, output)
        return
    for line in record["warnings"]:
        click.echo(f"warning: {line}", err=True)
    shown = _shown(summary, record, target, policy, disagreement)
    emit_record(shown, "table", title=f"{policy.name}: {runs} seeded runs")


def _metric_line(target: Any, policy: Any) -> str:
    role = "dry run" if target.dry_run else target.role
    every = ", ".join(m.name + (" (dry run)" if m.dry_run else "") for m in policy.metrics)
    return f"{target.name} ({role}); every metric simulated: {every}"


def _record(
    summary: Any, target: Any, policy: Any, disagreement: float | None, max_per_arm: int
) -> dict[str, Any]:
    """The summary as `-o json` gives it, with its warnings."""
    record: dict[str, Any] = {
        "scenario": summary.scenario,
        "truth": summary.truth,
        "runs": summary.runs,
        "p_promote": summary.promote,
        "p_rollback": summary.rollback,
        "p_undecided": summary.undecided,
        "se_promote": summary.se(summary.promote),
        "se_rollback": summary.se(summary.rollback),
        "se_undecided": summary.se(summary.undecided),
        "median_samples_per_arm": summary.median_per_arm,
        "p90_samples_per_arm": summary.p90_per_arm,
        "median_minutes": summary.median_minutes,
        "p90_minutes": summary.p90_minutes,
        "harm_exposure": summary.exposure,
        "design": "paired" if disagreement is not None else "two arms",
        "disagreement": disagreement,
        "metric": target.name,
        "metric_is_dry_run": target.dry_run,
        "p_rollback_on_evidence": summary.rollback - summary.rollback_at_limit,
        "p_rollback_at_limits": summary.rollback_at_limit,
        "p_rollback_by_other_metrics": summary.rollback_by_others,
        "p_ended_by_policy_limits": summary.ended_at_limit,
        "simulated_metrics": [m.name for m in policy.metrics],
    }
    from manager.policy.family import family_error

    family = family_error(policy)
    record["family_alpha"] = family.family_alpha
    record["family_false_rollback_bound"] = family.false_rollback
    record["family_false_promotion_bound"] = family.false_promotion
    # On an A/A, a promotion is false only when the primary's margin is 0 (with a margin, the A/A
    # candidate is rightly shown no worse than it)
    zero_margin = policy.primary is not None and policy.primary.test.margin == 0
    record["p_false_promotion"] = summary.promote if summary.truth == "same" and zero_margin else None
    warnings = []
    if target.dry_run:
        warnings.append(f"{target.name} is a dry run: recorded, never acted on; the other metrics decide")
    if summary.ended_at_limit + summary.undecided > 0.1:
        warnings.append(
            f"{summary.ended_at_limit + summary.undecided:.0%} of runs reach the policy's limits "
            f"(maxSamples {policy.decisions.max_samples:,}, maxDuration {policy.decisions.max_duration}) "
            + (f"or the simulation's ({max_per_arm:,} per arm) " if max_per_arm else "")
            + "with no evidence: undecidable within them"
        )
    record["warnings"] = warnings
    return record


def _shown(
    summary: Any, record: dict[str, Any], target: Any, policy: Any, disagreement: float | None
) -> dict[str, str]:
    """The summary as the table shows it."""
    unit = "labelled pairs (replayed requests)" if disagreement is not None else "samples per arm"
    shown = {
        "scenario": f"{summary.scenario} (the candidate is {summary.truth})"
        + (f", paired, {disagreement:g} disagreement" if disagreement is not None else ""),
        "P(promote)": f"{summary.promote:.4f} ± {record['se_promote']:.4f}",
        "metric": _metric_line(target, policy),
        "P(rollback)": f"{summary.rollback:.4f} ± {record['se_rollback']:.4f}: "
        f"{record['p_rollback_on_evidence']:.4f} on evidence "
        f"({summary.rollback_by_others:.4f} by another metric), "
        f"{summary.rollback_at_limit:.4f} at the policy's limits",
        "P(undecided)": f"{summary.undecided:.4f} ± {record['se_undecided']:.4f}",
        f"{unit} to a decision": f"median {summary.median_per_arm:,.0f}, p90 {summary.p90_per_arm:,.0f}",
        "minutes to a decision": f"median {summary.median_minutes:,.1f}, p90 {summary.p90_minutes:,.1f}",
        "harm exposure": f"{summary.exposure:,.0f} requests served by the worse model (mean)",
        "family-wise error": _family_line(summary, record),
    }
    if "unadjusted" in record:
        other = record["unadjusted"]
        shown[f"{unit} without adjust"] = (
            f"median {other['median_samples_per_arm']:,.0f}, p90 {other['p90_samples_per_arm']:,.0f}"
            f" (P(correct) {other['p_correct']:.4f}): adjusting by a covariate correlated {other['rho']:g}"
            f" takes {other['median_ratio']:.0%} of the unadjusted median"
        )
    return shown


def _adjustment_record(plain: Any, adjusted: Any, rho: float | None) -> dict[str, Any]:
    return {
        "rho": rho,
        "median_samples_per_arm": plain.median_per_arm,
        "p90_samples_per_arm": plain.p90_per_arm,
        "p_correct": plain.correct,
        "p_correct_adjusted": adjusted.correct,
        "median_ratio": adjusted.median_per_arm / plain.median_per_arm if plain.median_per_arm else 1.0,
    }


def _family_line(summary: Any, record: dict[str, Any]) -> str:
    """The policy's bounds on wrong decisions of an A/A, beside what this run measured when it is one."""
    bounds = (
        f"at most {record['family_false_rollback_bound']:.3g} false rollback, "
        f"{record['family_false_promotion_bound']:.3g} false promotion"
        + (f" (familyAlpha {record['family_alpha']:g})" if record["family_alpha"] is not None else "")
    )
    if summary.truth != "same":
        return bounds
    measured = f"; measured {summary.rollback:.4f} false rollback"
    if record["p_false_promotion"] is not None:
        measured += f", {record['p_false_promotion']:.4f} false promotion"
    return bounds + measured
