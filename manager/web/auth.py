"""Who may act from the dashboard: the operators named in its token file, and only from its own pages.

The token file holds one operator per line, `NAME TOKEN` (`#` starts a comment); a token is at least
16 characters. An operator signs in with their token once; the dashboard then keeps the session
itself, and the cookie (HttpOnly, SameSite=Strict, one name per port, Secure beyond loopback) holds
only its random id; every form carries a CSRF token derived from it. An action needs, besides the
session and its CSRF token, a request from the dashboard's own origin (Origin, else
Sec-Fetch-Site): a page on another site can neither read the CSRF token nor send the cookie. A
program may instead send the token itself (`Authorization: Bearer TOKEN`), which no browser adds by
its own accord.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from manager.config import check_actor
from manager.errors import UserError

COOKIE = "variantctl_session"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SESSION_SECONDS = 12 * 3600
IDLE_SECONDS = 3600
MIN_TOKEN = 16
WEAK_DISTINCT = 8  # a token with fewer distinct characters is reported as weak
FAILURES_ALLOWED, FAILURE_WINDOW = 5, 300.0  # failed sign-ins per address, then wait out the window
log = logging.getLogger("variantctl.dashboard")


def read_tokens(path: Path) -> dict[str, str]:
    """token -> operator name, from the token file; a malformed file is one clear error."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--token-file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"--token-file {path}: not UTF-8 text") from None
    tokens: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise UserError(f"--token-file {path}, line {number}: give `NAME TOKEN` (two words)")
        name, token = parts
        check_actor(name, f"--token-file {path}, line {number}: the name")
        if len(token) < MIN_TOKEN:
            raise UserError(
                f"--token-file {path}, line {number}: the token is shorter than {MIN_TOKEN} characters"
            )
        if token in tokens:
            raise UserError(f"--token-file {path}, line {number}: the same token is given twice")
        tokens[token] = name
    if not tokens:
        raise UserError(f"--token-file {path}: no `NAME TOKEN` line in it")
    return tokens


@dataclass
class Session:
    name: str
    created: float
    seen: float


@dataclass
class Operators:
    """The token file's operators and their sessions, kept here (a cookie holds only a random id).

    A session ends at sign-out, after `max_age` seconds, after `idle` seconds unused, and as soon as
    its operator is no longer in the token file, which is read again when it changes (checked at most
    once a second) or on `reload()` (SIGHUP). Failed sign-ins are throttled per address."""

    tokens: dict[str, str]
    path: Path | None = None
    max_age: float = SESSION_SECONDS
    idle: float = IDLE_SECONDS
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    sessions: dict[str, Session] = field(default_factory=dict)
    failures: dict[str, list[float]] = field(default_factory=dict)
    _stamp: tuple[float, int] | None = None
    _checked: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_file(cls, path: Path) -> Operators:
        """The token file's operators, with the session lifetimes VARIANTCTL_SESSION_HOURS and
        VARIANTCTL_SESSION_IDLE_MINUTES give (12 h and 60 min unless set)."""
        operators = cls(read_tokens(path), path, *_lifetimes())
        operators._stamp = _stamp(path)
        return operators

    # ---- the token file ----------------------------------------------------------------------

    def reload(self, force: bool = True, now: float | None = None) -> bool:
        """Read the token file again if it changed (or always, `force`); a file that no longer reads
        keeps the operators it had (and says so in the log). True when the operators changed."""
        if self.path is None:
            return False
        now = now if now is not None else time.time()
        if not force and now - self._checked < 1.0:
            return False
        self._checked = now
        stamp = _stamp(self.path)
        if not force and stamp == self._stamp:
            return False
        try:
            tokens = read_tokens(self.path)
        except UserError as exc:
            log.warning("token file not reloaded, the operators stay as they were: %s", exc)
            return False
        with self._lock:
            changed = tokens != self.tokens
            self.tokens, self._stamp = tokens, stamp
            names = set(tokens.values())
            for sid in [k for k, v in self.sessions.items() if v.name not in names]:
                del self.sessions[sid]
        if changed:
            log.warning("token file %s reloaded: %d operators", self.path, len(tokens))
        return changed

    def by_token(self, token: str) -> str | None:
        self.reload(force=False)
        for known, name in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode("utf-8", "replace")):
                return name
        return None

    # ---- sessions ----------------------------------------------------------------------------

    def session(self, name: str, now: float | None = None) -> str:
        """A new session for `name`: its id, for the cookie."""
        now = now if now is not None else time.time()
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self.sessions[sid] = Session(name, now, now)
            for old in [k for k, v in self.sessions.items() if not self._live(v, now)]:
                del self.sessions[old]
        return sid

    def operator(self, cookie: str | None, now: float | None = None) -> str | None:
        """The operator of a live session, or None (an unknown, malformed, ended or expired id)."""
        if not cookie or len(cookie) > 128:
            return None
        self.reload(force=False)
        now = now if now is not None else time.time()
        with self._lock:
            found = self.sessions.get(cookie)
            if found is None or not self._live(found, now) or found.name not in self.tokens.values():
                self.sessions.pop(cookie, None)
                return None
            found.seen = now
            return found.name

    def end(self, cookie: str | None) -> None:
        with self._lock:
            self.sessions.pop(cookie or "", None)

    def _live(self, s: Session, now: float) -> bool:
        return now - s.created < self.max_age and now - s.seen < self.idle

    def csrf(self, cookie: str) -> str:
        return self._sign("csrf|" + cookie)

    def csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        if not (cookie and token) or not token.isascii():
            return False
        return hmac.compare_digest(self.csrf(cookie), token)

    def _sign(self, value: str) -> str:
        return hmac.new(self.key, value.encode("utf-8", "replace"), hashlib.sha256).hexdigest()

    # ---- failed sign-ins ---------------------------------------------------------------------

    def throttled(self, address: str, now: float | None = None) -> float:
        """Seconds until `address` may try again (0: now)."""
        now = now if now is not None else time.time()
        with self._lock:
            recent = [t for t in self.failures.get(address, []) if now - t < FAILURE_WINDOW]
            self.failures[address] = recent
            return FAILURE_WINDOW - (now - recent[0]) if len(recent) >= FAILURES_ALLOWED else 0.0

    def failed(self, address: str, now: float | None = None) -> None:
        now = now if now is not None else time.time()
        with self._lock:
            self.failures.setdefault(address, []).append(now)
            if len(self.failures) > 10_000:  # a flood from many addresses cannot grow this forever
                self.failures.clear()


def _stamp(path: Path) -> tuple[float, int] | None:
    try:
        info = path.expanduser().stat()
    except OSError:
        return None
    return info.st_mtime, info.st_size


def _lifetimes() -> tuple[float, float]:
    def number(name: str, default: float, unit: float) -> float:
        raw = os.environ.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise UserError(f"{name}={raw!r}: give a number") from None
        if not value > 0:
            raise UserError(f"{name}={raw!r}: give a number greater than 0")
        return value * unit

    return (
        number("VARIANTCTL_SESSION_HOURS", SESSION_SECONDS, 3600.0),
        number("VARIANTCTL_SESSION_IDLE_MINUTES", IDLE_SECONDS, 60.0),
    )


def warnings(operators: Operators | None, host: str) -> list[str]:
    """What an operator starting the dashboard should know: plain HTTP beyond this machine, a token
    file others may read, a token that looks weak."""
    out = []
    if host not in LOOPBACK:
        out.append(
            f"serving on {host}, not loopback, over plain HTTP: tokens and sessions would cross the "
            "network in clear, so the session cookie is Secure (sent over HTTPS only): "
            "put a TLS proxy in front"
        )
    if operators is not None and operators.path is not None:
        try:
            mode = operators.path.expanduser().stat().st_mode
        except OSError:
            mode = 0
        if mode & 0o077:
            out.append(
                f"the token file {operators.path} may be read by others (mode {mode & 0o777:o}): chmod 600 it"
            )
        for token, name in operators.tokens.items():
            if len(set(token)) < WEAK_DISTINCT:
                out.append(
                    f"the token of {name} looks weak ({len(set(token))} distinct characters): "
                    "use a random one"
                )
    return out


def cookie_name(port: int, secure: bool) -> str:
    """One name per port (two dashboards on one host keep apart); `__Host-` where the cookie is Secure."""
    return f"{'__Host-' if secure else ''}{COOKIE}_{port}"


def same_origin(headers: dict[str, str], scheme: str, host: str) -> bool:
    """The request came from the dashboard's own pages (or from no page at all: a program)."""
    origin = headers.get("origin")
    if origin is not None:
        return origin == f"{scheme}://{host}"
    fetched = headers.get("sec-fetch-site")
    return fetched in (None, "same-origin", "none")
