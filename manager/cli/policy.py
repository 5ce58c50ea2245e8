"""`variantctl policy validate`: a policy's errors with their lines, or the plan it implies."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from manager.cli.context import AppContext, pass_app
from manager.cli.render import emit, output_option


@click.group("policy")
def policy_group() -> None:
    """Rollout policies."""


@policy_group.command("validate")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--endpoint", help="also plan its calls against this endpoint as it is now (`rollout plan`)")
@output_option
@pass_app
def validate(app: AppContext, path: Path, endpoint: str | None, output: str) -> None:
    """Check a policy; print the plan it implies (and, with --endpoint, the calls it would make)."""
    from manager import policy as policies
    from manager.policy.family import family_error

    policy, _ = policies.load(path)
    rows = policies.describe_plan(policy)
    if output == "json" and endpoint is not None:  # one document: the steps and the calls
        from manager.cli.plan import as_record, planned, refusals

        _, calls = planned(app, policy, endpoint)
        click.echo(json.dumps({"steps": rows, "calls": [as_record(c) for c in calls]}, indent=2, default=str))
        if not refusals(calls):
            sys.exit(1)
        return
    if output != "table":
        emit(rows, ("step", "what", "until"), output)
        if endpoint is not None:
            from manager.cli.plan import show

            if not show(app, policy, endpoint, output):
                sys.exit(1)
        return
    emit(rows, ("step", "what", "until"), output, title=f"{policy.name}: {policy.target.endpoint}")
    metrics = [
        {
            "metric": m.name,
            "role": m.role + (" (dry run)" if m.dry_run else ""),
            "source": m.source,
            "test": _test_text(m),
            "margin": m.test.margin,
            "alpha": m.alpha,
            "min samples": m.min_samples,
            "no data": m.on_no_data,
        }
        for m in policy.metrics
    ]
    emit(metrics, tuple(metrics[0]), output, title="metrics")
    d = policy.decisions
    if policy.webhooks:
        hooks = [
            {
                "webhook": w.name,
                "type": w.type,
                "url": w.url,
                "when": ", ".join(w.events or ["every event"]) if not w.gate else _gate_when(w.type),
                "deadline": f"{w.deadline}, then {w.on_deadline}" if w.gate else "",
                "signed": bool(w.secret_env or w.secret_file),
            }
            for w in policy.webhooks
        ]
        emit(hooks, tuple(hooks[0]), output, title="webhooks")
    click.echo(
        f"longest possible duration: {policies.longest_duration(policy)}; at most {d.max_samples} samples "
        f"per arm; inconclusive -> {d.on_inconclusive}; promotion by {d.promotion.mode}"
    )
    click.echo(f"trigger: {_trigger_text(policy.trigger)}")
    for line in family_error(policy).lines():
        click.echo(line)
    if endpoint is not None:
        from manager.cli.plan import show

        if not show(app, policy, endpoint, output):
            sys.exit(1)


def _trigger_text(trigger: Any) -> str:
    """What starts this policy's rollouts, in one line."""
    text = str(trigger.type)
    package = trigger.model_package_approved
    if package is not None:
        source = f"events from {package.queue_url}, polled every {package.poll_seconds:g}s as a backstop"
        if not package.queue_url:
            source = f"ListModelPackages polled every {package.poll_seconds:g}s"
        text = (
            f"each newly approved version of model package group {package.group} ({source}); "
            f"the outcome written back ({package.on_promote.stage}/{package.on_promote.status} after a "
            f"promotion, {package.on_rollback.stage}/{package.on_rollback.status} after a rollback"
            f"{', and Rejected' if package.reject_on_rollback else ''})"
        )
    if trigger.cron is not None:
        what = "registering a model package" if package is not None else "then rolling it out"
        text += f"; retrains on cron {trigger.cron!r}, {what}"
    return text


def _gate_when(kind: str) -> str:
    return {
        "confirm-rollout": "holds the deployment",
        "pre-rollout": "holds the first live traffic",
        "confirm-promotion": "holds the promotion",
    }[kind]


def _test_text(metric: Any) -> str:
    """What judges the metric, in a few words."""
    if metric.kind == "quantile":
        p = f"p{metric.quantile:g}"
        threshold = (
            f"{metric.threshold_ms:g} ms" if metric.threshold_ms else f"the baseline's {p} x (1 + margin)"
        )
        return f"{p}: requests over {threshold}, e-value"
    if metric.kind == "errors":
        return "error counts (e-value)"
    return str(metric.test.type) + (", adjusted by a pre-period model" if metric.adjust != "none" else "")
