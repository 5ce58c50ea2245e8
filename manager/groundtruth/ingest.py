"""Model quality per variant: captured predictions joined to ground-truth labels.

Both sides are JSON Lines in SageMaker Model Monitor's formats:
- capture, under `<capture>/<endpoint>/<variant>/yyyy/mm/dd/hh/`: `captureData.endpointOutput`
  and `eventMetadata.inferenceId` (or `eventId` when the caller gave no InferenceId);
- ground truth, under `<ground truth>/yyyy/mm/dd/hh/`: `groundTruthData` and
  `eventMetadata.eventId`, which names the inference it labels.

Reading is incremental, with a cursor per prefix stored in the registry in the same transaction
as what was read, so nothing is read or counted twice, even across a crash. Predictions wait for
labels (which may come hours later) and expire after `label_ttl`; labels may also come first and
wait. Duplicates are dropped by inference id. Each joined pair becomes an outcome (correct or not
for classification; absolute and squared error for regression) added to `observations` for the
rollout phase that was live when the prediction was made. A malformed line is counted and skipped;
a file that cannot be read is reported and retried later; neither stops the rest.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from manager.clock import utcnow
from manager.db import Database
from manager.groundtruth import shadows
from manager.groundtruth.incremental import Cursor, read_new
from manager.groundtruth.prehistory import features_of
from manager.groundtruth.records import (
    REPLAY_PREFIX,
    Kind,
    Malformed,
    outcomes,
    parse_capture_request,
    parse_label,
)
from manager.groundtruth.stores import ObjectStore, open_store
from manager.metrics.covariate import Covariate
from manager.registry import captures, covariates, observations
from manager.registry.captures import CAPTURED, SHADOWS, RegistryPhases
from manager.registry.observations import ObservedWindow
from manager.registry.tables import IngestCursor

Deltas = dict[tuple[int, int, str, str, datetime], list[float]]


@dataclass(frozen=True)
class QualitySpec:
    endpoint: str
    capture_uri: str  # the DataCaptureConfig destination: s3://bucket/prefix or file:///dir
    ground_truth_uri: str
    kind: Kind = "classification"
    threshold: float = 0.5
    label_ttl: timedelta = timedelta(hours=24)


@dataclass
class IngestReport:
    predictions: int = 0
    labels: int = 0
    joined: int = 0
    duplicates: int = 0
    malformed: int = 0
    outside_rollout: int = 0
    replayed: int = 0  # the candidate's answers to a replay (paired by the replayer, not here)
    shadow_answers: int = 0  # a shadow's answers, stored to pair with production's
    shadow_pairs: int = 0  # ... paired with a label (label-free comparisons count as they come)
    expired_shadow_answers: int = 0  # never paired with a label before they expired
    expired_predictions: int = 0
    expired_labels: int = 0
    replaced_files: int = 0  # changed in place, read again (what was seen already is dropped by id)
    file_errors: list[str] = field(default_factory=list)


def _minute_key(stored: str | datetime) -> str | datetime:
    """What identifies the minute of a stored time: SQLite returns the text (ISO 8601, UTC), whose
    first 16 characters are the minute; PostgreSQL's driver returns a datetime whatever the coercion."""
    if isinstance(stored, datetime):
        return stored.astimezone(UTC).replace(second=0, microsecond=0)
    return stored[:16]


def _minute_of(key: str | datetime) -> datetime:
    return key if isinstance(key, datetime) else datetime.fromisoformat(key).replace(tzinfo=UTC)


class GroundTruthIngestor:
    def __init__(
        self,
        database: Database,
        s3_client: Any = None,
        clock: Callable[[], datetime] = utcnow,
        batch: int = 5000,
        settle: timedelta = timedelta(hours=2),
        lookback: timedelta = timedelta(days=2),
        phases: Callable[[Session, str], RegistryPhases] = RegistryPhases,
        stores: Callable[[str, Any], tuple[ObjectStore, str]] = open_store,
    ) -> None:
        self.database = database
        self.s3_client = s3_client
        self.clock = clock
        self.batch = batch
        self.settle = settle
        self.lookback = lookback
        self.phases = phases
        self.stores = stores
        self.models: dict[int, Covariate] = {}  # the fitted pre-period covariates, by rollout

    def run(self, spec: QualitySpec) -> IngestReport:
        now = self.clock()
        report = IngestReport()
        capture_store, capture_root = self.stores(spec.capture_uri, self.s3_client)
        endpoint_prefix = f"{capture_root}{spec.endpoint}/"
        self._expire(spec, endpoint_prefix, now, report)
        with self.database.read() as session:
            resolve = self.phases(session, spec.endpoint)
            self.models = covariates.for_endpoint(session, spec.endpoint, self.models)
        try:
            variants = capture_store.children(endpoint_prefix)
        except Exception as exc:
            if type(exc).__module__.startswith("manager"):
                raise
            error = f"cannot list {spec.capture_uri}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            report.file_errors.append(error)
            self._record_error(spec, f"{spec.capture_uri}#{endpoint_prefix}", error)
            variants = []
        for variant in variants:

            def captures(session: Session, lines: list[bytes], variant: str = variant) -> int:
                return self._captures(session, spec, variant, lines, resolve, now, report)

            self._consume(
                spec, "capture", capture_store, f"{endpoint_prefix}{variant}/", now, report, captures
            )
        label_store, label_root = self.stores(spec.ground_truth_uri, self.s3_client)
        self._consume(
            spec,
            "ground_truth",
            label_store,
            label_root,
            now,
            report,
            lambda s, lines: self._labels(s, spec, lines, now, report),
        )
        return report

    def _consume(
        self,
        spec: QualitySpec,
        kind: str,
        store: ObjectStore,
        prefix: str,
        now: datetime,
        report: IngestReport,
        handle: Callable[[Session, list[bytes]], int],
    ) -> None:
        """Feed new lines to `handle` in batches; each batch commits with the cursor that follows it."""
        cursor_id = f"{spec.capture_uri if kind == 'capture' else spec.ground_truth_uri}#{prefix}"
        with self.database.read() as session:
            row = session.get(IngestCursor, cursor_id)
            cursor = Cursor.from_json(row.position) if row else Cursor()
        errors: list[str] = []
        pending: list[bytes] = []
        oversized = 0
        chunks = read_new(
            store, prefix, cursor, now, self.settle, errors, max_lines=self.batch, lookback=self.lookback
        )
        while True:
            try:  # only the store's own failures are caught here; the handling below raises as it will
                chunk = next(chunks, None)
            except Exception as exc:  # a bucket that does not exist, no network, no access
                if type(exc).__module__.startswith("manager"):
                    raise
                uri = spec.capture_uri if kind == "capture" else spec.ground_truth_uri
                errors.append(
                    f"cannot list {uri} ({prefix or '/'}): {type(exc).__name__}: {str(exc).splitlines()[0]}"
                )
                break
            if chunk is None:
                break
            pending += chunk.lines
            oversized += chunk.oversized
            report.malformed += chunk.oversized
            report.replaced_files += chunk.replaced
            if len(pending) >= self.batch or chunk.oversized:
                self._flush(spec, kind, cursor_id, chunk.cursor, pending, handle, None, oversized)
                pending, oversized = [], 0
        last_error = f"{len(errors)} unreadable: {errors[0]}" if errors else None
        self._flush(spec, kind, cursor_id, cursor, pending, handle, last_error, oversized)
        report.file_errors += errors

    def _record_error(self, spec: QualitySpec, cursor_id: str, error: str) -> None:
        """A read error where no cursor has been stored yet: `endpoints show` lists it all the same."""
        with self.database.write() as session:
            captures.cursor(session, cursor_id, spec.endpoint, "capture").last_error = error[:2000]

    def _flush(
        self,
        spec: QualitySpec,
        kind: str,
        cursor_id: str,
        cursor: Cursor,
        lines: list[bytes],
        handle: Callable[[Session, list[bytes]], int],
        last_error: str | None,
        oversized: int = 0,
    ) -> None:
        with self.database.write() as session:
            malformed = (handle(session, lines) if lines else 0) + oversized
            row = captures.cursor(session, cursor_id, spec.endpoint, kind)
            row.position = cursor.as_json()
            row.records += len(lines) - (malformed - oversized)
            row.malformed += malformed
            if last_error is not None or lines:
                row.last_error = last_error

    # -- captures --

    def _captures(
        self,
        session: Session,
        spec: QualitySpec,
        variant: str,
        lines: list[bytes],
        resolve: RegistryPhases,
        now: datetime,
        report: IngestReport,
    ) -> int:
        rows, shadowed_rows, malformed = _read_captures(spec, variant, lines, resolve, report, self.models)
        inserted = captures.insert_new(session, CAPTURED, list(rows.values()))
        report.duplicates += len(rows) - len(inserted)
        report.predictions += len(inserted)
        shadowed = captures.insert_new(session, SHADOWS, list(shadowed_rows.values()))
        report.duplicates += len(shadowed_rows) - len(shadowed)
        report.shadow_answers += len(shadowed)
        if shadowed or inserted:
            shadows.compare(session, spec, inserted + shadowed)
        waiting = captures.take_waiting_labels(session, spec.endpoint, inserted)
        if waiting:
            labels = {inference_id: json.loads(text) for inference_id, text in waiting.items()}
            malformed += self._join(session, spec, labels, now, report)
        return malformed

    # -- labels --

    def _labels(
        self, session: Session, spec: QualitySpec, lines: list[bytes], now: datetime, report: IngestReport
    ) -> int:
        labels: dict[str, list[list[float]]] = {}
        malformed = 0
        for line in lines:
            if not line.strip():
                continue
            try:
                inference_id, rows = parse_label(line)
            except Malformed:
                malformed += 1
                continue
            if inference_id in labels:
                report.duplicates += 1
                continue
            labels[inference_id] = rows
        report.malformed += malformed
        report.labels += len(labels)
        if labels:
            malformed += self._join(session, spec, labels, now, report)
        return malformed

    def _join(
        self,
        session: Session,
        spec: QualitySpec,
        labels: dict[str, list[list[float]]],
        now: datetime,
        report: IngestReport,
    ) -> int:
        """Pair labels with their captured predictions and add the outcomes to `observations`. A label
        for an inference already joined is a duplicate; one whose prediction is not read yet waits."""
        deltas: Deltas = defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0, 0.0])
        answered: dict[str, list[list[float]]] = {}  # production's outputs, for a shadow's answer
        matched, seen, malformed = _outcomes(session, spec, labels, deltas, answered, report)
        report.joined += len(matched)
        report.malformed += malformed
        observations.record(
            session,
            [
                ObservedWindow(r, p, v, m, w, w + timedelta(minutes=1), int(d[0]), *d[1:])
                for (r, p, v, m, w), d in deltas.items()
            ],
            merge="add",
        )
        if answered:
            shadows.pair_labelled(session, spec, answered, labels, report)
        captures.mark_joined(session, spec.endpoint, matched)
        unmatched = {i: json.dumps(labels[i], separators=(",", ":")) for i in labels if i not in seen}
        captures.wait_for_predictions(session, spec.endpoint, unmatched, now + spec.label_ttl)
        return malformed

    def _expire(self, spec: QualitySpec, capture_prefix: str, now: datetime, report: IngestReport) -> None:
        """Forget what waited too long to be joined, counting it on the prefix it was read from."""
        with self.database.write() as session:
            per_variant, labels, unpaired = captures.expire(session, spec.endpoint, now)
            report.expired_shadow_answers += unpaired
            report.expired_predictions += sum(per_variant.values())
            report.expired_labels += labels
            counts = {
                f"{spec.capture_uri}#{capture_prefix}{variant}/": n for variant, n in per_variant.items()
            }
            if labels:
                label_root = self.stores(spec.ground_truth_uri, self.s3_client)[1]
                counts[f"{spec.ground_truth_uri}#{label_root}"] = labels
            captures.count_expired(session, counts)


def _read_captures(
    spec: QualitySpec,
    variant: str,
    lines: list[bytes],
    resolve: RegistryPhases,
    report: IngestReport,
    models: dict[int, Covariate],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], int]:
    """(production's predictions, a shadow's answers, malformed lines) of captured lines, by inference
    id; replays, requests outside any rollout phase and duplicates counted and left out. A prediction
    of a rollout with a pre-period covariate gets its x, from its input (`_covariates`)."""
    rows: dict[str, dict[str, Any]] = {}
    shadowed: dict[str, dict[str, Any]] = {}
    inputs: dict[str, list[float] | None] = {}
    malformed = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            inference_id, at, request, outputs = parse_capture_request(line)
        except Malformed:
            malformed += 1
            continue
        if inference_id.startswith(REPLAY_PREFIX):
            report.replayed += 1
            continue
        phase = resolve(variant, at)
        if phase is None:
            report.outside_rollout += 1
            continue
        into = shadowed if resolve.shadow(variant, phase[0]) else rows
        if inference_id in into:
            report.duplicates += 1
            continue
        row: dict[str, Any] = {
            "endpoint": spec.endpoint,
            "inference_id": inference_id,
            "rollout_id": phase[0],
            "outputs": json.dumps(outputs, separators=(",", ":")),
            "expires_at": at + spec.label_ttl,
        }
        if into is shadowed:
            row.update(compared=False, paired=False)
        else:
            row.update(variant=variant, phase=phase[1], inference_at=at)
            if phase[0] in models:
                inputs[inference_id] = features_of(request)
        into[inference_id] = row
    report.malformed += malformed
    _covariates(rows, inputs, models)
    return rows, shadowed, malformed


def _covariates(
    rows: dict[str, dict[str, Any]], inputs: dict[str, list[float] | None], models: dict[int, Covariate]
) -> None:
    """Each prediction's x: its rollout's model on its input, in one call per rollout; a request whose
    input is not one row of the model's width gets the history's mean outcome (a constant, so x still
    does not depend on the arm)."""
    by_rollout: dict[int, list[str]] = defaultdict(list)
    for inference_id in inputs:
        by_rollout[rows[inference_id]["rollout_id"]].append(inference_id)
    for rollout_id, ids in by_rollout.items():
        model = models[rollout_id]
        width = getattr(model.estimator, "n_features_in_", None)
        usable = [i for i in ids if inputs[i] is not None and len(inputs[i] or ()) == width]
        for inference_id in ids:
            rows[inference_id]["covariate"] = model.fallback
        if usable:
            predicted = model.predict(np.array([inputs[i] for i in usable]))
            for inference_id, x in zip(usable, predicted, strict=True):
                rows[inference_id]["covariate"] = float(x)


def _outcomes(
    session: Session,
    spec: QualitySpec,
    labels: dict[str, list[list[float]]],
    deltas: Deltas,
    answered: dict[str, list[list[float]]],
    report: IngestReport,
) -> tuple[list[str], set[str], int]:
    """Each label's outcome added to the deltas of its prediction's minute: (joined ids, ids whose
    prediction is here, malformed)."""
    matched: list[str] = []
    seen: set[str] = set()
    malformed = 0
    minutes: dict[str | datetime, datetime] = {}  # one parse per distinct minute
    for inference_id, joined, variant, rollout_id, phase, at, outputs, x in captures.captured_for(
        session, spec.endpoint, list(labels)
    ):
        seen.add(inference_id)
        if joined:
            report.duplicates += 1
            continue
        matched.append(inference_id)
        try:
            produced = json.loads(outputs)
            pairs = outcomes(spec.kind, spec.threshold, produced, labels[inference_id])
        except Malformed:
            malformed += 1
            continue
        answered[inference_id] = produced
        key = _minute_key(at)
        minute = minutes.get(key)
        if minute is None:
            minute = minutes[key] = _minute_of(key)
        for metric, value in pairs:
            delta = deltas[(rollout_id, phase, variant, metric, minute)]
            delta[0] += 1
            delta[1] += value
            delta[2] += value * value
            if x is not None:
                delta[3] += x
                delta[4] += x * x
                delta[5] += x * value
    return matched, seen, malformed
