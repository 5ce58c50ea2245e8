"""Ground truth joined to captured predictions: delayed labels, duplicates, malformed lines,
incremental reads of a large prefix, expiry, regression, S3, and crash safety."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from sqlalchemy import func, select

from manager.db import Database
from manager.groundtruth.ingest import GroundTruthIngestor, QualitySpec, outcomes
from manager.groundtruth.records import parse_capture
from manager.groundtruth.stores import LocalStore, ObjectStore, open_store
from manager.registry.endpoints import ingest_status
from manager.registry.tables import (
    CapturedInference,
    IngestCursor,
    Observation,
    PendingLabel,
)

from .aws_support import record_operations
from .groundtruth_support import capture_line, label_line
from .registry_fixtures import bare_rollout

pytestmark = pytest.mark.backends  # each test runs on SQLite and on PostgreSQL


def _rollout(database: Database, started: datetime) -> int:
    return bare_rollout(database, started, weights={"baseline": 95, "candidate": 5})


class Files:
    def __init__(self, root: Path, at: datetime) -> None:
        self.root = root
        self.hour = at.strftime("%Y/%m/%d/%H")

    def capture(self, variant: str, name: str, lines: list[str], append: bool = False) -> Path:
        return self._write(self.root / "capture" / "ep" / variant / self.hour / name, lines, append)

    def labels(self, name: str, lines: list[str]) -> Path:
        return self._write(self.root / "labels" / self.hour / name, lines, False)

    @staticmethod
    def _write(path: Path, lines: list[str], append: bool) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a" if append else "w") as handle:
            handle.write("".join(line + "\n" for line in lines))
        return path


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def files(tmp_path: Path, now: datetime) -> Files:
    return Files(tmp_path, now - timedelta(minutes=30))


@pytest.fixture
def spec(tmp_path: Path) -> QualitySpec:
    return QualitySpec("ep", (tmp_path / "capture").as_uri(), (tmp_path / "labels").as_uri(), threshold=0.5)


def _ingestor(
    database: Database, clock: Callable[[], datetime] | None = None, **kw: Any
) -> GroundTruthIngestor:
    return GroundTruthIngestor(
        database, clock=clock or (lambda: datetime.now(UTC)), settle=timedelta(0), **kw
    )


def _observed(database: Database, metric: str = "accuracy") -> dict[str, tuple[int, float]]:
    with database.read() as session:
        rows = session.execute(
            select(Observation.variant_name, func.sum(Observation.n), func.sum(Observation.total))
            .where(Observation.metric == metric)
            .group_by(Observation.variant_name)
        ).all()
    return {v: (int(n), float(t)) for v, n, t in rows}


def _waiting(database: Database) -> int:
    with database.read() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(CapturedInference).where(CapturedInference.joined.is_(False))
            )
            or 0
        )


def _count(database: Database, table: Any) -> int:
    with database.read() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def test_labels_that_arrive_later_are_joined(
    database: Database, files: Files, spec: QualitySpec, now: datetime
) -> None:
    _rollout(database, now - timedelta(hours=1))
    at = now - timedelta(minutes=30)
    files.capture("baseline", "a.jsonl", [capture_line(f"b{i}", at, "0.9") for i in range(10)])
    files.capture("candidate", "a.jsonl", [capture_line(f"c{i}", at, "0.2") for i in range(4)])
    ingestor = _ingestor(database)
    first = ingestor.run(spec)
    assert (first.predictions, first.joined) == (14, 0)
    assert _waiting(database) == 14 and _observed(database) == {}

    # labels come later: baseline predicted 1 (p=0.9) and 7 of 10 are 1; the candidate predicted 0
    files.labels(
        "l1.jsonl",
        [label_line(f"b{i}", "1" if i < 7 else "0") for i in range(10)]
        + [label_line(f"c{i}", "0") for i in range(4)],
    )
    second = ingestor.run(spec)
    assert (second.predictions, second.labels, second.joined) == (0, 14, 14)
    assert _observed(database) == {"baseline": (10, 7.0), "candidate": (4, 4.0)}
    assert _waiting(database) == 0
    assert ingestor.run(spec).joined == 0  # nothing new: nothing read again
    assert _observed(database) == {"baseline": (10, 7.0), "candidate": (4, 4.0)}


def test_labels_that_arrive_first_wait_for_their_predictions(
    database: Database, files: Files, spec: QualitySpec, now: datetime
) -> None:
    _rollout(database, now - timedelta(hours=1))
    files.labels("early.jsonl", [label_line("x1", "1"), label_line("x2", "0")])
    ingestor = _ingestor(database)
    assert ingestor.run(spec).joined == 0
    assert _count(database, PendingLabel) == 2
    files.capture(
        "baseline",
        "late.jsonl",
        [
            capture_line("x1", now - timedelta(minutes=5), "0.8"),
            capture_line("x2", now - timedelta(minutes=5), "0.8"),
        ],
    )
    assert ingestor.run(spec).joined == 2
    assert _observed(database) == {"baseline": (2, 1.0)}
    assert _count(database, PendingLabel) == 0


def test_event_id_is_the_join_key_without_an_inference_id(
    database: Database, files: Files, spec: QualitySpec, now: datetime
) -> None:
    _rollout(database, now - timedelta(hours=1))
    files.capture(
        "baseline", "a.jsonl", [capture_line("e-1", now - timedelta(minutes=1), "0.3", use_event_id=True)]
    )
    files.labels("l.jsonl", [label_line("e-1", "0")])
    assert _ingestor(database).run(spec).joined == 1


def test_duplicates_are_dropped_by_inference_id(
    database: Database, files: Files, spec: QualitySpec, now: datetime
) -> None:
    _rollout(database, now - timedelta(hours=1))
    at = now - timedelta(minutes=10)
    files.capture(
        "baseline",
        "a.jsonl",
        [capture_line("d1", at, "0.9"), capture_line("d1", at, "0.9"), capture_line("d2", at, "0.9")],
    )
    files.labels("l.jsonl", [label_line("d1", "1"), label_line("d1", "1"), label_line("d2", "0")])
    ingestor = _ingestor(database)
    report = ingestor.run(spec)
    assert (report.joined, report.duplicates) == (2, 2)
    files.capture("baseline", "b.jsonl", [capture_line("d1", at, "0.9")])  # replayed after the join
    files.labels("l2.jsonl", [label_line("d2", "0")])
    assert ingestor.run(spec).duplicates == 2
    assert _observed(database) == {"baseline": (2, 1.0)}


def test_malformed_lines_are_counted_and_skipped(
    database: Database, files: Files, spec: QualitySpec, now: datetime
) -> None:
    _rollout(database, now - timedelta(hours=1))
    at = now - timedelta(minutes=10)
    files.capture(
        "baseline",
        "a.jsonl",
        [
            "not json at all",
            "{}",
            json.dumps({"captureData": {}}),
            capture_line("ok1", at, "0.9"),
            capture_line("nan", at, "nan"),
            capture_line("ok2", at, "0.1"),
            "\x00\x01garbage",
        ],
    )
    files.labels(
        "l.jsonl",
        [
            "{broken",
            label_line("ok1", "1"),
            label_line("ok2", "1"),
            json.dumps({"groundTruthData": {"data": "1"}}),
        ],
    )
    report = _ingestor(database).run(spec)
    assert report.malformed == 7
    assert report.joined == 2
    assert _observed(database) == {"baseline": (2, 1.0)}
    with database.read() as session:
        status = ingest_status(session, "ep")
    assert status["malformed_skipped"] == 7 and status["records_read"] == 4


def test_an_unreadable_file_never_stops_the_rest(
    database: Database, files: Files, spec: QualitySpec, now: datetime
) -> None:
    _rollout(database, now - timedelta(hours=1))
    at = now - timedelta(minutes=10)
    folder = files.capture("baseline", "b.jsonl", [capture_line("fine", at, "0.9")]).parent
    os.symlink(folder / "missing-target", folder / "a-dangling.jsonl")
    files.capture("baseline", "c.jsonl", ["x" * 100])  # no newline: half a line, left for later
    files.labels("l.jsonl", [label_line("fine", "1")])
    report = _ingestor(database).run(spec)
    assert report.joined == 1
    assert len(report.file_errors) == 1 and "a-dangling.jsonl" in report.file_errors[0]
    with database.read() as session:
        assert "a-dangling.jsonl" in ingest_status(session, "ep")["read_errors"][0]


def test_a_thousand_file_prefix_is_read_incrementally(
    database: Database, tmp_path: Path, spec: QualitySpec, now: datetime
) -> None:
    _rollout(database, now - timedelta(hours=3))
    reads: list[str] = []

    class Counting(LocalStore):
        def read(self, key: str, start: int, length: int) -> bytes:
            reads.append(key)
            return super().read(key, start, length)

    def stores(uri: str, s3: Any) -> tuple[ObjectStore, str]:
        store, prefix = open_store(uri, s3)
        assert isinstance(store, LocalStore)
        return Counting(store.root), prefix

    for i in range(1000):
        at = now - timedelta(minutes=150) + timedelta(seconds=8 * i)
        hour = Files(tmp_path, at)
        hour.capture("baseline", f"{i:04d}.jsonl", [capture_line(f"id{i}-{j}", at, "0.7") for j in range(3)])
    ingestor = _ingestor(database, stores=stores, batch=700)
    assert ingestor.run(spec).predictions == 3000
    assert len(reads) == 1000

    reads.clear()
    newest = Files(tmp_path, now - timedelta(minutes=1))
    newest.capture("baseline", "9999.jsonl", [capture_line("late-1", now - timedelta(minutes=1), "0.7")])
    assert ingestor.run(spec).predictions == 1
    assert reads == [next(k for k in reads if k.endswith("9999.jsonl"))]


def test_a_growing_file_is_read_from_where_it_stopped(
    database: Database, files: Files, spec: QualitySpec, now: datetime
) -> None:
    _rollout(database, now - timedelta(hours=1))
    at = now - timedelta(minutes=5)
    files.capture("baseline", "open.jsonl", [capture_line("g1", at, "0.9")])
    ingestor = GroundTruthIngestor(database, clock=lambda: datetime.now(UTC), settle=timedelta(hours=1))
    assert ingestor.run(spec).predictions == 1
    path = files.capture("baseline", "open.jsonl", [capture_line("g2", at, "0.9")], append=True)
    with open(path, "a") as handle:
        handle.write(capture_line("g3", at, "0.9")[:40])  # the writer is mid-line
    assert ingestor.run(spec).predictions == 1
    with open(path, "a") as handle:
        handle.write(capture_line("g3", at, "0.9")[40:] + "\n")
    assert ingestor.run(spec).predictions == 1
    assert _waiting(database) == 3


def test_unmatched_predictions_expire(
    database: Database, files: Files, spec: QualitySpec, now: datetime
) -> None:
    _rollout(database, now - timedelta(hours=1))
    files.capture("baseline", "a.jsonl", [capture_line("lonely", now - timedelta(minutes=30), "0.9")])
    _ingestor(database).run(spec)
    later = _ingestor(database, clock=lambda: datetime.now(UTC) + timedelta(hours=25)).run(spec)
    assert later.expired_predictions == 1
    assert _waiting(database) == 0
    with database.read() as session:
        assert ingest_status(session, "ep")["expired_unjoined"] == 1, "what expired is counted and shown"


def _age(path: Path, hours: float) -> None:
    """As if the file was last written `hours` ago."""
    when = time.time() - hours * 3600
    os.utime(path, (when, when))


def test_a_late_file_named_before_one_already_read_is_read(
    database: Database, files: Files, spec: QualitySpec, now: datetime
) -> None:
    _rollout(database, now - timedelta(hours=1))
    at = now - timedelta(minutes=30)
    files.capture("baseline", "c.jsonl", [capture_line("p1", at, "0.9"), capture_line("p2", at, "0.9")])
    _age(files.labels("b.jsonl", [label_line("p1", "1")]), hours=3)  # beyond the old 2 h settle
    ingestor = GroundTruthIngestor(database, clock=lambda: datetime.now(UTC), settle=timedelta(hours=2))
    assert ingestor.run(spec).joined == 1
    _age(files.labels("a.jsonl", [label_line("p2", "1")]), hours=3)  # uploaded late, sorts first
    assert ingestor.run(spec).joined == 1
    assert _observed(database) == {"baseline": (2, 2.0)}


def test_records_appended_to_a_finished_file_are_read(
    database: Database, files: Files, spec: QualitySpec, now: datetime
) -> None:
    _rollout(database, now - timedelta(hours=1))
    at = now - timedelta(minutes=30)
    path = files.capture("baseline", "a.jsonl", [capture_line("p1", at, "0.9")])
    _age(path, hours=3)
    ingestor = GroundTruthIngestor(database, clock=lambda: datetime.now(UTC), settle=timedelta(hours=2))
    assert ingestor.run(spec).predictions == 1
    files.capture("baseline", "a.jsonl", [capture_line("p2", at, "0.9")], append=True)
    assert ingestor.run(spec).predictions == 1
    assert _waiting(database) == 2


def test_a_five_megabyte_line_is_counted_and_skipped_without_blocking(
    database: Database, files: Files, spec: QualitySpec, now: datetime
) -> None:
    _rollout(database, now - timedelta(hours=1))
    at = now - timedelta(minutes=30)
    huge = '{"captureData": "' + "x" * (5 << 20) + '"}'
    files.capture("baseline", "a.jsonl", [capture_line("p1", at, "0.9"), huge, capture_line("p2", at, "0.9")])
    report = _ingestor(database).run(spec)
    assert (report.predictions, report.malformed) == (2, 1)
    with database.read() as session:
        assert ingest_status(session, "ep")["malformed_skipped"] == 1
    files.capture("baseline", "a.jsonl", [capture_line("p3", at, "0.9")], append=True)
    assert _ingestor(database).run(spec).predictions == 1, "the rest of the file is still read"


def test_a_file_replaced_in_place_is_read_again(
    database: Database, files: Files, spec: QualitySpec, now: datetime
) -> None:
    _rollout(database, now - timedelta(hours=1))
    at = now - timedelta(minutes=30)
    files.capture("baseline", "c.jsonl", [capture_line(f"p{i}", at, "0.9") for i in range(3)])
    files.labels("a.jsonl", [label_line("p0", "1"), label_line("p1", "1")])
    ingestor = _ingestor(database)
    assert ingestor.run(spec).joined == 2
    files.labels("a.jsonl", [label_line("p2", "0")])  # rewritten, shorter
    report = ingestor.run(spec)
    assert (report.joined, report.replaced_files) == (1, 1)
    assert _observed(database) == {"baseline": (3, 2.0)}


def test_a_file_overwritten_with_longer_content_is_read_again_not_as_an_append(
    database: Database, files: Files, spec: QualitySpec, now: datetime
) -> None:
    """Issue 31, item 11: a labelling job rewrites an hour's file with corrections, longer than before.
    It was read as an append from the old offset, and 5 of 10 labels were lost, silently."""
    _rollout(database, now - timedelta(hours=1))
    at = now - timedelta(minutes=30)
    files.capture("baseline", "c.jsonl", [capture_line(f"p{i}", at, "0.9") for i in range(10)])
    path = files.labels("a.jsonl", [label_line(f"p{i}", "1") for i in range(5)])
    _age(path, hours=2)  # written a while ago: the rewrite below moves its modification time on
    ingestor = _ingestor(database)
    assert ingestor.run(spec).joined == 5
    files.labels("a.jsonl", [label_line(f"p{i}", "0") for i in range(5, 10)] + [label_line("p0", "1")])
    report = ingestor.run(spec)
    assert (report.joined, report.replaced_files) == (5, 1), "p5-p9 read; p0 again is dropped by id"
    assert _observed(database) == {"baseline": (10, 5.0)}


def test_a_last_line_without_its_newline_is_read_once_the_file_is_quiet(
    database: Database, files: Files, spec: QualitySpec, now: datetime
) -> None:
    _rollout(database, now - timedelta(hours=1))
    at = now - timedelta(minutes=30)
    path = files.capture("baseline", "a.jsonl", [capture_line("p1", at, "0.9")])
    with open(path, "a") as handle:
        handle.write(capture_line("p2", at, "0.9"))  # no newline at the end
    waiting = GroundTruthIngestor(database, clock=lambda: datetime.now(UTC), settle=timedelta(hours=1))
    assert waiting.run(spec).predictions == 1, "the writer may still be writing it"
    _age(path, hours=2)
    assert waiting.run(spec).predictions == 1


def test_files_past_the_look_back_are_forgotten_behind_the_horizon(
    database: Database, files: Files, spec: QualitySpec, now: datetime
) -> None:
    _rollout(database, now - timedelta(hours=1))
    old = files.labels("a.jsonl", [label_line("x", "1")])
    _age(old, hours=72)
    files.labels("b.jsonl", [label_line("y", "1")])
    _ingestor(database).run(spec)
    with database.read() as session:
        [cursor] = [c for c in session.scalars(select(IngestCursor)) if c.kind == "ground_truth"]
        position = cursor.position
    assert position["horizon"].endswith("a.jsonl") and [k[-7:] for k in position["files"]] == ["b.jsonl"]


def test_predictions_outside_any_rollout_are_not_counted(
    database: Database, files: Files, spec: QualitySpec, now: datetime
) -> None:
    _rollout(database, now - timedelta(minutes=5))
    files.capture("baseline", "a.jsonl", [capture_line("before", now - timedelta(minutes=30), "0.9")])
    assert _ingestor(database).run(spec).outside_rollout == 1


def test_regression_errors(database: Database, files: Files, tmp_path: Path, now: datetime) -> None:
    _rollout(database, now - timedelta(hours=1))
    spec = QualitySpec(
        "ep", (tmp_path / "capture").as_uri(), (tmp_path / "labels").as_uri(), kind="regression"
    )
    at = now - timedelta(minutes=3)
    files.capture("baseline", "a.jsonl", [capture_line("r1", at, "10.0"), capture_line("r2", at, "4.0")])
    files.labels("l.jsonl", [label_line("r1", "7.0"), label_line("r2", "5.0")])
    _ingestor(database).run(spec)
    assert _observed(database, "abs_error") == {"baseline": (2, 4.0)}
    assert _observed(database, "squared_error") == {"baseline": (2, 10.0)}


def test_outcomes_table() -> None:
    assert outcomes("classification", 0.5, [[0.5]], [[1.0]]) == [("accuracy", 1.0)]
    assert outcomes("classification", 0.7, [[0.6]], [[1.0]]) == [("accuracy", 0.0)]
    assert outcomes("classification", 0.5, [[0.1, 0.7, 0.2]], [[1.0]]) == [("accuracy", 1.0)]
    assert outcomes("regression", 0.5, [[3.0]], [[1.0]]) == [("abs_error", 2.0), ("squared_error", 4.0)]
    with pytest.raises(ValueError, match="2 predictions but 1 labels"):
        outcomes("classification", 0.5, [[0.1], [0.2]], [[1.0]])
    inference_id, _, rows = parse_capture(
        capture_line("q", datetime(2026, 1, 1, tzinfo=UTC), "0.1\n0.2").encode()
    )
    assert (inference_id, rows) == ("q", [[0.1], [0.2]])


def test_a_crash_between_batches_loses_and_repeats_nothing(
    database: Database, files: Files, spec: QualitySpec, now: datetime
) -> None:
    _rollout(database, now - timedelta(hours=1))
    at = now - timedelta(minutes=10)
    files.capture("baseline", "a.jsonl", [capture_line(f"k{i}", at, "0.9") for i in range(10)])
    files.labels("l.jsonl", [label_line(f"k{i}", "1") for i in range(10)])
    ingestor = _ingestor(database, batch=3)
    calls = 0
    original = ingestor._labels

    def crash_on_second_batch(*args: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("killed")
        return original(*args)

    ingestor._labels = crash_on_second_batch  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        ingestor.run(spec)
    assert _observed(database) == {"baseline": (3, 3.0)}  # the first batch and its cursor committed together
    assert _ingestor(database, batch=3).run(spec).joined == 7
    assert _observed(database) == {"baseline": (10, 10.0)}


def test_reads_from_s3(database: Database, now: datetime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    _rollout(database, now - timedelta(hours=1))
    at = now - timedelta(minutes=10)
    hour = at.strftime("%Y/%m/%d/%H")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="mon")
        s3.put_object(
            Bucket="mon",
            Key=f"capture/ep/baseline/{hour}/a.jsonl",
            Body="".join(capture_line(f"s{i}", at, "0.9") + "\n" for i in range(5)),
        )
        s3.put_object(
            Bucket="mon",
            Key=f"gt/{hour}/l.jsonl",
            Body="".join(label_line(f"s{i}", "1") + "\n" for i in range(5)),
        )
        record_operations(s3)  # from here on, only the product's calls
        spec = QualitySpec("ep", "s3://mon/capture", "s3://mon/gt")
        ingestor = GroundTruthIngestor(
            database, s3_client=s3, clock=lambda: datetime.now(UTC) + timedelta(hours=3)
        )
        assert ingestor.run(spec).joined == 5
        assert ingestor.run(spec).joined == 0
    assert _observed(database) == {"baseline": (5, 5.0)}


def test_endpoints_show_reports_malformed_lines(
    database: Database, files: Files, spec: QualitySpec, now: datetime
) -> None:
    from click.testing import CliRunner

    from manager.cli.main import cli

    _rollout(database, now - timedelta(hours=1))
    files.capture("baseline", "a.jsonl", ["garbage", capture_line("v1", now - timedelta(minutes=2), "0.9")])
    _ingestor(database).run(spec)
    shown = CliRunner().invoke(cli, ["--db", database.url, "endpoints", "show", "ep", "-o", "json"])
    assert shown.exit_code == 0, shown.output
    ingestion = json.loads(shown.stdout)["ingestion"]
    assert (ingestion["malformed_skipped"], ingestion["predictions_waiting_for_labels"]) == (1, 1)
    table = CliRunner().invoke(cli, ["--db", database.url, "endpoints", "show", "ep"]).stdout
    assert "malformed skipped" in table


def test_an_unreachable_bucket_is_a_read_error_shown_not_a_crash(
    database: Database, spec: QualitySpec, now: datetime
) -> None:
    _rollout(database, now - timedelta(hours=1))
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")  # no bucket `monitoring` exists
        unreachable = QualitySpec("ep", "s3://monitoring/capture", "s3://monitoring/ground-truth")
        report = GroundTruthIngestor(database, s3_client=s3, settle=timedelta(0)).run(unreachable)
    assert len(report.file_errors) == 2 and all(
        "cannot list s3://monitoring/" in e for e in report.file_errors
    )
    with database.read() as session:
        errors = ingest_status(session, "ep")["read_errors"]
    assert len(errors) == 2 and all("404" in e for e in errors), errors


def test_the_daemons_ingest_scores_a_regression_policy_as_regression(
    database: Database, files: Files, tmp_path: Path, now: datetime
) -> None:
    """The daemon's ingest job reads the kind of model from the rollout's policy: absolute and squared
    error for one judged by `abs_error`, never accuracy against a rounded label."""
    from manager import daemon
    from manager.registry.tables import Rollout

    rollout_id = _rollout(database, now - timedelta(hours=1))
    capture, labels = (tmp_path / "capture").as_uri(), (tmp_path / "labels").as_uri()
    policy = f"""
name: regressor
target: {{endpoint: ep, candidate: {{model: m, version: 2}}, captureDestination: '{capture}',
         groundTruth: '{labels}'}}
stepWeights: [5]
metrics:
  - {{name: mae, source: quality, measure: abs_error, kind: mean, higherIsBetter: false, role: primary}}
"""
    with database.write() as session:
        row = session.get(Rollout, rollout_id)
        assert row is not None
        row.policy_yaml = policy
    at = now - timedelta(minutes=3)
    files.capture("baseline", "a.jsonl", [capture_line("r1", at, "10.0"), capture_line("r2", at, "4.0")])
    files.labels("l.jsonl", [label_line("r1", "7.0"), label_line("r2", "5.0")])
    daemon.RUNTIMES[database.url] = daemon.runtime.Runtime(database, None, _ingestor(database))
    try:
        daemon.ingest_job(database.url)
    finally:
        del daemon.RUNTIMES[database.url]
    assert _observed(database, "abs_error") == {"baseline": (2, 4.0)}
    assert _observed(database, "accuracy") == {}
