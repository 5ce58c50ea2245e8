"""The rows of benchmarks/decision_quality.py for issue 32, in one run with their baselines.

1. The family-wise error: the A/A of the issue (70% accuracy, a look every 50, 20,000 per arm)
   under examples/policies/benchmark.yaml, each metric at its own alpha 0.05 (the baseline), and with
   `familyAlpha: 0.05` instead; wrong decisions of either kind, and the power against -3 pp.
2. Regression adjustment (examples/policies/benchmark-adjusted.yaml, accuracy at 85%, a look every
   100): A/A and +-2 pp at rho 0.6, and +-2 pp at rho 0, adjusted against unadjusted on the same
   streams (the same seeds, covariate and all): correct decisions, and the median labelled requests
   per arm to a decision, with their ratio (theory: 1 - rho^2 = 0.64 of the variance).
3. The latency quantile guardrail (examples/policies/benchmark-latency.yaml: p90, margin 0, alpha
   0.05; lognormal latencies, median 20 ms, sigma 0.5; a look every 100 per arm to 20,000): A/A false
   alarms, a candidate 10% slower on every request (p90 +10%), and one whose mean is 10% higher by a
   longer tail with the p90 unchanged; against the baseline of the same policy with the latency judged
   as a mean (`kind: mean`, the sequential test of the mean), on the same shifts.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from manager.rollout.simulate import Scenario, Streams, simulate

ROOT = Path(__file__).resolve().parent.parent / "examples" / "policies"


def pct(x: float) -> str:
    return f"{100 * x:6.2f}"


def family(runs: int, seed: int) -> None:
    text = (ROOT / "benchmark.yaml").read_text()
    split = re.sub(r",\s*alpha: 0\.05", "", text).replace(
        "plannedSamples: 5000}", "plannedSamples: 5000, familyAlpha: 0.05}"
    )
    streams = Streams(traffic_per_minute=1000, check_every=50, max_per_arm=20_000)
    se = math.sqrt(0.05 * 0.95 / runs)
    print(f"\nfamily-wise error, {runs:,} runs each: accuracy at 70%, a look every 50 per arm to 20,000")
    print(
        f"{'policy':30} {'A/A wrong%':>10} {'rollback%':>9} {'promote%':>8} {'-3pp caught%':>12} {'med n':>6}"
    )
    for name, policy in (("each metric alpha 0.05", text), ("familyAlpha 0.05", split)):
        aa = simulate(policy, Scenario("aa-70", "proportion", 0.70), streams, runs, seed=seed + 21)
        worse = simulate(policy, Scenario("70-3pp", "proportion", 0.70, -0.03), streams, runs, seed=seed + 22)
        print(
            f"{name:30} {pct(aa.rollback + aa.promote):>10} {pct(aa.rollback):>9} {pct(aa.promote):>8}"
            f" {pct(worse.rollback):>12} {worse.median_per_arm:6.0f}"
        )
    print(f"  (the bound: 5% + 3 SE = {pct(0.05 + 3 * se).strip()}%)")


def adjusted(runs: int, seed: int) -> None:
    text = (ROOT / "benchmark-adjusted.yaml").read_text()
    plain = text.replace(", adjust: prePeriodModel", "")
    streams = Streams(traffic_per_minute=1000, check_every=100, max_per_arm=20_000)
    print(
        f"\nregression adjustment (a pre-period covariate), {runs:,} runs each: 85% accuracy, a look every"
        " 100 per arm to 20,000, alpha 0.05; the same streams with and without"
    )
    print(
        f"{'scenario':16} {'rho':>4} {'adj correct%':>12} {'adj wrong%':>10} {'adj med n':>9}"
        f" {'unadj correct%':>14} {'unadj wrong%':>12} {'unadj med n':>11} {'ratio':>6}"
    )
    for name, effect, rho in (
        ("aa-accuracy", 0.0, 0.6),
        ("accuracy-2pp", -0.02, 0.6),
        ("accuracy+2pp", 0.02, 0.6),
        ("accuracy-2pp", -0.02, 0.0),
        ("accuracy+2pp", 0.02, 0.0),
    ):
        scenario = Scenario(name, "proportion", 0.85, effect, rho=rho)
        a = simulate(text, scenario, streams, runs, seed=seed + 31)
        u = simulate(plain, scenario, streams, runs, seed=seed + 31)
        ratio = a.median_per_arm / u.median_per_arm if effect else math.nan
        print(
            f"{name:16} {rho:4.1f} {pct(a.correct):>12} {pct(a.wrong):>10} {a.median_per_arm:9.0f}"
            f" {pct(u.correct):>14} {pct(u.wrong):>12} {u.median_per_arm:11.0f} {ratio:6.2f}"
        )


def latency(runs: int, seed: int) -> None:
    text = (ROOT / "benchmark-latency.yaml").read_text()
    quantile_line = "kind: quantile, quantile: 90,\n     higherIsBetter: false"
    as_mean = text.replace(quantile_line, "kind: mean,\n     higherIsBetter: false")
    assert as_mean != text
    streams = Streams(traffic_per_minute=1000, check_every=100, max_per_arm=20_000)
    print(
        f"\nlatency guardrails, {runs:,} runs each: lognormal latencies (median 20 ms, sigma 0.5), a look"
        " every 100 per arm to 20,000, alpha 0.05: rolled back (%), and the median requests per arm to it"
    )
    print(f"{'shift':28} {'p90 guardrail':>14} {'med n':>7} {'mean guardrail':>15} {'med n':>7}")
    shifts = (
        ("none (A/A)", 0.0, "scale"),
        ("p90 +10% (every request)", 0.10, "scale"),
        ("mean +10%, p90 unchanged", 0.10, "tail"),
    )
    for label, effect, shape in shifts:
        quantile = Scenario(label, "quantile", 20.0, effect, higher_is_better=False, shape=shape)
        q = simulate(text, quantile, streams, runs, seed=seed + 41)
        p90 = 20.0 * math.exp(0.5 * 1.2815515655446004)  # where the tail starts (shape: tail)
        mean = Scenario(label, "mean", 20.0, effect, higher_is_better=False, shape=shape, cutoff=p90)
        m = simulate(as_mean, mean, streams, runs, seed=seed + 41)
        shown = f"{pct(m.rollback):>15} {m.median_per_arm if m.rollback else math.nan:7.0f}"
        q_n = q.median_per_arm if q.rollback else math.nan
        print(f"{label:28} {pct(q.rollback):>14} {q_n:7.0f} {shown}")
    print(
        "  (the mean guardrail is simulated on every request's latency; on AWS it reads one mean per"
        " minute, far fewer observations: the p90 guardrail reads every request's side of its threshold)"
    )
