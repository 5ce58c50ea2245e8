"""Reading what was appended under a prefix since a cursor: complete lines only, in bounded chunks,
with the cursor standing just after each chunk so that a caller storing it in the same transaction
as what it read never reads or counts anything twice."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from manager.metrics.stores import ObjectInfo, ObjectStore


@dataclass
class Cursor:
    """Keys up to `after` are read and closed; `open` holds byte offsets of files still growing."""

    after: str = ""
    open: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"after": self.after, "open": dict(self.open)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cursor:
        return cls(data.get("after", ""), dict(data.get("open", {})))


@dataclass
class Chunk:
    """Complete lines read from one object, and where the cursor stands after them."""

    key: str
    lines: list[bytes]
    cursor: Cursor


def read_new(
    store: ObjectStore,
    prefix: str,
    cursor: Cursor,
    now: datetime,
    settle: timedelta,
    errors: list[str],
    max_lines: int = 5000,
    max_bytes: int = 4 << 20,
) -> Iterator[Chunk]:
    """Complete lines added under `prefix` since `cursor`, at most `max_lines` a chunk, each chunk
    with the cursor standing just after its last line. A file that cannot be read is reported in
    `errors` and the cursor does not move past it, so it is tried again next time."""
    closed_run = True  # every key so far is finished: `after` may move past it
    for info in store.list(prefix, cursor.after):
        offset = cursor.open.get(info.key, 0)
        try:
            while offset < info.size:
                data = store.read(info.key, offset, max_bytes)
                end = data.rfind(b"\n") + 1
                if end == 0:
                    if len(data) >= max_bytes:
                        raise ValueError(f"a line longer than {max_bytes} bytes at byte {offset}")
                    break  # half a line: the writer is still writing it
                lines = data[:end].splitlines(keepends=True)
                for i in range(0, len(lines), max_lines):
                    part = lines[i : i + max_lines]
                    offset += sum(len(line) for line in part)
                    cursor.open[info.key] = offset
                    if closed_run and _finished(info, offset, now, settle):
                        _close(cursor, info.key)
                    yield Chunk(info.key, part, cursor)
        except (OSError, ValueError) as exc:
            errors.append(f"{info.key}: {exc}")
            closed_run = False
            continue
        finished = _finished(info, offset, now, settle)
        if finished and closed_run:
            _close(cursor, info.key)
        closed_run = closed_run and finished


def _finished(info: ObjectInfo, offset: int, now: datetime, settle: timedelta) -> bool:
    """Read to the end, and unchanged for `settle`: no writer will add to it, and no object that
    sorts before it is still expected to appear."""
    return offset >= info.size and info.modified < now - settle


def _close(cursor: Cursor, key: str) -> None:
    cursor.open.pop(key, None)
    cursor.after = max(cursor.after, key)
