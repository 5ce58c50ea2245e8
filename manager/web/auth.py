"""Who may act from the dashboard: the operators named in its token file, and only from its own pages.

The token file holds one operator per line, `NAME TOKEN` (`#` starts a comment); a token is at least
16 characters. An operator signs in with their token once; the dashboard then keeps a session cookie
(HttpOnly, SameSite=Strict, signed with a key that lives as long as the process) and puts a CSRF
token, derived from that session, in every form. An action needs, besides the session and its CSRF
token, a request from the dashboard's own origin (Origin, else Sec-Fetch-Site): a page on another
site can neither read the CSRF token nor send the cookie. A program may instead send the token
itself (`Authorization: Bearer TOKEN`), which no browser adds by its own accord.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from manager.config import check_actor
from manager.errors import UserError

COOKIE = "variantctl_session"
SESSION_SECONDS = 12 * 3600
MIN_TOKEN = 16


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
class Operators:
    """The token file's operators, and the signing of their sessions."""

    tokens: dict[str, str]
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def by_token(self, token: str) -> str | None:
        for known, name in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return name
        return None

    def session(self, name: str, now: float | None = None) -> str:
        expires = int((now or time.time()) + SESSION_SECONDS)
        value = f"{name}|{expires}"
        return f"{value}|{self._sign(value)}"

    def operator(self, cookie: str | None, now: float | None = None) -> str | None:
        """The operator a session cookie names, if it is ours, unexpired, and still in the file."""
        if not cookie or cookie.count("|") != 2:
            return None
        name, expires, signature = cookie.split("|")
        if not hmac.compare_digest(self._sign(f"{name}|{expires}"), signature):
            return None
        if not expires.isdigit() or int(expires) < (now or time.time()):
            return None
        return name if name in self.tokens.values() else None

    def csrf(self, cookie: str) -> str:
        return self._sign("csrf|" + cookie)

    def csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        return bool(cookie and token) and hmac.compare_digest(self.csrf(cookie or ""), token or "")

    def _sign(self, value: str) -> str:
        return hmac.new(self.key, value.encode(), hashlib.sha256).hexdigest()


def same_origin(headers: dict[str, str], scheme: str, host: str) -> bool:
    """The request came from the dashboard's own pages (or from no page at all: a program)."""
    origin = headers.get("origin")
    if origin is not None:
        return origin == f"{scheme}://{host}"
    fetched = headers.get("sec-fetch-site")
    return fetched in (None, "same-origin", "none")
