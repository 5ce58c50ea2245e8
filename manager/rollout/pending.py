"""The platform change a rollout has decided on but may not have seen happen: `rollouts.pending`.

It is written (with its audit event) before the platform call, so a crash between the two is
repaired by the next tick, which looks for the change on the endpoint and makes it again if it never
happened. Stored as JSON in the row; this is its one typed form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

Op = Literal["deploy", "set_weight", "shadow", "unshadow", "promote", "rollback"]
OPS: tuple[Op, ...] = get_args(Op)


@dataclass(frozen=True)
class PendingChange:
    op: Op
    config: str | None = None  # the endpoint config the change moves to (all but set_weight)
    weight: float | None = None  # the candidate's percent (set_weight), the shadow's percent (shadow)
    aborted: bool = False  # a rollback the operator asked for ends `aborted`, not `rolled_back`
    # A blue/green promotion goes through the baseline alone (`via`) first: SageMaker's guardrails
    # need the new config to have the same variant names as the one the endpoint serves.
    via: str | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown pending operation {self.op!r}")
        if self.op == "set_weight" and self.weight is None:
            raise ValueError("a pending set_weight needs its weight")
        if self.op != "set_weight" and self.config is None:
            raise ValueError(f"a pending {self.op} needs its endpoint config")

    @property
    def target_config(self) -> str:
        assert self.config is not None, f"{self.op} names no config"
        return self.config

    @property
    def finishing(self) -> bool:
        return self.op in ("promote", "rollback")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op}
        if self.config is not None:
            out["config"] = self.config
        if self.weight is not None or self.op == "shadow":
            out["weight"] = self.weight
        if self.op == "rollback":
            out["aborted"] = self.aborted
        if self.via is not None:
            out["via"] = self.via
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> PendingChange | None:
        if not raw:
            return None
        weight = raw.get("weight")
        return cls(
            raw["op"],
            raw.get("config"),
            float(weight) if weight is not None else None,
            bool(raw.get("aborted", False)),
            raw.get("via"),
        )
