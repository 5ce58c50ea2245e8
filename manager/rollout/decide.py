"""decide(state, policy, observations, now) -> Decision. Pure: no I/O, no clock, no randomness.

Rules, in order:
1. a decision already made is final;
2. operator intents: abort (roll back now), promote (skip the analysis), pause, resume;
3. a paused rollout waits (a timed pause ends by itself); a busy endpoint waits;
4. any guardrail's harm test rejecting rolls back, at every step with traffic;
5. a sample ratio mismatch in a live phase applies `onSampleRatioMismatch`;
6. the maximum duration applies `onInconclusive`;
7. the current step: set the weight, shadow, replay, bake, pause, or analyse; at the end of the plan,
   promote.
Each rule is a function below, in this order; each returns a Decision, or None to pass to the next.
An analysis promotes when the primary's lower bound clears -margin (0 under superiority), every
metric has its minimum sample and the minimum duration has passed; it rolls back when the primary's
upper bound is below -margin; at the maximum samples or duration it applies `onInconclusive`.
Statistics restart with each phase (weights are fixed within one), except the error-count e-value,
which multiplies across phases validly. An analysis at weight 0 after a replay step judges the pairs
the replay made (`paired`): the primary by the paired tests, when the policy says labels do not depend
on which model served, and the candidate's error rate on the replayed requests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from manager.clock import parse_duration
from manager.metrics.samples import Observations, Paired, PhaseData
from manager.policy import Metric, RolloutPolicy, Step
from manager.registry.vocabulary import is_final
from manager.rollout import operator_rules
from manager.rollout.judge import judge, pair_count, paired_evidence, paired_verdict, replay_errors
from manager.rollout.verdicts import SRM_REASON, Decision, Evidence, MetricVerdict, RolloutState
from manager.stats import srm
from manager.stats.evalues import HarmEvidence
from manager.stats.logspace import readable


def decide(
    state: RolloutState,
    policy: RolloutPolicy,
    observations: Observations,
    now: datetime,
    paired: Paired | None = None,
    requests: Sequence[PhaseData] = (),
    harms: Mapping[str, HarmEvidence] | None = None,
) -> Decision:
    """`paired`: what a replay produced; `requests`: the invocations per phase and arm (for the
    sample-ratio check of live phases); `harms`: an error metric's e-value kept window by window by
    a caller that looks often (`simulate`), the same number as from the phases' windows."""
    plan = policy.plan
    step = plan[state.step] if state.step < len(plan) else None
    early = _final(state) or operator_rules.decide(state, plan, step, now) or _busy(state, policy, now)
    if early is not None:
        return early
    harm_only = not (step is not None and step.analysis is not None and step.analysis.final)
    verdicts = [
        judge(m, observations.get(m.name, ()), state.phase, policy, harm_only, (harms or {}).get(m.name))
        for m in policy.metrics
    ]
    evidence: Evidence = {
        "step": state.step,
        "phase": state.phase,
        "weight": state.weight,
        "metrics": {v.metric: v.record() for v in verdicts},
    }
    if paired is not None:
        evidence["paired"] = paired_evidence(paired, policy)
    return (
        _harm(state, policy, verdicts, evidence)
        or _sample_ratio(state, policy, observations, requests, evidence)
        or _out_of_time(state, policy, step, evidence, now)
        or _step(state, policy, step, verdicts, evidence, now, paired)
    )


def _final(state: RolloutState) -> Decision | None:
    """Rule 1: a decision already made is final."""
    if is_final(state.state):
        return Decision("wait", f"the rollout is {state.state}; that decision is final")
    return None


def _busy(state: RolloutState, policy: RolloutPolicy, now: datetime) -> Decision | None:
    """Rule 3: a busy endpoint waits, until the progress deadline rolls it back."""
    if state.endpoint_ready:
        return None
    deadline = parse_duration(policy.decisions.progress_deadline)
    if now - state.step_started_at > deadline:
        return Decision(
            "rollback",
            f"no progress for {policy.decisions.progress_deadline}: the endpoint did not settle",
            {"step": state.step, "phase": state.phase},
        )
    return Decision("wait", "the endpoint is updating")


def _harm(
    state: RolloutState, policy: RolloutPolicy, verdicts: list[MetricVerdict], evidence: Evidence
) -> Decision | None:
    """Rule 4: at every step with traffic, a guardrail's harm (or the primary's) rolls back."""
    if state.weight <= 0:
        return None
    live = [v for v in verdicts if not v.dry_run]
    by_name = {m.name: m for m in policy.metrics}
    harmful = [v.metric for v in live if v.status == "fail" and by_name[v.metric].role == "guardrail"]
    harmful += [
        v.metric
        for v in live
        if v.status == "no_data" and by_name[v.metric].on_no_data == "fail" and v.samples_met
    ]
    if harmful:
        return Decision("rollback", f"guardrail {', '.join(harmful)} shows harm", evidence)
    # The primary's harm test acts at every step with traffic, the small canary's included.
    primary = policy.primary
    if primary is not None and any(v.metric == primary.name and v.status == "fail" for v in live):
        return _primary_worse(primary, evidence)
    return None


def _primary_worse(primary: Metric, evidence: Evidence) -> Decision:
    return Decision(
        "rollback",
        f"{primary.name}: the candidate is worse than the baseline by more than the margin "
        f"{primary.test.margin:g}",
        evidence,
    )


def _sample_ratio(
    state: RolloutState,
    policy: RolloutPolicy,
    observations: Observations,
    requests: Sequence[PhaseData],
    evidence: Evidence,
) -> Decision | None:
    """Rule 5: in a live phase, requests per variant against the weights, and labels per variant
    against requests; a mismatch biases every unpaired comparison, so `onSampleRatioMismatch` applies."""
    action = policy.decisions.on_sample_ratio_mismatch
    if action == "ignore" or not 0 < state.weight < 100 or state.shadowing:
        return None
    current = next((p for p in requests if p.phase == state.phase), None)
    if current is None:
        return None
    b, c = current.baseline.n, current.candidate.n
    checks = {"requests": srm.test(c, b + c, state.weight / 100)}
    if b > 0 and c > 0:
        for metric in policy.metrics:
            labelled = next((p for p in observations.get(metric.name, ()) if p.phase == state.phase), None)
            if metric.source == "quality" and labelled is not None:
                lb, lc = labelled.baseline.n, labelled.candidate.n
                checks["labels"] = srm.test(lc, lb + lc, c / (b + c))
                break
    evidence["sample_ratio"] = {
        name: {
            "candidate": r.candidate,
            "total": r.total,
            "expected_share": r.expected_share,
            "observed_share": r.observed_share,
            "log_e_value": r.log_e_value,
            "e_value": r.e_value,
            "threshold": 1 / r.alpha,
        }
        for name, r in checks.items()
    }
    broken = [(name, r) for name, r in checks.items() if r.mismatch]
    if not broken:
        return None
    name, r = broken[0]
    what = "requests" if name == "requests" else "labelled requests"
    reason = (
        f"{SRM_REASON}: the candidate got {r.candidate:,.0f} of {r.total:,.0f} {what}"
        f" ({r.observed_share:.1%}, expected {r.expected_share:.1%}; e = {readable(r.log_e_value)}"
        f" >= {1 / r.alpha:g})"
    )
    if action == "rollback":
        return Decision("rollback", reason, evidence)
    return Decision("pause", f"{reason}; the comparison would be biased: waiting for an operator", evidence)


def _out_of_time(
    state: RolloutState, policy: RolloutPolicy, step: Step | None, evidence: Evidence, now: datetime
) -> Decision | None:
    """Rule 5: past the maximum duration, `onInconclusive` applies (unless the plan is done)."""
    if step is not None and now - state.started_at >= parse_duration(policy.decisions.max_duration):
        return _inconclusive(
            policy, f"the maximum duration {policy.decisions.max_duration} passed", evidence, state
        )
    return None


def _step(
    state: RolloutState,
    policy: RolloutPolicy,
    step: Step | None,
    verdicts: list[MetricVerdict],
    evidence: Evidence,
    now: datetime,
    paired: Paired | None = None,
) -> Decision:
    """Rule 6: what the current step asks for; past the last step, promote."""
    if step is None:
        return Decision("promote", "every step passed", evidence)
    if step.set_weight is not None:
        if abs(state.weight - step.set_weight.percent) > 1e-9:
            return Decision(
                "set_weight",
                f"step {state.step}: candidate to {step.set_weight.percent:g}%",
                evidence,
                weight=step.set_weight.percent,
            )
        return Decision("advance", f"candidate at {state.weight:g}%", evidence, next_step=state.step + 1)
    if step.shadow is not None:
        return _shadow_step(state, policy, step, evidence, now, paired)
    if step.replay is not None:
        return _replay_step(state, policy, paired, evidence)
    if step.bake is not None:
        if now - state.step_started_at >= parse_duration(step.bake.duration):
            return Decision(
                "advance", f"bake of {step.bake.duration} done", evidence, next_step=state.step + 1
            )
        return Decision("wait", f"bake until {step.bake.duration} have passed", evidence)
    if step.pause is not None:
        return Decision(
            "pause",
            "manual gate: waiting for `variantctl rollout resume`"
            if not step.pause.duration
            else f"pause for {step.pause.duration}",
            evidence,
        )
    assert step.analysis is not None
    if state.weight <= 0 and not state.shadowing and _judges_pairs(policy, state.step):
        return _paired_analysis(policy, state, paired, evidence, now, final=step.analysis.final)
    return _analysis(policy, state, verdicts, evidence, now, final=step.analysis.final)


def _judges_pairs(policy: RolloutPolicy, step: int) -> bool:
    """An analysis at weight 0 judges pairs: after a replay, or after a shadow when labels do not
    depend on which model served (otherwise it judges what it always did: the live phase)."""
    before = policy.plan[:step]
    return any(s.replay for s in before) or (
        policy.labels_independent_of_serving and any(s.shadow for s in before)
    )


def _shadow_step(
    state: RolloutState,
    policy: RolloutPolicy,
    step: Step,
    evidence: Evidence,
    now: datetime,
    paired: Paired | None = None,
) -> Decision:
    assert step.shadow is not None
    primary = policy.primary
    if (
        state.shadowing
        and paired is not None
        and paired.source == "shadow"
        and policy.labels_independent_of_serving
        and primary is not None
        and primary.source == "quality"
    ):
        # The shadow's answers paired with production's: a worse candidate is rolled back at once.
        verdict = paired_verdict(primary, paired.sums.get(primary.measure), policy, harm_only=True)
        evidence["metrics"] = {
            **evidence.get("metrics", {}),
            primary.name: verdict.record(),
        }
        if verdict.status == "fail":
            return _primary_worse(primary, evidence)
    if not state.shadowing:
        return Decision(
            "shadow",
            f"step {state.step}: copy {step.shadow.percent:g}% of requests to the candidate as a shadow",
            evidence,
            weight=step.shadow.percent,
        )
    if now - state.step_started_at >= parse_duration(step.shadow.duration):
        return Decision(
            "unshadow", f"shadow of {step.shadow.duration} done", evidence, next_step=state.step + 1
        )
    return Decision("wait", f"shadowing until {step.shadow.duration} have passed", evidence)


def _analysis(
    policy: RolloutPolicy,
    state: RolloutState,
    verdicts: list[MetricVerdict],
    evidence: Evidence,
    now: datetime,
    final: bool,
) -> Decision:
    by_name = {m.name: m for m in policy.metrics}
    live = [v for v in verdicts if not v.dry_run]
    primary = policy.primary
    if final and primary is not None:
        verdict = next(v for v in verdicts if v.metric == primary.name)
        if verdict.status == "fail" and not verdict.dry_run:
            return _primary_worse(primary, evidence)
    for v in live:
        if v.status == "no_data" and by_name[v.metric].on_no_data == "fail":
            return Decision("rollback", f"{v.metric}: no data, and the policy says that fails", evidence)
    # `onNoData` says what missing data means for a verdict; it never stands in for the minimum sample.
    ready = all(v.samples_met for v in live)
    if not final:
        # A harm-only step (a small canary) lasts until every metric has its minimum sample, so that
        # the harm tests, the primary's included, get their chance before more traffic moves.
        if ready:
            return Decision(
                "advance", "no harm seen with the minimum samples", evidence, next_step=state.step + 1
            )
        return _limits_or_wait(policy, state, evidence, "collecting the minimum samples")
    if ready and _may_promote(policy, state, live, now):
        return Decision("promote", _shown(policy), evidence, next_step=state.step + 1)
    return _limits_or_wait(policy, state, evidence, "not decided yet")


def _may_promote(
    policy: RolloutPolicy, state: RolloutState, live: list[MetricVerdict], now: datetime
) -> bool:
    """Every acting metric passes (or has no data, and the policy says that passes), and the phase has
    lasted its minimum duration."""
    by_name = {m.name: m for m in policy.metrics}
    settled = all(
        v.status == "pass" or (v.status == "no_data" and by_name[v.metric].on_no_data == "pass") for v in live
    )
    return settled and now - state.phase_started_at >= parse_duration(policy.decisions.min_duration)


def _shown(policy: RolloutPolicy) -> str:
    return "superiority shown" if policy.decisions.superiority else "non-inferiority shown"


def _limits_or_wait(policy: RolloutPolicy, state: RolloutState, evidence: Evidence, why: str) -> Decision:
    samples = max((m.get("candidate_n", 0) for m in evidence["metrics"].values()), default=0)
    if samples >= policy.decisions.max_samples:
        return _inconclusive(
            policy, f"{policy.decisions.max_samples} samples per arm and no decision", evidence, state
        )
    return Decision("wait", why, evidence)


def _inconclusive(policy: RolloutPolicy, why: str, evidence: Evidence, state: RolloutState) -> Decision:
    action = policy.decisions.on_inconclusive
    if action == "rollback":
        return Decision("rollback", f"inconclusive: {why}", evidence)
    if action == "pause":
        return Decision("pause", f"inconclusive: {why}; waiting for an operator", evidence)
    return Decision("wait", f"inconclusive: {why}; extending", evidence)


# ---- replay: paired evidence at weight 0 -------------------------------------------------------


def _replay_step(
    state: RolloutState, policy: RolloutPolicy, paired: Paired | None, evidence: Evidence
) -> Decision:
    """The replay's plan is made by the replayer; once it exists, the analyses after it judge."""
    progress = paired.progress if paired is not None else None
    if progress is None:
        return Decision("wait", "planning the replay: reading captured requests and their labels", evidence)
    if progress.refused:
        why = f"the replay cannot run: {progress.refused}"
        if policy.decisions.on_inconclusive == "rollback":
            return Decision("rollback", why, evidence)
        return Decision("pause", f"{why}; waiting for an operator", evidence)
    return Decision(
        "advance",
        f"replaying {progress.planned} captured requests to the candidate at weight 0",
        evidence,
        next_step=state.step + 1,
    )


def _paired_analysis(
    policy: RolloutPolicy,
    state: RolloutState,
    paired: Paired | None,
    evidence: Evidence,
    now: datetime,
    final: bool,
) -> Decision:
    """An analysis at weight 0: the replay's pairs. Quality metrics are judged on them only when
    labels do not depend on which model served; the candidate's errors always are."""
    if paired is None:
        return Decision("wait", "no pairs yet", evidence)
    progress = paired.progress
    what = "replayed" if progress is not None else "shadowed"
    if progress is None:  # a shadow's pairs: its errors are the shadow variant's, in CloudWatch
        status, errors = (
            "pass",
            {"requests": int(paired.sums["prediction"].n) if "prediction" in paired.sums else 0},
        )
    else:
        status, errors = replay_errors(policy, paired)
        evidence["replay_errors"] = errors
    if status == "fail":
        return Decision(
            "rollback",
            f"the candidate failed {errors['errors']} of {errors['requests']} replayed requests"
            f" (error rate above {errors['max_error_rate']:g} at alpha {errors['alpha']:g})",
            evidence,
        )
    verdicts = []
    if policy.labels_independent_of_serving:
        for metric in policy.metrics:
            if metric.source == "quality":
                verdicts.append(paired_verdict(metric, paired.sums.get(metric.measure), policy, not final))
    evidence["metrics"] = {
        **evidence.get("metrics", {}),
        **{v.metric: v.record() for v in verdicts},
    }
    live = [v for v in verdicts if not v.dry_run]
    primary = policy.primary
    for v in live:
        if v.status == "fail":
            if primary is not None and v.metric == primary.name:
                return _primary_worse(primary, evidence)
            return Decision("rollback", f"guardrail {v.metric} shows harm on the {what} requests", evidence)
    ready = all(v.samples_met for v in live) and status != "inconclusive" and status != "no_data"
    # A replay ends when its plan is sent; a shadow's pairs may still be meeting their labels, so only
    # the policy's maximum duration and samples end the wait for them.
    exhausted = progress is not None and progress.queued == 0
    if not final:
        if ready and (exhausted or live):
            return Decision(
                "advance",
                f"no harm on {errors['requests']} {what} requests",
                evidence,
                next_step=state.step + 1,
            )
    elif ready and _may_promote(policy, state, live, now):
        return Decision(
            "promote",
            f"{_shown(policy)} on {int(pair_count(paired, policy))} {what} pairs",
            evidence,
            next_step=state.step + 1,
        )
    if exhausted and progress is not None:
        gave_up = f", {progress.failed} given up after repeated errors" if progress.failed else ""
        return _inconclusive(
            policy,
            f"the replay ended ({progress.done} of {progress.planned} answered{gave_up}) and no decision",
            evidence,
            state,
        )
    if pair_count(paired, policy) >= policy.decisions.max_samples:
        return _inconclusive(
            policy, f"{policy.decisions.max_samples} {what} pairs and no decision", evidence, state
        )
    if progress is None:
        return Decision("wait", f"{int(pair_count(paired, policy))} shadowed pairs so far", evidence)
    return Decision("wait", f"replaying: {progress.done} of {progress.planned} done", evidence)
