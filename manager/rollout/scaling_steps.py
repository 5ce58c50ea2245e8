"""The reconciler's steps for capacity and autoscaling (what to do is `capacity.py`'s): each writes its
history event first, then makes one kind of call, so a crash between the two is repaired by the next
tick, which sees what Application Auto Scaling and the endpoint report and makes only what is missing.
"""

from __future__ import annotations

from typing import Any

from manager.crashpoints import crash_point
from manager.platforms.base import ConfigSpec, EndpointPlatform
from manager.registry.rollouts import record_event
from manager.registry.tables import Rollout
from manager.rollout import capacity
from manager.rollout.fencing import Fencing
from manager.rollout.look import Look


class ScalingSteps(Fencing):
    """Mixed into the Reconciler, which provides these."""

    platform: EndpointPlatform
    actor: str

    def _event(self, look: Look, action: str, reason: str, detail: dict[str, Any]) -> None:
        with self._write(look) as session:
            rollout = session.get(Rollout, look.rollout_id)
            assert rollout is not None
            record_event(session, rollout, self.actor, action, reason, detail, look.now)

    def _unscale(self, look: Look, spec: ConfigSpec) -> None:
        """Before an update to `spec`: deregister what it would remove or retype (AWS refuses it else)."""
        endpoint = look.target.endpoint
        have = self.platform.scaling(endpoint)
        if not have:
            return
        for variant in capacity.to_free(have, self.platform.hosting(look.state), spec):
            reason = f"{variant} leaves the endpoint: its scaling policies and scalable target go first"
            self._event(look, "rollout.unscaled", reason, {"variant": variant, **have[variant].to_json()})
            self._act(look).scale(endpoint, variant, None, have[variant])
            crash_point("unscale-call")

    def _rescale(self, look: Look, spec: ConfigSpec | None, weight: float) -> str | None:
        """Once the endpoint serves `spec` (None: the config it serves, described only if needed), the
        candidate at `weight`: register each variant that carries traffic as `wanted` says. Returns
        what it registered (one variant a tick), None when all are as wanted."""
        endpoint = look.target.endpoint
        have = self.platform.scaling(endpoint)
        if not have:
            return None
        spec = spec if spec is not None else self.platform.hosting(look.state)
        baseline, candidate = look.variants
        base, live = look.state.variant(baseline), look.state.variant(candidate)
        cap = look.target.capacity
        if cap.mode == "proportional" and base is not None:
            count = capacity.candidate_count(cap, base.desired_instances, weight)
        else:
            count = live.desired_instances if live is not None else 1
        for variant, want in sorted(capacity.wanted(have, spec, baseline, candidate, cap, count).items()):
            if want.same(have.get(variant)):
                continue
            reason = f"{variant} is registered for autoscaling, {want.min}-{want.max} instances"
            self._event(look, "rollout.scaled", reason, {"variant": variant, **want.to_json()})
            self._act(look).scale(endpoint, variant, want, have.get(variant))
            crash_point("scale-call")
            return f"registered {variant} for autoscaling ({want.min}-{want.max})"
        return None

    def _capacity(self, look: Look, weight: float, rising: bool) -> str | None:
        """The candidate's instance count for `weight`, set before it rises or after it fell."""
        baseline, candidate = look.variants
        counts = capacity.counts(look.target.capacity, look.state, baseline, candidate, weight, rising)
        if counts is None:
            return None
        base = look.state.variant(baseline)
        ratio = capacity.load_ratio(base.desired_instances if base else 0, counts[candidate], weight)
        reason = f"{candidate} to {counts[candidate]} instance(s) for {weight:g}% of the traffic"
        detail: dict[str, Any] = {"variant": candidate, "instances": counts[candidate], "percent": weight}
        if ratio is not None:
            detail["load_ratio"] = round(ratio, 3)
        self._event(look, "rollout.capacity", reason, detail)
        self._act(look).set_capacity(look.target.endpoint, counts)
        crash_point("capacity-call")
        return reason
