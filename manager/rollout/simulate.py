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
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

from manager.metrics.samples import Paired, PairedSums, ReplayProgress
from manager.policy import Metric, RolloutPolicy
from manager.rollout.decide import decide
from manager.rollout.simulate_looks import Ahead, screen
from manager.rollout.simulate_streams import Batch, Harms, SimPhase, Source, deliver, latent_rho
from manager.rollout.verdicts import RolloutState

Truth = Literal["same", "better", "worse"]
Conclusion = Literal["promote", "rollback", "undecided"]
START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: Literal["proportion", "mean", "errors", "quantile"]
    baseline: float  # a rate for proportions and errors; the median for lognormal means and latencies
    # added to the rate; for means, the relative change of the mean; for latencies, of every request's
    # latency (`shape: scale`: each quantile moves so much), or of the mean by a longer tail above the
    # metric's quantile, which stays where it was (`shape: tail`)
    effect: float = 0.0
    sigma: float = 0.5  # lognormal shape, for means
    higher_is_better: bool = True
    # Paired (replay) runs: the share of requests on which exactly one of the two models is right.
    disagreement: float | None = None
    # A covariate for each request (what a pre-period model predicts), correlated rho with the outcome
    # (for means, with its log): drawn for the scenario's metric when given (so that an adjusted and
    # an unadjusted policy see the same streams), and for every metric that adjusts by it.
    rho: float | None = None
    shape: Literal["scale", "tail"] = "scale"
    cutoff: float | None = None  # latencies: the threshold a quantile metric counts requests over

    @property
    def candidate(self) -> float:
        relative = self.kind in ("mean", "quantile")
        return self.baseline * (1 + self.effect) if relative else self.baseline + self.effect

    @property
    def truth(self) -> Truth:
        if self.effect == 0 or (self.kind == "quantile" and self.shape == "tail"):
            return "same"  # a longer tail above the quantile leaves the quantile where it was
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
    "aa-p90": Scenario("aa-p90", "quantile", 20.0, higher_is_better=False),
    "p90+10%": Scenario("p90+10%", "quantile", 20.0, 0.10, higher_is_better=False),
    "mean+10%-p90-same": Scenario(
        "mean+10%-p90-same", "quantile", 20.0, 0.10, higher_is_better=False, shape="tail"
    ),
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


# What a metric the scenario does not name looks like: the same for both versions (an A/A stream).
QUIET = {"proportion": 0.85, "errors": 0.005, "mean": 20.0, "quantile": 20.0}


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
            flow = scenario
        else:
            flow = Scenario(m.name, m.kind, QUIET[m.kind], higher_is_better=m.higher_is_better)
        if m.kind == "quantile":  # the threshold: the baseline's true quantile times 1 + the margin
            assert m.quantile is not None
            quantile = flow.baseline * math.exp(flow.sigma * NormalDist().inv_cdf(m.quantile / 100))
            flow = replace(flow, cutoff=quantile * (1 + m.test.margin))
        out[m.name] = flow
    return out


def run_once(
    policy: RolloutPolicy, scenario: Scenario, streams: Streams, seed: int, screened: bool = True
) -> RunResult:
    """One run through `decide`. `screened`: ask `decide` only at the looks `simulate_looks.screen`
    says could change its answer (the same decisions as asking at every look, at a flat cost)."""
    rng = np.random.default_rng(seed)
    flows = streams_for(policy, scenario)
    covariates = {m.name for m in policy.metrics if m.adjust != "none"}
    if scenario.rho is not None:
        covariates.add(metric_for(policy, scenario).name)
    run = _Run(policy, flows, streams, Source(rng, flows, covariates))
    looks = 0
    while looks < 10_000:
        now = START + timedelta(minutes=run.minutes)
        state = RolloutState(
            "running", run.step, run.phase_no, run.weight, START, run.step_started, run.phase_started
        )
        observations = {m.name: [p.data(m.name) for p in run.phases] for m in policy.metrics}
        decision = decide(state, policy, observations, now, harms=run.harms.fed(run.phases))
        looks += 1
        if decision.action in ("promote", "rollback"):
            limit = decision.reason.startswith("inconclusive")
            verdicts = decision.evidence.get("metrics", {})
            failed = tuple(
                name for name, v in verdicts.items() if v.get("status") == "fail" and not v.get("dry_run")
            )
            return run.result(decision.action, scenario, limit, failed)
        if decision.action == "set_weight":
            run.weight = float(decision.weight or 0.0)
            run.phase_no += 1
            run.phases.append(SimPhase(run.phase_no, run.weight))
            run.phase_started = now
            continue
        if decision.action == "pause" and decision.reason.startswith("inconclusive"):
            return run.result("undecided", scenario, True)
        if decision.action in ("advance", "resume", "unshadow", "pause", "shadow"):
            run.step = decision.next_step if decision.next_step is not None else run.step + 1
            run.step_started = now
            if run.step > len(policy.plan) + 1:
                break
            continue
        # wait: more traffic, then look again
        room = run.room()
        if room <= 0:
            break
        looks += run.serve(state, min(room, 10_000 - looks + 1), screened) - 1
        if run.step >= len(policy.plan) and not run.phases:
            break
    return run.result("undecided", scenario)


class _Run:
    """A run's state between looks: where in the plan, the phases, and the traffic served so far."""

    def __init__(self, policy: RolloutPolicy, flows: dict[str, Scenario], streams: Streams, source: Source):
        self.policy, self.streams, self.source = policy, streams, source
        self.step, self.phase_no, self.weight = 0, 0, 0.0
        self.phases: list[SimPhase] = []
        self.pending: deque[Batch] = deque()
        self.minutes = self.served_b = self.served_c = 0.0
        self.step_started = self.phase_started = START
        self.lags = {
            m.name: streams.label_delay_minutes if m.source == "quality" else 0.0 for m in policy.metrics
        }
        self.errors = {m.name for m in policy.metrics if m.counted}
        self.harms = Harms(sorted(self.errors))
        self.batch = 2 * streams.check_every

    def room(self) -> int:
        """Batches that may still be served before the simulation's cap (0: the policy's limits only)."""
        cap = self.streams.max_per_arm
        if not cap:
            return 10_000
        left = 2 * cap - (self.served_b + self.served_c)
        return 0 if left <= 0 else math.ceil(left / self.batch)

    def serve(self, state: RolloutState, most: int, screened: bool) -> int:
        """Serve the batches up to the next look that needs `decide` (one, unscreened); how many."""
        n_c = round(self.batch * self.weight / 100)
        n_b = self.batch - n_c
        rows = self.source.ahead(n_b, n_c)
        count = 1
        if screened:
            ahead = Ahead(
                self.phases,
                self.pending,
                self.harms.fed(self.phases),
                rows,
                (n_b, n_c),
                self.minutes,
                self.batch / self.streams.traffic_per_minute,
                self.lags,
                START,
            )
            count = screen(self.policy, state, ahead, most)
        for i in range(count):
            self.minutes += self.batch / self.streams.traffic_per_minute
            self.served_b, self.served_c = self.served_b + n_b, self.served_c + n_c
            taken = {name: (b[i], c[i]) for name, (b, c) in rows.items()}
            self.pending.append(Batch(self.minutes, self.phase_no, taken))
        self.source.take(count)
        deliver(self.pending, self.phases, self.minutes, self.lags, self.errors)
        return count

    def result(
        self, outcome: Conclusion, scenario: Scenario, at_limit: bool = False, failed: tuple[str, ...] = ()
    ) -> RunResult:
        truth = scenario.truth
        exposure = self.served_c if truth == "worse" else self.served_b if truth == "better" else 0.0
        return RunResult(
            outcome, (self.served_b + self.served_c) / 2, self.minutes, exposure, at_limit, failed
        )


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


def check_covariate(policy: RolloutPolicy, scenario: Scenario) -> None:
    """A metric adjusted by a covariate needs the covariate's correlation, and one a 0/1 outcome can
    have; ValueError says what to give."""
    target = metric_for(policy, scenario)
    if target.adjust != "none" and scenario.rho is None:
        raise ValueError(
            f"metric {target.name} is adjusted by a pre-period model: give --rho, the correlation of its"
            " predictions with the outcome (a rollout's evidence shows the variance it explains: rho squared)"
        )
    if scenario.rho is not None and scenario.kind == "proportion":
        latent_rho(scenario)


def unadjusted_text(policy: RolloutPolicy, metric: str) -> str:
    """The policy's text with `metric` unadjusted: the baseline its adjustment is measured against."""
    import yaml

    metrics = [m.model_copy(update={"adjust": "none"}) if m.name == metric else m for m in policy.metrics]
    plain = policy.model_copy(update={"metrics": metrics})
    return str(yaml.safe_dump(plain.model_dump(by_alias=True, exclude_none=True)))


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
