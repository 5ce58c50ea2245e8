"""How often the engine decides right, how fast, and how much traffic sees the worse model.

Eight scenarios on a 50/50 split, a look every 100 observations per arm up to 20,000 per arm,
alpha 0.05, through the daemon's own `decide` (examples/policies/benchmark.yaml). Baselines, same
run and same setup: naive repeated z-tests (a 1.96 z at any look decides) and a fixed-horizon z-test
at 20,000 per arm. "Wald" is the expected samples per arm of Wald's SPRT at the error rates the
engine achieved, the floor for any sequential test; the ratio is the engine's mean over it.
Then harm exposure at -5pp: the shipped canary.yaml (5% first, harm tests only) against the same
test on a plain 50/50 split.

Paired (examples/policies/benchmark-paired.yaml: a replay at weight 0, accuracy at margin 0): A/A and
+-2pp at 85% accuracy with 10% and 5% of requests discordant, in labelled requests to a decision
against the unpaired design's total at Wald's bound (both arms, alpha 0.05 and the paired run's
beta), and the harm exposure (0 by construction). Then the sample-ratio-mismatch test: false alarms
on a fair 50/50 split over 200,000 requests checked every 100, and how soon a 51.3/48.7 split (one arm
losing 5% of its requests) is caught. Then benchmarks/decision_adjusted.py's rows: the family-wise
error with and without `familyAlpha`, and the regression-adjusted design against the unadjusted one.

    python benchmarks/decision_quality.py [--runs 10000] [--quick]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import decision_adjusted
import numpy as np

from manager import policy as policies
from manager.rollout.simulate import SCENARIOS, Scenario, Streams, Summary, correct_outcome, simulate
from manager.stats import srm

ROOT = Path(__file__).resolve().parent.parent
LOOKS = np.arange(100, 20_001, 100)


def stream_sums(s: Scenario, runs: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Per look, cumulative (n, sum, sum of squares) per arm, for `runs` streams at once."""
    n = np.broadcast_to(LOOKS, (runs, LOOKS.size)).astype(float)
    if s.kind == "mean":
        out = []
        for median in (s.baseline, s.candidate):
            draws = rng.lognormal(math.log(median), s.sigma, (runs, LOOKS[-1]))
            cs, cq = np.cumsum(draws, axis=1), np.cumsum(draws * draws, axis=1)
            out += [cs[:, LOOKS - 1], cq[:, LOOKS - 1]]
        return n, out[0], out[1], out[2], out[3]
    b = np.cumsum(rng.binomial(100, s.baseline, (runs, LOOKS.size)), axis=1).astype(float)
    c = np.cumsum(rng.binomial(100, s.candidate, (runs, LOOKS.size)), axis=1).astype(float)
    return n, b, b, c, c


def z_scores(s: Scenario, runs: int, rng: np.random.Generator) -> np.ndarray:
    n, sb, qb, sc, qc = stream_sums(s, runs, rng)
    mb, mc = sb / n, sc / n
    if s.kind == "mean":
        vb = (qb - sb * sb / n) / (n - 1)
        vc = (qc - sc * sc / n) / (n - 1)
    else:
        vb, vc = mb * (1 - mb), mc * (1 - mc)
    se = np.sqrt(np.maximum(vb / n + vc / n, 1e-18))
    z = (mc - mb) / se
    return z if s.higher_is_better else -z  # positive: the candidate looks better


def classify(s: Scenario, z_at_decision: np.ndarray, decided: np.ndarray) -> tuple[float, float, float]:
    promote = decided & (z_at_decision > 0)
    rollback = decided & (z_at_decision < 0)
    guardrail = s.kind != "proportion"  # as in benchmark.yaml: latency and 5xx only ever roll back
    if guardrail:
        promote = np.zeros_like(promote)
    outcomes = {
        "promote": promote.mean(),
        "rollback": rollback.mean(),
        "undecided": 1 - (promote | rollback).mean(),
    }
    good, bad = correct_outcome(s.truth, guardrail)
    return sum(outcomes[o] for o in good), sum(outcomes[o] for o in bad), outcomes["undecided"]


def naive_and_fixed(
    s: Scenario, runs: int, seed: int
) -> tuple[tuple[float, float, float, float], tuple[float, float, float]]:
    z = z_scores(s, runs, np.random.default_rng(seed))
    crossed = np.abs(z) > 1.959964
    if s.kind != "proportion":
        crossed = z < -1.959964  # a guardrail: only harm decides
    first = np.where(crossed.any(axis=1), crossed.argmax(axis=1), LOOKS.size - 1)
    decided = crossed.any(axis=1)
    z_first = z[np.arange(runs), first]
    naive = (
        *classify(s, z_first, decided),
        float(np.median(LOOKS[first[decided]])) if decided.any() else math.nan,
    )
    final = z[:, -1]
    fixed_decided = np.abs(final) > 1.959964 if s.kind == "proportion" else final < -1.959964
    return naive, classify(s, final, fixed_decided)


def wald_per_arm(s: Scenario, alpha: float, beta: float) -> float:
    """Wald's SPRT expected samples per arm, H0: no difference, H1: this scenario's difference."""
    if s.truth == "same":
        return math.nan
    alpha, beta = min(alpha, 0.5), min(beta, 0.5)
    if s.kind == "mean":

        def var(median: float) -> float:
            mu = math.log(median)
            return (math.exp(s.sigma**2) - 1) * math.exp(2 * mu + s.sigma**2)

        mean = lambda median: median * math.exp(s.sigma**2 / 2)  # noqa: E731
        delta, pair_var = mean(s.candidate) - mean(s.baseline), var(s.baseline) + var(s.candidate)
    else:
        delta = s.candidate - s.baseline
        pair_var = s.baseline * (1 - s.baseline) + s.candidate * (1 - s.candidate)
    kl = delta * delta / (2 * pair_var)
    numerator = (1 - beta) * math.log((1 - beta) / alpha) + beta * math.log(beta / (1 - alpha))
    return numerator / kl


def pct(x: float) -> str:
    return f"{100 * x:6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="1,000 runs: a smoke run")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    runs = 1000 if args.quick else args.runs
    engine_text = (ROOT / "examples" / "policies" / "benchmark.yaml").read_text()
    streams = Streams(traffic_per_minute=1000, check_every=100, max_per_arm=20_000)
    print(f"{runs:,} runs per scenario; 50/50; a look every 100 per arm to 20,000; alpha 0.05\n")
    header = (
        f"{'scenario':18} {'method':8} {'correct%':>8} {'wrong%':>7} {'undec%':>7} {'med n':>7} {'p90 n':>7} "
        f"{'exposure':>9} {'Wald n':>7} {'n/Wald':>6}"
    )
    print(header)
    results: dict[str, Summary] = {}
    started = time.perf_counter()
    null = {"proportion": "aa-accuracy", "mean": "aa-latency", "errors": "aa-5xx"}
    floor = 1 / (2 * runs)
    for name, scenario in SCENARIOS.items():
        s = simulate(engine_text, scenario, streams, runs, seed=args.seed)
        results[name] = s
        # Wald's alpha: how often the engine took this scenario's decision when there was no difference.
        aa = results.get(null[scenario.kind])
        alpha = max(floor, (aa.promote if scenario.truth == "better" else aa.rollback) if aa else s.wrong)
        wald = wald_per_arm(scenario, alpha, max(floor, 1 - s.correct))
        ratio = s.mean_per_arm / wald if math.isfinite(wald) else math.nan
        print(
            f"{name:18} {'engine':8} {pct(s.correct):>8} {pct(s.wrong):>7} {pct(s.undecided):>7} "
            f"{s.median_per_arm:7.0f} {s.p90_per_arm:7.0f} {s.exposure:9.0f} {wald:7.0f} {ratio:6.2f}"
        )
        naive, fixed = naive_and_fixed(scenario, runs, args.seed)
        print(
            f"{'':18} {'naive z':8} {pct(naive[0]):>8} {pct(naive[1]):>7} {pct(naive[2]):>7} {naive[3]:7.0f}"
        )
        print(f"{'':18} {'fixed':8} {pct(fixed[0]):>8} {pct(fixed[1]):>7} {pct(fixed[2]):>7} {20000:7.0f}")
    canary_text = (ROOT / "examples" / "policies" / "canary.yaml").read_text()
    canary = policies.parse(canary_text)
    plain = canary.model_copy(update={"steps": [], "step_weights": [50.0]})
    import yaml

    plain_text = yaml.safe_dump(plain.model_dump(by_alias=True, exclude_none=True))
    worse = SCENARIOS["accuracy-5pp"]
    roomy = Streams(traffic_per_minute=1000, check_every=100, max_per_arm=200_000)  # no run cut short
    c = simulate(canary_text, worse, roomy, runs, seed=args.seed + 1)
    p = simulate(plain_text, worse, roomy, runs, seed=args.seed + 1)
    print(
        f"\nharm exposure at -5pp (requests served by the worse model, mean): canary.yaml {c.exposure:,.0f} "
        f"(rolled back {pct(c.rollback).strip()}%), plain 50/50 with the same test {p.exposure:,.0f} "
        f"(rolled back {pct(p.rollback).strip()}%): ratio {c.exposure / p.exposure:.2f}"
    )
    paired(runs, args.seed)
    sample_ratio(runs, args.seed)
    decision_adjusted.family(runs, args.seed)
    decision_adjusted.adjusted(runs, args.seed)
    decision_adjusted.latency(runs, args.seed)
    print(f"({time.perf_counter() - started:.0f} s)")


def paired(runs: int, seed: int) -> None:
    text = (ROOT / "examples" / "policies" / "benchmark-paired.yaml").read_text()
    streams = Streams(traffic_per_minute=1000, check_every=100, max_per_arm=20_000)
    floor = 1 / (2 * runs)
    print(f"\npaired (replay at weight 0), {runs:,} runs each; a look every 100 pairs to 20,000; alpha 0.05")
    print(
        f"{'scenario':18} {'disagree':>8} {'correct%':>8} {'wrong%':>7} {'undec%':>7} {'mean n':>7} "
        f"{'med n':>7} {'exposure':>9} {'2-arm Wald':>10} {'ratio':>6}"
    )
    for name, effect in (("aa-accuracy", 0.0), ("accuracy+2pp", 0.02), ("accuracy-2pp", -0.02)):
        for q in (0.10, 0.05):
            if effect == 0 and q == 0.05:
                continue
            scenario = Scenario(name, "proportion", 0.85, effect, disagreement=q)
            s = simulate(text, scenario, streams, runs, seed=seed + 7)
            unpaired = Scenario(name, "proportion", 0.85, effect)
            wald = 2 * wald_per_arm(unpaired, 0.05, max(floor, 1 - s.correct)) if effect else math.nan
            ratio = s.mean_per_arm / wald if effect else math.nan
            print(
                f"{name:18} {q:8.2f} {pct(s.correct):>8} {pct(s.wrong):>7} {pct(s.undecided):>7} "
                f"{s.mean_per_arm:7.0f} {s.median_per_arm:7.0f} {s.exposure:9.0f} {wald:10.0f} {ratio:6.2f}"
            )


def sample_ratio(runs: int, seed: int, total: int = 200_000, every: int = 100) -> None:
    """The SRM test as the daemon runs it, on `runs` seeded request streams each."""
    from scipy.special import betaln

    looks = np.arange(every, total + 1, every, dtype=float)
    k = srm.CONCENTRATION
    threshold = math.log(1 / srm.ALPHA)

    def first_alarm(share: float, rng: np.random.Generator) -> np.ndarray:
        out = np.full(runs, -1.0)
        for start in range(0, runs, 1000):  # a thousand runs at a time: memory stays small
            count = min(1000, runs - start)
            x = np.cumsum(rng.binomial(every, share, (count, looks.size)), axis=1).astype(float)
            a, b = k * 0.5, k * 0.5
            log_e = betaln(a + x, b + looks - x) - betaln(a, b) + looks * math.log(2)
            hit = log_e >= threshold
            out[start : start + count] = np.where(hit.any(axis=1), looks[hit.argmax(axis=1)], -1.0)
        return out

    rng = np.random.default_rng(seed + 15)
    fair = first_alarm(0.5, rng)
    lossy = first_alarm(0.487, rng)
    caught = lossy[lossy > 0]
    print(
        f"\nsample ratio mismatch (p < {srm.ALPHA:g}, sequential,"
        f" a look every {every} requests to {total:,}):"
        f"\n  fair 50/50: false alarms in {100 * (fair > 0).mean():.3f}% of {runs:,} runs (target <= 0.1%)"
        f"\n  51.3/48.7 (one arm loses 5%): caught in {100 * caught.size / runs:.2f}% of runs"
        " (target >= 99%),"
        f" median {np.median(caught):,.0f} requests to detection (p90 {np.percentile(caught, 90):,.0f})"
    )


if __name__ == "__main__":
    main()
