"""One HTTP POST of a webhook: the body signed with the hook's secret, the answer or why there was
none. Standard library only (`http.client`), so that a call is bounded by its timeout and nothing
else, and goes only where `destinations` allows: to the address it checked, never redirected."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from manager.webhooks import destinations

SIGNATURE_HEADER = "X-Variantctl-Signature-256"
USER_AGENT = "variantctl-webhooks/1"
ANSWER_KEPT = 500  # characters of why there was no answer, kept in the registry
ANSWER_READ = 4096  # bytes of an answer read, at most
REASON_KEPT = 200  # characters of a receiver's own reason kept in the registry


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


def resolve(target: str) -> str:
    """A hook's URL: given, or read now from the daemon's environment (`env:NAME`) or a file
    (`file:PATH`), so that a URL which is a credential is never stored in the registry."""
    if target.startswith("env:"):
        value = os.environ.get(target[4:], "").strip()
        if not value:
            raise SecretMissing(f"the hook's URL variable {target[4:]} is not set in the daemon")
        return value
    if target.startswith("file:"):
        try:
            return Path(target[5:]).expanduser().read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretMissing(f"the hook's URL file {target[5:]}: {exc}") from None
    return target


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
    """POST `body` to a destination the policy allows (`destinations.check`), signed with the hook's
    secret when it names one. A secret that cannot be read, a refused destination or a receiver that
    does not answer is an attempt that failed, with why. A redirect is never followed."""
    try:
        key = secret(secret_env, secret_file)
        where = destinations.check(resolve(url))
    except (SecretMissing, destinations.Refused) as exc:
        return Answer(0, f"not sent: {exc}"[:ANSWER_KEPT])
    sent = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
    if key is not None:
        sent[SIGNATURE_HEADER] = signature(key, body)
    connection = _connection(where, timeout)
    try:
        connection.request("POST", where.target, body=body, headers={**sent, "Host": _host(where)})
        response = connection.getresponse()
        status, raw = response.status, response.read(ANSWER_READ)
        kind = response.getheader("Content-Type") or ""
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return Answer(0, f"no answer: {exc}"[:ANSWER_KEPT])
    finally:
        connection.close()
    if 300 <= status < 400:
        return Answer(status, "a redirect, not followed")
    return Answer(status, reason(raw, kind))


def _host(where: destinations.Destination) -> str:
    default = 443 if where.scheme == "https" else 80
    name = f"[{where.host}]" if ":" in where.host else where.host
    return name if where.port == default else f"{name}:{where.port}"


class _Pinned(http.client.HTTPConnection):
    """An HTTP connection to the address the destination policy checked, whatever DNS says now."""

    def __init__(self, where: destinations.Destination, timeout: float) -> None:
        super().__init__(where.host, where.port, timeout=timeout)
        self.address = where.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    """HTTPS to the checked address; the certificate is verified against the URL's host name."""

    def __init__(self, where: destinations.Destination, timeout: float) -> None:
        super().__init__(where.host, where.port, timeout=timeout, context=ssl.create_default_context())
        self.address = where.address

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


def _connection(where: destinations.Destination, timeout: float) -> http.client.HTTPConnection:
    return _PinnedTLS(where, timeout) if where.scheme == "https" else _Pinned(where, timeout)


def reason(raw: bytes, content_type: str) -> str:
    """What is kept of an answer: a JSON body's `reason` (or `message`, `error`), one printable line of
    at most REASON_KEPT characters; of any other body only its size and type. A body is never kept
    whole: it could be a page the receiver had no business showing (see `destinations`)."""
    if "json" in content_type.lower():
        try:
            value = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            value = None
        if isinstance(value, dict):
            said = next(
                (value[k] for k in ("reason", "message", "error") if isinstance(value.get(k), str)), None
            )
            if said is not None:
                line = "".join(c if c.isprintable() else " " for c in said).strip()
                return line[:REASON_KEPT]
    if not raw:
        return ""
    shown = content_type.split(";")[0].strip() or "no content type"
    more = "+" if len(raw) >= ANSWER_READ else ""
    return f"({len(raw)}{more} bytes of {shown}, not kept)"


def pagerduty(url: str, body: dict[str, object], timeout: float, env: str | None, file: str | None) -> Answer:
    """POST a PagerDuty Events API v2 event with its routing key, read now from the hook's secret."""
    try:
        key = secret(env, file)
    except SecretMissing as exc:
        return Answer(0, f"not sent: {exc}"[:ANSWER_KEPT])
    sent = json.dumps({**body, "routing_key": (key or b"").decode()}, sort_keys=True).encode()
    return post(url, sent, {}, timeout)


def mail(url: str, message: dict[str, object], timeout: float, env: str | None, file: str | None) -> Answer:
    """Send an email hook's message over SMTP (`smtps://` with TLS from the start, `smtp://` with
    STARTTLS when the server offers it), to the address the destination policy checked; the password,
    if any, is the hook's secret and the user is the URL's."""
    import smtplib
    from email.message import EmailMessage
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    secure = parts.scheme == "smtps"
    try:
        password = secret(env, file)
        where = destinations.check(
            f"{'https' if secure else 'http'}://{parts.hostname}:{parts.port or (465 if secure else 25)}/"
        )
    except (SecretMissing, destinations.Refused) as exc:
        return Answer(0, f"not sent: {exc}"[:ANSWER_KEPT])
    mail_message = EmailMessage()
    mail_message["Subject"] = str(message["subject"])
    mail_message["From"] = str(message["from"])
    mail_message["To"] = ", ".join(str(t) for t in message["to"])  # type: ignore[attr-defined]
    mail_message.set_content(str(message["text"]))
    try:
        # by name where TLS is used (the certificate is for the name, not the checked address)
        if secure:
            context = ssl.create_default_context()
            server: smtplib.SMTP = smtplib.SMTP_SSL(where.host, where.port, timeout=timeout, context=context)
        else:
            server = smtplib.SMTP(where.address, where.port, timeout=timeout)
        with server:
            server.ehlo()
            if not secure and server.has_extn("starttls"):
                server._host = where.host  # type: ignore[attr-defined]  # what STARTTLS verifies
                server.starttls(context=ssl.create_default_context())
                server.ehlo()
            if parts.username and password is not None:
                server.login(parts.username, password.decode())
            refused = server.send_message(mail_message)
    except (OSError, smtplib.SMTPException) as exc:
        return Answer(0, f"no answer: {exc}"[:ANSWER_KEPT])
    if refused:
        return Answer(0, f"refused for {', '.join(sorted(refused))}"[:ANSWER_KEPT])
    return Answer(250, "accepted")
