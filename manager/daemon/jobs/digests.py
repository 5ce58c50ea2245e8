"""Signed digests of the history's head (`manager.history.digests`), on a schedule."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from manager.daemon.runtime import RUNTIMES, fence

log = logging.getLogger("variantctl.daemon")


@dataclass(frozen=True)
class DigestSchedule:
    """Where the daemon writes signed digests of the history, how often, with which key."""

    location: str
    every: float = 3600.0
    key_path: str | None = None  # None: the default signing key


def digest_job(url: str, location: str, key_path: str | None) -> None:
    """Sign the history's head, chained to the previous digest at `location`."""
    from manager.history import digests

    runtime = RUNTIMES[url]
    with runtime.database.write() as session:
        fence(url, session)
    private = digests.load_private(Path(key_path) if key_path else digests.default_key_path())
    made = digests.write_digest(runtime.database, digests.store_for(location), private)
    log.info("digest %s: seqs %d..%d signed, in %s", made.name, made.first_seq, made.last_seq, location)
