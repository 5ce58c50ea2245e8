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

from manager.metrics.samples import Arm, ErrorWindow, Paired, PairedSums, PhaseData, ReplayProgress
from manager.policy import Metric, RolloutPolicy
from manager.rollout.decide import decide
from manager.rollout.verdicts import RolloutState
from manager.stats.evalues import HarmEvidence

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
    # Paired (replay) runs: the share of requests on which exactly one of the two models is right.
    disagreement: float | None = None

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
    max_per_arm: int = 20_000  # 0: run until the policy's own maxSamples or maxDuration


@dataclass(frozen=True)
class RunResult:
    outcome: Conclusion
    per_arm: float  # requests per arm when the run ended (all phases)
    minutes: float
    exposure: float  # requests served by the worse model before the decision
    at_limit: bool = False  # a rollback (or pause) at the policy's maxSamples or maxDuration, not on evidence
    failed: tuple[str, ...] = ()  # the metrics whose verdict was `fail` when it rolled back


@dataclass(frozen=True)
class _Batch:
    at: float
    phase: int
    draws: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]]  # metric: (b, c)


@dataclass
class _Phase:
    number: int
    weight: float
    arms: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # metric: {"b"|"c": n, sum, sq}
    windows: dict[str, list[ErrorWindow]] = field(default_factory=dict)

    def add(
        self, metric: str, b: tuple[float, float, float], c: tuple[float, float, float], errors: bool
    ) -> None:
        arms = self.arms.setdefault(metric, {"b": [0.0, 0.0, 0.0], "c": [0.0, 0.0, 0.0]})
        for key, arm in (("b", b), ("c", c)):
            for i in range(3):
                arms[key][i] += arm[i]
        if errors:
            self.windows.setdefault(metric, []).append(ErrorWindow(b[0], b[1], c[0], c[1]))

    def data(self, metric: str) -> PhaseData:
        arms = self.arms.get(metric, {"b": [0.0, 0.0, 0.0], "c": [0.0, 0.0, 0.0]})
        return PhaseData(self.number, Arm(*arms["b"]), Arm(*arms["c"]), tuple(self.windows.get(metric, [])))


class _Harms:
    """Each error metric's e-value, fed only the windows that arrived since the last look: a run looks
    up to 10,000 times, and re-summing every window at each look made long runs quadratic."""

    def __init__(self, metrics: list[str]) -> None:
        self.evidence = {name: HarmEvidence() for name in metrics}
        self.seen: dict[tuple[str, int], int] = {}  # (metric, phase): windows fed so far

    def fed(self, phases: list[_Phase]) -> dict[str, HarmEvidence]:
        for name, evidence in self.evidence.items():
            for p in phases:
                windows = p.windows.get(name, [])
                done = self.seen.get((name, p.number), 0)
                if len(windows) > done:
                    evidence.add_many(windows[done:])
                    self.seen[name, p.number] = len(windows)
        return self.evidence


# What a metric the scenario does not name looks like: the same for both versions (an A/A stream).
QUIET = {"proportion": 0.85, "errors": 0.005, "mean": 20.0}


def metric_for(policy: RolloutPolicy, scenario: Scenario) -> Metric:
    """The policy's metric that the scenario's effect is on: the first of its kind that acts, else a
    dry-run one (simulated and shown, never acted on)."""
    matching = [m for m in policy.metrics if m.kind == scenario.kind]
    acting = [m for m in matching if not m.dry_run]
    if acting or matching:
        return (acting or matching)[0]
    raise ValueError(f"policy {policy.name} has no {scenario.kind} metric for scenario {scenario.name}")


def streams_for(policy: RolloutPolicy, scenario: Scenario) -> dict[str, Scenario]:
    """Every metric of the policy gets a stream: the scenario's effect on its metric, A/A on the rest,
    so the guardrails can roll back in every scenario, as in the daemon."""
    target = metric_for(policy, scenario)
    out = {}
    for m in policy.metrics:
        if m.name == target.name:
            out[m.name] = scenario
        else:
            out[m.name] = Scenario(m.name, m.kind, QUIET[m.kind], higher_is_better=m.higher_is_better)
    return out


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
    flows = streams_for(policy, scenario)
    plan = policy.plan
    step, phase_no, weight = 0, 0, 0.0
    phases: list[_Phase] = []
    pending: deque[_Batch] = deque()
    minutes = served_b = served_c = 0.0
    started = START
    step_started = phase_started = START
    lags = {m.name: streams.label_delay_minutes if m.source == "quality" else 0.0 for m in policy.metrics}
    batch = 2 * streams.check_every
    harms = _Harms([m.name for m in policy.metrics if m.kind == "errors"])
    for _ in range(10_000):
        now = started + timedelta(minutes=minutes)
        observations = {m.name: [p.data(m.name) for p in phases] for m in policy.metrics}
        state = RolloutState("running", step, phase_no, weight, started, step_started, phase_started)
        decision = decide(state, policy, observations, now, harms=harms.fed(phases))
        if decision.action in ("promote", "rollback"):
            limit = decision.reason.startswith("inconclusive")
            verdicts = decision.evidence.get("metrics", {})
            failed = tuple(
                name for name, v in verdicts.items() if v.get("status") == "fail" and not v.get("dry_run")
            )
            return _result(decision.action, served_b, served_c, minutes, scenario, limit, failed)
        if decision.action == "set_weight":
            weight = float(decision.weight or 0.0)
            phase_no += 1
            phases.append(_Phase(phase_no, weight))
            phase_started = now
            continue
        if decision.action == "pause" and decision.reason.startswith("inconclusive"):
            return _result("undecided", served_b, served_c, minutes, scenario, True)
        if decision.action in ("advance", "resume", "unshadow", "pause", "shadow"):
            step = decision.next_step if decision.next_step is not None else step + 1
            step_started = now
            if step > len(plan) + 1:
                break
            continue
        # wait: more traffic, then look again
        if streams.max_per_arm and served_b + served_c >= 2 * streams.max_per_arm:  # 0: the policy's limits
            break
        n_c = round(batch * weight / 100)
        n_b = batch - n_c
        minutes += batch / streams.traffic_per_minute
        draws = {
            name: (_draw(rng, flow, n_b, False), _draw(rng, flow, n_c, True)) for name, flow in flows.items()
        }
        served_b, served_c = served_b + n_b, served_c + n_c
        pending.append(_Batch(minutes, phase_no, draws))
        for batch_ in list(pending):
            target = next((p for p in phases if p.number == batch_.phase), None)
            if target is None:
                continue
            for name, (b, c) in list(batch_.draws.items()):
                if batch_.at <= minutes - lags[name]:  # labels arrive `lag` minutes late
                    target.add(name, b, c, flows[name].kind == "errors")
                    del batch_.draws[name]
        while pending and not pending[0].draws:
            pending.popleft()
        if step >= len(plan) and not phases:
            break
    return _result("undecided", served_b, served_c, minutes, scenario)


def _result(
    outcome: Conclusion,
    served_b: float,
    served_c: float,
    minutes: float,
    scenario: Scenario,
    at_limit: bool = False,
    failed: tuple[str, ...] = (),
) -> RunResult:
    truth = scenario.truth
    exposure = served_c if truth == "worse" else served_b if truth == "better" else 0.0
    return RunResult(outcome, (served_b + served_c) / 2, minutes, exposure, at_limit, failed)


def check_paired(policy: RolloutPolicy, scenario: Scenario) -> None:
    """A paired run needs an accuracy scenario, a disagreement that can hold its effect, and a policy
    whose replay judges the primary; ValueError says which is missing."""
    q = scenario.disagreement
    if q is None:
        return
    if scenario.kind != "proportion":
        raise ValueError("--disagreement simulates paired accuracy: choose an accuracy scenario")
    if not 0 < q <= 1 or abs(scenario.effect) > q:
        raise ValueError(
            f"a disagreement of {q:g} cannot hold an accuracy difference of {scenario.effect:+g}:"
            " it must be at least the difference"
        )
    if not any(s.replay for s in policy.plan) or not policy.labels_independent_of_serving:
        raise ValueError(
            f"policy {policy.name} has no replay step judged on labels (a `replay` step and"
            " `labelsIndependentOfServing: true`): --disagreement simulates that paired design"
        )


def run_paired_once(policy: RolloutPolicy, scenario: Scenario, streams: Streams, seed: int) -> RunResult:
    """One replay at weight 0: `check_every` labelled pairs between looks, each discordant with
    chance `disagreement` (split so that the accuracy difference is the scenario's), judged by
    `decide` on the pairs. Nobody is served by the candidate, so the harm exposure is 0."""
    assert scenario.disagreement is not None
    rng = np.random.default_rng(seed)
    q, delta, p_b = scenario.disagreement, scenario.effect, scenario.baseline
    # per pair: (baseline only right, candidate only right, both right, both wrong)
    chances = [(q - delta) / 2, (q + delta) / 2, p_b - (q - delta) / 2, 0.0]
    chances[3] = max(0.0, 1.0 - sum(chances[:3]))
    replay = next(s.replay for s in policy.plan if s.replay)
    planned = min(replay.requests, streams.max_per_arm or replay.requests)
    step, n, b_only, c_only, both = 0, 0, 0, 0, 0
    minutes = 0.0
    for _ in range(100_000):
        now = START + timedelta(minutes=minutes)
        right_b = both + b_only
        sums = {
            "accuracy": PairedSums(n, right_b, both + c_only, c_only - b_only, b_only + c_only),
            "errors": PairedSums(n, 0.0, 0.0, 0.0, 0.0),
        }
        paired = Paired("replay", sums, ReplayProgress(planned=planned, done=n))
        state = RolloutState("running", step, 0, 0.0, START, START, START)
        decision = decide(state, policy, {}, now, paired=paired)
        if decision.action in ("promote", "rollback"):
            limit = decision.reason.startswith("inconclusive")
            return RunResult(decision.action, float(n), minutes, 0.0, limit)
        if decision.action == "advance":
            step = decision.next_step if decision.next_step is not None else step + 1
            if step >= len(policy.plan) or policy.plan[step].set_weight:
                return RunResult("undecided", float(n), minutes, 0.0)
            continue
        if decision.action != "wait" or n >= planned:
            return RunResult("undecided", float(n), minutes, 0.0, decision.action == "pause")
        take = min(streams.check_every, planned - n)
        drawn = rng.multinomial(take, chances)
        b_only, c_only, both = b_only + int(drawn[0]), c_only + int(drawn[1]), both + int(drawn[2])
        n += take
        minutes += take / streams.traffic_per_minute
    return RunResult("undecided", float(n), minutes, 0.0)


def _worker(args: tuple[str, dict[str, Any], dict[str, Any], list[int]]) -> list[RunResult]:
    policy_text, scenario, streams, seeds = args
    from manager import policy as policies

    policy = policies.parse(policy_text)
    chosen, flows = Scenario(**scenario), Streams(**streams)
    once = run_paired_once if chosen.disagreement is not None else run_once
    return [once(policy, chosen, flows, seed) for seed in seeds]


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
    rollback_at_limit: float = 0.0  # rollbacks at the policy's maxSamples or maxDuration, not on evidence
    ended_at_limit: float = 0.0  # every run the policy's own limits ended (rolled back, paused or undecided)
    rollback_by_others: float = 0.0  # rollbacks on another metric's evidence (a guardrail, at its alpha)

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


def summarize(scenario: Scenario, results: list[RunResult], guardrail: bool, target: str = "") -> Summary:
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
        sum(r.outcome == "rollback" and r.at_limit for r in results) / n,
        sum(r.at_limit for r in results) / n,
        sum(r.outcome == "rollback" and bool(r.failed) and target not in r.failed for r in results) / n,
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

    metric = metric_for(policies.parse(policy_text), scenario)
    return summarize(scenario, results, metric.role == "guardrail", metric.name)
