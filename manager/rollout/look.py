"""What one tick of the reconciler works from and reports, and the platform as it may use it: every
change checked against the endpoint's lease first (`FencedPlatform`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from manager import policy as policies
from manager.platforms.base import EndpointState


@dataclass(frozen=True)
class TickResult:
    """What one tick did to one rollout."""

    rollout_id: int
    endpoint: str
    did: str
    detail: str = ""


@dataclass(frozen=True)
class Look:
    """What one tick saw of one rollout: the steps below all work from it."""

    rollout_id: int
    policy: policies.RolloutPolicy
    state: EndpointState
    now: datetime
    variants: tuple[str, str]  # (baseline, candidate)
    epoch: int = 0  # of the endpoint lease this tick acts under (0: not known, checked by owner alone)
    weight: float = 0.0  # the candidate's percent in force when the tick began

    @property
    def target(self) -> policies.Target:
        return self.policy.target

    def result(self, did: str, detail: str = "") -> TickResult:
        return TickResult(self.rollout_id, self.target.endpoint, did, detail)
