"""The registry's closed sets of values, each with its predicate; light enough for the CLI to import
at start-up. The tuples feed the tables' CHECK constraints; the Literals type the code that uses them."""

from __future__ import annotations

from typing import Literal, get_args

ModelStatus = Literal["candidate", "approved", "serving", "retired", "rejected"]
RolloutStateName = Literal[
    "pending",
    "running",
    "paused",
    "promoting",
    "rolling_back",
    "promoted",
    "rolled_back",
    "aborted",
    "failed",
]
FinalState = Literal["promoted", "rolled_back", "aborted", "failed"]
RolloutIntent = Literal["pause", "resume", "abort", "promote", "skip"]

MODEL_STATUSES: tuple[ModelStatus, ...] = get_args(ModelStatus)
RUN_OUTCOMES = ("running", "succeeded", "failed")
PLATFORMS = ("sagemaker",)
ROLLOUT_STATES: tuple[RolloutStateName, ...] = get_args(RolloutStateName)
FINAL_ROLLOUT_STATES: tuple[FinalState, ...] = get_args(FinalState)
ACTIVE_ROLLOUT_STATES: tuple[RolloutStateName, ...] = tuple(
    s for s in ROLLOUT_STATES if s not in FINAL_ROLLOUT_STATES
)
ROLLOUT_INTENTS: tuple[RolloutIntent, ...] = get_args(RolloutIntent)


def is_final(state: str) -> bool:
    """A rollout in a final state never changes again."""
    return state in FINAL_ROLLOUT_STATES


# Which status a model version may move to from which: a version is gated (approved or rejected),
# serves after an endpoint is created on it or a rollout promotes it, and retires when replaced.
# Nothing returns to `candidate`, and nothing serving is approved or rejected until it has retired.
MODEL_TRANSITIONS: dict[ModelStatus, tuple[ModelStatus, ...]] = {
    "candidate": ("approved", "rejected", "serving"),
    "approved": ("approved", "rejected", "serving"),
    "rejected": ("approved", "rejected", "serving"),
    "serving": ("serving", "retired", "approved"),  # approved: its endpoint was forgotten (not by hand)
    "retired": ("serving", "retired", "rejected"),
}


# An audit event's fields as every machine output writes them (history -o json/csv, audit export).
EVENT_FIELDS = (
    "seq",
    "at",
    "actor",
    "action",
    "subject_type",
    "subject_id",
    "endpoint",
    "model",
    "reason",
    "payload",
    "prev_hash",
    "hash",
)
