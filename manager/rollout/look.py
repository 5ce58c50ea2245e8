"""What one tick of the reconciler works from and reports, and the platform as it may use it: every
change checked against the endpoint's lease first (`FencedPlatform`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from manager import policy as policies
from manager.platforms.base import EndpointPlatform, EndpointState


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


class Fenced(Exception):
    """The endpoint's lease is no longer this daemon's under the epoch it acted under: it must neither
    write nor call the platform for that rollout (another daemon carries on)."""


MUTATIONS = frozenset(
    {
        "ensure_model",
        "ensure_endpoint_config",
        "create_endpoint",
        "update_endpoint",
        "set_weights",
        "set_capacity",
        "scale",
        "delete_config",
        "delete_endpoint",
    }
)


class FencedPlatform:
    """The platform as one tick may use it: every change is preceded by a check that the endpoint's
    lease is still this daemon's, under the epoch the tick took it at (reads pass straight through)."""

    def __init__(self, platform: EndpointPlatform, check: Callable[[], None]) -> None:
        self._platform = platform
        self._check = check

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._platform, name)
        if name in MUTATIONS:
            self._check()
        return attribute
