"""The replay's sending: queued requests to the candidate at weight 0, paced, each answer recorded with
the sums the paired tests read in the transaction that marks its request done."""

from __future__ import annotations

import contextlib
import json
import queue
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Table, bindparam, select, update

from manager.clock import Pacer
from manager.crashpoints import crash_point
from manager.groundtruth.pairing import label_free, labelled
from manager.groundtruth.records import (
    Kind,
    Malformed,
    parse_answer,
    request_body,
)
from manager.platforms.base import Invocation, PlatformError
from manager.registry import pairs
from manager.registry.tables import ReplayRequest, Rollout
from manager.rollout.replay_base import (
    BODY_GONE,
    MAX_ATTEMPTS,
    Active,
    ReplayerBase,
    ReplayReport,
    replay_id,
)


@dataclass(frozen=True)
class Answer:
    inference_id: str
    invocation: Invocation | None
    failure: str | None = None  # a transport failure: send again later


class ReplaySending(ReplayerBase):
    def send(self, active: Active, budget: timedelta | None = None) -> ReplayReport:
        """Send queued requests for up to `budget`, at most `maxRequestsPerSecond`, as a stream: the
        sending threads are kept busy while answers are recorded in chunks (one write transaction
        each, with the sums they add) by a recording thread. A request is in flight from its sending
        until its chunk is recorded, and never taken from the queue twice meanwhile."""
        report = ReplayReport(active.rollout_id)
        deadline = time.monotonic() + (budget or self.budget).total_seconds()
        pacer = Pacer(active.replay.max_requests_per_second)
        kind, threshold = active.policy.quality_kind, 0.5
        # About a second of answers per chunk, so that a decision taken meanwhile stops the replay soon.
        chunk = max(10, min(self.batch, round(active.replay.max_requests_per_second)))
        answers: queue.Queue[tuple[tuple[str, str | None, int], Answer]] = queue.Queue()
        in_flight: set[str] = set()
        got: list[tuple[tuple[str, str | None, int], Answer]] = []
        recorded: Future[None] | None = None
        checked, drained, outstanding = time.monotonic(), False, 0  # outstanding: sent, not answered

        def record(items: list[tuple[tuple[str, str | None, int], Answer]]) -> None:
            self._record(active, [i[0] for i in items], [i[1] for i in items], kind, threshold, report)
            for row, _ in items:
                in_flight.discard(row[0])

        def flush() -> None:
            nonlocal recorded, got
            crash_point("replay-sent")
            failures = [a.failure for _, a in got if a.failure is not None]
            if failures and len(failures) == len(got) >= min(chunk, 10):
                # Every request of the chunk failed: the endpoint, the network or the credentials, not
                # the requests. Nothing is counted against them; the job reports it and tries later.
                raise PlatformError(f"replay paused, every request of a batch failed: {failures[0]}")
            if recorded is not None:
                recorded.result()
                crash_point("replay-recorded")
            recorded, got = recorder.submit(record, got), []

        with (
            ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="replay") as pool,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay-record") as recorder,
        ):
            while True:
                now = time.monotonic()
                stop = now >= deadline
                if not stop and now - checked >= 1.0:
                    stop, checked = not self._still_replaying(active), now
                if not stop and not drained and outstanding < 2 * self.workers:
                    rows = [r for r in self._queued(active, chunk + len(in_flight)) if r[0] not in in_flight]
                    drained = not rows
                    for row in rows[:chunk]:
                        in_flight.add(row[0])
                        outstanding += 1
                        future = pool.submit(self._send_one, active, row, pacer, deadline)
                        future.add_done_callback(partial(_deliver, answers, row))
                if (stop or drained) and outstanding == 0:
                    break
                with contextlib.suppress(queue.Empty):
                    got.append(answers.get(timeout=0.05))
                    outstanding -= 1
                while not answers.empty():
                    got.append(answers.get_nowait())
                    outstanding -= 1
                if len(got) >= chunk or (got and (stop or drained or outstanding == 0)):
                    flush()
            if got:
                flush()
            if recorded is not None:
                recorded.result()
                crash_point("replay-recorded")
        return report

    def _still_replaying(self, active: Active) -> bool:
        with self.database.read() as session:
            rollout = session.get(Rollout, active.rollout_id)
            return (
                rollout is not None
                and rollout.state == "running"
                and rollout.weight <= 0
                and rollout.pending is None
            )

    def _queued(self, active: Active, limit: int) -> list[tuple[str, str | None, int]]:
        with self.database.read() as session:
            rows = session.execute(
                select(ReplayRequest.inference_id, ReplayRequest.request, ReplayRequest.attempts)
                .where(ReplayRequest.rollout_id == active.rollout_id, ReplayRequest.state == "queued")
                .order_by(ReplayRequest.inference_at.desc(), ReplayRequest.inference_id)
                .limit(limit)
            ).all()
        return [(r[0], r[1], r[2]) for r in rows]

    def _send_one(
        self, active: Active, row: tuple[str, str | None, int], pacer: Pacer, deadline: float
    ) -> Answer:
        inference_id, request, _attempts = row
        if request is None:
            return Answer(inference_id, None, BODY_GONE)
        slot = pacer.reserve(deadline)
        if slot is None:
            return Answer(inference_id, None, None)  # out of time: stays queued, not an attempt
        time.sleep(max(0.0, slot - time.monotonic()))
        body, content_type = request_body(json.loads(request))
        try:
            invocation = self.platform.invoke(
                active.endpoint,
                active.candidate_variant,
                body,
                content_type,
                replay_id(active.rollout_id, inference_id),
            )
        except PlatformError as exc:
            return Answer(inference_id, None, str(exc))
        return Answer(inference_id, invocation)

    def _record(
        self,
        active: Active,
        queued: list[tuple[str, str | None, int]],
        answers: list[Answer],
        kind: Kind,
        threshold: float,
        report: ReplayReport,
    ) -> None:
        now = self.clock()
        attempts = {row[0]: row[2] for row in queued}
        deltas: dict[str, pairs.Delta] = {}
        with self.database.write() as session:
            conn = session.connection()
            table = _REQUESTS
            stored = {
                r.inference_id: (r.baseline_outputs, r.labels)
                for r in conn.execute(
                    select(table.c.inference_id, table.c.baseline_outputs, table.c.labels).where(
                        table.c.rollout_id == active.rollout_id,
                        table.c.inference_id.in_([a.inference_id for a in answers]),
                        table.c.state == "queued",
                    )
                )
            }
            failed_rows: list[dict[str, Any]] = []
            done_rows: list[dict[str, Any]] = []
            for answer in answers:
                if answer.inference_id not in stored:
                    continue  # recorded already (another run got there first)
                tries = attempts[answer.inference_id] + 1
                if answer.invocation is None:
                    if answer.failure is not None:
                        failed_rows.append(_failed_row(answer.inference_id, answer.failure, tries, report))
                    continue
                row = _answered_row(
                    answer.inference_id, answer.invocation, stored[answer.inference_id], tries
                )
                compared = (row.pop("_baseline"), row.pop("_candidate"), row.pop("_labels"))
                _pair(deltas, kind, threshold, *compared, answer.invocation.latency_ms)
                report.sent += 1
                report.errors += row["b_error"] is not None
                report.paired += 1
                done_rows.append(row)
            _write(conn, active.rollout_id, failed_rows, done_rows, now)
            pairs.add(session, active.rollout_id, "replay", deltas)


def _failed_row(inference_id: str, failure: str, tries: int, report: ReplayReport) -> dict[str, Any]:
    """A transport failure: queued again, or given up after `MAX_ATTEMPTS` (or when the body is gone)."""
    gone = tries >= MAX_ATTEMPTS or failure == BODY_GONE
    report.retried += not gone
    report.given_up += gone
    return {
        "b_id": inference_id,
        "b_attempts": tries,
        "b_error": failure[:2000],
        "b_state": "failed" if gone else "queued",
    }


def _answered_row(
    inference_id: str, invocation: Invocation, stored: tuple[str, str | None], tries: int
) -> dict[str, Any]:
    """An answer (or the candidate's error) as its request's row records it; the `_`-keys carry the
    outputs and the label to the pairing, and are not columns."""
    baseline_out, label_text = stored
    error, candidate_out = invocation.error, None
    if error is None:
        try:
            candidate_out = parse_answer(invocation.body, invocation.content_type)
        except Malformed as exc:
            error = f"unreadable answer: {exc}"
    outputs = json.dumps(candidate_out, separators=(",", ":")) if candidate_out is not None else None
    return {
        "b_id": inference_id,
        "b_outputs": outputs,
        "b_latency": invocation.latency_ms,
        "b_error": error[:2000] if error else None,
        "b_attempts": tries,
        "_baseline": json.loads(baseline_out),
        "_candidate": candidate_out,
        "_labels": json.loads(label_text) if label_text else None,
    }


def _write(
    conn: Any,
    rollout_id: int,
    failed_rows: list[dict[str, Any]],
    done_rows: list[dict[str, Any]],
    now: datetime,
) -> None:
    """One statement for the batch (executemany): a row per request costs more than the sending."""
    table = _REQUESTS
    mine = (table.c.rollout_id == rollout_id) & (table.c.inference_id == bindparam("b_id"))
    if failed_rows:
        conn.execute(
            update(table)
            .where(mine)
            .values(attempts=bindparam("b_attempts"), error=bindparam("b_error"), state=bindparam("b_state")),
            failed_rows,
        )
    if done_rows:
        conn.execute(
            update(table)
            .where(mine)
            .values(
                state="done",
                request=None,
                candidate_outputs=bindparam("b_outputs"),
                latency_ms=bindparam("b_latency"),
                error=bindparam("b_error"),
                attempts=bindparam("b_attempts"),
                replayed_at=now,
            ),
            done_rows,
        )


def _pair(
    deltas: dict[str, pairs.Delta],
    kind: Kind,
    threshold: float,
    baseline: list[list[float]],
    candidate: list[list[float]] | None,
    labels: list[list[float]] | None,
    latency_ms: float,
) -> None:
    """What one replayed request adds: the error count always; with an answer, its latency, the
    label-free comparison (agreement, score shift) and, with a label, the paired outcomes."""
    delta = deltas.setdefault
    delta("errors", pairs.Delta()).add(0.0, 0.0 if candidate is not None else 1.0)
    if candidate is None:
        return
    delta("latency_ms", pairs.Delta()).add(0.0, latency_ms)
    if label_free(deltas, kind, threshold, baseline, candidate) and labels is not None:
        labelled(deltas, kind, threshold, baseline, candidate, labels)


def _deliver(
    answers: queue.Queue[tuple[tuple[str, str | None, int], Answer]],
    row: tuple[str, str | None, int],
    future: Future[Answer],
) -> None:
    answers.put((row, future.result()))


_REQUESTS: Table = ReplayRequest.__table__  # type: ignore[assignment]
