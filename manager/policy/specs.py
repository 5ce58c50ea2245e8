"""What every part of a policy shares: strict frozen specs, bounded durations and counts, and the
measures each metric source knows."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from manager.clock import parse_duration
from manager.errors import UserError


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


MAX_DURATION = timedelta(days=366)
MAX_COUNT = 1_000_000_000
# What each source measures (tests/test_policy.py refuses anything else).
QUALITY_MEASURES = ("accuracy", "abs_error", "squared_error")
REGRESSION_MEASURES = ("abs_error", "squared_error")
CLOUDWATCH_MEASURES = ("invocations", "errors_4xx", "errors_5xx", "model_latency_ms", "overhead_latency_ms")
ERROR_MEASURES = ("errors_4xx", "errors_5xx")
# What each measure is: the kind of statistic it takes, which way is better (None: either, an operator's
# choice), and the words that say so. A metric that points the wrong way would promote the worse model.
MEASURES: dict[str, tuple[str, bool | None, str]] = {
    "accuracy": ("proportion", True, "the share of correct answers (higher is better)"),
    "abs_error": ("mean", False, "a regression's absolute error per request (lower is better)"),
    "squared_error": ("mean", False, "a regression's squared error per request (lower is better)"),
    "errors_4xx": ("errors", False, "a count of 4xx answers (fewer is better)"),
    "errors_5xx": ("errors", False, "a count of 5xx answers (fewer is better)"),
    "model_latency_ms": ("mean", False, "the model's latency in ms (lower is better)"),
    "overhead_latency_ms": ("mean", False, "SageMaker's overhead latency in ms (lower is better)"),
    "invocations": ("mean", None, "requests per minute"),
}


def _bounded_duration(text: str) -> str:
    try:
        too_long = parse_duration(text) > MAX_DURATION
    except UserError:
        too_long = True
    if too_long:
        raise ValueError(f"at most {MAX_DURATION.days} days")
    return text


Duration = Annotated[
    str, Field(pattern=r"^\s*\d{1,9}(\.\d{1,9})?\s*(ms|s|m|h|d|w)\s*$"), AfterValidator(_bounded_duration)
]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
