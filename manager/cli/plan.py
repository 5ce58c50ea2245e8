"""`variantctl rollout plan POLICY [--endpoint NAME]` (also run by `policy validate --endpoint`): the
SageMaker calls a rollout would make against the endpoint as it is now, each checked against AWS's
rules. Nothing is changed. Exit 1 when AWS would refuse a call."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from manager.cli.context import AppContext, pass_app
from manager.cli.render import emit, output_option


@click.command("plan")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--endpoint", help="the endpoint to plan against [default: the policy's target]")
@output_option
@pass_app
def plan_command(app: AppContext, path: Path, endpoint: str | None, output: str) -> None:
    """Print the calls a rollout under POLICY would make, each checked against AWS's rules."""
    from manager import policy as policies

    policy, _ = policies.load(path)
    if not show(app, policy, endpoint, output):
        sys.exit(1)


def show(app: AppContext, policy: object, endpoint: str | None, output: str) -> bool:
    """Print the plan; False when AWS would refuse a call (each refusal named with its rule)."""
    title, calls = planned(app, policy, endpoint)
    if output == "json":
        click.echo(json.dumps([as_record(c) for c in calls], indent=2, default=str))
    else:
        emit([c.row() for c in calls], ("when", "call", "what", "aws"), output, title=title)
    return refusals(calls)


def as_record(call: Any) -> dict[str, Any]:
    return {**call.row(), "request": call.request}


def refusals(calls: list[Any]) -> bool:
    """Say each call AWS would refuse, on stderr; True when there is none."""
    refused = [c for c in calls if c.refused]
    for call in refused:
        click.echo(f"error: AWS would refuse {call.operation} ({call.when}): {call.refused}", err=True)
    return not refused


def planned(app: AppContext, policy: object, endpoint: str | None) -> tuple[str, list[Any]]:
    """The calls a rollout under `policy` would make against `endpoint` (the policy's target by
    default) as SageMaker and the registry have it now, and a title naming what is compared."""
    from sqlalchemy import select

    from manager import policy as policies
    from manager.clock import utcnow
    from manager.errors import NotFound, UserError
    from manager.platforms import factory
    from manager.registry import rollouts
    from manager.registry.tables import Endpoint
    from manager.rollout import plan

    assert isinstance(policy, policies.RolloutPolicy)
    target = policy.target
    name = endpoint or target.endpoint
    platform = factory.platform()
    state = platform.describe(name)
    if state is None:
        raise NotFound(f"SageMaker has no endpoint {name!r}")
    if state.busy:
        raise UserError(f"endpoint {name} is {state.status}; plan once it is InService")
    with app.database().read() as session:
        row = session.scalar(select(Endpoint).where(Endpoint.name == name))
        if row is None:
            raise NotFound(f"no endpoint {name!r} in the registry; create or adopt it first")
        serving = rollouts.serving_baseline(row, target.baseline_variant)
        candidate = rollouts.resolve_candidate(
            session, target.candidate.model, target.candidate.version, serving.model_version
        )
        subject = plan.Subject(
            serving.variant_name,
            serving.model_version,
            rollouts.candidate_variant_name(serving.variant_name, candidate, target.candidate_variant),
            candidate,
        )
        calls = plan.calls(policy, platform.hosting(state), subject, utcnow(), platform.scaling(name))
    return f"{policy.name} on {name}: {subject.candidate.ref} beside {subject.baseline.ref}", calls
