"""Traffic operations built on the protocol, one step per call, so that a level-triggered caller
converges by calling again: promote a winner, roll a candidate back; and the CLI's wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from manager.platforms.base import BlueGreen, ConfigSpec, EndpointPlatform, EndpointState, PlatformError

TrafficStage = Literal["done", "waiting", "weights-zeroed", "updating", "guarded"]


def _state(platform: EndpointPlatform, endpoint: str) -> EndpointState:
    state = platform.describe(endpoint)
    if state is None:
        raise PlatformError(f"endpoint {endpoint} does not exist")
    return state


def _settling(state: EndpointState) -> TrafficStage:
    """Busy: wait for it. Idle on the config the caller wants: done."""
    return "waiting" if state.busy else "done"


def promote(
    platform: EndpointPlatform,
    endpoint: str,
    winner: ConfigSpec,
    blue_green: BlueGreen | None = None,
    via: ConfigSpec | None = None,
    candidate_variant: str | None = None,
) -> TrafficStage:
    """UpdateEndpoint to a config holding the winner alone, with SageMaker's guardrails if asked.
    Guardrails need the new config to have the variant names the endpoint has, so a guarded promotion
    from both variants goes first to `via` (the baseline alone, as a rollback would), then updates the
    baseline's variant to the winner's model under SageMaker's canary or linear shift."""
    state = _state(platform, endpoint)
    if state.busy or state.config_name == winner.name:
        return _settling(state)
    names = {v.name for v in winner.production}
    if blue_green is not None and via is not None and {v.name for v in state.variants} != names:
        stage = rollback(platform, endpoint, candidate_variant or "", via)
        if stage != "done":
            return stage
    platform.ensure_endpoint_config(winner)
    platform.update_endpoint(endpoint, winner.name, blue_green)
    return "updating" if blue_green is None else "guarded"


def rollback(
    platform: EndpointPlatform, endpoint: str, candidate_variant: str, baseline: ConfigSpec
) -> TrafficStage:
    """Fast first, tidy second: the candidate's weight to 0, then UpdateEndpoint to the baseline alone."""
    state = _state(platform, endpoint)
    if state.busy or state.config_name == baseline.name:
        return _settling(state)
    candidate = state.variant(candidate_variant)
    others = [v for v in state.variants if v.name != candidate_variant and v.current_weight > 0]
    # Zeroing first takes the candidate out of service at once; when it serves alone (a promotion
    # being reverted) there is nothing to shift to, so only the update can replace it.
    if candidate is not None and candidate.current_weight > 0 and others:
        platform.set_weights(endpoint, {candidate_variant: 0.0})
        return "weights-zeroed"
    platform.ensure_endpoint_config(baseline)
    platform.update_endpoint(endpoint, baseline.name)
    return "updating"


def wait_for(
    platform: EndpointPlatform,
    endpoint: str,
    done: Callable[[EndpointState], bool],
    timeout: float,
    poll: float = 2.0,
    on_poll: Callable[[EndpointState], None] | None = None,
    raise_broken: bool = True,
) -> EndpointState:
    """For the CLI only (the daemon never waits): describe until `done`, or raise on timeout (and,
    with `raise_broken`, when the endpoint is Failed)."""
    deadline = time.monotonic() + timeout
    while True:
        state = _state(platform, endpoint)
        if on_poll is not None:
            on_poll(state)
        if done(state):
            return state
        if state.broken and raise_broken:
            raise PlatformError(f"endpoint {endpoint} is {state.status}: {state.failure_reason}")
        if time.monotonic() >= deadline:
            raise PlatformError(f"endpoint {endpoint} is still {state.status} after {timeout:g} s")
        time.sleep(poll)


def wait_gone(platform: EndpointPlatform, endpoint: str, timeout: float, poll: float = 2.0) -> None:
    """For the CLI only: a deleted endpoint stays `Deleting` for a while on SageMaker, and its name
    cannot be used again until it is gone; wait for that (any other state returns at once)."""
    deadline = time.monotonic() + timeout
    while (state := platform.describe(endpoint)) is not None and state.status == "Deleting":
        if time.monotonic() >= deadline:
            raise PlatformError(f"endpoint {endpoint} is still Deleting after {timeout:g} s")
        time.sleep(poll)
