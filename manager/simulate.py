"""Monte Carlo of a policy's decision rule on synthetic streams, through the daemon's own `decide`.

Each run walks the policy's plan: setWeight starts a phase, analysis steps look every `check_every`
requests per arm (at an even split), and the decision is the one `decide` returns on the
observations so far (labels become visible after `label_delay_minutes`). Bake and pause steps are
passed at once (the simulation is about the statistics, not the calendar). A run ends on promote
or rollback, or undecided at `max_per_arm`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np

from manager.policy import Metric, RolloutPolicy
from manager.rollout.decide import RolloutState, decide
from manager.samples import Arm, ErrorWindow, PhaseData

Truth = Literal["same", "better", "worse"]
Conclusion = Literal["promote", "rollback", "undecided"]
START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: Literal["proportion", "mean", "errors"]
    baseline: float  # a rate for proportions and errors; the median for lognormal means
    effect: float = 0.0  # added to the rate; for means, the relative change of the mean
    sigma: float = 0.5  # lognormal shape, for means
    higher_is_better: bool = True

    @property
    def candidate(self) -> float:
        return self.baseline * (1 + self.effect) if self.kind == "mean" else self.baseline + self.effect

    @property
    def truth(self) -> Truth:
        if self.effect == 0:
            return "same"
        up = self.effect > 0
        return "better" if up == self.higher_is_better else "worse"


SCENARIOS = {
    "aa-accuracy": Scenario("aa-accuracy", "proportion", 0.85),
    "aa-latency": Scenario("aa-latency", "mean", 20.0, higher_is_better=False),
    "aa-5xx": Scenario("aa-5xx", "errors", 0.005, higher_is_better=False),
    "accuracy+2pp": Scenario("accuracy+2pp", "proportion", 0.85, 0.02),
    "accuracy-2pp": Scenario("accuracy-2pp", "proportion", 0.85, -0.02),
    "accuracy-5pp": Scenario("accuracy-5pp", "proportion", 0.85, -0.05),
    "latency+5%": Scenario("latency+5%", "mean", 20.0, 0.05, higher_is_better=False),
    "5xx-0.5%-to-1.5%": Scenario("5xx-0.5%-to-1.5%", "errors", 0.005, 0.01, higher_is_better=False),
}


@dataclass(frozen=True)
class Streams:
    traffic_per_minute: float = 1000.0
    label_delay_minutes: float = 0.0
    check_every: int = 100  # requests per arm between looks, at an even split
    max_per_arm: int = 20_000


@dataclass(frozen=True)
class RunResult:
    outcome: Conclusion
    per_arm: float  # requests per arm when the run ended (all phases)
    minutes: float
    exposure: float  # requests served by the worse model before the decision


@dataclass(frozen=True)
class _Batch:
    at: float
    phase: int
    baseline: tuple[float, float, float]
    candidate: tuple[float, float, float]
    window: ErrorWindow | None


@dataclass
class _Phase:
    number: int
    weight: float
    arms: dict[str, list[float]] = field(default_factory=lambda: {"b": [0.0, 0.0, 0.0], "c": [0.0, 0.0, 0.0]})
    windows: list[ErrorWindow] = field(default_factory=list)


def metric_for(policy: RolloutPolicy, scenario: Scenario) -> Metric:
    """The policy's metric that the scenario's stream feeds."""
    for metric in policy.metrics:
        if metric.kind == scenario.kind and not metric.dry_run:
            return metric
    raise ValueError(f"policy {policy.name} has no {scenario.kind} metric for scenario {scenario.name}")


def _draw(
    rng: np.random.Generator, scenario: Scenario, n: int, candidate: bool
) -> tuple[float, float, float]:
    if n <= 0:
        return 0.0, 0.0, 0.0
    if scenario.kind == "mean":
        median = scenario.candidate if candidate else scenario.baseline
        # The scenario's effect is on the mean: the lognormal mean is median * exp(sigma^2 / 2).
        values = rng.lognormal(math.log(median), scenario.sigma, n)
        return float(n), float(values.sum()), float(np.dot(values, values))
    p = scenario.candidate if candidate else scenario.baseline
    hits = float(rng.binomial(n, min(max(p, 0.0), 1.0)))
    return float(n), hits, hits


def run_once(policy: RolloutPolicy, scenario: Scenario, streams: Streams, seed: int) -> RunResult:
    rng = np.random.default_rng(seed)
    metric = metric_for(policy, scenario)
    # Only the scenario's metric has a stream; the others would wait for data forever.
    policy = policy.model_copy(update={"metrics": [metric]})
    plan = policy.plan
    step, phase_no, weight = 0, 0, 0.0
    phases: list[_Phase] = []
    pending: deque[_Batch] = deque()
    minutes = served_b = served_c = 0.0
    started = START
    step_started = phase_started = START
    lag = streams.label_delay_minutes if metric.source == "quality" else 0.0
    batch = 2 * streams.check_every
    for _ in range(10_000):
        now = started + timedelta(minutes=minutes)
        observations = {
            metric.name: [
                PhaseData(p.number, Arm(*p.arms["b"]), Arm(*p.arms["c"]), tuple(p.windows)) for p in phases
            ]
        }
        state = RolloutState("running", step, phase_no, weight, started, step_started, phase_started)
        decision = decide(state, policy, observations, now)
        if decision.action in ("promote", "rollback"):
            return _result(decision.action, served_b, served_c, minutes, scenario)
        if decision.action == "set_weight":
            weight = float(decision.weight or 0.0)
            phase_no += 1
            phases.append(_Phase(phase_no, weight))
            phase_started = now
            continue
        if decision.action in ("advance", "resume", "unshadow", "pause", "shadow"):
            step = decision.next_step if decision.next_step is not None else step + 1
            step_started = now
            if step > len(plan) + 1:
                break
            continue
        # wait: more traffic, then look again
        if served_b + served_c >= 2 * streams.max_per_arm:  # per arm at an even split
            break
        n_c = round(batch * weight / 100)
        n_b = batch - n_c
        minutes += batch / streams.traffic_per_minute
        b, c = _draw(rng, scenario, n_b, False), _draw(rng, scenario, n_c, True)
        served_b, served_c = served_b + n_b, served_c + n_c
        window = ErrorWindow(b[0], b[1], c[0], c[1]) if scenario.kind == "errors" else None
        pending.append(_Batch(minutes, phase_no, b, c, window))
        while pending and pending[0].at <= minutes - lag:  # labels arrive `lag` minutes late
            arrived = pending.popleft()
            target = next(p for p in phases if p.number == arrived.phase)
            for key, arm in (("b", arrived.baseline), ("c", arrived.candidate)):
                for i in range(3):
                    target.arms[key][i] += arm[i]
            if arrived.window is not None:
                target.windows.append(arrived.window)
        if step >= len(plan) and not phases:
            break
    return _result("undecided", served_b, served_c, minutes, scenario)


def _result(
    outcome: Conclusion, served_b: float, served_c: float, minutes: float, scenario: Scenario
) -> RunResult:
    truth = scenario.truth
    exposure = served_c if truth == "worse" else served_b if truth == "better" else 0.0
    return RunResult(outcome, (served_b + served_c) / 2, minutes, exposure)


def _worker(args: tuple[str, dict[str, Any], dict[str, Any], list[int]]) -> list[RunResult]:
    policy_text, scenario, streams, seeds = args
    from manager import policy as policies

    policy = policies.parse(policy_text)
    return [run_once(policy, Scenario(**scenario), Streams(**streams), seed) for seed in seeds]


@dataclass(frozen=True)
class Summary:
    scenario: str
    truth: Truth
    runs: int
    promote: float
    rollback: float
    undecided: float
    correct: float
    wrong: float
    median_per_arm: float
    p90_per_arm: float
    mean_per_arm: float
    median_minutes: float
    p90_minutes: float
    exposure: float

    def se(self, p: float) -> float:
        return math.sqrt(max(p * (1 - p), 1e-12) / self.runs)


def correct_outcome(truth: Truth, guardrail: bool) -> tuple[set[str], set[str]]:
    """(correct outcomes, wrong outcomes) for a scenario's truth. A guardrail only ever rolls back: with
    no harm, promotion at the end (or no decision) is right."""
    if truth == "worse":
        return {"rollback"}, {"promote"}
    if truth == "better":
        return {"promote"}, {"rollback"}
    if guardrail:
        return {"promote", "undecided"}, {"rollback"}
    return {"undecided"}, {"promote", "rollback"}


def summarize(scenario: Scenario, results: list[RunResult], guardrail: bool) -> Summary:
    n = len(results)
    counts = {o: sum(r.outcome == o for r in results) / n for o in ("promote", "rollback", "undecided")}
    good, bad = correct_outcome(scenario.truth, guardrail)
    decided = [r for r in results if r.outcome != "undecided"] or results
    per_arm = np.array([r.per_arm for r in decided])
    minutes = np.array([r.minutes for r in decided])
    return Summary(
        scenario.name,
        scenario.truth,
        n,
        counts["promote"],
        counts["rollback"],
        counts["undecided"],
        sum(counts[o] for o in good),
        sum(counts[o] for o in bad),
        float(np.median(per_arm)),
        float(np.percentile(per_arm, 90)),
        float(np.mean([r.per_arm for r in results])),
        float(np.median(minutes)),
        float(np.percentile(minutes, 90)),
        float(np.mean([r.exposure for r in results])),
    )


def simulate(
    policy_text: str,
    scenario: Scenario,
    streams: Streams,
    runs: int,
    seed: int = 0,
    processes: int = 2,
    progress: Any = None,
) -> Summary:
    """`runs` seeded runs over `processes` cores; the same seed gives the same figures."""
    from dataclasses import asdict
    from multiprocessing import get_context

    seeds = [seed * 1_000_003 + i for i in range(runs)]
    chunk = max(1, min(250, runs // (processes * 4) or 1))
    jobs = [
        (policy_text, asdict(scenario), asdict(streams), seeds[i : i + chunk]) for i in range(0, runs, chunk)
    ]
    results: list[RunResult] = []
    if processes <= 1:
        for job in jobs:
            results += _worker(job)
            if progress:
                progress(len(results))
    else:
        with get_context("fork").Pool(processes) as pool:
            for batch in pool.imap(_worker, jobs):
                results += batch
                if progress:
                    progress(len(results))
    from manager import policy as policies

    return summarize(scenario, results, metric_for(policies.parse(policy_text), scenario).role == "guardrail")
