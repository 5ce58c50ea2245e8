"""The operator intents, one list for the CLI's commands and the dashboard's buttons, and how each is
written: an intent the daemon carries out within one tick (`pause`, `resume`, `abort`, `promote`), or
the approval of a manual gate, which is a `resume` of a rollout paused at one."""

from __future__ import annotations

from typing import Any, Literal

OperatorIntent = Literal["pause", "resume", "approve", "abort", "skip", "promote"]
INTENTS: tuple[OperatorIntent, ...] = ("pause", "resume", "approve", "abort", "skip", "promote")
INTENT_HELP: dict[OperatorIntent, str] = {
    "pause": "hold the rollout where it is",
    "resume": "continue a paused rollout",
    "approve": "release the manual gate the rollout waits at",
    "abort": "roll back now: the endpoint ends on the baseline alone",
    "skip": "end the current step now and go on with the next (at the last step: promote)",
    "promote": "promote WITHOUT the analysis (recorded loudly)",
}


def applies(intent: str) -> tuple[str, ...]:
    """The states `intent` applies to (the registry's rules; `approve`: paused at a manual gate): the
    dashboard's buttons are disabled in the others, as Argo's are."""
    from manager.registry.rollouts import INTENTS as REGISTRY_RULES  # not at import: `--help` stays light

    return ("paused",) if intent == "approve" else REGISTRY_RULES[intent]  # type: ignore[index]


def request(session: Any, rollout_id: int, intent: OperatorIntent, reason: str | None, actor: str) -> Any:
    """Write one operator intent on the rollout (the row, with its history event); the rollout."""
    from manager.registry import rollouts
    from manager.rollout import launch

    if intent == "approve":
        return launch.approve_gate(session, rollout_id, reason, actor)
    return rollouts.set_intent(session, rollout_id, intent, reason, actor)
