"""What the timeline answers with: an endpoint as of an instant (`EndpointAt`), its variants and its
rollout, each fact with the event it comes from (`Source`), as `endpoints show --at` prints them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Source:
    """The event that put something in place."""

    seq: int
    at: datetime
    actor: str
    action: str
    reason: str | None

    def record(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class VariantAt:
    variant: str
    model: str
    weight: float  # as configured or set (relative)
    share: float  # percent of production traffic: weight over the sum of production weights
    shadow: bool
    instance_type: str | None
    instance_count: int | None
    lineage: dict[str, Any]
    weight_by: Source | None

    def record(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "weight_by"}
        out["weight_by"] = self.weight_by.record() if self.weight_by else None
        return out


@dataclass
class RolloutAt:
    rollout: int
    baseline: str
    candidate: str
    baseline_variant: str
    candidate_variant: str
    policy: str | None
    policy_hash: str | None
    state: str = "pending"
    step: int = 0
    phase: int | None = None
    weight: float = 0.0
    started_by: str | None = None
    started: Source | None = None
    last: Source | None = None  # the newest event about it
    weight_by: Source | None = None
    derived: bool = False  # its step came from the decisions, not from the events' record of it

    def record(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k not in ("started", "last", "weight_by")}
        out["started"] = self.started.record() if self.started else None
        out["last_event"] = self.last.record() if self.last else None
        return out


@dataclass
class EndpointAt:
    """One endpoint at one instant."""

    endpoint: str
    at: datetime | None
    status: str  # creating, serving, failed, forgotten
    config: str | None = None
    capture: str | None = None
    variants: list[VariantAt] = field(default_factory=list)
    rollout: RolloutAt | None = None
    config_by: Source | None = None
    status_by: Source | None = None
    exact: bool = True
    note: str | None = None

    def record(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "at": self.at,
            "status": self.status,
            "config": self.config,
            "config_by": self.config_by.record() if self.config_by else None,
            "capture": self.capture,
            "variants": [v.record() for v in self.variants],
            "rollout": self.rollout.record() if self.rollout else None,
            "status_by": self.status_by.record() if self.status_by else None,
            "exact": self.exact,
            "note": self.note,
        }

    def essence(self) -> dict[str, Any]:
        """What the registry's rows also say, for comparing the two."""
        rollout = self.rollout
        return {
            "config": self.config,
            "variants": sorted((v.variant, v.model, round(v.share, 6), v.shadow) for v in self.variants),
            "rollout": None
            if rollout is None
            else (rollout.rollout, rollout.state, rollout.step, rollout.phase or 0, rollout.weight),
        }
