"""An operator's weights on an endpoint (`variantctl endpoints set-weights`, the SageMaker console's
"update weights"): through UpdateEndpointWeightsAndCapacities, refused while a rollout owns the
endpoint, and recorded (`endpoint.weights`, with the weights before and the reason) so that the
history, `endpoints show --at` and `audit verify` know them. They hold until the config changes."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select

from manager.db import Database
from manager.errors import UserError
from manager.history import audit
from manager.history.attest import WEIGHTS_EVENT
from manager.platforms.base import EndpointPlatform, EndpointState
from manager.platforms.traffic import wait_for
from manager.registry.rollouts import active_on, without_rollout
from manager.registry.tables import Endpoint


def parse(pairs: tuple[str, ...]) -> dict[str, float]:
    """`VARIANT=WEIGHT` pairs, each once; one line for the first that is not."""
    out: dict[str, float] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        try:
            weight = float(raw)
        except ValueError:
            weight = math.nan
        if not sep or not name or not math.isfinite(weight) or weight < 0:
            raise UserError(f"{pair!r}: give VARIANT=WEIGHT, a weight a finite number >= 0 (e.g. A=90 B=10)")
        if name in out:
            raise UserError(f"variant {name} is given twice")
        out[name] = weight
    if not out:
        raise UserError("give at least one VARIANT=WEIGHT")
    return out


def planned(database: Database, name: str, wanted: Mapping[str, float]) -> dict[str, float]:
    """The weights every production variant will have, checked against the registry: refused while
    a rollout owns the endpoint, for a variant it does not serve, or when all would be 0."""
    with database.read() as session:
        then = "it owns the weights: `rollout promote`, `rollout abort` or wait for it to end"
        endpoint = without_rollout(session, name, then)
        config = endpoint.current_config
        if config is None:
            raise UserError(f"endpoint {name} serves no config the registry knows")
        production = {v.variant_name: float(v.initial_weight) for v in config.variants if not v.is_shadow}
        production.update({k: float(w) for k, w in (endpoint.weights or {}).items() if k in production})
    unknown = sorted(set(wanted) - set(production))
    if unknown:
        raise UserError(
            f"{name} has no production variant {', '.join(unknown)}; it has {', '.join(sorted(production))}"
        )
    after = {**production, **wanted}
    if sum(after.values()) <= 0:
        raise UserError(f"{name}: the weights would all be 0, and nothing would serve")
    return after


def apply(
    database: Database,
    platform: EndpointPlatform,
    name: str,
    wanted: Mapping[str, float],
    actor: str,
    reason: str,
    timeout: float = 1800,
    on_poll: Callable[[EndpointState], None] | None = None,
) -> dict[str, Any]:
    """Set the weights on the platform, wait until it serves them, record them; what was recorded."""
    after = planned(database, name, wanted)
    platform.set_weights(name, after)
    wait_for(platform, name, lambda s: not s.busy, timeout, on_poll=on_poll)
    with database.write() as session:
        endpoint = session.scalar(select(Endpoint).where(Endpoint.name == name).with_for_update())
        assert endpoint is not None and endpoint.current_config is not None
        if active_on(session, name) is not None:  # one started meanwhile: it owns the weights now
            raise UserError(f"a rollout started on {name} meanwhile; its steps set the weights from now")
        before = {v.variant_name: float(v.initial_weight) for v in endpoint.current_config.variants}
        before.update(endpoint.weights or {})
        endpoint.weights = after
        total = sum(after.values())
        payload = {
            "config": endpoint.current_config.name,
            "weights": after,
            "before": {k: v for k, v in before.items() if k in after},
            "shares": {k: round(100.0 * w / total, 4) for k, w in after.items()},
        }
        audit.append(session, actor, audit.Event(WEIGHTS_EVENT, "endpoint", name, reason, payload, name))
    return payload
