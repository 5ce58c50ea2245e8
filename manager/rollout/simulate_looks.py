"""Looking ahead in a simulated run: how many batches can pass before `decide` could say anything but
"wait". At an analysis step, `decide`'s answer is a function of a few facts about each metric (no
data, the minimum sample met, harm shown, the bound past the promotion floor) and of the limits (the
maximum samples and duration, the minimum duration). `screen` computes those facts at every look of
the block of batches to come at once, with the statistics' own formulas on running sums
(`stats.sequences.difference_bounds`, `HarmEvidence.log_values_ahead`), and returns the first look at
which one of them changes, or comes within a hair of its threshold (where two ways of summing could
disagree): only there does the run ask `decide` again. So a look costs the same at look 10,000 as at
look 1, and a run gets the decisions it would get from `decide` at every look (tests compare both).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from manager.clock import parse_duration
from manager.policy import Metric, RolloutPolicy
from manager.rollout.simulate_streams import WIDTH, Batch, SimPhase
from manager.rollout.verdicts import RolloutState
from manager.stats.adjusted import adjusted_bounds
from manager.stats.evalues import HarmEvidence
from manager.stats.sequences import difference_bounds

TOLERANCE = 1e-9  # relative: a statistic this close to its threshold is checked by `decide` itself
MINUTE_TOLERANCE = 1e-3  # durations: timedelta keeps microseconds


@dataclass(frozen=True)
class Ahead:
    """The run as it stands at a look that waited, and the batches drawn for what comes next."""

    phases: list[SimPhase]
    pending: deque[Batch]
    harms: dict[str, HarmEvidence]
    rows: dict[str, tuple[np.ndarray, np.ndarray]]  # metric: (baseline, candidate) rows per batch to come
    split: tuple[int, int]  # (n_b, n_c) per batch
    minutes: float
    batch_minutes: float
    lags: dict[str, float]
    start: datetime


def screen(policy: RolloutPolicy, state: RolloutState, ahead: Ahead, most: int) -> int:
    """How many of the batches to come to serve before the next look `decide` must make (1 to `most`)."""
    step = policy.plan[state.step] if state.step < len(policy.plan) else None
    current = next((p for p in ahead.phases if p.number == state.phase), None)
    if (
        most <= 1
        or step is None
        or step.analysis is None
        or state.weight <= 0
        or state.shadowing
        or current is None
        or any(m.test.type != "sequential" for m in policy.metrics)
        or any(b.phase != state.phase for b in ahead.pending)  # late labels of an earlier phase
    ):
        return 1
    count = min(most, min(len(b) for b, _ in ahead.rows.values()))
    times = [ahead.minutes]
    for _ in range(count):
        times.append(times[-1] + ahead.batch_minutes)  # as the run adds them, float for float
    at = np.array(times)
    facts, near, samples = [], [], []
    for metric in policy.metrics:
        b, c = _visible(ahead, current, metric.name, at, count)
        if metric.counted:
            found, close = _harm_facts(metric, ahead, current, b, c)
        else:
            found, close, candidate_n = _interval_facts(metric, policy, b, c)
            samples.append(candidate_n)
        facts += found
        near.append(close)
    facts += _limit_facts(policy, state, ahead, at, samples, near)
    table = np.column_stack(facts)
    close = np.any(np.column_stack(near), axis=1)
    if close[0]:
        return 1
    changed = np.flatnonzero(np.any(table[1:] != table[:-1], axis=1) | close[1:])
    return int(changed[0]) + 1 if changed.size else count


def _visible(
    ahead: Ahead, current: SimPhase, name: str, at: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each look's sums for one metric in the current phase: what it holds, plus the batches whose
    labels have arrived by then (the waiting ones first, then those to come), per arm."""
    waiting = [b for b in ahead.pending if name in b.rows]
    new_b, new_c = (r[:count] for r in ahead.rows[name])
    served = np.concatenate([[b.at for b in waiting], at[1:]])
    rows_b = np.vstack([np.zeros((1, WIDTH))] + [b.rows[name][0][None, :] for b in waiting] + [new_b])
    rows_c = np.vstack([np.zeros((1, WIDTH))] + [b.rows[name][1][None, :] for b in waiting] + [new_c])
    arrived = np.searchsorted(served, at - ahead.lags[name], side="right")
    held = current.arms.get(name, np.zeros((2, WIDTH)))
    return held[0] + np.cumsum(rows_b, axis=0)[arrived], held[1] + np.cumsum(rows_c, axis=0)[arrived]


def _close(value: np.ndarray, threshold: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.asarray(np.abs(value - threshold) <= TOLERANCE * (1 + abs(threshold)))


def _interval_facts(
    metric: Metric, policy: RolloutPolicy, b: np.ndarray, c: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """`judge._judge_interval`'s facts per look: no data, samples met, harm, past the promotion floor."""
    n_b, n_c = b[:, 0], c[:, 0]
    no_data = (n_b == 0) | (n_c == 0)
    met = np.where(no_data, metric.min_samples == 0, np.minimum(n_b, n_c) >= metric.min_samples)
    args = (b, c, metric.alpha, policy.decisions.planned_samples, metric.kind == "proportion")
    _, low, high = difference_bounds(*args)
    if metric.adjust != "none":  # the adjusted bounds where the judge adjusts, the plain ones elsewhere
        _, adjusted_low, adjusted_high, _, theta = adjusted_bounds(*args)
        low, high = (
            np.where(np.isnan(theta), low, adjusted_low),
            np.where(np.isnan(theta), high, adjusted_high),
        )
    better_low, better_high = (low, high) if metric.higher_is_better else (-high, -low)
    margin = metric.test.margin
    floor = 0.0 if policy.decisions.superiority else -margin
    facts = [no_data, met, better_high < -margin, better_low > floor]
    near = _close(better_high, -margin) | _close(better_low, floor)
    return facts, near, np.where(no_data, 0.0, n_c)


def _harm_facts(
    metric: Metric, ahead: Ahead, current: SimPhase, b: np.ndarray, c: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray]:
    """`judge._judge_errors`'s facts per look: no data, samples met (every phase's candidate
    requests), and the e-value at its threshold."""
    before = sum(float(p.arms[metric.name][1][0]) for p in ahead.phases if metric.name in p.arms)
    held = current.arms.get(metric.name, np.zeros((2, WIDTH)))
    new_b, new_c = b - held[0], c - held[1]  # what arrives in this phase from now on
    requests = before + new_c[:, 0]
    no_data = requests == 0
    met = np.where(no_data, metric.min_samples == 0, requests >= metric.min_samples)
    evidence = ahead.harms[metric.name]
    n_b, n_c = ahead.split
    if n_b > 0 and n_c > 0:
        log_e = evidence.log_values_ahead(n_c / (n_b + n_c), new_c[:, 1], new_b[:, 1] + new_c[:, 1])
    else:
        log_e = np.full(len(c), evidence.log_value)
    threshold = math.log(1 / metric.alpha)
    return [no_data, met, log_e >= threshold], _close(log_e, threshold)


def _limit_facts(
    policy: RolloutPolicy,
    state: RolloutState,
    ahead: Ahead,
    at: np.ndarray,
    samples: list[np.ndarray],
    near: list[np.ndarray],
) -> list[np.ndarray]:
    """The maximum samples per arm, the maximum duration of the rollout and the minimum of the phase."""
    d = policy.decisions
    most = np.max(np.column_stack(samples), axis=1) if samples else np.zeros(len(at))
    since_start = at + (ahead.start - state.started_at).total_seconds() / 60
    in_phase = at - (state.phase_started_at - ahead.start).total_seconds() / 60
    longest = parse_duration(d.max_duration).total_seconds() / 60
    shortest = parse_duration(d.min_duration).total_seconds() / 60
    near.append(
        (np.abs(since_start - longest) <= MINUTE_TOLERANCE)
        | (np.abs(in_phase - shortest) <= MINUTE_TOLERANCE)
    )
    return [most >= d.max_samples, since_start >= longest, in_phase >= shortest]
