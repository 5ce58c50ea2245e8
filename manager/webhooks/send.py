"""One HTTP POST of a webhook: the body signed with the hook's secret, the answer or why there was
none. Standard library only (`urllib`), so that a call is bounded by its timeout and nothing else."""

from __future__ import annotations

import hashlib
import hmac
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

SIGNATURE_HEADER = "X-Variantctl-Signature-256"
USER_AGENT = "variantctl-webhooks/1"
ANSWER_KEPT = 500  # characters of a receiver's answer kept in the registry


@dataclass(frozen=True)
class Answer:
    status: int  # the HTTP status; 0 when there was no answer (refused, timed out, bad secret)
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class SecretMissing(Exception):
    pass


def secret(env: str | None, file: str | None) -> bytes | None:
    """The hook's signing secret, read when it is sent (never stored in the registry)."""
    if env:
        value = os.environ.get(env)
        if not value:
            raise SecretMissing(f"the signing secret's environment variable {env} is not set in the daemon")
        return value.encode()
    if file:
        try:
            return Path(file).expanduser().read_bytes().strip()
        except OSError as exc:
            raise SecretMissing(f"the signing secret file {file}: {exc.strerror or exc}") from None
    return None


def signature(key: bytes, body: bytes) -> str:
    """`sha256=` and the hex HMAC-SHA256 of the exact body bytes (as GitHub signs its webhooks)."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    secret_env: str | None = None,
    secret_file: str | None = None,
) -> Answer:
    """POST `body`, signed with the hook's secret when it names one; a secret that cannot be read is
    an attempt that failed, with why, as a receiver that does not answer is."""
    try:
        key = secret(secret_env, secret_file)
    except SecretMissing as exc:
        return Answer(0, str(exc))
    sent = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
    if key is not None:
        sent[SIGNATURE_HEADER] = signature(key, body)
    request = urllib.request.Request(url, data=body, headers=sent, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, _text(response.read(ANSWER_KEPT * 4)))
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, _text(exc.read(ANSWER_KEPT * 4) if exc.fp else b""))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Answer(0, f"no answer: {reason}"[:ANSWER_KEPT])


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")[:ANSWER_KEPT]
