"""Where a rollout goes and on what: the endpoint, the candidate, and the candidate's hosting and
capacity (the baseline always keeps its own)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from manager.names import RESOURCE_NAME
from manager.policy.specs import Spec


class Candidate(Spec):
    model: str
    version: int | None = Field(None, ge=1)
    newest_approved: bool = Field(False, alias="newestApproved")

    @model_validator(mode="after")
    def _one(self) -> Candidate:
        if (self.version is None) == (not self.newest_approved):
            raise ValueError("give the candidate's `version`, or `newestApproved: true`, not both")
        return self


class Capacity(Spec):
    """How many instances the candidate runs at each weight. `proportional` (the default) keeps its
    load per instance within 25% of the baseline's where whole instances allow it, never above: the
    count is raised before its weight rises and lowered after it falls, within `min`..`max`. `fixed`
    keeps the count it was deployed with (the policy's `instanceCount`, else the baseline's). Neither
    applies to a serverless candidate, which has no instances."""

    mode: Literal["proportional", "fixed"] = "proportional"
    min: int = Field(1, ge=1, le=1000)
    max: int | None = Field(None, ge=1, le=1000)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"mode": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _range(self) -> Capacity:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"capacity `max` ({self.max}) is below `min` ({self.min})")
        return self


class Target(Spec):
    """Where to roll out. Variant names are the engine's: the baseline is the variant serving now
    (`baselineVariant` picks one only when the endpoint serves several), and the candidate's variant is
    `candidateVariant` when given and not serving already, else `<model>-v<version>`."""

    endpoint: str
    baseline_variant: str | None = Field(None, alias="baselineVariant")
    candidate_variant: str | None = Field(None, alias="candidateVariant")
    candidate: Candidate
    # The candidate's hosting; unset, it is hosted like the baseline (which keeps its own, always).
    instance_type: str | None = Field(None, alias="instanceType", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    instance_count: int | None = Field(None, alias="instanceCount", ge=1, le=1000)
    capacity: Capacity = Field(default_factory=Capacity)
    capture_destination: str | None = Field(None, alias="captureDestination")
    ground_truth: str | None = Field(None, alias="groundTruth")

    @model_validator(mode="before")
    @classmethod
    def _count_fixes_capacity(cls, value: Any) -> Any:
        """A policy that gives the candidate's `instanceCount` keeps it: `capacity: fixed` unless
        it says otherwise."""
        if isinstance(value, dict) and value.get("instanceCount") is not None and "capacity" not in value:
            return {**value, "capacity": "fixed"}
        return value

    @field_validator("endpoint", "baseline_variant", "candidate_variant")
    @classmethod
    def _sagemaker_name(cls, value: str | None) -> str | None:
        if value is not None and not RESOURCE_NAME.match(value):
            raise ValueError("must be 1-63 letters, digits and hyphens, starting and ending alphanumeric")
        return value

    @model_validator(mode="after")
    def _distinct(self) -> Target:
        if self.baseline_variant is not None and self.baseline_variant == self.candidate_variant:
            raise ValueError("baselineVariant and candidateVariant must differ")
        return self
