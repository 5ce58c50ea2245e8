"""What the replayer's parts share: its settings, the report of one run, the rollout it works on, and
the inference id a replayed request carries."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from manager import policy as policies
from manager.clock import utcnow
from manager.db import Database
from manager.groundtruth.records import (
    REPLAY_PREFIX,
)
from manager.groundtruth.stores import ObjectStore, open_store
from manager.platforms.base import EndpointPlatform

log = logging.getLogger("variantctl.replay")
MAX_ATTEMPTS = 5  # transport failures of one request before it is given up (counted as failed)
BODY_GONE = "the request body is gone"  # a queued request whose body was dropped: never sendable
NO_INPUT = (
    "the captured records hold no request bodies (data capture of outputs only); a replay needs"
    " CaptureMode Input or InputAndOutput on the baseline's endpoint config"
)


def replay_id(rollout_id: int, inference_id: str) -> str:
    """The inference id a replayed request carries: at most 64 characters, as InvokeEndpoint allows."""
    digest = hashlib.sha256(inference_id.encode()).hexdigest()[:32]
    return f"{REPLAY_PREFIX}{rollout_id}-{digest}"


@dataclass
class ReplayReport:
    rollout_id: int
    planned: int = 0
    sent: int = 0
    paired: int = 0  # answers recorded (errors included)
    errors: int = 0  # the candidate answered with an error
    retried: int = 0  # transport failures, left queued
    given_up: int = 0
    refused: str | None = None
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Active:
    rollout_id: int
    endpoint: str
    policy: policies.RolloutPolicy
    step_index: int  # the replay step's
    replay: policies.Replay
    baseline_variant: str
    candidate_variant: str
    planned: bool


class ReplayerBase:
    """The replayer's settings, as its planning and sending parts read them."""

    def __init__(
        self,
        database: Database,
        platform: EndpointPlatform,
        s3_client: Any = None,
        clock: Callable[[], datetime] = utcnow,
        owner: str | None = None,
        budget: timedelta = timedelta(seconds=20),
        workers: int = 8,
        batch: int = 200,
        stores: Callable[[str, Any], tuple[ObjectStore, str]] = open_store,
    ) -> None:
        self.database = database
        self.platform = platform
        self.s3_client = s3_client
        self.clock = clock
        self.owner = owner
        self.budget = budget
        self.workers = workers
        self.batch = batch
        self.stores = stores
