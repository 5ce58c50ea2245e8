"""Exports of the history that someone without our database can verify.

`write` streams a contiguous range of events (oldest first, in constant memory) as
- `jsonl`: one event per line, every field with its `prev_hash` and `hash`;
- `csv`: the same fields, the payload as canonical JSON text;
- `cdevents`: each event as a CDEvent (v0.5.1) inside a CloudEvents 1.0 JSON envelope, one per line.
  Promotions map to `service.upgraded`, rollbacks and aborts to `service.rolledback`, a forgotten
  endpoint to `service.removed`, an endpoint's first config after it was created or adopted to
  `service.deployed`; every other event is the custom type `dev.cdeventsx.variantctl-history.recorded`.
  Each carries the whole event (and so the chain) in `customData.variantctl`, and a conclusion the
  decision that led to it in `customData.decision`.

`read` takes any of the three back (the format is recognised), and `check` verifies the chain inside
an export: consecutive seqs, each `prev_hash` the previous event's hash, each hash recomputed; the
first `prev_hash` is anchored by the genesis (an export from seq 1), a kept head, or signed digests.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from manager.clock import format_instant
from manager.errors import UserError
from manager.history import audit
from manager.registry.tables import AuditEvent
from manager.registry.vocabulary import EVENT_FIELDS

FORMATS = ("jsonl", "csv", "cdevents")
FIELDS = EVENT_FIELDS
CDEVENTS_SPEC = "0.5.1"
CUSTOM_TYPE = "dev.cdeventsx.variantctl-history.recorded.0.1.0"
SOURCE = "/variantctl/history"
SERVICE_TYPES = {
    "deployed": "dev.cdevents.service.deployed.0.3.0",
    "upgraded": "dev.cdevents.service.upgraded.0.3.0",
    "rolledback": "dev.cdevents.service.rolledback.0.3.0",
    "removed": "dev.cdevents.service.removed.0.3.0",
}
DECISIONS = ("rollout.promote", "rollout.rollback")


def seq_range(session: Session, since: datetime | None, until: datetime | None) -> tuple[int, int] | None:
    """The contiguous seqs from the first event at or after `since` to the last before `until`."""
    c = AuditEvent.__table__.c
    low = select(func.min(c.seq))
    high = select(func.max(c.seq))
    if since is not None:
        low = low.where(c.at >= since)
    if until is not None:
        high = high.where(c.at < until)
    first, last = session.scalar(low), session.scalar(high)
    if first is None or last is None or first > last:
        return None
    return int(first), int(last)


def rows(session: Session, first: int, last: int) -> Iterator[Any]:
    c = AuditEvent.__table__.c
    stmt = (
        select(AuditEvent.__table__)
        .where(c.seq >= first, c.seq <= last)
        .order_by(c.seq)
        .execution_options(yield_per=audit.VERIFY_BATCH)
    )
    yield from session.execute(stmt)


def record(row: Any) -> dict[str, Any]:
    """One event as exported: `at` in the form its hash uses, the payload as a JSON value."""
    return {
        "seq": row.seq,
        "at": format_instant(row.at),
        "actor": row.actor,
        "action": row.action,
        "subject_type": row.subject_type,
        "subject_id": row.subject_id,
        "endpoint": row.endpoint,
        "model": row.model,
        "reason": row.reason,
        "payload": json.loads(row.payload),
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


def _line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value: Any) -> Any:
    """A text cell a spreadsheet will not run: one that begins like a formula (`=`, `+`, `-`, `@`, a
    tab or a carriage return) gets a leading `'`, as OWASP's CSV-injection guidance says. Numbers
    and other text are left as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write(events: Iterable[Any], fmt: str, out: IO[str], spreadsheet: bool = False) -> int:
    """Stream `events` (rows, oldest first) to `out`; returns how many were written. `spreadsheet`
    (CSV for people to open, not to verify): cells that would run as formulas are neutralised."""
    count = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(FIELDS)
        cell = spreadsheet_cell if spreadsheet else (lambda v: v)
        for row in events:
            rec = record(row)
            rec["payload"] = row.payload
            writer.writerow(["" if rec[f] is None else cell(rec[f]) for f in FIELDS])
            count += 1
        return count
    if fmt == "jsonl":
        for row in events:
            out.write(_jsonl(row))
            count += 1
        return count
    mapper = CDEventMapper()
    for row in events:
        out.write(_line(mapper.envelope(record(row))) + "\n")
        count += 1
    return count


_encode = json.JSONEncoder(ensure_ascii=False).encode


def _jsonl(row: Any) -> str:
    """`record(row)` as one line, the stored payload (canonical JSON already) spliced in unparsed."""
    return (
        f'{{"seq":{int(row.seq)},"at":"{format_instant(row.at)}","actor":{_encode(row.actor)},'
        f'"action":{_encode(row.action)},"subject_type":{_encode(row.subject_type)},'
        f'"subject_id":{_encode(row.subject_id)},"endpoint":{_encode(row.endpoint)},'
        f'"model":{_encode(row.model)},"reason":{_encode(row.reason)},"payload":{row.payload},'
        f'"prev_hash":"{row.prev_hash}","hash":"{row.hash}"}}\n'
    )


@dataclass
class CDEventMapper:
    """Our events as CDEvents, remembering what the mapping needs across events (an export is read
    oldest first): which endpoints were just created or adopted, and each rollout's decision."""

    created: set[str] = field(default_factory=set)
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    candidates: dict[str, tuple[str, str]] = field(default_factory=dict)  # rollout -> baseline, candidate

    def envelope(self, rec: dict[str, Any]) -> dict[str, Any]:
        cdevent = self.cdevent(rec)
        context = cdevent["context"]
        return {
            "specversion": "1.0",
            "id": context["id"],
            "source": context["source"],
            "type": context["type"],
            "time": context["timestamp"],
            "datacontenttype": "application/json",
            "data": cdevent,
        }

    def cdevent(self, rec: dict[str, Any]) -> dict[str, Any]:
        action, payload = rec["action"], rec["payload"]
        custom: dict[str, Any] = {"variantctl": rec}
        kind, subject = self._service(rec, action, payload, custom)
        context = {
            "specversion": CDEVENTS_SPEC,
            "id": f"variantctl-{rec['seq']}-{rec['hash'][:16]}",
            "source": SOURCE,
            "type": SERVICE_TYPES[kind] if kind else CUSTOM_TYPE,
            "timestamp": rec["at"],
        }
        if subject is None:
            subject = {
                "id": f"{rec['subject_type']}/{rec['subject_id']}",
                "source": SOURCE,
                "content": {"action": action, "actor": rec["actor"], "reason": rec["reason"]},
            }
        return {
            "context": context,
            "subject": subject,
            "customData": custom,
            "customDataContentType": "application/json",
        }

    def _service(
        self, rec: dict[str, Any], action: str, payload: dict[str, Any], custom: dict[str, Any]
    ) -> tuple[str | None, dict[str, Any] | None]:
        endpoint = rec["endpoint"]
        if action in ("endpoint.create", "endpoint.adopt"):
            self.created.add(rec["subject_id"])
        if action == "rollout.start":
            self.candidates[rec["subject_id"]] = (payload.get("baseline", ""), payload.get("candidate", ""))
        if action in DECISIONS:
            self.decisions[rec["subject_id"]] = {"seq": rec["seq"], "hash": rec["hash"], **payload}
        kind, artifact = None, None
        if action == "endpoint.serves" and payload.get("config") and rec["subject_id"] in self.created:
            self.created.discard(rec["subject_id"])
            kind = "deployed"
            artifact = ",".join(sorted(set((payload.get("variants") or {}).values()))) or payload["config"]
        elif action in ("rollout.promoted", "rollout.rolled_back", "rollout.aborted"):
            kind = "upgraded" if action == "rollout.promoted" else "rolledback"
            baseline, candidate = self.candidates.get(rec["subject_id"], ("", ""))
            artifact = (candidate if kind == "upgraded" else baseline) or rec["model"] or rec["subject_id"]
            if rec["subject_id"] in self.decisions:
                custom["decision"] = self.decisions.pop(rec["subject_id"])
        elif action == "endpoint.forget":
            kind = "removed"
        if kind is None or endpoint is None:
            return None, None
        content: dict[str, Any] = {"environment": {"id": endpoint, "source": f"{SOURCE}/endpoints"}}
        if kind != "removed":
            content["artifactId"] = _purl(str(artifact))
        return kind, {"id": endpoint, "source": f"{SOURCE}/endpoints", "content": content}


def _purl(refs: str) -> str:
    """`churn:2` as a package URL (pkg:generic/churn@2); several refs joined by commas."""
    out = []
    for ref in refs.split(","):
        name, _, version = ref.partition(":")
        out.append(f"pkg:generic/{name}@{version}" if version else f"pkg:generic/{name}")
    return ",".join(out)


# Reading an export back.


def read(path: Path) -> Iterator[dict[str, Any]]:
    """The events of an export in any of the three formats, in file order; a line that is not an event
    is a UserError naming it."""
    try:
        handle = sys.stdin if str(path) == "-" else path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        try:
            first = handle.readline()
            if first.startswith("seq,"):
                yield from _read_csv(first, handle, path)
                return
            number, line = 1, first
            while line:
                if line.strip():
                    yield _from_json(line, number, path)
                number, line = number + 1, handle.readline()
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text; is it an export?") from None


def _read_csv(header: str, handle: IO[str], path: Path) -> Iterator[dict[str, Any]]:
    names = next(csv.reader([header]))
    if tuple(names) != FIELDS:
        raise UserError(f"{path}:1: the header is not an export's ({', '.join(FIELDS)})")
    for number, cells in enumerate(csv.reader(handle), start=2):
        if len(cells) != len(FIELDS):
            raise UserError(f"{path}:{number}: {len(cells)} cells, an event has {len(FIELDS)}")
        rec: dict[str, Any] = dict(zip(FIELDS, cells, strict=True))
        for name in ("endpoint", "model", "reason"):
            rec[name] = rec[name] or None
        try:
            rec["seq"] = int(rec["seq"])
            rec["payload"] = json.loads(rec["payload"])
        except ValueError as exc:
            raise UserError(f"{path}:{number}: not an event: {exc}") from None
        yield rec


def _from_json(line: str, number: int, path: Path) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise UserError(f"{path}:{number}: not JSON: {exc}") from None
    if isinstance(value, dict) and value.get("specversion") == "1.0" and isinstance(value.get("data"), dict):
        value = (value["data"].get("customData") or {}).get("variantctl")
    if not isinstance(value, dict) or any(f not in value for f in FIELDS):
        raise UserError(f"{path}:{number}: not an exported event (fields {', '.join(FIELDS)})")
    return value


@dataclass
class ExportCheck:
    ok: bool
    count: int
    first_seq: int | None = None
    last_seq: int | None = None
    first_prev_hash: str | None = None
    last_hash: str | None = None
    problem: str | None = None
    bad_seq: int | None = None
    hashes: dict[int, str] = field(default_factory=dict)  # the hash at each seq asked for (digests)
    found_at: int | None = None  # the seq whose hash is the one looked for (a kept head)


def check(
    records: Iterable[dict[str, Any]], want: Collection[int] = (), find: str | None = None
) -> ExportCheck:
    """The chain inside an export, in one pass and constant memory: only the hashes at the seqs in
    `want` are kept, and where the hash `find` appears."""
    out = ExportCheck(True, 0)
    running: str | None = None
    expected: int | None = None
    for rec in records:
        try:
            seq = int(rec["seq"])
            payload = audit.canonical_json(rec["payload"])
            computed = audit.hash_fields(
                rec["prev_hash"],
                seq,
                rec["at"],
                rec["actor"],
                rec["action"],
                rec["subject_type"],
                rec["subject_id"],
                rec["endpoint"],
                rec["model"],
                rec["reason"],
                payload,
            )
        except (TypeError, ValueError) as exc:
            return _bad(out, rec.get("seq"), f"seq {rec.get('seq')} is malformed: {exc}")
        if expected is None:
            out.first_seq, out.first_prev_hash = seq, rec["prev_hash"]
        elif seq != expected:
            what = "is missing" if seq > expected else "is out of place"
            return _bad(out, expected, f"seq {expected} {what}: the export is not contiguous (next is {seq})")
        elif rec["prev_hash"] != running:
            return _bad(out, seq, f"seq {seq} does not follow seq {seq - 1}: the chain link was altered")
        if computed != rec["hash"]:
            return _bad(out, seq, f"seq {seq} was altered: its hash does not match its contents")
        if seq in want:
            out.hashes[seq] = rec["hash"]
        if find is not None and out.found_at is None and rec["hash"] == find:
            out.found_at = seq
        out.count += 1
        out.last_seq, out.last_hash = seq, rec["hash"]
        running, expected = rec["hash"], seq + 1
    return out


def _bad(out: ExportCheck, seq: Any, problem: str) -> ExportCheck:
    out.ok, out.problem = False, problem
    out.bad_seq = int(seq) if isinstance(seq, int) or (isinstance(seq, str) and seq.isdigit()) else None
    return out
