"""Each metric judged at one look: the unpaired tests of a live phase (`judge`: the harm e-values of
the guardrails, the confidence sequences of quality metrics against their margin) and the paired tests
of a replay (`paired_verdict`, `paired_evidence`). Pure, like `decide`, which weighs the verdicts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from manager.metrics.samples import Paired, PairedSums, PhaseData
from manager.policy import Metric, RolloutPolicy
from manager.rollout.verdicts import MetricVerdict, Status
from manager.stats.adjusted import adjusted_sequence
from manager.stats.evalues import HarmEvidence, harm_log_evalue
from manager.stats.logspace import saturating_exp
from manager.stats.paired import (
    Differences,
    Pairs,
    accuracy_difference_sequence,
    accuracy_sign_sequence,
    binomial_sequence,
    discordant_log_evalue,
    paired_mean_sequence,
)
from manager.stats.sequences import Interval, difference_sequence


def _improvement(metric: Metric, interval_low: float, interval_high: float) -> tuple[float, float]:
    """The interval on "how much better the candidate is", whichever way the metric points."""
    return (interval_low, interval_high) if metric.higher_is_better else (-interval_high, -interval_low)


def judge(
    metric: Metric,
    phases: Sequence[PhaseData],
    phase: int,
    policy: RolloutPolicy,
    harm_only: bool,
    harm: HarmEvidence | None = None,
) -> MetricVerdict:
    """One metric's verdict at this look. `harm`: for an error metric, its e-value accumulated over
    every window so far, when the caller keeps one (`rollout report` does, look after look);
    otherwise it is computed from the phases' windows."""
    evidence: dict[str, Any] = {"metric": metric.name, "role": metric.role, "phase": phase}
    if metric.counted:
        return _judge_errors(metric, phases, evidence, harm)
    current = next((p for p in phases if p.phase == phase), None)
    if current is None or current.candidate.n == 0 or current.baseline.n == 0:
        return MetricVerdict(metric.name, "no_data", evidence, metric.dry_run, metric.min_samples == 0)
    base, cand = current.baseline, current.candidate
    samples_met = min(base.n, cand.n) >= metric.min_samples
    evidence.update(
        {"baseline_n": base.n, "candidate_n": cand.n, "baseline_mean": base.mean, "candidate_mean": cand.mean}
    )
    if metric.test.type == "sequential":
        status = _judge_interval(metric, current, policy, harm_only, samples_met, evidence)
    else:
        bad = _limit_broken(metric, current, evidence) and samples_met
        status = "fail" if bad else "pass" if samples_met else "inconclusive"
    return MetricVerdict(metric.name, status, evidence, metric.dry_run, samples_met)


def _judge_errors(
    metric: Metric, phases: Sequence[PhaseData], evidence: dict[str, Any], harm: HarmEvidence | None
) -> MetricVerdict:
    """Error counts: the conditional-binomial e-value over every window of every phase."""
    if harm is None:
        every = [w for data in phases for w in data.windows]
        log_e, windows = harm_log_evalue(every), len(every)
    else:
        log_e, windows = harm.log_value, harm.windows
    n_c = sum(p.candidate.n for p in phases)
    if metric.kind == "quantile":  # the "errors" are requests over the latency threshold
        evidence.update({"counts": f"requests over the threshold of p{metric.quantile:g}"})
    evidence.update(
        {
            "log_e_value": log_e,
            "e_value": saturating_exp(log_e),
            "threshold": 1 / metric.alpha,
            "windows": windows,
            "candidate_requests": n_c,
            "baseline_requests": sum(p.baseline.n for p in phases),
            "candidate_errors": sum(p.candidate.total for p in phases),
            "baseline_errors": sum(p.baseline.total for p in phases),
        }
    )
    if n_c == 0:
        return MetricVerdict(metric.name, "no_data", evidence, metric.dry_run, metric.min_samples == 0)
    status: Status = "fail" if log_e >= math.log(1 / metric.alpha) else "pass"
    return MetricVerdict(metric.name, status, evidence, metric.dry_run, n_c >= metric.min_samples)


def _limit_broken(metric: Metric, current: PhaseData, evidence: dict[str, Any]) -> bool:
    """A threshold test (the candidate's mean within bounds) or a relative one (at most so much worse)."""
    test, base, cand = metric.test, current.baseline, current.candidate
    if test.type == "threshold":
        evidence.update({"max": test.maximum, "min": test.minimum})
        too_high = test.maximum is not None and cand.mean > test.maximum
        too_low = test.minimum is not None and cand.mean < test.minimum
        return too_high or too_low
    change = cand.mean / base.mean - 1 if base.mean else math.inf
    worse = change if not metric.higher_is_better else -change
    evidence.update({"relative_change": change, "max_increase": test.max_increase})
    return test.max_increase is not None and worse > test.max_increase


def _judge_interval(
    metric: Metric,
    current: PhaseData,
    policy: RolloutPolicy,
    harm_only: bool,
    samples_met: bool,
    evidence: dict[str, Any],
) -> Status:
    """The anytime-valid confidence sequence on the difference, against the margin; adjusted by the
    pre-period model's covariate when the metric asks for it and the requests carry one."""
    args = (
        current.baseline,
        current.candidate,
        metric.alpha,
        policy.decisions.planned_samples,
        metric.kind == "proportion",
    )
    if metric.adjust == "none":
        interval = difference_sequence(*args)
    else:
        interval, adjustment = adjusted_sequence(*args)
        evidence["adjusted"] = adjustment is not None
        if adjustment is not None:
            plain = adjustment.unadjusted
            low, high = _improvement(metric, plain.low, plain.high)
            evidence.update(
                {
                    "variance_explained": adjustment.explained,
                    "theta": adjustment.theta,
                    "unadjusted_estimate": plain.estimate,
                    "unadjusted_improvement_low": low,
                    "unadjusted_improvement_high": high,
                }
            )
    return _against_margin(metric, interval, policy, harm_only, samples_met, evidence)


def _against_margin(
    metric: Metric,
    interval: Interval,
    policy: RolloutPolicy,
    harm_only: bool,
    samples_met: bool,
    evidence: dict[str, Any],
) -> Status:
    """An interval on candidate minus baseline, against the margin: worse than it fails; a guardrail
    (or a harm-only look) passes once it has its samples; the primary passes when its lower bound
    clears -margin (0 under superiority). The bounds go into `evidence`. Paired or not, the same rule."""
    low, high = _improvement(metric, interval.low, interval.high)
    margin = metric.test.margin
    evidence.update(
        {
            "improvement_low": low,
            "improvement_high": high,
            "margin": margin,
            "estimate": interval.estimate,
            "alpha": metric.alpha,
        }
    )
    if high < -margin:
        return "fail"
    if harm_only or metric.role == "guardrail":
        return "pass" if samples_met else "inconclusive"
    floor = 0.0 if policy.decisions.superiority else -margin
    return "pass" if low > floor and samples_met else "inconclusive"


def paired_verdict(
    metric: Metric, sums: PairedSums | None, policy: RolloutPolicy, harm_only: bool
) -> MetricVerdict:
    """One quality metric judged on pairs: the accuracy difference from discordant pairs, or the mean
    per-request loss difference; the same margin, superiority and alpha as the unpaired test."""
    evidence: dict[str, Any] = {"metric": metric.name, "role": metric.role, "design": "paired"}
    if sums is None or sums.n == 0:
        return MetricVerdict(metric.name, "no_data", evidence, metric.dry_run, metric.min_samples == 0)
    samples_met = sums.n >= metric.min_samples
    evidence.update(
        {
            "pairs": int(sums.n),
            "baseline_mean": sums.sum_baseline / sums.n,
            "candidate_mean": sums.sum_candidate / sums.n,
        }
    )
    margin = metric.test.margin
    if metric.kind == "proportion":
        pairs = Pairs(int(sums.n), sums.baseline_only, sums.candidate_only)
        interval = accuracy_difference_sequence(pairs, metric.alpha)
        log_better = discordant_log_evalue(pairs)
        evidence.update(
            {
                "baseline_only": pairs.baseline_only,
                "candidate_only": pairs.candidate_only,
                "discordant": pairs.discordant,
                "log_e_value_better": log_better,
                "e_value_better": saturating_exp(log_better),
            }
        )
        if margin == 0:
            # At margin 0 only the sign matters, and theta's sequence alone decides it (at the full
            # alpha); the bounds shown scale it by the discordance seen, so they agree with the verdict.
            t_low, t_high = accuracy_sign_sequence(pairs, metric.alpha)
            share = pairs.discordant / pairs.n
            evidence.update({"theta_low": t_low, "theta_high": t_high, "bounds": "sign of theta - 1/2"})
            interval = replace(interval, low=share * (2 * t_low - 1), high=share * (2 * t_high - 1))
    else:
        diffs = Differences(int(sums.n), sums.mean_diff, sums.diff_variance)
        interval = paired_mean_sequence(diffs, metric.alpha, policy.decisions.planned_samples)
    status = _against_margin(metric, interval, policy, harm_only, samples_met, evidence)
    return MetricVerdict(metric.name, status, evidence, metric.dry_run, samples_met)


def replay_errors(policy: RolloutPolicy, paired: Paired) -> tuple[Status, dict[str, Any]]:
    """The candidate's error rate on replayed requests (which all succeeded on the baseline), by a
    confidence sequence, against the replay step's `maxErrorRate`."""
    replay = next((s.replay for s in policy.plan if s.replay), None)
    limit = replay.max_error_rate if replay else 0.01
    alpha = min((m.alpha for m in policy.metrics if m.kind == "errors"), default=0.05)
    sent = paired.sums.get("errors")
    n, errors = (int(sent.n), int(sent.sum_candidate)) if sent else (0, 0)
    low, high = binomial_sequence(errors, n, alpha)
    evidence = {
        "requests": n,
        "errors": errors,
        "error_rate_low": low,
        "error_rate_high": high,
        "max_error_rate": limit,
        "alpha": alpha,
    }
    if n == 0:
        return "no_data", evidence
    return ("fail" if low > limit else "pass" if high <= limit or n >= 100 else "inconclusive"), evidence


def pair_count(paired: Paired, policy: RolloutPolicy) -> float:
    primary = policy.primary
    sums = paired.sums.get(primary.measure) if primary is not None else None
    return sums.n if sums is not None else 0.0


def paired_evidence(paired: Paired, policy: RolloutPolicy) -> dict[str, Any]:
    """What the pairs show without labels (how often the two models agree, how far their scores
    moved) and where the replay stands: recorded at every look, labels or not."""
    out: dict[str, Any] = {"source": paired.source}
    if paired.progress is not None:
        p = paired.progress
        out.update({"planned": p.planned, "done": p.done, "failed": p.failed, "queued": p.queued})
        if p.skipped:
            out["skipped"] = dict(p.skipped)
        if p.refused:
            out["refused"] = p.refused
    agreement = paired.sums.get("agreement")
    if agreement is not None and agreement.n:
        out["agreement_rate"] = agreement.sum_candidate / agreement.n
        out["compared"] = int(agreement.n)
    shift = paired.sums.get("prediction")
    if shift is not None and shift.n >= 2:
        interval = paired_mean_sequence(
            Differences(int(shift.n), shift.mean_diff, shift.diff_variance),
            0.05,
            policy.decisions.planned_samples,
        )
        out["prediction_shift"] = {
            "mean": interval.estimate,
            "low": interval.low,
            "high": interval.high,
            "baseline_mean": shift.sum_baseline / shift.n,
            "candidate_mean": shift.sum_candidate / shift.n,
        }
    latency = paired.sums.get("latency_ms")
    if latency is not None and latency.n:
        out["candidate_latency_ms"] = latency.sum_candidate / latency.n
    errors = paired.sums.get("errors")
    if errors is not None:
        out["candidate_errors"] = int(errors.sum_candidate)
    return out
