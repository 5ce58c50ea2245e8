"""The operator's rules of `decide` (rule 2): abort and a forced promotion act at once; a one-step
promote (Argo Rollouts' `promote`; `rollout promote ID` without --full) ends the current step now and
the plan goes on from the next one (at the last step it is a promotion without the rest of the
analysis, recorded as forced, as `--full` is); pause and resume, and a timed pause's end."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from manager.clock import parse_duration
from manager.policy import Step
from manager.rollout.verdicts import Decision, RolloutState


def decide(state: RolloutState, plan: Sequence[Step], step: Step | None, now: datetime) -> Decision | None:
    """The decision an operator's intent (or a pause) makes now, if any."""
    return _intents(state) or skip(state, plan) or _paused(state, step, now)


def _intents(state: RolloutState) -> Decision | None:
    """Rule 2, first half: abort and forced promotion act at once, whatever the state."""
    if state.intent == "abort":
        return Decision(
            "rollback",
            f"aborted by the operator: {state.intent_reason or 'no reason given'}",
            {"intent": "abort"},
        )
    if state.intent == "promote":
        return Decision(
            "promote",
            f"promoted by the operator, skipping the analysis: {state.intent_reason or 'no reason given'}",
            {"intent": "promote"},
            forced=True,
        )
    return None


def _paused(state: RolloutState, step: Step | None, now: datetime) -> Decision | None:
    """Rules 2 and 3: a paused rollout waits for resume (or its timed pause); pause when asked."""
    if state.state == "paused":
        # Resuming from a pause step moves past it; resuming an operator's pause continues the same step.
        after = state.step + 1 if step is not None and step.pause is not None else state.step
        if state.intent == "resume":
            if state.ratio_paused:  # the phase's split was wrong: its statistics start over
                return Decision(
                    "resume",
                    "resumed by the operator; the phase starts afresh after the sample ratio mismatch",
                    restart_phase=True,
                    next_step=after,
                )
            return Decision("resume", "resumed by the operator", next_step=after)
        timed = step.pause.duration if step is not None and step.pause is not None else None
        if timed and now - state.step_started_at >= parse_duration(timed):
            return Decision("resume", f"timed pause of {timed} is over", next_step=after)
        return Decision("wait", "paused")
    if state.intent == "pause":
        return Decision("pause", f"paused by the operator: {state.intent_reason or 'no reason given'}")
    return None


def skip(state: RolloutState, plan: Sequence[Step]) -> Decision | None:
    if state.intent != "skip":
        return None
    why = state.intent_reason or "no reason given"
    if state.step >= len(plan) - 1:
        return Decision(
            "promote",
            f"promoted by the operator, skipping the last step ({state.step}): {why}",
            {"intent": "skip", "step": state.step},
            forced=True,
        )
    # a paused rollout (a gate, an operator's pause) resumes past its step; a running one advances
    return Decision(
        "resume" if state.state == "paused" else "advance",
        f"step {state.step} skipped by the operator: {why}",
        {"intent": "skip", "step": state.step},
        next_step=state.step + 1,
    )
