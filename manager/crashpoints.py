"""For crash and fencing tests: a process dies here, as `kill -9` would, when VARIANTCTL_CRASH_AT names
the point; it stops itself (SIGSTOP, once) when VARIANTCTL_PAUSE_AT does, as a frozen host would."""

from __future__ import annotations

import os
import signal
import time

CRASH_ENV = "VARIANTCTL_CRASH_AT"
PAUSE_ENV = "VARIANTCTL_PAUSE_AT"
_paused: set[str] = set()


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os._exit(137)
    if os.environ.get(PAUSE_ENV) == name and name not in _paused:
        _paused.add(name)
        os.kill(os.getpid(), signal.SIGSTOP)
        # A stop signal may take effect a moment after kill() returns (the other threads first): this
        # thread waits here, so that it is frozen at this point and not a few lines further on.
        time.sleep(1.0)
