"""The platform steps of a tick that are not config changes (those are `changes.py`): the weights,
each move recorded as a new phase once the endpoint reports it, and the models and config a change
needs. Each step ends in one platform call, through the fenced platform, or in recording that the
endpoint got there."""

from __future__ import annotations

from manager.crashpoints import crash_point
from manager.platforms.base import ConfigSpec
from manager.registry.tables import ModelVersion
from manager.rollout import configs, records
from manager.rollout.look import Look, TickResult
from manager.rollout.pending import PendingChange
from manager.rollout.scaling_steps import ScalingSteps


class PlatformSteps(ScalingSteps):
    """Mixed into the Reconciler, which provides these."""

    images: configs.Images

    def _ensure(self, look: Look, spec: ConfigSpec, versions: list[ModelVersion]) -> None:
        platform = self._act(look)
        for version in versions:
            platform.ensure_model(self.images.model(version))
        platform.ensure_endpoint_config(spec)

    def _serving(self, look: Look) -> ConfigSpec:
        """What the endpoint serves now, each variant on its live hosting: the baseline keeps it."""
        return self.platform.hosting(look.state)

    def _settle_weight(self, look: Look, pending: PendingChange) -> TickResult | None:
        """Finish a weight change: once the endpoint reports it, a new phase begins."""
        state = look.state
        assert pending.weight is not None
        wanted = pending.weight
        arrived = abs(state.shares().get(look.variants[1], 0.0) * 100 - wanted) < 1e-6
        if state.busy:
            return look.result("wait", "weights are changing")
        if not arrived:
            self._set_weight(look, wanted)
            return look.result("set_weight", f"{wanted:g}% (again)")
        moved = self._rescale(look, None, wanted) or self._capacity(look, wanted, rising=False)
        if moved:
            return look.result("scaling", moved)
        with self._write(look) as session:
            records.new_phase(session, records.row(session, look.rollout_id), wanted, self.actor, look.now)
        crash_point("phase")
        return None

    def _set_weight(self, look: Look, weight: float) -> None:
        """The candidate's capacity first (another tick sets the weight once it is there)."""
        if self._capacity(look, weight, rising=True):
            return
        baseline, candidate = look.variants
        self._act(look).set_weights(look.target.endpoint, {baseline: 100.0 - weight, candidate: weight})
        crash_point("weight-call")
