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
    endpoint.current_config_id = config.id
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
    endpoint.current_config_id = None
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
        elif row.subject_type == "rollout" and action == "rollout.start":
            self.rollouts.add(int(row.subject_id))
        elif row.subject_type == "rollout" and action in FINAL_EVENTS:
            self.finals[int(row.subject_id)] = FINAL_EVENTS[action]

    def differences(self, session: Session) -> list[str]:
        """Each row the history disagrees with, in words; empty when all agree."""
        return [*self._models(session), *self._configs(session), *self._rollouts(session)]

    def _models(self, session: Session) -> list[str]:
        out = []
        rows = {v.ref: v for v in session.scalars(select(ModelVersion))}
        for ref, version in rows.items():
            expected = self.models.get(ref)
            if expected is None:
                out.append(f"model {ref} is in the registry but the history never registered it")
                continue
            for name, value in expected.items():
                actual = getattr(version, name)
                if actual != value:
                    out.append(f"model {ref}: {name} is {actual!r}, the history says {value!r}")
        out += [f"model {ref} was registered but its row is gone" for ref in self.models.keys() - rows.keys()]
        return out

    def _configs(self, session: Session) -> list[str]:
        out = []
        rows = {c.name: c for c in session.scalars(select(EndpointConfig))}
        for name, config in rows.items():
            expected = self.configs.get(name)
            if expected is None:
                out.append(f"endpoint config {name} is in the registry but not in the history")
            elif describe_config(config) != expected:
                out.append(f"endpoint config {name} differs from the history's record of it")
        out += [
            f"endpoint config {name} was recorded but its row is gone"
            for name in self.configs.keys() - rows.keys()
        ]
        for endpoint in session.scalars(select(Endpoint)):
            current = endpoint.current_config.name if endpoint.current_config else None
            said = self.serving.get(endpoint.name)
            if current != said:
                out.append(
                    f"endpoint {endpoint.name} serves {current!r} in the registry, {said!r} in the history"
                )
        return out

    def _rollouts(self, session: Session) -> list[str]:
        out = []
        rows = {r.id: r.state for r in session.scalars(select(Rollout))}
        for rollout_id, state in rows.items():
            final = self.finals.get(rollout_id)
            if rollout_id not in self.rollouts:
                out.append(f"rollout {rollout_id} is in the registry but the history never started it")
            elif is_final(state) and final != state:
                said = final or "not finished"
                out.append(f"rollout {rollout_id} is {state} in the registry, {said} in the history")
            elif not is_final(state) and final is not None:
                out.append(f"rollout {rollout_id} is {state} in the registry, {final} in the history")
        out += [f"rollout {i} was started but its row is gone" for i in sorted(self.rollouts - rows.keys())]
        return out
