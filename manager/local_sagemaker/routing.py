"""Where each request to a local endpoint goes: TargetVariant, or a draw by weight (new fleet and old
while traffic shifts), the shadows that get a copy, and the capture policy."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from manager.local_sagemaker.book import Shared, find
from manager.local_sagemaker.capture import CapturePolicy
from manager.local_sagemaker.fleet import Endpoint, Route, Variant
from manager.local_sagemaker.models import Models
from manager.local_sagemaker.protocol import ACCOUNT, AwsError
from manager.local_sagemaker.runtime import LoadedModel


class Routing:
    """Mixed into the endpoint table, which provides these."""

    table: dict[str, Endpoint]
    shared: Shared
    models: Models
    rng: random.Random
    loaded: dict[str, LoadedModel]
    _capture_cache: dict[int, tuple[dict[str, Any] | None, CapturePolicy | None]]
    advance: Callable[[], None]

    def route(self, name: str, target_variant: str | None) -> Route:
        """Pick the variant for one request: TargetVariant if given, else at random by weight."""
        self.advance()
        e = find(self.table, name)
        if e is None or e.status in ("Creating", "Failed", "Deleting"):
            state = "not found" if e is None else f"not in service ({e.status})"
            raise AwsError("ValidationError", f"Endpoint {name} of account {ACCOUNT} {state}.")
        variants, capture, shadows = e.variants, e.capture, e.shadows
        p = e.pending
        if (
            p is not None
            and p.kind == "update"
            and p.load is not None
            and p.load.done()
            and p.load.exception() is None
            and self.rng.random() < p.fraction(self.shared.clock())
        ):
            variants, capture, shadows = p.variants, p.capture, p.shadows
        if target_variant is not None:
            chosen = next((v for v in variants if v.name == target_variant), None)
            if chosen is None:
                raise AwsError(
                    "ValidationError", f"Target variant {target_variant} is not present in endpoint {name}."
                )
        else:
            chosen = self._by_weight(variants)
            others = [v for v in variants if v is not chosen and v.weight > 0]
            away = self._loaded(chosen.model_name).fault.route_away
            if others and away and self.rng.random() < away:
                chosen = self._by_weight(others)
        return Route(
            e.name,
            chosen.name,
            self._loaded(chosen.model_name),
            self._capture(capture),
            tuple(
                (s.name, self._loaded(s.model_name))
                for s in shadows
                if self.rng.random() < self._shadow_share(s, variants)
            ),
        )

    def _by_weight(self, variants: list[Variant]) -> Variant:
        total = sum(v.weight for v in variants)
        if total <= 0:
            raise AwsError("ValidationError", "No production variant has a positive weight.")
        pick = self.rng.random() * total
        for v in variants:
            pick -= v.weight
            if pick < 0:
                return v
        return variants[-1]

    @staticmethod
    def _shadow_share(shadow: Variant, production: list[Variant]) -> float:
        """A shadow variant gets a copy of (its weight / production weight) of the requests."""
        total = sum(v.weight for v in production)
        return min(1.0, shadow.weight / total) if total > 0 else 0.0

    def _loaded(self, model_name: str) -> LoadedModel:
        model = find(self.models.table, model_name)
        loaded = self.loaded.get(f"{model_name}@{model['CreationTime']}") if model else None
        if loaded is None:
            # Deleting a Model does not stop an endpoint that serves it; find it by name.
            loaded = next((m for k, m in self.loaded.items() if k.split("@")[0] == model_name), None)
        if loaded is None:
            raise AwsError("ModelNotReadyException", f"Model {model_name} is not loaded yet.", status=429)
        return loaded

    def _capture(self, config: dict[str, Any] | None) -> CapturePolicy | None:
        # Keyed by identity, holding the config itself so that its id cannot be reused.
        cached = self._capture_cache.get(id(config))
        if cached is None or cached[0] is not config:
            cached = self._capture_cache[id(config)] = (config, CapturePolicy.from_config(config))
        return cached[1]
