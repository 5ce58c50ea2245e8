"""The SageMaker control plane: one dispatcher over the resource tables, and their state on disk.

Each kind of resource has its own module, as moto splits its backends: `models`, `configs`,
`endpoints` (life cycles, traffic shifts, routing), `jobs` (training, tuning, transform) and
`tags`. This module routes an operation to the table that implements it, applies due transitions
first, and saves the tables as one file.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from manager.local_sagemaker.autoscaling import ScalingBook
from manager.local_sagemaker.book import Shared, find
from manager.local_sagemaker.configs import Configs
from manager.local_sagemaker.endpoints import Endpoints
from manager.local_sagemaker.files import atomic_write
from manager.local_sagemaker.fleet import Route
from manager.local_sagemaker.jobs import Jobs
from manager.local_sagemaker.logs import LogStore
from manager.local_sagemaker.metrics import AlarmBook, MetricStore
from manager.local_sagemaker.models import Models
from manager.local_sagemaker.packages import Packages
from manager.local_sagemaker.protocol import AwsError, validation
from manager.local_sagemaker.tags import TagBook

__all__ = ["ControlPlane", "Route"]


class ControlPlane:
    def __init__(
        self,
        region: str,
        state_dir: Path,
        s3_root: Path,
        provision_delay: float,
        alarms: AlarmBook,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
        metrics: MetricStore | None = None,
    ) -> None:
        self.region = region
        self.state_dir = state_dir
        self.s3_root = s3_root
        self._save_lock = threading.Lock()
        self.tagbook = TagBook(self._exists)
        shared = Shared(region, clock, self._save, self.tagbook)
        self.models = Models(shared)
        self.packages = Packages(shared)
        self.models.packages = self.packages
        self.configs = Configs(shared, self.models)
        self.endpoints = Endpoints(
            shared, self.models, self.configs, alarms, state_dir, s3_root, provision_delay, seed
        )
        self.scaling = ScalingBook(region, clock, self.endpoints, metrics, self._save)
        self.endpoints.scaling_guard = self.scaling.guard_update
        self.endpoints.scaling_forget = self.scaling.forget
        self.clock = clock
        self.logs = LogStore(state_dir / "logs", region, clock)
        self._restore()
        self.jobs = Jobs(
            region, state_dir, s3_root, self.logs, self.models.get, self._tag, seed=seed, clock=clock
        )
        self._handlers = (self.models, self.packages, self.configs, self.endpoints, self.jobs, self.tagbook)

    # The endpoint table's knobs, as the host and the tests reach them.
    @property
    def delay(self) -> float:
        return self.endpoints.delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        self.endpoints.delay = seconds

    @property
    def rng(self) -> Any:
        return self.endpoints.rng

    @property
    def loaded(self) -> dict[str, Any]:
        return self.endpoints.loaded

    @property
    def on_endpoint_gone(self) -> Callable[[str], None]:
        return self.endpoints.on_gone

    @on_endpoint_gone.setter
    def on_endpoint_gone(self, callback: Callable[[str], None]) -> None:
        self.endpoints.on_gone = callback

    # ---- dispatch ---------------------------------------------------------------------------

    def handle(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        handler = next(
            (h for h in (getattr(o, f"op_{operation}", None) for o in self._handlers) if h is not None), None
        )
        if handler is None:
            raise AwsError("UnknownOperationException", f"The local SageMaker does not implement {operation}")
        self.advance()
        try:
            result: dict[str, Any] = handler(request)
        except (TypeError, AttributeError, ValueError, KeyError) as exc:
            # A field of the wrong shape (a string for a structure, a word for a number, a structure
            # without a required member): AWS answers 400, and so does the host.
            raise validation(f"malformed {operation} request: {type(exc).__name__}: {exc}") from None
        return result

    def advance(self) -> None:
        self.endpoints.advance()
        self.scaling.advance()

    def route(self, name: str, target_variant: str | None) -> Route:
        return self.endpoints.route(name, target_variant)

    def _exists(self, kind: str, name: str) -> bool:
        tables: dict[str, Any] = {
            "model": self.models.table,
            "endpoint-config": self.configs.table,
            "endpoint": self.endpoints.table,
            "training-job": self.jobs.training,
            "transform-job": self.jobs.transform,
            "hyper-parameter-tuning-job": self.jobs.tuning,
            "model-package-group": self.packages.groups,
        }
        return find(tables.get(kind, {}), name) is not None

    def _tag(self, arn: str, tags: Any) -> None:
        self.tagbook.add(arn, tags)
        self._save()

    # ---- persistence ------------------------------------------------------------------------

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    def _save(self) -> None:
        """Called from request handlers and from job threads (tags): one writer at a time, so the
        file always holds the newest state."""
        with self._save_lock:
            state = {
                "models": self.models.table,
                "configs": self.configs.table,
                "tags": self.tagbook.tags,
                "endpoints": self.endpoints.to_json(),
                "autoscaling": self.scaling.to_json(),
                "packages": self.packages.to_json(),
            }
            atomic_write(self._state_file, json.dumps(state, default=str))

    def _restore(self) -> None:
        """Reload what a previous run persisted; reload every served model before serving."""
        if not self._state_file.exists():
            return
        state = json.loads(self._state_file.read_text())
        self.models.table, self.configs.table = state["models"], state["configs"]
        self.tagbook.tags = state.get("tags", {})
        self.endpoints.restore(state["endpoints"])
        self.scaling.restore(state.get("autoscaling") or {})
        self.packages.restore(state.get("packages") or {})

    def close(self) -> None:
        self.jobs.close()
        self.endpoints.close()
