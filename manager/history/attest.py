"""What the history says the registry's rows should be, so that `audit verify` covers the rows an
auditor relies on, not only the chain: model versions (artifact, framework, image, dataset, status),
endpoint configs (each variant's model, instance, weight), the config each endpoint serves, and
rollouts' final states. An edit to any of them that bypassed the history is reported.

Configs and the config an endpoint serves are described by two events, written in the transaction
that changes them: `endpoint.config` (once per config) and `endpoint.serves` (each change).
Registries from before these events get them from migration 0009, as found at upgrade time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.history import chain
from manager.registry.tables import Endpoint, EndpointConfig, ModelVersion, Rollout
from manager.registry.vocabulary import FINAL_ROLLOUT_STATES, is_final

CONFIG_EVENT = "endpoint.config"
SERVES_EVENT = "endpoint.serves"
WEIGHTS_EVENT = "endpoint.weights"  # an operator's weights (`endpoints set-weights`)
MODEL_FIELDS = ("artifact_uri", "framework", "framework_version", "image_uri", "dataset_fingerprint")
FINAL_EVENTS = {f"rollout.{state}": state for state in FINAL_ROLLOUT_STATES}


def describe_config(config: EndpointConfig) -> dict[str, Any]:
    """A config's content as its event records it (and as verify compares it)."""
    variants = sorted(
        (
            {
                "variant": v.variant_name,
                "model": v.model_version.ref,
                "instance_type": v.instance_type,
                "instance_count": v.instance_count,
                "weight": float(v.initial_weight),
                "shadow": bool(v.is_shadow),
            }
            for v in config.variants
        ),
        key=lambda v: (v["shadow"], v["variant"]),
    )
    return {"variants": variants, "capture": (config.data_capture or {}).get("destination")}


def config_recorded(session: Session, config: EndpointConfig, actor: str, at: datetime | None = None) -> None:
    event = chain.Event(
        CONFIG_EVENT,
        "endpoint_config",
        config.name,
        f"config {config.name} recorded",
        describe_config(config),
        config.endpoint_name,
    )
    chain.append(session, actor, event, at=at)


def serve(
    session: Session, endpoint: Endpoint, config: EndpointConfig, actor: str, at: datetime | None = None
) -> None:
    """`endpoint` serves `config` from now: the row and its event, if it changed."""
    if endpoint.current_config_id == config.id:
        return
    endpoint.current_config_id, endpoint.weights = config.id, None  # a new config: its own weights
    payload = {
        "config": config.name,
        "variants": {v.variant_name: v.model_version.ref for v in config.variants},
    }
    event = chain.Event(
        SERVES_EVENT,
        "endpoint",
        endpoint.name,
        f"{endpoint.name} serves {config.name}",
        payload,
        endpoint.name,
    )
    chain.append(session, actor, event, at=at)


def unserve(session: Session, endpoint: Endpoint, actor: str, at: datetime | None = None) -> None:
    """`endpoint` serves nothing the registry manages any more (it was forgotten)."""
    if endpoint.current_config_id is None:
        return
    endpoint.current_config_id, endpoint.weights = None, None
    event = chain.Event(
        SERVES_EVENT,
        "endpoint",
        endpoint.name,
        f"{endpoint.name} is no longer managed",
        {"config": None},
        endpoint.name,
    )
    chain.append(session, actor, event, at=at)


@dataclass
class Expected:
    """Fed every event in order; then compared with the rows, in the same read transaction."""

    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    serving: dict[str, str] = field(default_factory=dict)
    weights: dict[str, dict[str, float]] = field(default_factory=dict)  # an operator's, per endpoint
    finals: dict[int, str] = field(default_factory=dict)
    rollouts: set[int] = field(default_factory=set)

    def feed(self, row: Any) -> None:
        action = row.action
        if row.subject_type == "model_version" and (action == "model.register" or "status" in row.payload):
            payload = json.loads(row.payload)
            expected = self.models.setdefault(row.subject_id, {})
            if action == "model.register":
                expected.update({k: payload[k] for k in MODEL_FIELDS if k in payload})
            if "status" in payload:
                expected["status"] = payload["status"]
        elif action == CONFIG_EVENT:
            self.configs[row.subject_id] = json.loads(row.payload)
        elif action == SERVES_EVENT:
            self.serving[row.subject_id] = json.loads(row.payload)["config"]
            self.weights.pop(row.subject_id, None)
        elif action == WEIGHTS_EVENT:
            self.weights[row.subject_id] = json.loads(row.payload)["weights"]
        elif row.subject_type == "rollout" and action == "rollout.start":
            self.rollouts.add(int(row.subject_id))
        elif row.subject_type == "rollout" and action in FINAL_EVENTS:
            self.finals[int(row.subject_id)] = FINAL_EVENTS[action]

    def differences(self, session: Session) -> list[str]:
        """Each row the history disagrees with, in words; empty when all agree."""
        return [*self._models(session), *self._configs(session), *self._rollouts(session)]

    def _models(self, session: Session) -> list[str]:
        def differ(ref: str, version: ModelVersion, expected: dict[str, Any]) -> list[str]:
            return [
                f"model {ref}: {name} is {getattr(version, name)!r}, the history says {value!r}"
                for name, value in expected.items()
                if getattr(version, name) != value
            ]

        rows = {v.ref: v for v in session.scalars(select(ModelVersion))}
        return _against(
            rows,
            self.models,
            "model {} is in the registry but the history never registered it",
            "model {} was registered but its row is gone",
            differ,
        )

    def _configs(self, session: Session) -> list[str]:
        def differ(name: str, config: EndpointConfig, expected: dict[str, Any]) -> list[str]:
            same = describe_config(config) == expected
            return [] if same else [f"endpoint config {name} differs from the history's record of it"]

        rows = {c.name: c for c in session.scalars(select(EndpointConfig))}
        out = _against(
            rows,
            self.configs,
            "endpoint config {} is in the registry but not in the history",
            "endpoint config {} was recorded but its row is gone",
            differ,
        )
        for endpoint in session.scalars(select(Endpoint)):
            current = endpoint.current_config.name if endpoint.current_config else None
            said = self.serving.get(endpoint.name)
            if current != said:
                out.append(
                    f"endpoint {endpoint.name} serves {current!r} in the registry, {said!r} in the history"
                )
            weights = self.weights.get(endpoint.name)
            if (endpoint.weights or None) != weights:
                out.append(
                    f"endpoint {endpoint.name}'s operator weights are {endpoint.weights!r} in the registry, "
                    f"{weights!r} in the history"
                )
        return out

    def _rollouts(self, session: Session) -> list[str]:
        def differ(rollout_id: int, state: str, final: str | None) -> list[str]:
            if is_final(state) and final != state:
                said = final or "not finished"
                return [f"rollout {rollout_id} is {state} in the registry, {said} in the history"]
            if not is_final(state) and final is not None:
                return [f"rollout {rollout_id} is {state} in the registry, {final} in the history"]
            return []

        rows = {r.id: r.state for r in session.scalars(select(Rollout))}
        return _against(
            rows,
            {i: self.finals.get(i) for i in self.rollouts},
            "rollout {} is in the registry but the history never started it",
            "rollout {} was started but its row is gone",
            differ,
        )


def _against(
    rows: Mapping[Any, Any],
    recorded: Mapping[Any, Any],
    unrecorded: str,
    gone: str,
    differ: Callable[..., list[str]],
) -> list[str]:
    """The registry's rows against what the history recorded of them: a row the history never recorded,
    a recorded one whose row is gone, and what `differ(key, row, recorded)` finds in each of the rest."""
    out: list[str] = []
    for key, row in rows.items():
        if key not in recorded:
            out.append(unrecorded.format(key))
        else:
            out += differ(key, row, recorded[key])
    return out + [gone.format(key) for key in sorted(recorded.keys() - rows.keys())]
