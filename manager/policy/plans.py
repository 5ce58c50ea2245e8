"""What a policy's plan implies, for people: each step in a row, and the longest the rollout can run."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from manager.clock import parse_duration

if TYPE_CHECKING:
    from manager.policy import RolloutPolicy


def longest_duration(policy: RolloutPolicy) -> timedelta:
    """The longest the rollout can run: every timed step, or the max duration, whichever is longer."""
    timed = sum(
        (
            parse_duration(s.bake.duration)
            if s.bake
            else parse_duration(s.shadow.duration)
            if s.shadow
            else parse_duration(s.pause.duration)
            if s.pause and s.pause.duration
            else timedelta(0)
            for s in policy.plan
        ),
        timedelta(0),
    )
    return max(timed, parse_duration(policy.decisions.max_duration))


def describe_plan(policy: RolloutPolicy) -> list[dict[str, Any]]:
    """One row per step: what happens, the weight in force, and what ends the step."""
    rows, weight = [], 0.0
    for index, step in enumerate(policy.plan):
        if step.set_weight:
            weight = step.set_weight.percent
            what, ends = f"set candidate weight to {weight:g}%", "the endpoint reports the weights"
        elif step.analysis:
            checks = "harm tests only" if not step.analysis.final else "all metrics"
            what = (
                f"analyse at {weight:g}% ({checks})" if weight else f"analyse the replayed pairs ({checks})"
            )
            limits = f"{policy.decisions.max_samples} samples per arm or {policy.decisions.max_duration}"
            ends = (
                f"a decision, or {limits}" if step.analysis.final else "guardrails' minimum samples, no harm"
            )
            if not weight:
                ends = (
                    "a decision on the pairs, or the replay's end"
                    if step.analysis.final
                    else "the pairs' minimum samples (or the replay's end), no harm"
                )
        elif step.bake:
            what, ends = f"bake at {weight:g}%", step.bake.duration
        elif step.pause:
            what = f"pause at {weight:g}%"
            ends = step.pause.duration or "`variantctl rollout resume`"
        elif step.replay:
            r = step.replay
            what = (
                f"replay up to {r.requests} captured requests of the last {r.window} to the candidate"
                f" at {r.max_requests_per_second:g}/s"
            )
            ends = "the plan is made; the replay runs through the analyses at weight 0"
        else:
            assert step.shadow is not None
            what, ends = f"shadow {step.shadow.percent:g}% of requests", step.shadow.duration
        rows.append({"step": index, "what": what, "until": ends})
    return rows
