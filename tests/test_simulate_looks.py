"""The simulator asks `decide` only at the looks that could change its answer (`simulate_looks.screen`):
the runs must end exactly as when it asks at every look, across policies, scenarios, label delays,
limits and steps; and the vectorised statistics the screen uses equal the daemon's, look for look."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from manager import policy as policies
from manager.metrics.samples import Arm, ErrorWindow
from manager.rollout import simulate
from manager.rollout.simulate import SCENARIOS, Scenario, Streams, run_once
from manager.stats.evalues import HarmEvidence
from manager.stats.sequences import difference_bounds, difference_sequence

BASE = (Path(__file__).resolve().parent.parent / "examples" / "policies" / "benchmark.yaml").read_text()
DECISIONS = re.compile(r"decisions: \{.*\}")
VARIANTS = {
    "benchmark": BASE,
    "limits": DECISIONS.sub(
        "decisions: {onInconclusive: rollback, maxSamples: 3000, maxDuration: 20m, minDuration: 3m}", BASE
    ),
    "superiority": DECISIONS.sub("decisions: {superiority: true, maxDuration: 30m, maxSamples: 9000}", BASE),
    "margin": DECISIONS.sub("decisions: {onInconclusive: pause, maxSamples: 8000}", BASE).replace(
        "test: {margin: 0}, alpha: 0.05, minSamples: 100",
        "test: {margin: 0.01}, alpha: 0.05, minSamples: 100",
    ),
    "steps": DECISIONS.sub("decisions: {maxSamples: 6000}", BASE).replace(
        "stepWeights: [50]", "stepWeights: [10, 30, 50]"
    ),
}
ADJUSTED = (
    Path(__file__).resolve().parent.parent / "examples" / "policies" / "benchmark-adjusted.yaml"
).read_text()
STREAMS = {
    "prompt": Streams(max_per_arm=0),
    "late labels": Streams(label_delay_minutes=2, check_every=50, max_per_arm=0, traffic_per_minute=300),
    "capped": Streams(check_every=20, max_per_arm=1500),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_screened_runs_end_exactly_as_runs_that_decide_at_every_look(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = policies.parse(VARIANTS[variant])
    skipped = []
    screen = simulate.screen

    def counted(*args: object) -> int:
        count = screen(*args)  # type: ignore[arg-type]
        skipped.append(count)
        return count

    monkeypatch.setattr(simulate, "screen", counted)
    for name in ("aa-accuracy", "accuracy-2pp", "accuracy+2pp", "aa-5xx", "5xx-0.5%-to-1.5%", "latency+5%"):
        for streams in STREAMS.values():
            for seed in range(2):
                screened = run_once(policy, SCENARIOS[name], streams, seed, screened=True)
                every = run_once(policy, SCENARIOS[name], streams, seed, screened=False)
                assert screened == every, (variant, name, streams, seed)
    assert max(skipped) > 10  # the screen did skip looks, by the ten at least


def test_screened_runs_with_a_covariate_end_exactly_as_runs_that_decide_at_every_look() -> None:
    for text in (ADJUSTED, ADJUSTED.replace(", adjust: prePeriodModel", "")):
        policy = policies.parse(text)
        for effect in (0.0, -0.02, 0.03):
            scenario = Scenario("covariate", "proportion", 0.85, effect, rho=0.6)
            for streams in STREAMS.values():
                for seed in range(2):
                    screened = run_once(policy, scenario, streams, seed, screened=True)
                    assert screened == run_once(policy, scenario, streams, seed, screened=False)


def test_screened_runs_of_a_quantile_guardrail_end_exactly_as_runs_that_decide_at_every_look() -> None:
    text = (
        Path(__file__).resolve().parent.parent / "examples" / "policies" / "benchmark-latency.yaml"
    ).read_text()
    policy = policies.parse(text)
    for name in ("aa-p90", "p90+10%", "mean+10%-p90-same"):
        for streams in (Streams(check_every=50, max_per_arm=3000), STREAMS["late labels"]):
            for seed in range(2):
                screened = run_once(policy, SCENARIOS[name], streams, seed, screened=True)
                assert screened == run_once(policy, SCENARIOS[name], streams, seed, screened=False)


def test_the_vectorised_sequence_is_the_daemons_look_for_look() -> None:
    rng = np.random.default_rng(3)
    for proportion in (True, False):
        rows_b = np.abs(rng.normal(5, 2, (40, 3))) * [1, 1, 10]
        rows_c = np.abs(rng.normal(5, 2, (40, 3))) * [1, 1, 10]
        rows_b[:, 0] = rows_c[:, 0] = np.arange(40)  # 0 and 1 observations included
        if proportion:
            rows_b[:, 1] = rows_b[:, 2] = np.floor(rows_b[:, 0] * 0.8)
            rows_c[:, 1] = rows_c[:, 2] = np.floor(rows_c[:, 0] * 0.7)
        d, low, high = difference_bounds(rows_b, rows_c, 0.05, 5000, proportion)
        for i in range(40):
            one = difference_sequence(Arm(*rows_b[i]), Arm(*rows_c[i]), 0.05, 5000, proportion)
            assert (d[i], low[i], high[i]) == pytest.approx((one.estimate, one.low, one.high), rel=1e-12)


def test_the_e_value_ahead_is_the_e_value_of_the_windows_added() -> None:
    rng = np.random.default_rng(4)
    before = HarmEvidence()
    before.add_many([ErrorWindow(90, 1, 10, 1), ErrorWindow(50, 2, 50, 0)])
    errors_b, errors_c = rng.poisson(0.5, 30), rng.poisson(0.8, 30)
    ahead = before.log_values_ahead(0.2, np.cumsum(errors_c), np.cumsum(errors_b + errors_c))
    for look in range(30):
        each = HarmEvidence()
        each.add_many([ErrorWindow(90, 1, 10, 1), ErrorWindow(50, 2, 50, 0)])
        each.add_many([ErrorWindow(80, errors_b[i], 20, errors_c[i]) for i in range(look + 1)])
        assert ahead[look] == pytest.approx(each.log_value, rel=1e-9, abs=1e-12)
    assert HarmEvidence().log_values_ahead(0.5, np.zeros(3), np.zeros(3)).tolist() == [0.0, 0.0, 0.0]
