"""For crash tests: a process dies here, as `kill -9` would, when VARIANTCTL_CRASH_AT names the point."""

from __future__ import annotations

import os

CRASH_ENV = "VARIANTCTL_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os._exit(137)
