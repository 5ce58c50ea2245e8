"""Allowed time windows for triggers: `Mon-Fri 09:00-17:00`, in UTC; a window may wrap the week
(`Fri-Mon`) but not midnight (give two windows)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FORM = re.compile(r"^(?P<days>[A-Za-z]+(?:-[A-Za-z]+)?)\s+(?P<start>\d\d:\d\d)-(?P<end>\d\d:\d\d)$")


@dataclass(frozen=True)
class Window:
    first: int  # weekday, Monday = 0
    last: int
    start: str  # HH:MM
    end: str

    def contains(self, now: datetime) -> bool:
        day = now.weekday()
        day_ok = (
            self.first <= day <= self.last
            if self.first <= self.last
            else day >= self.first or day <= self.last
        )
        return day_ok and self.start <= now.strftime("%H:%M") < self.end


FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day(text: str, window: str) -> int:
    key = text.lower()
    for i, (short, full) in enumerate(zip(DAYS, FULL, strict=True)):
        if key in (short, full):
            return i
    raise ValueError(f"window {window!r}: {text!r} is not a day (Mon, Tue, ... Sun)")


def _time(text: str, window: str) -> str:
    hours, minutes = int(text[:2]), int(text[3:])
    if hours > 24 or minutes > 59 or (hours == 24 and minutes):
        raise ValueError(f"window {window!r}: {text} is not a time of day")
    return text


def parse(window: str) -> Window:
    match = _FORM.match(window.strip())
    if match is None:
        raise ValueError(f"window {window!r} is not of the form `Mon-Fri 09:00-17:00` (UTC)")
    first, _, last = match["days"].partition("-")
    start, end = _time(match["start"], window), _time(match["end"], window)
    if start >= end:
        raise ValueError(
            f"window {window!r}: the start must be before the end (use two windows over midnight)"
        )
    return Window(_day(first, window), _day(last or first, window), start, end)


def within(windows: list[str], now: datetime) -> bool:
    """Inside any of the windows; no windows means always."""
    return not windows or any(parse(w).contains(now) for w in windows)
