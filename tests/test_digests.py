"""Signed digests, as CloudTrail signs its logs: `audit digest` every so often, then `audit verify
--digests` catches what a kept head alone would need an auditor to have kept: a consistently rewritten
chain, a deleted digest, a forged digest, a digest from another key, events deleted at the end; on a
directory and on S3 (moto's server, through boto3), and from an export with no database. The daemon
writes them on its schedule."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from manager import daemon
from manager.db import Database
from manager.history import audit, digests

from .audit_support import rechain
from .conftest import Cli
from .test_audit import _tamper


def _note(database: Database, count: int, text: str = "note") -> None:
    for i in range(count):
        event = audit.Event("note.added", "note", f"n:{i}", f"{text} {i}", {"i": i, "text": text})
        audit.record(database, "alice", event)


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, Path]:
    """A signing key and its public key file, as an operator and an auditor would hold them."""
    private = tmp_path / "keys" / "signing.pem"
    public = tmp_path / "public.pem"
    result = Cli(tmp_path / "unused.db")("audit", "keygen", "--key", str(private))
    assert result.exit_code == 0, result.output
    public.write_text(result.output.split("signing key written")[0])
    assert private.stat().st_mode & 0o777 == 0o600
    return private, public


@pytest.fixture
def signed(database: Database, db_path: Path, tmp_path: Path, key: tuple[Path, Path]) -> Path:
    """Three digests over a growing history; returns the digest directory."""
    where = tmp_path / "digests"
    run = Cli(db_path)
    for batch in range(3):
        _note(database, 4, f"batch {batch}")
        result = run("audit", "digest", "--to", str(where), "--key", str(key[0]))
        assert result.exit_code == 0, result.output
    return where


def _check(db_path: Path, where: Path | str, public: Path, *more: str) -> Any:
    return Cli(db_path)("audit", "verify", "--digests", str(where), "--public-key", str(public), *more)


def test_the_untouched_history_agrees_with_every_digest(signed: Path, db_path: Path, key: Any) -> None:
    result = _check(db_path, signed, key[1])
    assert result.exit_code == 0, result.output
    assert "3 signed digests agree (to seq 12)" in result.output
    bodies = [json.loads(p.read_text()) for p in sorted(signed.iterdir())]
    assert [(b["first_seq"], b["last_seq"]) for b in bodies] == [(1, 4), (5, 8), (9, 12)]
    assert bodies[1]["previous_signature"] == bodies[0]["signature"]


def test_a_consistently_rewritten_chain_is_caught(
    signed: Path, database: Database, db_path: Path, key: Any
) -> None:
    # The attacker rewrites every event after seq 4 and recomputes every hash and the head.
    _tamper(db_path, "DELETE FROM audit_events WHERE seq > 4")
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE audit_head SET seq = 4, hash = (SELECT hash FROM audit_events WHERE seq = 4)")
    conn.commit()
    conn.close()
    _note(database, 8, "rewritten")
    assert audit.verify(database).ok  # the chain alone holds together
    result = _check(db_path, signed, key[1])
    assert result.exit_code == 1
    assert "TAMPERED: seq 8's hash differs from the one signed in digest" in result.output


def test_events_deleted_at_the_end_are_caught(
    signed: Path, database: Database, db_path: Path, key: Any
) -> None:
    _tamper(
        db_path,
        "DELETE FROM audit_events WHERE seq > 10",
        "UPDATE audit_head SET seq = 10, hash = (SELECT hash FROM audit_events WHERE seq = 10)",
    )
    assert audit.verify(database).ok
    result = _check(db_path, signed, key[1])
    assert result.exit_code == 1 and "vouches for seq 12, but the history ends at 10" in result.output


def test_a_deleted_digest_is_named(signed: Path, db_path: Path, key: Any) -> None:
    middle = sorted(signed.iterdir())[1]
    middle.unlink()
    result = _check(db_path, signed, key[1])
    assert result.exit_code == 1
    assert "is missing (deleted): the one covering seqs 5..8" in result.output


def test_a_deleted_first_digest_is_named(signed: Path, db_path: Path, key: Any) -> None:
    sorted(signed.iterdir())[0].unlink()
    result = _check(db_path, signed, key[1])
    assert result.exit_code == 1 and "the digest before" in result.output and "is missing" in result.output


def test_a_forged_digest_is_named(signed: Path, db_path: Path, key: Any) -> None:
    path = sorted(signed.iterdir())[2]
    body = json.loads(path.read_text())
    body["head_hash"] = "f" * 64
    path.write_text(json.dumps(body))
    result = _check(db_path, signed, key[1])
    assert result.exit_code == 1 and "has an invalid signature: it was forged or edited" in result.output


def test_a_digest_from_another_key_is_named(
    signed: Path, database: Database, db_path: Path, tmp_path: Path, key: Any
) -> None:
    other = tmp_path / "other.pem"
    Cli(db_path)("audit", "keygen", "--key", str(other))
    _note(database, 2)
    assert Cli(db_path)("audit", "digest", "--to", str(signed), "--key", str(other)).exit_code == 0
    result = _check(db_path, signed, key[1])
    assert result.exit_code == 1 and "was signed by another key" in result.output


def test_an_old_newest_digest_fails_max_age(signed: Path, db_path: Path, key: Any) -> None:
    assert _check(db_path, signed, key[1], "--max-age", "1h").exit_code == 0
    path = sorted(signed.iterdir())[2]
    path.unlink()  # the newest deleted: only its age can tell
    result = _check(db_path, signed, key[1], "--max-age", "0s")
    assert result.exit_code == 1 and "older than" in result.output
    assert result.output.startswith("STALE: the newest digest") and "TAMPERED" not in result.output


def test_an_empty_digest_place_is_not_a_pass(
    db_path: Path, database: Database, tmp_path: Path, key: Any
) -> None:
    _note(database, 1)
    result = _check(db_path, tmp_path / "nothing-here", key[1])
    assert result.exit_code == 1 and "holds no digests" in result.output


def test_an_export_is_anchored_by_digests_with_no_database(
    signed: Path, db_path: Path, tmp_path: Path, key: Any
) -> None:
    export = tmp_path / "part.jsonl"
    assert Cli(db_path)("audit", "export", "-o", str(export)).exit_code == 0
    lines = export.read_text().splitlines()
    export.write_text("\n".join(lines[6:]) + "\n")  # seqs 7..12: anchored by the digest at 8 and 12
    offline = Cli("/nonexistent/registry.db")
    ok = offline(
        "audit", "verify", "--file", str(export), "--digests", str(signed), "--public-key", str(key[1])
    )
    assert ok.exit_code == 0 and "2 signed digests agree" in ok.output, ok.output
    # A rewritten export (hashes recomputed from seq 7 on) no longer matches what was signed.
    records = [json.loads(line) for line in export.read_text().splitlines()]
    for record in records:
        record["reason"] = "rewritten"
    rechain(records, records[0]["prev_hash"])
    export.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert offline("audit", "verify", "--file", str(export)).output.startswith(
        "self-consistent, not anchored"
    )
    bad = offline(
        "audit", "verify", "--file", str(export), "--digests", str(signed), "--public-key", str(key[1])
    )
    assert bad.exit_code == 1 and "seq 8's hash differs" in bad.output


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, and boto3 aimed at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    for name, value in {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3").create_bucket(Bucket="audit-digests")
    yield "s3://audit-digests/registry-a"
    server.stop()


def test_digests_on_s3(s3: str, database: Database, db_path: Path, key: Any) -> None:
    run = Cli(db_path)
    for _ in range(2):
        _note(database, 3)
        assert run("audit", "digest", "--to", s3, "--key", str(key[0])).exit_code == 0
    listed = boto3.client("s3").list_objects_v2(Bucket="audit-digests", Prefix="registry-a/")
    assert [o["Key"].split("/")[0] for o in listed["Contents"]] == ["registry-a", "registry-a"]
    result = _check(db_path, s3, key[1])
    assert result.exit_code == 0 and "2 signed digests agree (to seq 6)" in result.output, result.output
    boto3.client("s3").delete_object(Bucket="audit-digests", Key=listed["Contents"][0]["Key"])
    assert "is missing" in _check(db_path, s3, key[1]).output


def test_the_daemon_writes_digests_on_its_schedule(database: Database, tmp_path: Path, key: Any) -> None:
    url = database.url
    daemon.RUNTIMES[url] = daemon.runtime.Runtime(database, None, None)
    where = tmp_path / "daemon-digests"
    _note(database, 2)
    schedule = daemon.DigestSchedule(str(where), every=0.5, key_path=str(key[0]))
    scheduler = daemon.start_scheduler(url, 3600, 3600, None, schedule)
    try:
        done = threading.Event()
        for _ in range(200):
            if len(digests.DirectoryStore(where).names()) >= 2:
                done.set()
                break
            done.wait(0.05)
        assert done.is_set(), "the daemon wrote fewer than two digests"
    finally:
        scheduler.shutdown(wait=True)
        del daemon.RUNTIMES[url]
    problems, good = digests.check_digests(
        digests.load_all(digests.DirectoryStore(where)), digests.load_public(key[1])
    )
    assert problems == [] and good[0].first_seq == 1


def test_a_truncated_export_is_named_by_the_digests_past_its_end(
    signed: Path, db_path: Path, tmp_path: Path, key: Any
) -> None:
    """Issue 28, finding 6: an export cut short (seqs 7..10 of 12) said ok with --digests, ignoring
    the digest that vouches for seqs to 12."""
    export = tmp_path / "cut.jsonl"
    assert Cli(db_path)("audit", "export", "-o", str(export)).exit_code == 0
    lines = export.read_text().splitlines()
    export.write_text("\n".join(lines[6:10]) + "\n")
    offline = Cli("/nonexistent/registry.db")
    args = ("audit", "verify", "--file", str(export), "--digests", str(signed), "--public-key", str(key[1]))
    cut = offline(*args)
    assert cut.exit_code == 1 and "truncated: it ends at seq 10" in cut.output and "to seq 12" in cut.output
    part = offline(*args, "--partial")  # a range exported on purpose
    assert part.exit_code == 0 and "1 signed digests agree" in part.output, part.output


def test_a_corrupt_digest_is_tampering_with_its_file_named(
    signed: Path, db_path: Path, tmp_path: Path, key: Any
) -> None:
    victim = sorted(signed.iterdir())[0]
    victim.write_text("{not json")
    result = _check(db_path, signed, key[1])
    assert result.exit_code == 1 and f"digest {victim.name} is corrupt" in result.output
    assert "TAMPERED" in result.output and "Traceback" not in result.output


def test_a_private_key_is_refused_as_the_public_key(signed: Path, db_path: Path, key: Any) -> None:
    result = _check(db_path, signed, key[0])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {key[0]} is a private key: give the public key (`variantctl audit public-key` prints it)"
    ]
