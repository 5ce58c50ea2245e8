"""The host's one clock: every timed transition reads it (Creating -> InService, Updating, Deleting,
the blue/green canary, linear and bake steps, rollbacks, a job's MaxRuntimeInSeconds and its
timestamps, metric periods, alarm and capture times, logs).

It runs in real time, as AWS's does, unless someone holds it. A held clock stands still until it is
moved on, so a test checks a state, advances the clock past the transition and checks again, however
slow the machine is (moto's state manager does the same with a count of describe calls). It never
goes back: an endpoint's `ready_at` and a bucket's period stay in the past once they are.

Reached in-process as `LocalSageMaker.clock`, over HTTP at `/_local/clock` (`app.py`), and held from
start-up with `variantctl local-sagemaker serve --clock held` or `VARIANTCTL_LOCAL_CLOCK=held`.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime
from typing import Any, Literal

Mode = Literal["real", "held"]
MODES: tuple[Mode, ...] = ("real", "held")
MAX_STEP = 366 * 86400.0  # one advance of more than a year is a typo


class ClockError(ValueError):
    """A move the clock refuses (backwards, not a number, too far)."""


class HostClock:
    """Seconds since the epoch, like `time.time()`: real time plus whatever it was advanced by, or a
    fixed instant while held. Thread-safe; calling it is one attribute read when real."""

    def __init__(self, mode: Mode = "real") -> None:
        if mode not in MODES:
            raise ClockError(f"clock mode must be one of {', '.join(MODES)}, not {mode!r}")
        self._lock = threading.Lock()
        self._offset = 0.0  # added to real time while running
        self._held: float | None = None
        if mode == "held":
            self.hold()

    def __call__(self) -> float:
        held = self._held
        return held if held is not None else time.time() + self._offset

    @property
    def held(self) -> bool:
        return self._held is not None

    def hold(self) -> float:
        """Stop the clock where it is now; returns that instant. Holding a held clock is a no-op."""
        with self._lock:
            if self._held is None:
                self._held = time.time() + self._offset
            return self._held

    def advance(self, seconds: float) -> float:
        """Move the clock on by `seconds` (held or not); returns the new now."""
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not math.isfinite(seconds):
            raise ClockError(f"advance takes a number of seconds, not {seconds!r}")
        if seconds < 0:
            raise ClockError("the clock never goes back: advance by 0 seconds or more")
        if seconds > MAX_STEP:
            raise ClockError(f"advance by at most {MAX_STEP:.0f} seconds (a year) at a time")
        with self._lock:
            if self._held is not None:
                self._held += seconds
                return self._held
            self._offset += seconds
            return time.time() + self._offset

    def release(self) -> float:
        """Let the clock run again from where it stands (it does not jump back to real time)."""
        with self._lock:
            if self._held is not None:
                self._offset = self._held - time.time()
                self._held = None
            return time.time() + self._offset

    def state(self) -> dict[str, Any]:
        now = self()
        return {
            "mode": "held" if self.held else "real",
            "now": datetime.fromtimestamp(now, UTC).isoformat(timespec="microseconds"),
            "epoch": now,
            "offset": (now - time.time()) if not self.held else None,
        }

    def apply(self, request: dict[str, Any]) -> dict[str, Any]:
        """One admin request, as `/_local/clock` takes it: {"hold": true}, {"advance": seconds},
        {"release": true}, or several at once, applied in that order. Returns the state after."""
        unknown = sorted(set(request) - {"hold", "advance", "release"})
        if unknown:
            raise ClockError(f"unknown clock field(s): {', '.join(unknown)}; use hold, advance, release")
        if request.get("hold") is True:
            self.hold()
        if "advance" in request:
            self.advance(request["advance"])
        if request.get("release") is True:
            self.release()
        return self.state()
