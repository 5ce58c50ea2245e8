"""UTC instants and durations as users write them (`10m`, `2h`, ISO 8601)."""

from __future__ import annotations

import math
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from manager.errors import UserError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def utcnow() -> datetime:
    return datetime.now(UTC)


MAX_DURATION = timedelta(days=100 * 366)  # anything longer is a typo


@lru_cache(maxsize=256)
def parse_duration(text: str) -> timedelta:
    """`90s`, `10m`, `2h`, `7d`, `1w` -> timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise UserError(f"invalid duration {text!r}: use a number and a unit, e.g. 30s, 10m, 2h, 7d")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not seconds <= MAX_DURATION.total_seconds():
        raise UserError(f"duration {text!r} is longer than {MAX_DURATION.days} days")
    return timedelta(seconds=seconds)


def format_instant(value: datetime) -> str:
    """The one textual form of an instant: ISO 8601, UTC, microseconds."""
    return as_utc(value).isoformat(timespec="microseconds")


def as_utc(value: datetime) -> datetime:
    """A naive value is taken to be UTC already; an aware one is converted."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_instant(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 date or datetime (naive means UTC), `now`, or a duration meaning that long ago."""
    stripped = text.strip()
    if stripped == "now":
        return now or utcnow()
    if _DURATION.match(stripped):
        try:
            return (now or utcnow()) - parse_duration(stripped)
        except OverflowError:
            raise UserError(f"{text!r} reaches before year 1") from None
    try:
        parsed = datetime.fromisoformat(stripped)
    except ValueError:
        raise UserError(
            f"invalid time {text!r}: use ISO 8601 (2026-11-01 or 2026-11-01T12:00:00Z) "
            "or a duration ago (30m, 7d)"
        ) from None
    return as_utc(parsed)


class Pacer:
    """At most `rate` starts per second across threads: each caller reserves the next free slot on the
    monotonic clock, then waits for it (as it likes: a sleep, or an event that can end the wait)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self, deadline: float = math.inf) -> float | None:
        """The monotonic time at which the caller may start; None (nothing reserved) if at or past
        `deadline`."""
        with self._lock:
            slot = max(self._next, time.monotonic())
            if slot >= deadline:
                return None
            self._next = slot + self.interval
            return slot


def instant_range(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """`--since` and `--until` as instants (each optional; durations count back from one `now`)."""
    now = utcnow()
    start = parse_instant(since, now) if since else None
    end = parse_instant(until, now) if until else None
    if start and end and start >= end:
        raise UserError(f"--since ({since}) must be before --until ({until})")
    return start, end
