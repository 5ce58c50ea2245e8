"""How long `variantctl simulate` takes per run, and what one look costs as a run grows (issue 32).

1. A/A runs of examples/policies/benchmark.yaml to the policy's own limits (a look every 50 requests
   per arm, up to the simulator's 10,000 looks): `decide` asked only at the looks that could change
   its answer (`simulate_looks.screen`), against the baseline measured in the same run, `decide`
   asked at every look (what `simulate` did before). Medians over --runs seeds, and their ratio.
2. The cost of one look at look 100, 1,000 and 10,000 of one run: `decide` with the error metrics'
   running e-values (what the simulator and `rollout report` keep), against the baseline of
   re-deciding from every window so far. Flat means the same at look 10,000 as at look 100.

    python benchmarks/simulate_speed.py [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import timedelta
from pathlib import Path

from manager import policy as policies
from manager.metrics.samples import Arm, ErrorWindow, PhaseData
from manager.rollout.decide import decide
from manager.rollout.simulate import SCENARIOS, START, Streams, run_once
from manager.rollout.verdicts import RolloutState
from manager.stats.evalues import HarmEvidence

POLICY = Path(__file__).resolve().parent.parent / "examples" / "policies" / "benchmark.yaml"


def per_run(policy: policies.RolloutPolicy, runs: int, screened: bool) -> float:
    streams = Streams(check_every=50, max_per_arm=0)
    seconds = []
    for seed in range(runs):
        started = time.perf_counter()
        run_once(policy, SCENARIOS["aa-accuracy"], streams, seed, screened)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def look_cost(policy: policies.RolloutPolicy, look: int, running: bool, repeat: int = 50) -> float:
    """Median microseconds of one `decide` at the given look of a 50/50 phase, 50 requests per arm and
    one error window per look."""
    windows = tuple(
        ErrorWindow(50.0, 0.0 if i % 3 else 1.0, 50.0, 0.0 if i % 4 else 1.0) for i in range(look)
    )
    n = 50.0 * look
    arms = {"accuracy": (Arm(n, 0.85 * n, 0.85 * n),) * 2, "latency": (Arm(n, 20 * n, 410 * n),) * 2}
    observations = {name: [PhaseData(1, *pair)] for name, pair in arms.items()}
    observations["5xx"] = [PhaseData(1, Arm(n, 0, 0), Arm(n, 0, 0), windows)]
    harms = None
    if running:
        harms = {"5xx": HarmEvidence()}
        harms["5xx"].add_many(list(windows))
    state = RolloutState("running", 1, 1, 50.0, START, START, START)
    now = START + timedelta(minutes=look / 10)
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        decide(state, policy, observations, now, harms=harms)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    policy = policies.parse(POLICY.read_text())
    run_once(policy, SCENARIOS["aa-accuracy"], Streams(max_per_arm=1000), 0)  # warm: imports, caches
    fast, slow = per_run(policy, args.runs, True), per_run(policy, args.runs, False)
    print(f"A/A to the policy's limits (10,000 looks), median of {args.runs} runs:")
    print(f"  decide at every look (baseline)   {slow:8.3f} s/run")
    print(f"  decide where it could change      {fast:8.3f} s/run   {slow / fast:5.1f}x faster")
    print("one look's decide (median µs):  look   running e-values   every window again (baseline)")
    for look in (100, 1_000, 10_000):
        running, again = look_cost(policy, look, True), look_cost(policy, look, False)
        print(f"{'':32}{look:6,}   {running:16.0f}   {again:16.0f}")


if __name__ == "__main__":
    main()
