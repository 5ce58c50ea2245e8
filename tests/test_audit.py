"""The history is append-only and hash-chained; verify names the first tampered seq."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from manager.config import actor, scheduler_actor
from manager.db import Database
from manager.history import audit


def _fill(database: Database, count: int = 6) -> None:
    for i in range(count):
        audit.record(
            database,
            "alice",
            audit.Event(
                action="note.added",  # chain-only events: no registry row stands behind them
                subject_type="note",
                subject_id=f"m:{i + 1}",
                model="m",
                reason=f"event {i + 1}",
                payload={"i": i, "note": "héllo"},
            ),
        )


def _tamper(db_path: Path, *statements: str) -> None:
    """Raw SQL as an attacker with file access would write it: triggers dropped first."""
    conn = sqlite3.connect(db_path)
    conn.execute("DROP TRIGGER audit_events_no_update")
    conn.execute("DROP TRIGGER audit_events_no_delete")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def test_events_chain_from_genesis(database: Database) -> None:
    _fill(database, 3)
    with database.read() as session:
        rows = list(session.scalars(audit.history_query(audit.HistoryFilter(limit=10))))
    rows.reverse()
    assert [r.seq for r in rows] == [1, 2, 3]
    assert rows[0].prev_hash == audit.GENESIS
    assert rows[1].prev_hash == rows[0].hash and rows[2].prev_hash == rows[1].hash
    assert all(audit.event_hash(r.prev_hash, r) == r.hash for r in rows)


def test_intact_chain_verifies_with_its_count(database: Database) -> None:
    _fill(database)
    verdict = audit.verify(database)
    assert verdict.ok and verdict.count == 6 and verdict.head_seq == 6


def test_empty_history_verifies(database: Database) -> None:
    verdict = audit.verify(database)
    assert verdict.ok and verdict.count == 0 and verdict.head_hash == audit.GENESIS


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET reason = 'nothing to see' WHERE seq = 2",
        "DELETE FROM audit_events WHERE seq = 2",
    ],
)
def test_triggers_refuse_update_and_delete(database: Database, statement: str) -> None:
    _fill(database, 3)
    with pytest.raises(IntegrityError, match="append-only"), database.write() as session:
        session.execute(text(statement))
    assert audit.verify(database).ok


def test_altered_event_is_named(database: Database, db_path: Path) -> None:
    _fill(database)
    _tamper(db_path, "UPDATE audit_events SET reason = 'approved by nobody' WHERE seq = 4")
    verdict = audit.verify(database)
    assert not verdict.ok
    assert verdict.first_bad_seq == 4
    assert "altered" in (verdict.problem or "")


def test_altered_payload_is_named(database: Database, db_path: Path) -> None:
    _fill(database)
    _tamper(db_path, """UPDATE audit_events SET payload = '{"i":2,"note":"hello"}' WHERE seq = 3""")
    verdict = audit.verify(database)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 3)


def test_deleted_event_is_named(database: Database, db_path: Path) -> None:
    _fill(database)
    _tamper(db_path, "DELETE FROM audit_events WHERE seq = 3")
    verdict = audit.verify(database)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 3)
    assert "deleted" in (verdict.problem or "")


def test_deleted_newest_events_are_named(database: Database, db_path: Path) -> None:
    _fill(database)
    _tamper(db_path, "DELETE FROM audit_events WHERE seq >= 5")
    verdict = audit.verify(database)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 5)
    assert "deleted from the end" in (verdict.problem or "")


def test_reordered_events_are_named(database: Database, db_path: Path) -> None:
    _fill(database)
    _tamper(
        db_path,
        "UPDATE audit_events SET seq = -1 WHERE seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE seq = 4",
        "UPDATE audit_events SET seq = 4 WHERE seq = -1",
    )
    verdict = audit.verify(database)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 3)
    assert "reordered" in (verdict.problem or "")


def test_rewritten_chain_is_caught_by_the_head_an_auditor_kept(database: Database, db_path: Path) -> None:
    _fill(database, 3)
    first = audit.verify(database)
    kept = audit.Head(first.head_hash, first.head_seq)
    # The attacker rewrites the whole history, recomputing every hash and the head.
    _tamper(db_path, "DELETE FROM audit_events", f"UPDATE audit_head SET seq = 0, hash = '{audit.GENESIS}'")
    _reinstall_triggers(db_path)
    _fill(database, 3)
    assert audit.verify(database).ok  # self-consistent...
    verdict = audit.verify(database, expect_head=kept)
    assert not verdict.ok and "rewritten" in (verdict.problem or "")  # ...but not what was kept
    assert audit.verify(database, expect_head=audit.Head(audit.verify(database).head_hash)).ok


def test_a_kept_head_still_passes_after_legitimate_new_events(database: Database) -> None:
    _fill(database, 3)
    first = audit.verify(database)
    _fill(database, 2)
    assert audit.verify(database, expect_head=audit.Head.parse(f"{first.head_seq}:{first.head_hash}")).ok
    assert audit.verify(database, expect_head=audit.Head(first.head_hash)).ok
    wrong_seq = audit.Head(first.head_hash, first.head_seq + 1)
    assert not audit.verify(database, expect_head=wrong_seq).ok


@pytest.mark.parametrize("text", ["garbage", "12:abc", "x:" + "a" * 64, "-1:" + "a" * 64, "a" * 63])
def test_an_unparsable_head_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a head"):
        audit.Head.parse(text)


def _reinstall_triggers(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    for verb in ("UPDATE", "DELETE"):
        conn.execute(
            f"CREATE TRIGGER audit_events_no_{verb.lower()} BEFORE {verb} ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'append-only'); END"
        )
    conn.commit()
    conn.close()


def test_concurrent_writers_never_fork_the_chain(database: Database) -> None:
    """BEGIN IMMEDIATE serialises appenders: no lost seq, no duplicate, no 'database is locked'."""
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for i in range(40):
                audit.record(database, name, audit.Event("test.write", "thread", f"{name}-{i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    verdict = audit.verify(database)
    assert verdict.ok and verdict.count == 160


def test_payload_must_be_json(database: Database) -> None:
    with pytest.raises(TypeError, match="not JSON"):
        audit.record(database, "a", audit.Event("x", "y", "z", payload={"obj": object()}))
    assert audit.verify(database).count == 0


def test_actor_comes_from_flag_then_env_then_os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    monkeypatch.setenv("VARIANTCTL_ACTOR", "ci-bot")
    assert actor("alice") == "alice"
    assert actor(None) == "ci-bot"
    monkeypatch.delenv("VARIANTCTL_ACTOR")
    assert actor(None) == getpass.getuser()
    assert scheduler_actor("retrain-churn") == "scheduler:retrain-churn"


def test_hash_is_over_the_canonical_json_of_the_event(database: Database) -> None:
    """The fast spelled-out body in event_hash is exactly canonical_json of the event."""
    import hashlib

    row = audit.record(
        database,
        "zoë",
        audit.Event(
            action="rollout.decision",
            subject_type="rollout",
            subject_id='7 "quoted"',
            reason="line\nbreak ✓",
            payload={"b": [1, 2.5, None], "a": {"z": True}},
            endpoint="ep",
        ),
    )
    body = {
        "seq": row.seq,
        "at": row.at.isoformat(timespec="microseconds"),
        "actor": "zoë",
        "action": "rollout.decision",
        "subject_type": "rollout",
        "subject_id": '7 "quoted"',
        "endpoint": "ep",
        "model": None,
        "reason": "line\nbreak ✓",
        "payload": {"b": [1, 2.5, None], "a": {"z": True}},
    }
    expected = hashlib.sha256((audit.GENESIS + audit.canonical_json(body)).encode()).hexdigest()
    assert row.hash == expected


def test_reformatted_payload_with_the_same_meaning_is_still_tampering(
    database: Database, db_path: Path
) -> None:
    _fill(database, 2)
    _tamper(db_path, """UPDATE audit_events SET payload = '{"i": 1, "note": "héllo"}' WHERE seq = 2""")
    assert audit.verify(database).first_bad_seq == 2


def test_deleted_head_row_is_reported(database: Database, db_path: Path) -> None:
    _fill(database, 2)
    _tamper(db_path, "DELETE FROM audit_head")
    verdict = audit.verify(database)
    assert not verdict.ok and "head row was deleted" in (verdict.problem or "")


def test_a_deleted_tail_with_its_head_row_moved_back_is_named_as_deleted(
    database: Database, db_path: Path
) -> None:
    """Issue 28: the tail deleted and the head row moved back to match said "rewritten"."""
    _fill(database, 6)
    first = audit.verify(database)
    kept = audit.Head(first.head_hash, first.head_seq)
    _tamper(db_path, "DELETE FROM audit_events WHERE seq > 4")
    conn = sqlite3.connect(db_path)
    seq4 = conn.execute("SELECT hash FROM audit_events WHERE seq = 4").fetchone()[0]
    conn.execute(f"UPDATE audit_head SET seq = 4, hash = '{seq4}'")
    conn.commit()
    conn.close()
    assert audit.verify(database).ok  # self-consistent once the head row moved back...
    verdict = audit.verify(database, expect_head=kept)
    assert not verdict.ok and "events were deleted from its end" in (verdict.problem or "")
    assert "rewritten" not in (verdict.problem or "")


def test_an_event_whose_stored_time_is_not_a_time_is_named(database: Database, db_path: Path) -> None:
    """Issue 28: 'last tuesday' as a stored time ended `audit verify` in an internal ValueError."""
    _fill(database, 4)
    _tamper(db_path, "UPDATE audit_events SET at = 'last tuesday' WHERE seq = 3")
    verdict = audit.verify(database)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 3)
    assert "seq 3 cannot be read as an event" in (verdict.problem or "")
