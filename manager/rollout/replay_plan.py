"""The replay's plan, made once when a rollout reaches its replay step: the baseline's captured requests
in the window, with their labels, chosen and stored with the rollout's `replay` column in one
transaction."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from manager import policy as policies
from manager.clock import parse_duration
from manager.crashpoints import crash_point
from manager.db import insert_for
from manager.groundtruth.records import (
    REPLAY_PREFIX,
    Malformed,
    parse_capture_request,
    parse_label,
)
from manager.groundtruth.stores import ObjectStore
from manager.registry.rollouts import record_event
from manager.registry.tables import ReplayRequest, Rollout
from manager.rollout.replay_base import (
    NO_INPUT,
    Active,
    ReplayerBase,
    ReplayReport,
)


class ReplayPlanning(ReplayerBase):
    def plan(self, active: Active) -> ReplayReport:
        """Read the window's captures and labels, choose the requests, and store the plan."""
        now = self.clock()
        replay = active.replay
        start = now - parse_duration(replay.window)
        skipped: Counter[str] = Counter()
        captured, without_input = self._captured(active, start, now, skipped)
        labels = self._labels(active, start, captured, skipped)
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
                    f" {replay.window} under {active.policy.target.capture_destination}"
                )
        report = ReplayReport(active.rollout_id, planned=len(chosen), refused=refused, skipped=dict(skipped))
        plan: dict[str, Any] = {
            "step": active.step_index,
            "planned": len(chosen),
            "labelled": sum(1 for i in chosen if i in labels),
            "window_start": start.isoformat(),
            "skipped": dict(skipped),
        }
        if refused:
            plan["refused"] = refused
        rows = [_queued_row(active.rollout_id, i, captured[i], labels.get(i)) for i in chosen]
        self._store(active, plan, rows, now)
        return report

    def _captured(
        self, active: Active, start: datetime, now: datetime, skipped: Counter[str]
    ) -> tuple[dict[str, Captured], int]:
        """The baseline's captured requests in the window, by inference id; how many had no body."""
        target = active.policy.target
        assert target.capture_destination is not None
        captured: dict[str, Captured] = {}
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
        return captured, without_input

    def _labels(
        self, active: Active, start: datetime, captured: dict[str, Captured], skipped: Counter[str]
    ) -> dict[str, list[list[float]]]:
        """The labels of the captured requests, the first of each."""
        labels: dict[str, list[list[float]]] = {}
        ground_truth = active.policy.target.ground_truth
        if ground_truth:
            label_store, label_root = self.stores(ground_truth, self.s3_client)
            for line in _lines(label_store, label_root, start):
                try:
                    inference_id, rows = parse_label(line)
                except Malformed:
                    skipped["malformed_labels"] += 1
                    continue
                if inference_id in captured:
                    labels.setdefault(inference_id, rows)
        return labels

    def _store(self, active: Active, plan: dict[str, Any], rows: list[dict[str, Any]], now: datetime) -> None:
        """The queued requests and the plan, with its history event, in one transaction; nothing when
        the rollout was planned meanwhile or no longer runs."""
        with self.database.write() as session:
            rollout = session.get(Rollout, active.rollout_id)
            if rollout is None or rollout.replay is not None or rollout.state != "running":
                return
            if rows:
                session.connection().execute(
                    insert_for(session)(ReplayRequest.__table__).on_conflict_do_nothing(), rows
                )
            rollout.replay = plan
            refused = plan.get("refused")
            reason = refused or (
                f"{plan['planned']} captured requests of the last {active.replay.window} to replay to the"
                f" candidate ({plan['labelled']} labelled)"
            )
            action = "rollout.replay_refused" if refused else "rollout.replay_planned"
            record_event(session, rollout, "daemon", action, reason, plan, now)


Captured = tuple[datetime, dict[str, str], list[list[float]]]  # (time, request, baseline's outputs)


def _queued_row(rollout_id: int, inference_id: str, captured: Captured, labels: Any) -> dict[str, Any]:
    at, request, outputs = captured
    return {
        "rollout_id": rollout_id,
        "inference_id": inference_id,
        "state": "queued",
        "inference_at": at,
        "request": json.dumps(request, separators=(",", ":")),
        "baseline_outputs": json.dumps(outputs, separators=(",", ":")),
        "labels": json.dumps(labels, separators=(",", ":")) if labels is not None else None,
        "attempts": 0,
    }


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
