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

import bisect
import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, String, Table, delete, select, type_coerce, update
from sqlalchemy.orm import Session

from manager.clock import utcnow
from manager.db import Database, insert_for
from manager.groundtruth.incremental import Cursor, read_new
from manager.groundtruth.pairing import label_free, labelled
from manager.groundtruth.records import (
    REPLAY_PREFIX,
    Kind,
    Malformed,
    outcomes,
    parse_capture,
    parse_label,
)
from manager.groundtruth.stores import ObjectStore, open_store
from manager.names import shadow_variant
from manager.registry import observations
from manager.registry.observations import ObservedWindow
from manager.registry.pairs import Delta
from manager.registry.pairs import add as add_pairs
from manager.registry.tables import (
    CapturedInference,
    Endpoint,
    IngestCursor,
    PendingLabel,
    Rollout,
    RolloutPhase,
    ShadowAnswer,
)

PAIRED_SOURCE = "shadow"
IN_CHUNK = 2000  # ids per IN (...) clause: well inside SQLite's and PostgreSQL's parameter limits


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


# ---- phases -------------------------------------------------------------------------------------


class RegistryPhases:
    """Which rollout phase was live on an endpoint at an instant, from `rollout_phases`."""

    def __init__(self, session: Session, endpoint: str) -> None:
        rows = session.execute(
            select(
                RolloutPhase.started_at, RolloutPhase.ended_at, RolloutPhase.rollout_id, RolloutPhase.phase
            )
            .join(Rollout, Rollout.id == RolloutPhase.rollout_id)
            .join(Endpoint, Endpoint.id == Rollout.endpoint_id)
            .where(Endpoint.name == endpoint)
            .order_by(RolloutPhase.started_at)
        ).all()
        self.starts = [r[0] for r in rows]
        self.rows = rows
        # Each rollout's shadow variant: captured answers filed under it are a shadow's, to be paired.
        self.shadows = {
            rid: shadow_variant(candidate)
            for rid, candidate in session.execute(
                select(Rollout.id, Rollout.candidate_variant).where(Rollout.id.in_({r[2] for r in rows}))
            )
        }

    def shadow(self, variant: str, rollout_id: int) -> bool:
        """Whether `variant` is the rollout's candidate shadowing production."""
        return self.shadows.get(rollout_id) == variant

    def __call__(self, variant: str, at: datetime) -> tuple[int, int] | None:
        i = bisect.bisect_right(self.starts, at) - 1
        if i < 0:
            return None
        _started, ended, rollout_id, phase = self.rows[i]
        if ended is not None and at >= ended:
            return None
        return rollout_id, phase


# ---- writing ------------------------------------------------------------------------------------


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), IN_CHUNK):
        yield items[i : i + IN_CHUNK]


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

    def run(self, spec: QualitySpec) -> IngestReport:
        now = self.clock()
        report = IngestReport()
        capture_store, capture_root = self.stores(spec.capture_uri, self.s3_client)
        endpoint_prefix = f"{capture_root}{spec.endpoint}/"
        self._expire(spec, endpoint_prefix, now, report)
        with self.database.read() as session:
            resolve = self.phases(session, spec.endpoint)
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
            row = session.get(IngestCursor, cursor_id)
            if row is None:
                row = IngestCursor(
                    prefix=cursor_id, endpoint=spec.endpoint, kind="capture", records=0, malformed=0
                )
                session.add(row)
            row.last_error = error[:2000]

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
            row = session.get(IngestCursor, cursor_id)
            if row is None:
                row = IngestCursor(
                    prefix=cursor_id, endpoint=spec.endpoint, kind=kind, records=0, malformed=0
                )
                session.add(row)
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
        rows: dict[str, dict[str, Any]] = {}
        shadows: dict[str, dict[str, Any]] = {}
        malformed = 0
        for line in lines:
            if not line.strip():
                continue
            try:
                inference_id, at, outputs = parse_capture(line)
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
            if resolve.shadow(variant, phase[0]):
                if inference_id in shadows:
                    report.duplicates += 1
                    continue
                shadows[inference_id] = {
                    "endpoint": spec.endpoint,
                    "inference_id": inference_id,
                    "rollout_id": phase[0],
                    "outputs": json.dumps(outputs, separators=(",", ":")),
                    "compared": False,
                    "paired": False,
                    "expires_at": at + spec.label_ttl,
                }
                continue
            if inference_id in rows:
                report.duplicates += 1
                continue
            rows[inference_id] = {
                "endpoint": spec.endpoint,
                "inference_id": inference_id,
                "variant": variant,
                "rollout_id": phase[0],
                "phase": phase[1],
                "inference_at": at,
                "outputs": json.dumps(outputs, separators=(",", ":")),
                "expires_at": at + spec.label_ttl,
            }
        report.malformed += malformed
        conn = session.connection()
        # The same inference again (waiting or already joined) conflicts with its row and is skipped.
        inserted = (
            list(
                conn.scalars(
                    insert_for(session)(_CAPTURED)
                    .on_conflict_do_nothing()
                    .returning(_CAPTURED.c.inference_id),
                    list(rows.values()),
                )
            )
            if rows
            else []
        )
        report.duplicates += len(rows) - len(inserted)
        report.predictions += len(inserted)
        shadowed = (
            list(
                conn.scalars(
                    insert_for(session)(_SHADOWS).on_conflict_do_nothing().returning(_SHADOWS.c.inference_id),
                    list(shadows.values()),
                )
            )
            if shadows
            else []
        )
        report.duplicates += len(shadows) - len(shadowed)
        report.shadow_answers += len(shadowed)
        if shadowed or inserted:
            self._compare(session, spec, inserted + shadowed)
        waiting = {
            inference_id: json.loads(labels)
            for inference_id, labels in _matching(
                conn, _LABELS, spec.endpoint, inserted, _LABELS.c.inference_id, _LABELS.c.labels
            )
        }
        if waiting:
            _delete(conn, _LABELS, spec.endpoint, list(waiting))
            malformed += self._join(session, spec, waiting, now, report)
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
        conn = session.connection()
        deltas: dict[tuple[int, int, str, str, datetime], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
        matched: list[str] = []
        answered: dict[str, list[list[float]]] = {}  # production's outputs, for a shadow's answer
        seen: set[str] = set()
        malformed = 0
        # The stored time as text: only its minute is needed, and parsing each row's datetime costs more
        # than the rest of the join (one parse per distinct minute instead).
        minutes: dict[str | datetime, datetime] = {}
        columns = (
            _CAPTURED.c.inference_id,
            _CAPTURED.c.joined,
            _CAPTURED.c.variant,
            _CAPTURED.c.rollout_id,
            _CAPTURED.c.phase,
            type_coerce(_CAPTURED.c.inference_at, String),
            _CAPTURED.c.outputs,
        )
        for inference_id, joined, variant, rollout_id, phase, at, outputs in _matching(
            conn, _CAPTURED, spec.endpoint, list(labels), *columns
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
        report.joined += len(matched)
        report.malformed += malformed
        insert = insert_for(session)
        observations.record(
            session,
            [
                ObservedWindow(r, p, v, m, w, w + timedelta(minutes=1), int(d[0]), d[1], d[2])
                for (r, p, v, m, w), d in deltas.items()
            ],
            merge="add",
        )
        if answered:
            self._pair_labelled(session, spec, answered, labels, report)
        _update(conn, _CAPTURED, spec.endpoint, matched, joined=True, outputs=None)
        unmatched = [i for i in labels if i not in seen]
        if unmatched:
            conn.execute(
                insert(_LABELS).on_conflict_do_nothing(),
                [
                    {
                        "endpoint": spec.endpoint,
                        "inference_id": i,
                        "expires_at": now + spec.label_ttl,
                        "labels": json.dumps(labels[i], separators=(",", ":")),
                    }
                    for i in unmatched
                ],
            )
        return malformed

    # -- shadow answers --

    def _compare(self, session: Session, spec: QualitySpec, ids: list[str]) -> None:
        """Label-free evidence for shadow answers whose production answer is here too (either may
        come first): agreement and score shift, counted once per shadow answer."""
        conn = session.connection()
        deltas: dict[int, dict[str, Delta]] = defaultdict(dict)
        compared: list[str] = []
        for chunk in _chunks(ids):
            for inference_id, rollout_id, shadow_out, production_out in conn.execute(
                select(
                    _SHADOWS.c.inference_id, _SHADOWS.c.rollout_id, _SHADOWS.c.outputs, _CAPTURED.c.outputs
                )
                .join(
                    _CAPTURED,
                    (_CAPTURED.c.endpoint == _SHADOWS.c.endpoint)
                    & (_CAPTURED.c.inference_id == _SHADOWS.c.inference_id),
                )
                .where(
                    _SHADOWS.c.endpoint == spec.endpoint,
                    _SHADOWS.c.inference_id.in_(chunk),
                    _SHADOWS.c.compared.is_(False),
                    _SHADOWS.c.outputs.isnot(None),
                    _CAPTURED.c.outputs.isnot(None),
                )
            ):
                compared.append(inference_id)
                label_free(
                    deltas[rollout_id],
                    spec.kind,
                    spec.threshold,
                    json.loads(production_out),
                    json.loads(shadow_out),
                )
        for rollout_id, measures in deltas.items():
            add_pairs(session, rollout_id, PAIRED_SOURCE, measures)
        _update(conn, _SHADOWS, spec.endpoint, compared, compared=True)

    def _pair_labelled(
        self,
        session: Session,
        spec: QualitySpec,
        answered: dict[str, list[list[float]]],
        labels: dict[str, list[list[float]]],
        report: IngestReport,
    ) -> None:
        """Production answers that just met their label: any shadow answer to the same request becomes
        a labelled pair (its outputs are dropped once counted)."""
        conn = session.connection()
        deltas: dict[int, dict[str, Delta]] = defaultdict(dict)
        paired: list[str] = []
        for inference_id, rollout_id, shadow_out in _matching(
            conn,
            _SHADOWS,
            spec.endpoint,
            list(answered),
            _SHADOWS.c.inference_id,
            _SHADOWS.c.rollout_id,
            _SHADOWS.c.outputs,
        ):
            if shadow_out is None:
                continue  # counted already
            paired.append(inference_id)
            labelled(
                deltas[rollout_id],
                spec.kind,
                spec.threshold,
                answered[inference_id],
                json.loads(shadow_out),
                labels[inference_id],
            )
        for rollout_id, measures in deltas.items():
            add_pairs(session, rollout_id, PAIRED_SOURCE, measures)
        report.shadow_pairs += len(paired)
        _update(conn, _SHADOWS, spec.endpoint, paired, paired=True, compared=True, outputs=None)

    def _expire(self, spec: QualitySpec, capture_prefix: str, now: datetime, report: IngestReport) -> None:
        """Forget what waited too long to be joined, counting it on the prefix it was read from."""
        endpoint = spec.endpoint
        with self.database.write() as session:
            conn = session.connection()
            unjoined = conn.execute(
                delete(_CAPTURED)
                .where(
                    _CAPTURED.c.endpoint == endpoint,
                    _CAPTURED.c.expires_at < now,
                    _CAPTURED.c.joined.is_(False),
                )
                .returning(_CAPTURED.c.variant)
            ).scalars()
            per_variant: dict[str, int] = defaultdict(int)
            for variant in unjoined:
                per_variant[variant] += 1
            # joined long enough ago that no replay is expected any more
            conn.execute(
                delete(_CAPTURED).where(_CAPTURED.c.endpoint == endpoint, _CAPTURED.c.expires_at < now)
            )
            labels = int(
                conn.execute(
                    delete(_LABELS).where(_LABELS.c.endpoint == endpoint, _LABELS.c.expires_at < now)
                ).rowcount
                or 0
            )
            # a shadow's answer whose production answer never met a label (or met it first): counted
            gone = conn.execute(
                delete(_SHADOWS)
                .where(_SHADOWS.c.endpoint == endpoint, _SHADOWS.c.expires_at < now)
                .returning(_SHADOWS.c.paired)
            ).scalars()
            report.expired_shadow_answers += sum(1 for paired in gone if not paired)
            report.expired_predictions += sum(per_variant.values())
            report.expired_labels += labels
            counts = {
                f"{spec.capture_uri}#{capture_prefix}{variant}/": n for variant, n in per_variant.items()
            }
            if labels:
                label_root = self.stores(spec.ground_truth_uri, self.s3_client)[1]
                counts[f"{spec.ground_truth_uri}#{label_root}"] = labels
            for cursor_id, n in counts.items():
                conn.execute(
                    update(IngestCursor)
                    .where(IngestCursor.prefix == cursor_id)
                    .values(expired=IngestCursor.expired + n)
                )


_CAPTURED: Table = CapturedInference.__table__  # type: ignore[assignment]
_LABELS: Table = PendingLabel.__table__  # type: ignore[assignment]
_SHADOWS: Table = ShadowAnswer.__table__  # type: ignore[assignment]


def _matching(
    conn: Connection, table: Table, endpoint: str, ids: Sequence[str], *columns: Any
) -> Iterator[Any]:
    """Rows of `table` for these inference ids of `endpoint`, a bounded IN (...) at a time.
    Core, not the ORM: this runs for every record ingested."""
    for chunk in _chunks(ids):
        yield from conn.execute(
            select(*columns).where(table.c.endpoint == endpoint, table.c.inference_id.in_(chunk))
        )


def _update(conn: Connection, table: Table, endpoint: str, ids: Sequence[str], **values: Any) -> None:
    for chunk in _chunks(ids):
        conn.execute(
            update(table)
            .where(table.c.endpoint == endpoint, table.c.inference_id.in_(chunk))
            .values(**values)
        )


def _delete(conn: Connection, table: Table, endpoint: str, ids: Sequence[str]) -> None:
    for chunk in _chunks(ids):
        conn.execute(delete(table).where(table.c.endpoint == endpoint, table.c.inference_id.in_(chunk)))
