"""Reading what was appended under a prefix since a cursor: complete lines only, in bounded chunks,
with the cursor standing just after each chunk, so that a caller storing it in the same transaction
as what it read never reads or counts anything twice.

The cursor keeps a byte offset for every file written within the look-back (two days by default),
so nothing written in that time is skipped: a file that appears late with a name sorting before
files already read, records appended to a file read to its end, a file replaced in place (it shrank,
changed at the same size, or changed and no longer holds, where the read stopped, the bytes read
there: read again from its start; the caller drops what it has seen by inference id). Files read to
their end and unchanged for longer than the look-back are forgotten behind a horizon key, so the
cursor and each listing stay bounded. A line longer than `max_bytes` is skipped and counted, never
blocking the rest of its file; a last line without its newline is read once the file has been
unchanged for `settle`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from manager.groundtruth.stores import ObjectInfo, ObjectStore

TAIL = 64  # bytes before the offset kept as a fingerprint of what was read


@dataclass
class Seen:
    offset: int  # bytes read (complete lines, or skipped)
    size: int  # the size when last listed
    modified: str  # ISO time when last listed
    tail: str = ""  # sha256 of the TAIL bytes before `offset`, as read ("" when not known)

    def as_json(self) -> list[Any]:
        return [self.offset, self.size, self.modified, self.tail]


@dataclass
class Cursor:
    """Keys up to `horizon` are read and past the look-back; `files` holds every later key's state."""

    horizon: str = ""
    files: dict[str, Seen] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"horizon": self.horizon, "files": {k: v.as_json() for k, v in self.files.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cursor:
        if "files" in data:
            return cls(data.get("horizon", ""), {k: Seen(*v) for k, v in data["files"].items()})
        # The earlier form: one high-water mark `after`, and offsets of files still `open`.
        return cls(data.get("after", ""), {k: Seen(v, -1, "") for k, v in data.get("open", {}).items()})


@dataclass
class Chunk:
    """Complete lines read from one object, and where the cursor stands after them."""

    key: str
    lines: list[bytes]
    cursor: Cursor
    oversized: int = 0  # lines longer than the limit, skipped
    replaced: bool = False  # the object changed in place and is being read again from its start


def read_new(
    store: ObjectStore,
    prefix: str,
    cursor: Cursor,
    now: datetime,
    settle: timedelta,
    errors: list[str],
    max_lines: int = 5000,
    max_bytes: int = 4 << 20,
    lookback: timedelta = timedelta(days=2),
) -> Iterator[Chunk]:
    """Complete lines added under `prefix` since `cursor`, at most `max_lines` a chunk. A file that
    cannot be read is reported in `errors` and tried again next time from where it stood."""
    advancing = True  # every key listed so far is finished and past the look-back
    listed: set[str] = set()
    for info in store.list(prefix, cursor.horizon):
        listed.add(info.key)
        seen = cursor.files.get(info.key)
        offset, replaced = _start(seen, info, store)
        try:
            for chunk in _read(store, info, offset, cursor, now, settle, max_lines, max_bytes):
                chunk.replaced = replaced
                replaced = False
                offset = cursor.files[info.key].offset
                yield chunk
        except (OSError, ValueError) as exc:
            errors.append(f"{info.key}: {exc}")
            advancing = False
            continue
        state = cursor.files.get(info.key)
        offset = state.offset if state is not None else offset
        if advancing and offset >= info.size and info.modified < now - lookback:
            cursor.horizon = info.key  # forgotten: older than the look-back, and read to its end
            cursor.files.pop(info.key, None)
        else:
            advancing = False
            tail = state.tail if state is not None and state.offset == offset else ""
            cursor.files[info.key] = Seen(offset, info.size, info.modified.isoformat(), tail)
    for key in [k for k in cursor.files if k not in listed]:
        del cursor.files[key]  # deleted from the store (or behind the horizon now)


def _start(seen: Seen | None, info: ObjectInfo, store: ObjectStore) -> tuple[int, bool]:
    """Where to read `info` from, and whether it was replaced since it was last read: it shrank, it
    changed at the same size, or it changed and the bytes before where the read stopped are no longer
    those read (a file overwritten with other, longer content is not an append)."""
    if seen is None:
        return 0, False
    shrank = info.size < seen.offset
    changed = seen.modified not in ("", info.modified.isoformat())
    rewritten = seen.size >= 0 and info.size == seen.size and changed
    if shrank or (rewritten and seen.offset > 0):
        return 0, True
    if changed and seen.tail and seen.offset > 0:
        start = max(0, seen.offset - TAIL)
        if _digest(store.read(info.key, start, seen.offset - start)) != seen.tail:
            return 0, True
    return seen.offset, False


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(
    store: ObjectStore,
    info: ObjectInfo,
    offset: int,
    cursor: Cursor,
    now: datetime,
    settle: timedelta,
    max_lines: int,
    max_bytes: int,
) -> Iterator[Chunk]:
    modified = info.modified.isoformat()

    def advance(to: int, tail: bytes | None = None) -> None:
        cursor.files[info.key] = Seen(to, info.size, modified, _digest(tail) if tail is not None else "")

    quiet = info.modified < now - settle  # no writer has touched it for a while
    while offset < info.size:
        data = store.read(info.key, offset, max_bytes)
        if not data:
            break
        end = data.rfind(b"\n") + 1
        if end == 0 and len(data) >= max_bytes:
            after = _end_of_line(store, info, offset + len(data), max_bytes)
            if after is None and not quiet:
                break  # the long line is still being written: skip it once it is complete
            offset = after if after is not None else info.size
            advance(offset)
            yield Chunk(info.key, [], cursor, oversized=1)
            continue
        if end == 0:
            if not quiet or offset + len(data) < info.size:
                break  # half a line: the writer is still writing it
            end = len(data)  # the last line of a finished file, without its newline
        lines = data[:end].splitlines(keepends=True)
        read_from = offset
        for i in range(0, len(lines), max_lines):
            part = lines[i : i + max_lines]
            offset += sum(len(line) for line in part)
            consumed = offset - read_from
            advance(
                offset, data[max(0, consumed - TAIL) : consumed] if consumed >= min(TAIL, offset) else None
            )
            yield Chunk(info.key, part, cursor)


def _end_of_line(store: ObjectStore, info: ObjectInfo, start: int, block: int) -> int | None:
    """Just after the next newline at or after `start`, or None when the object has none."""
    position = start
    while position < info.size:
        data = store.read(info.key, position, block)
        if not data:
            return None
        found = data.find(b"\n")
        if found >= 0:
            return position + found + 1
        position += len(data)
    return None
