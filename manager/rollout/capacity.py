"""The candidate's capacity and the endpoint's autoscaling through a rollout.

Capacity: with `capacity: proportional` (the default) the candidate runs as many instances as keep its
load per instance at most 25% above the baseline's, and at least 25% below it wherever whole
instances allow it (`candidate_count`); it is raised before its weight rises and lowered after it
falls. `fixed` leaves the count the candidate was deployed with.

Autoscaling (docs/aws-rules.md, "Autoscaling"): an UpdateEndpoint may not remove a variant registered
with Application Auto Scaling or change its instance type, so before a config change the variants it
drops are deregistered (`to_free`), and once the endpoint serves the new config every variant that
carries traffic is registered like the baseline (`wanted`): the baseline keeps its own registration
(its variant name and instance type never change), a shadow gets the baseline's (it sees a copy of
all the traffic), and the candidate gets the baseline's policies with its range scaled to its share.
Both are worked out from what Application Auto Scaling reports now, so a tick after a crash computes
the same calls again and makes only those not yet made.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from manager.platforms.base import ConfigSpec, EndpointState
from manager.platforms.scaling import Scaling
from manager.policy import Capacity

LOAD_BAND = 0.25  # the candidate's load per instance stays within 25% of the baseline's


def candidate_count(capacity: Capacity, baseline_count: int, weight: float) -> int:
    """The fewest instances that keep the candidate's load per instance at most 1.25x the
    baseline's at `weight` percent (that count is also the one nearest 1x from above), within the
    policy's min and max."""
    if weight <= 0:
        wanted = 1
    elif weight >= 100:
        wanted = baseline_count
    else:
        share = baseline_count * weight / (100.0 - weight)  # instances at the baseline's load
        wanted = max(1, math.ceil(share / (1 + LOAD_BAND) - 1e-9))
    wanted = max(wanted, capacity.min)
    return min(wanted, capacity.max) if capacity.max is not None else wanted


def load_ratio(baseline_count: int, count: int, weight: float) -> float | None:
    """The candidate's load per instance over the baseline's (None where one of them has no traffic)."""
    if not 0 < weight < 100 or count <= 0 or baseline_count <= 0:
        return None
    return (weight / count) / ((100.0 - weight) / baseline_count)


def counts(
    capacity: Capacity, state: EndpointState, baseline: str, candidate: str, weight: float, rising: bool
) -> dict[str, int] | None:
    """The candidate's count to set at `weight`, if it must change now: raised before the weight
    rises (`rising`), lowered after it fell; nothing for `fixed` or a serverless candidate."""
    base, cand = state.variant(baseline), state.variant(candidate)
    if capacity.mode != "proportional" or base is None or cand is None or cand.desired_instances <= 0:
        return None
    wanted = candidate_count(capacity, base.desired_instances, weight)
    if (rising and cand.desired_instances < wanted) or (not rising and cand.desired_instances > wanted):
        return {candidate: wanted}
    return None


def wanted(
    have: Mapping[str, Scaling],
    spec: ConfigSpec,
    baseline: str,
    candidate: str,
    capacity: Capacity,
    candidate_instances: int,
) -> dict[str, Scaling]:
    """How each instance-based variant of `spec` should be registered, given what is registered now:
    nothing when the baseline is not autoscaled (variantctl adds no autoscaling of its own)."""
    base = have.get(baseline)
    if base is None:
        return {}
    out = {baseline: base}
    for v in spec.variants:
        if v.serverless or v.name == baseline:
            continue
        if v.shadow:
            out[v.name] = base
        elif v.name == candidate:
            low = (
                candidate_instances if capacity.mode == "proportional" else min(base.min, candidate_instances)
            )
            out[v.name] = Scaling(max(1, low), max(low, base.max), base.policies)
    return out


def to_free(have: Mapping[str, Scaling], before: ConfigSpec, after: ConfigSpec) -> list[str]:
    """The registered variants an update from `before` to `after` would remove or put on another
    instance type: AWS refuses that update until they are deregistered."""
    new = {v.name: v.instance_type for v in after.variants}
    old = {v.name: v.instance_type for v in before.variants}
    return sorted(n for n in have if n in old and (n not in new or new[n] != old[n]))
