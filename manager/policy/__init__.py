"""The RolloutPolicy: what to roll out where, in which steps, judged by which metrics, and what to do
about the verdict. YAML, validated by pydantic; every error comes back with its line number."""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from manager.clock import parse_duration
from manager.config import yamlfile as yamlconfig
from manager.policy import family, windows
from manager.policy.packages import LifeCycle, PackageTrigger
from manager.policy.query import Query
from manager.policy.specs import (
    CLOUDWATCH_MEASURES,
    ERROR_MEASURES,
    MAX_COUNT,
    MAX_DURATION,
    MEASURES,
    QUALITY_MEASURES,
    REGRESSION_MEASURES,
    Count,
    Duration,
    Spec,
)
from manager.policy.target import Candidate, Capacity, Target
from manager.policy.webhooks import FINAL_KINDS, HOOK_NAME, WEBHOOK_EVENTS, GateType, Webhook, WebhookEvent

__all__ = [
    "CLOUDWATCH_MEASURES",
    "ERROR_MEASURES",
    "FINAL_KINDS",
    "HOOK_NAME",
    "MAX_COUNT",
    "MAX_DURATION",
    "QUALITY_MEASURES",
    "REGRESSION_MEASURES",
    "WEBHOOK_EVENTS",
    "Candidate",
    "Capacity",
    "Count",
    "Duration",
    "GateType",
    "LifeCycle",
    "PackageTrigger",
    "RolloutPolicy",
    "Spec",
    "Target",
    "Webhook",
    "WebhookEvent",
]


class SetWeight(Spec):
    percent: float = Field(gt=0, le=100)


class Wait(Spec):
    duration: Duration


class Pause(Spec):
    duration: Duration | None = None  # none: a manual gate, released by `variantctl rollout resume`


class Shadow(Spec):
    percent: float = Field(gt=0, le=100)
    duration: Duration


class Replay(Spec):
    """Score the candidate, at weight 0, on recent captured requests: each answer is paired with the
    baseline's captured answer to the same request (and its label, when one came). The analysis
    steps that follow at weight 0 judge those pairs; nobody is served by the candidate meanwhile."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)

    requests: int = Field(5000, ge=1, le=1_000_000)
    window: Duration = "7d"
    max_requests_per_second: float = Field(50.0, alias="maxRequestsPerSecond", gt=0, le=10_000)
    order: Literal["newest", "sample"] = "newest"  # newest first, or a seeded sample of the window
    seed: int = Field(0, ge=0, le=2**31 - 1)
    # The candidate's error rate on the replayed requests above which it is rolled back (the captured
    # requests all succeeded on the baseline); judged by a confidence sequence at the policy's alpha.
    max_error_rate: float = Field(0.01, alias="maxErrorRate", ge=0, lt=1)


class Analysis(Spec):
    """Judge the metrics at the current weight; with `final: false`, only the harm tests may act."""

    final: bool = True


class Step(Spec):
    set_weight: SetWeight | None = Field(None, alias="setWeight")
    bake: Wait | None = None
    pause: Pause | None = None
    shadow: Shadow | None = None
    replay: Replay | None = None
    analysis: Analysis | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Step:
        given = [k for k in STEP_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("each step is exactly one of setWeight, bake, pause, shadow, replay, analysis")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in STEP_KINDS if getattr(self, k) is not None)


STEP_KINDS = ("set_weight", "bake", "pause", "shadow", "replay", "analysis")


class Test(Spec):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)

    type: Literal["sequential", "threshold", "relative"] = "sequential"
    margin: float = Field(0.0, ge=0)  # non-inferiority margin, in the metric's units
    maximum: float | None = Field(None, alias="max")  # threshold: the candidate's value must stay below
    minimum: float | None = Field(None, alias="min")
    max_increase: float | None = Field(None, alias="maxIncrease", ge=0)  # relative: candidate/baseline - 1


def _custom_measure(self: Metric) -> Metric:
    """A metric with a `query`: CloudWatch's, a mean (each window's value one observation, as the model
    latency is) or errors (the value counts errors out of the variant's invocations); its measure is
    `cw:<name>` (what its observations are stored under)."""
    if self.source != "cloudwatch":
        raise ValueError("a `query` reads CloudWatch: give `source: cloudwatch`")
    if self.kind == "proportion":
        raise ValueError("a CloudWatch query is judged as `kind: mean` or `kind: errors`, not a proportion")
    measure = f"cw:{self.name}"
    if self.measure and self.measure != measure:
        raise ValueError(f"with a `query` the measure is {measure} (or leave it out), not {self.measure!r}")
    if len(measure) > 64:
        raise ValueError("a metric with a `query` has a name of at most 61 characters")
    object.__setattr__(self, "measure", measure)
    return self


def _quantile_measure(self: Metric) -> Metric:
    """A latency quantile guardrail (`kind: quantile`): CloudWatch's ModelLatency or OverheadLatency,
    judged by how often each variant's requests exceed a threshold fixed at the start (`thresholdMs`,
    or the baseline's `quantile` over the hour before it, times 1 + the margin); its observations are
    stored under `q:<name>`, the latency it reads in `latency`."""
    latency = self.latency or self.measure
    if self.source != "cloudwatch" or latency not in ("model_latency_ms", "overhead_latency_ms"):
        raise ValueError(
            "a `kind: quantile` guardrail reads CloudWatch's latency: `source: cloudwatch` and"
            " `measure: model_latency_ms` (or overhead_latency_ms)"
        )
    if self.quantile is None or self.higher_is_better or self.role != "guardrail":
        raise ValueError(
            "a `kind: quantile` metric is a guardrail on a latency (`role: guardrail`, `higherIsBetter:"
            " false`) with its `quantile`, e.g. 90 for p90"
        )
    if self.test.type != "sequential" or self.adjust != "none" or self.query is not None:
        raise ValueError("a `kind: quantile` metric takes a sequential test with a `margin`, and no query")
    measure = f"q:{self.name}"
    if self.measure not in (latency, measure) or len(measure) > 64:
        raise ValueError(f"a quantile metric's measure is its latency ({latency}); the name at most 62 long")
    object.__setattr__(self, "latency", latency)
    object.__setattr__(self, "measure", measure)
    return self


class Metric(Spec):
    name: str
    source: Literal["quality", "cloudwatch"]
    # quality: accuracy | abs_error | squared_error; cloudwatch: errors_5xx | model_latency_ms | ...;
    # with a `query`, `cw:<name>` (filled in)
    measure: str = ""
    kind: Literal["proportion", "mean", "errors", "quantile"]
    higher_is_better: bool = Field(alias="higherIsBetter")
    role: Literal["primary", "guardrail"] = "guardrail"
    test: Test = Field(default_factory=Test)
    alpha: float = Field(0.05, gt=0, lt=0.5)
    on_no_data: Literal["pass", "inconclusive", "fail"] = Field("inconclusive", alias="onNoData")
    min_samples: int = Field(100, alias="minSamples", ge=0, le=MAX_COUNT)
    dry_run: bool = Field(False, alias="dryRun")
    query: Query | None = None  # a CloudWatch metric of your own, read per variant
    # Adjust by a covariate: a model fitted on the baseline's labelled history from before the start
    # predicts each request's outcome from its input (stats/adjusted.py)
    adjust: Literal["none", "prePeriodModel"] = "none"
    # kind quantile: which percentile (90 for p90), and the threshold, or the baseline's percentile
    # over the hour before the start times 1 + margin; `latency` is filled in (the measure read)
    quantile: float | None = Field(None, gt=0, lt=100)
    threshold_ms: float | None = Field(None, alias="thresholdMs", gt=0)
    latency: str | None = None

    @property
    def counted(self) -> bool:
        """Judged on counts per window (errors, or requests over a latency threshold) by an e-value."""
        return self.kind in ("errors", "quantile")

    @model_validator(mode="after")
    def _known_measure(self) -> Metric:
        if self.adjust != "none" and (self.source != "quality" or self.test.type != "sequential"):
            raise ValueError(
                "`adjust: prePeriodModel` sharpens a sequential test of a quality metric (accuracy,"
                " abs_error, squared_error): the covariate predicts each labelled request's outcome"
            )
        if self.kind == "quantile":
            return _quantile_measure(self)
        if self.quantile is not None or self.threshold_ms is not None:
            raise ValueError("`quantile` and `thresholdMs` belong to a `kind: quantile` metric")
        if self.query is not None:
            return _custom_measure(self)
        if not self.measure:
            raise ValueError("give a `measure`, or a CloudWatch `query` of your own")
        known = QUALITY_MEASURES if self.source == "quality" else CLOUDWATCH_MEASURES
        if self.measure not in known:
            raise ValueError(f"{self.source} measures are {', '.join(known)}, not {self.measure!r}")
        kind, higher, what = MEASURES[self.measure]
        if self.kind != kind or (higher is not None and self.higher_is_better != higher):
            wanted = f"`kind: {kind}`" + (
                f", `higherIsBetter: {str(higher).lower()}`" if higher is not None else ""
            )
            raise ValueError(
                f"measure {self.measure} is {what}: it takes {wanted}, not `kind: {self.kind}`, "
                f"`higherIsBetter: {str(self.higher_is_better).lower()}`"
            )
        return self


class BlueGreenPromotion(Spec):
    """SageMaker's limits: a canary takes 1-50% of the new fleet, a linear step 1-100%, at most 10
    alarms; the wait between steps is 0-3600 s."""

    routing: Literal["ALL_AT_ONCE", "CANARY", "LINEAR"] = "ALL_AT_ONCE"
    size_percent: int | None = Field(None, alias="sizePercent", ge=1, le=100)
    wait_seconds: int = Field(0, alias="waitSeconds", ge=0, le=3600)
    alarms: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=list, max_length=10
    )

    @model_validator(mode="after")
    def _sagemaker_limits(self) -> BlueGreenPromotion:
        if self.routing != "ALL_AT_ONCE" and self.size_percent is None:
            raise ValueError(f"{self.routing} routing needs `sizePercent`")
        if self.routing == "CANARY" and (self.size_percent or 0) > 50:
            raise ValueError("a canary may take at most 50 percent of the new fleet")
        if self.routing == "LINEAR" and not 10 <= (self.size_percent or 0) <= 50:
            raise ValueError("each linear step must be 10-50 percent of the new fleet (SageMaker's bounds)")
        return self


class Promotion(Spec):
    mode: Literal["update", "blueGreen"] = "update"
    blue_green: BlueGreenPromotion | None = Field(None, alias="blueGreen")

    @model_validator(mode="after")
    def _settings(self) -> Promotion:
        if self.mode == "blueGreen" and self.blue_green is None:
            raise ValueError("mode `blueGreen` needs its `blueGreen` settings (routing, sizePercent, ...)")
        if self.mode == "update" and self.blue_green is not None:
            raise ValueError("`blueGreen` settings apply only with mode `blueGreen`")
        return self


class Decisions(Spec):
    on_failure: Literal["rollback"] = Field("rollback", alias="onFailure")
    on_inconclusive: Literal["pause", "rollback", "extend"] = Field("rollback", alias="onInconclusive")
    progress_deadline: Duration = Field("30m", alias="progressDeadline")
    max_samples: int = Field(20_000, alias="maxSamples", ge=1, le=MAX_COUNT)
    max_duration: Duration = Field("6h", alias="maxDuration")
    min_duration: Duration = Field("0s", alias="minDuration")
    planned_samples: int = Field(5_000, alias="plannedSamples", ge=10, le=MAX_COUNT)
    # The chance that any acting metric wrongly decides on an A/A, split over them (policy/family.py).
    family_alpha: float | None = Field(None, alias="familyAlpha", gt=0, lt=0.5)
    superiority: bool = False
    # Live phases check the split: requests per variant against the weights, labels per variant
    # against requests (a sequential test at p < 0.001). What a mismatch does:
    on_sample_ratio_mismatch: Literal["pause", "rollback", "ignore"] = Field(
        "pause", alias="onSampleRatioMismatch"
    )
    promotion: Promotion = Field(default_factory=Promotion)


class Retrain(Spec):
    data: str
    config: str
    shift: str | None = None


class Trigger(Spec):
    type: Literal["manual", "newApprovedCandidate", "cron", "modelPackageApproved"] = "manual"
    # With `modelPackageApproved`, `cron` and `retrain` are optional: the retrain registers a package
    # (its config's `modelPackage`), and the package's approval starts the rollout.
    cron: str | None = None
    retrain: Retrain | None = None
    model_package_approved: PackageTrigger | None = Field(None, alias="modelPackageApproved")
    windows: list[str] = Field(default_factory=list, max_length=50)  # e.g. "Mon-Fri 09:00-17:00", UTC
    # A cron run missed while the daemon was down runs once at start if it is this late at most.
    misfire_grace: Duration = Field("1h", alias="misfireGrace")

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: list[str]) -> list[str]:
        for window in value:
            windows.parse(window)
        return value

    @model_validator(mode="after")
    def _cron(self) -> Trigger:
        if self.type == "cron" and (not self.cron or self.retrain is None):
            raise ValueError("a cron trigger needs `cron` and `retrain`")
        if (self.type == "modelPackageApproved") != (self.model_package_approved is not None):
            raise ValueError(
                "`modelPackageApproved: {group: ...}` goes with `type: modelPackageApproved`, and only there"
            )
        if (self.cron is None) != (self.retrain is None) and self.type == "modelPackageApproved":
            raise ValueError("a retrain on a schedule needs both `cron` and `retrain`")
        if self.cron is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.cron, timezone="UTC")
            except ValueError as exc:
                raise ValueError(f"cron {self.cron!r}: {exc}") from None
        return self


class RolloutPolicy(Spec):
    name: str
    target: Target
    steps: list[Step] = Field(default_factory=list)
    step_weights: list[Annotated[float, Field(gt=0, le=100)]] = Field(
        default_factory=list, alias="stepWeights"
    )
    metrics: list[Metric]
    decisions: Decisions = Field(default_factory=Decisions)
    trigger: Trigger = Field(default_factory=Trigger)
    # The label of a request does not depend on which model answered it (fraud found later, churn,
    # a measured outcome), so replayed requests may judge the primary metric. Not for recommendations,
    # pricing or anything that changes what the user does: there replay only smoke-tests.
    labels_independent_of_serving: bool = Field(False, alias="labelsIndependentOfServing")
    webhooks: list[Webhook] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _steps(self) -> RolloutPolicy:
        if self.steps and self.step_weights:
            raise ValueError("give `steps` or the `stepWeights` shorthand, not both")
        if not self.steps and not self.step_weights:
            raise ValueError("give the rollout `steps` (or `stepWeights: [5, 25, 50]`)")
        primaries = [m for m in self.metrics if m.role == "primary"]
        if len(primaries) != 1:
            raise ValueError(
                "name exactly one metric `role: primary`: the one whose evidence promotes"
                f" (this policy has {len(primaries)})"
            )
        if primaries[0].dry_run:
            raise ValueError(f"the primary metric {primaries[0].name!r} cannot be a dry run")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError("metric names must differ")
        quality = {m.measure for m in self.metrics if m.source == "quality"}
        if "accuracy" in quality and quality & set(REGRESSION_MEASURES):
            raise ValueError(
                "quality metrics judge a classifier (accuracy) or a regressor (abs_error, squared_error),"
                " not both: the model's outputs are scored one way"
            )
        hooks = [w.name for w in self.webhooks]
        if len(set(hooks)) != len(hooks):
            raise ValueError("webhook names must differ")
        if any(m.source == "quality" for m in self.metrics) and not (
            self.target.capture_destination and self.target.ground_truth
        ):
            raise ValueError("quality metrics need target.captureDestination and target.groundTruth")
        self._replay_steps()
        family.split(self)
        return self

    def _replay_steps(self) -> None:
        """A replay runs at weight 0, so it comes before any traffic moves; an analysis at weight 0
        after it judges the pairs it made, and may promote on them only when labels do not depend on
        which model served."""
        plan = self.plan
        replays = [i for i, s in enumerate(plan) if s.replay]
        moved = next((i for i, s in enumerate(plan) if s.set_weight), len(plan))
        if replays and not self.target.capture_destination:
            raise ValueError("a replay step reads captured requests: give target.captureDestination")
        if any(i > moved for i in replays):
            raise ValueError("a replay step comes before the first setWeight: it runs at weight 0")
        if any(s.shadow for s in plan[moved:]):
            raise ValueError(
                "a shadow step comes before the first setWeight: SageMaker takes one production variant"
                " beside a shadow, so the candidate shadows the baseline alone while it serves nobody"
            )
        for i, step in enumerate(plan[:moved]):
            if not step.analysis or not any(r < i for r in replays):
                continue  # (an analysis at weight 0 with no replay before it judges nothing, as ever)
            primary = self.primary
            judges_quality = primary is not None and primary.source == "quality"
            if step.analysis.final and not (self.labels_independent_of_serving and judges_quality):
                raise ValueError(
                    f"step {i}: a final analysis on replayed requests judges the primary metric on them,"
                    " which is valid only with `labelsIndependentOfServing: true` and a quality primary;"
                    " otherwise make it `analysis: {final: false}` (a smoke test of errors) and judge"
                    " the primary on live traffic"
                )

    @cached_property
    def plan(self) -> list[Step]:
        """The steps, with the shorthand expanded: each weight is set, then analysed."""
        if self.steps:
            return list(self.steps)
        out: list[Step] = []
        for i, weight in enumerate(self.step_weights):
            out.append(Step.model_validate({"setWeight": {"percent": weight}}))
            final = i == len(self.step_weights) - 1
            out.append(Step.model_validate({"analysis": {"final": final}}))
        return out

    @property
    def quality_kind(self) -> Literal["classification", "regression"]:
        """What the model's outputs are, by what its quality metrics measure: accuracy judges a
        classifier; absolute and squared error a regressor (a policy names one or the other)."""
        measures = {m.measure for m in self.metrics if m.source == "quality"}
        return "regression" if measures & set(REGRESSION_MEASURES) else "classification"

    @property
    def primary(self) -> Metric | None:
        return next((m for m in self.metrics if m.role == "primary"), None)

    def seconds(self, field: str) -> float:
        return parse_duration(getattr(self.decisions, field)).total_seconds()


def load(path: Path) -> tuple[RolloutPolicy, str]:
    """The policy and its text (kept with the rollout, with its hash)."""
    text = yamlconfig.read(path)
    return yamlconfig.parse(text, RolloutPolicy, str(path)), text


def parse(text: str, name: str = "<policy>") -> RolloutPolicy:
    return yamlconfig.parse(text, RolloutPolicy, name)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def redacted_text(text: str) -> str:
    """The policy text as the history, the events and the pages show it: its hook URLs redacted
    (`redaction.redact_urls`). The rollout keeps the whole text, whose hash is the policy's."""
    from manager.history.redaction import redact_urls

    return redact_urls(text)


# re-exported: callers say policies.describe_plan
from manager.policy.plans import describe_plan as describe_plan  # noqa: E402
from manager.policy.plans import longest_duration as longest_duration  # noqa: E402
