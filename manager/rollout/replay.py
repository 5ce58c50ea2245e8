"""Replay: recent captured requests, sent again to the candidate at weight 0, each answer paired with
the baseline's captured answer to the same request (and its label, when one came).

Two parts, both safe to repeat and to interrupt anywhere:
- the plan, made once when a rollout reaches its replay step: the baseline variant's capture records
  in the policy's window that hold the request body (with their labels, joined by inference id),
  newest first or a seeded sample, up to `requests`; written with the rollout's `replay` column in
  one transaction, so a crash leaves no plan or the whole plan;
- the sending, while the rollout runs at weight 0 past that step: queued requests go to the
  candidate with `TargetVariant`, at most `maxRequestsPerSecond`, and each answer is recorded with
  the sums the paired tests read in the transaction that marks its request done. A request sent but
  not recorded before a crash is sent again and counted once; replay resumes where it stopped.

Each replayed request carries an inference id of its own (`REPLAY_PREFIX`...), so the candidate's
captured answers are recognised by ingestion and never counted as live traffic.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Table, bindparam, select, update

from manager import policy as policies
from manager.clock import Pacer, parse_duration, utcnow
from manager.crashpoints import crash_point
from manager.db import Database, insert_for
from manager.errors import UserError
from manager.groundtruth.pairing import label_free, labelled
from manager.groundtruth.records import (
    REPLAY_PREFIX,
    Kind,
    Malformed,
    parse_answer,
    parse_capture_request,
    parse_label,
    request_body,
)
from manager.groundtruth.stores import ObjectStore, open_store
from manager.platforms.base import EndpointPlatform, Invocation, PlatformError
from manager.registry import pairs
from manager.registry.rollouts import record_event
from manager.registry.tables import Endpoint, EndpointLease, ReplayRequest, Rollout

log = logging.getLogger("variantctl.replay")
MAX_ATTEMPTS = 5  # transport failures of one request before it is given up (counted as failed)
BODY_GONE = "the request body is gone"  # a queued request whose body was dropped: never sendable
NO_INPUT = (
    "the captured records hold no request bodies (data capture of outputs only); a replay needs"
    " CaptureMode Input or InputAndOutput on the baseline's endpoint config"
)


def replay_id(rollout_id: int, inference_id: str) -> str:
    """The inference id a replayed request carries: at most 64 characters, as InvokeEndpoint allows."""
    digest = hashlib.sha256(inference_id.encode()).hexdigest()[:32]
    return f"{REPLAY_PREFIX}{rollout_id}-{digest}"


@dataclass
class ReplayReport:
    rollout_id: int
    planned: int = 0
    sent: int = 0
    paired: int = 0  # answers recorded (errors included)
    errors: int = 0  # the candidate answered with an error
    retried: int = 0  # transport failures, left queued
    given_up: int = 0
    refused: str | None = None
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Active:
    rollout_id: int
    endpoint: str
    policy: policies.RolloutPolicy
    step_index: int  # the replay step's
    replay: policies.Replay
    baseline_variant: str
    candidate_variant: str
    planned: bool


@dataclass(frozen=True)
class _Answer:
    inference_id: str
    invocation: Invocation | None
    failure: str | None = None  # a transport failure: send again later


class Replayer:
    def __init__(
        self,
        database: Database,
        platform: EndpointPlatform,
        s3_client: Any = None,
        clock: Callable[[], datetime] = utcnow,
        owner: str | None = None,
        budget: timedelta = timedelta(seconds=20),
        workers: int = 8,
        batch: int = 200,
        stores: Callable[[str, Any], tuple[ObjectStore, str]] = open_store,
    ) -> None:
        self.database = database
        self.platform = platform
        self.s3_client = s3_client
        self.clock = clock
        self.owner = owner
        self.budget = budget
        self.workers = workers
        self.batch = batch
        self.stores = stores

    # ---- which rollouts ----------------------------------------------------------------------------

    def run(self) -> list[ReplayReport]:
        """Plan or send for every running rollout that is in (or past) a replay step at weight 0; one
        rollout's trouble is logged and never stops another's."""
        reports = []
        for active in self._active():
            try:
                reports.append(self.run_one(active))
            except Exception as exc:
                expected = isinstance(exc, PlatformError | UserError | OSError)
                log.warning(
                    "replay for rollout %s: %s: %s",
                    active.rollout_id,
                    type(exc).__name__,
                    exc,
                    exc_info=not expected,
                    extra={"fields": {"rollout": active.rollout_id, "job": "replay"}},
                )
        return reports

    def _active(self) -> list[_Active]:
        now = self.clock()
        with self.database.read() as session:
            rows = session.execute(
                select(Rollout, Endpoint.name, EndpointLease.owner, EndpointLease.expires_at)
                .join(Endpoint, Endpoint.id == Rollout.endpoint_id)
                .outerjoin(EndpointLease, EndpointLease.endpoint == Endpoint.name)
                .where(Rollout.state == "running", Rollout.weight <= 0)
                .order_by(Rollout.id)
            ).all()
            out = []
            for rollout, endpoint, owner, expires in rows:
                if self.owner and owner not in (None, self.owner) and expires is not None and expires > now:
                    continue  # another daemon works this endpoint
                if "replay" not in rollout.policy_yaml or rollout.pending:
                    continue  # (a JSON column: SQL NULL and JSON null both read as None)
                try:
                    policy = policies.parse(rollout.policy_yaml, f"rollout {rollout.id} policy")
                except UserError:
                    continue  # the reconciler reports a policy that no longer parses
                index = next((i for i, s in enumerate(policy.plan) if s.replay), None)
                if index is None or rollout.step < index or rollout.shadow_config is not None:
                    continue
                plan = rollout.replay
                if plan is not None and plan.get("refused"):
                    continue
                step = policy.plan[index].replay
                assert step is not None
                out.append(
                    _Active(
                        rollout.id,
                        endpoint,
                        policy,
                        index,
                        step,
                        rollout.baseline_variant,
                        rollout.candidate_variant,
                        plan is not None,
                    )
                )
            return out

    def run_one(self, active: _Active) -> ReplayReport:
        if not active.planned:
            return self.plan(active)
        return self.send(active)

    # ---- the plan ----------------------------------------------------------------------------------

    def plan(self, active: _Active) -> ReplayReport:
        """Read the window's captures and labels, choose the requests, and store the plan."""
        now = self.clock()
        target, replay = active.policy.target, active.replay
        assert target.capture_destination is not None
        start = now - parse_duration(replay.window)
        report = ReplayReport(active.rollout_id)
        skipped: Counter[str] = Counter()
        captured: dict[str, tuple[datetime, dict[str, str], list[list[float]]]] = {}
        without_input = 0
        store, root = self.stores(target.capture_destination, self.s3_client)
        for line in _lines(store, f"{root}{active.endpoint}/{active.baseline_variant}/", start):
            try:
                inference_id, at, request, outputs = parse_capture_request(line)
            except (Malformed, ValueError):
                skipped["malformed"] += 1
                continue
            if inference_id.startswith(REPLAY_PREFIX):
                continue  # an earlier replay's own answers
            if not start <= at <= now:
                skipped["outside_window"] += 1
            elif request is None:
                without_input += 1
            elif inference_id in captured:
                skipped["duplicate"] += 1
            else:
                captured[inference_id] = (at, request, outputs)
        labels: dict[str, list[list[float]]] = {}
        if target.ground_truth:
            label_store, label_root = self.stores(target.ground_truth, self.s3_client)
            for line in _lines(label_store, label_root, start):
                try:
                    inference_id, rows = parse_label(line)
                except Malformed:
                    skipped["malformed_labels"] += 1
                    continue
                if inference_id in captured:
                    labels.setdefault(inference_id, rows)
        if without_input:
            skipped["without_request_body"] = without_input
        needs_labels = active.policy.labels_independent_of_serving and _judges_quality(active.policy)
        chosen = [i for i in captured if i in labels] if needs_labels else list(captured)
        if needs_labels and len(chosen) < len(captured):
            skipped["unlabelled"] = len(captured) - len(chosen)
        if replay.order == "sample":
            chosen.sort()
            random.Random(replay.seed).shuffle(chosen)
        else:
            chosen.sort(key=lambda i: (captured[i][0], i), reverse=True)
        chosen = chosen[: replay.requests]
        crash_point("replay-read")
        refused = None
        if not chosen:
            if without_input and not captured:
                refused = NO_INPUT
            else:
                what = "labelled " if needs_labels else ""
                refused = (
                    f"no {what}captured requests of variant {active.baseline_variant} in the last"
                    f" {replay.window} under {target.capture_destination}"
                )
        report.planned, report.refused, report.skipped = len(chosen), refused, dict(skipped)
        with self.database.write() as session:
            rollout = session.get(Rollout, active.rollout_id)
            if rollout is None or rollout.replay is not None or rollout.state != "running":
                return report  # planned meanwhile (or no longer running): nothing to add
            if chosen:
                session.connection().execute(
                    insert_for(session)(ReplayRequest.__table__).on_conflict_do_nothing(),
                    [
                        {
                            "rollout_id": active.rollout_id,
                            "inference_id": i,
                            "state": "queued",
                            "inference_at": captured[i][0],
                            "request": json.dumps(captured[i][1], separators=(",", ":")),
                            "baseline_outputs": json.dumps(captured[i][2], separators=(",", ":")),
                            "labels": json.dumps(labels[i], separators=(",", ":")) if i in labels else None,
                            "attempts": 0,
                        }
                        for i in chosen
                    ],
                )
            plan = {
                "step": active.step_index,
                "planned": len(chosen),
                "labelled": sum(1 for i in chosen if i in labels),
                "window_start": start.isoformat(),
                "skipped": dict(skipped),
            }
            if refused:
                plan["refused"] = refused
            rollout.replay = plan
            reason = refused or (
                f"{len(chosen)} captured requests of the last {replay.window} to replay to the candidate"
                f" ({plan['labelled']} labelled)"
            )
            record_event(
                session,
                rollout,
                "daemon",
                "rollout.replay_refused" if refused else "rollout.replay_planned",
                reason,
                plan,
                now,
            )
        return report

    # ---- sending -----------------------------------------------------------------------------------

    def send(self, active: _Active, budget: timedelta | None = None) -> ReplayReport:
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
        answers: queue.Queue[tuple[tuple[str, str | None, int], _Answer]] = queue.Queue()
        in_flight: set[str] = set()
        got: list[tuple[tuple[str, str | None, int], _Answer]] = []
        recorded: Future[None] | None = None
        checked, drained, outstanding = time.monotonic(), False, 0  # outstanding: sent, not answered

        def record(items: list[tuple[tuple[str, str | None, int], _Answer]]) -> None:
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

    def _still_replaying(self, active: _Active) -> bool:
        with self.database.read() as session:
            rollout = session.get(Rollout, active.rollout_id)
            return (
                rollout is not None
                and rollout.state == "running"
                and rollout.weight <= 0
                and rollout.pending is None
            )

    def _queued(self, active: _Active, limit: int) -> list[tuple[str, str | None, int]]:
        with self.database.read() as session:
            rows = session.execute(
                select(ReplayRequest.inference_id, ReplayRequest.request, ReplayRequest.attempts)
                .where(ReplayRequest.rollout_id == active.rollout_id, ReplayRequest.state == "queued")
                .order_by(ReplayRequest.inference_at.desc(), ReplayRequest.inference_id)
                .limit(limit)
            ).all()
        return [(r[0], r[1], r[2]) for r in rows]

    def _send_one(
        self, active: _Active, row: tuple[str, str | None, int], pacer: Pacer, deadline: float
    ) -> _Answer:
        inference_id, request, _attempts = row
        if request is None:
            return _Answer(inference_id, None, BODY_GONE)
        slot = pacer.reserve(deadline)
        if slot is None:
            return _Answer(inference_id, None, None)  # out of time: stays queued, not an attempt
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
            return _Answer(inference_id, None, str(exc))
        return _Answer(inference_id, invocation)

    def _record(
        self,
        active: _Active,
        queued: list[tuple[str, str | None, int]],
        answers: list[_Answer],
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
                    if answer.failure is None:
                        continue
                    gone = tries >= MAX_ATTEMPTS or answer.failure == BODY_GONE
                    report.retried += not gone
                    report.given_up += gone
                    failed_rows.append(
                        {
                            "b_id": answer.inference_id,
                            "b_attempts": tries,
                            "b_error": answer.failure[:2000],
                            "b_state": "failed" if gone else "queued",
                        }
                    )
                    continue
                report.sent += 1
                invocation = answer.invocation
                baseline_out, label_text = stored[answer.inference_id]
                error, candidate_out = invocation.error, None
                if error is None:
                    try:
                        candidate_out = parse_answer(invocation.body, invocation.content_type)
                    except Malformed as exc:
                        error = f"unreadable answer: {exc}"
                _pair(
                    deltas,
                    kind,
                    threshold,
                    json.loads(baseline_out),
                    candidate_out,
                    json.loads(label_text) if label_text else None,
                    invocation.latency_ms,
                )
                report.errors += error is not None
                report.paired += 1
                done_rows.append(
                    {
                        "b_id": answer.inference_id,
                        "b_outputs": json.dumps(candidate_out, separators=(",", ":"))
                        if candidate_out is not None
                        else None,
                        "b_latency": invocation.latency_ms,
                        "b_error": error[:2000] if error else None,
                        "b_attempts": tries,
                    }
                )
            # One statement for the batch (executemany): a row per request costs more than the sending.
            mine = (table.c.rollout_id == active.rollout_id) & (table.c.inference_id == bindparam("b_id"))
            if failed_rows:
                conn.execute(
                    update(table)
                    .where(mine)
                    .values(
                        attempts=bindparam("b_attempts"),
                        error=bindparam("b_error"),
                        state=bindparam("b_state"),
                    ),
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
            pairs.add(session, active.rollout_id, "replay", deltas)


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


def _judges_quality(policy: policies.RolloutPolicy) -> bool:
    primary = policy.primary
    return primary is not None and primary.source == "quality"


def _lines(store: ObjectStore, prefix: str, start: datetime) -> Iterator[bytes]:
    """Every line of every object under `prefix` whose hour folder (yyyy/mm/dd/hh) is not wholly
    before `start`; objects without such a folder are read whole."""
    first_hour = start.replace(minute=0, second=0, microsecond=0)
    for info in store.list(prefix, ""):
        hour = _hour_of(info.key[len(prefix) :])
        if hour is not None and hour < first_hour:
            continue
        data = store.read(info.key, 0, info.size)
        yield from (line for line in data.splitlines() if line.strip())


def _hour_of(key: str) -> datetime | None:
    parts = key.split("/")
    if len(parts) < 5:
        return None
    try:
        y, m, d, h = (int(p) for p in parts[-5:-1])
        return datetime(y, m, d, h, tzinfo=UTC)
    except ValueError:
        return None


def _deliver(
    answers: queue.Queue[tuple[tuple[str, str | None, int], _Answer]],
    row: tuple[str, str | None, int],
    future: Future[_Answer],
) -> None:
    answers.put((row, future.result()))


_REQUESTS: Table = ReplayRequest.__table__  # type: ignore[assignment]
