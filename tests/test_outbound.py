"""Outgoing calls (webhooks and gates) cannot be turned into a way to read what the daemon can reach
(issue 28, finding 1): no redirects, http(s) only, no link-local or metadata addresses ever, loopback
and private ranges only where VARIANTCTL_WEBHOOK_ALLOW names them, the call pinned to the address
that was checked, and a receiver's body never kept whole."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from manager import audit
from manager.webhooks import destinations, send

from .rollout_support import make_world
from .test_webhooks import hooked, rounds_until

SECRET_PAGE = b"AccessKeyId=AKIAEXAMPLEEXAMPLE0000 SecretAccessKey=wJalrXUtnFEMI"


@contextmanager
def server(answer: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 that answers every GET and POST with `answer`; yields its URL and
    the (method path) of each request it got."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def handle_one(self) -> None:
            seen.append(f"{self.command} {self.path} {self.headers.get('Host')}")
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            answer(self)

        do_GET = do_POST = handle_one

        def log_message(self, *_: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def _reply(status: int, body: bytes, kind: str, **headers: str) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def test_a_redirect_is_never_followed_and_a_body_never_kept() -> None:
    with (
        server(_reply(200, SECRET_PAGE, "text/plain")) as (internal, internal_seen),
        server(_reply(302, b"", "text/plain", Location=f"{internal}/latest/meta-data")) as (url, seen),
    ):
        answer = send.post(f"{url}/approve", b"{}", {}, 2.0)
    assert (answer.status, answer.text) == (302, "a redirect, not followed")
    assert not answer.ok
    assert internal_seen == [], "nothing was sent where the redirect pointed"
    assert len(seen) == 1
    with server(_reply(200, SECRET_PAGE, "text/html")) as (url, _):
        answer = send.post(url, b"{}", {}, 2.0)
    assert answer.ok and b"AccessKeyId" not in answer.text.encode()
    assert answer.text == f"({len(SECRET_PAGE)} bytes of text/html, not kept)"
    said = json.dumps({"reason": "approved by alice\n<b>"}).encode()
    with server(_reply(403, said, "application/json")) as (url, _):
        assert send.post(url, b"{}", {}, 2.0).text == "approved by alice <b>"


@pytest.mark.parametrize(
    ("url", "allow", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "loopback,private,0.0.0.0/0", "link-local or metadata"),
        ("http://[fe80::1]/", "private", "link-local or metadata"),
        ("ftp://example.com/x", "", "only http and https"),
        ("file:///etc/passwd", "", "only http and https"),
        ("http://127.0.0.1:9/", "", "loopback address"),
        ("http://localhost:9/", "", "loopback address"),
        ("http://10.1.2.3/", "", "private address"),
        ("http://10.1.2.3/", "10.2.0.0/16", "private address"),
        ("http://192.168.1.1/", "loopback", "private address"),
        ("http://0.0.0.0/", "loopback", "link-local or metadata"),
        ("http://224.0.0.1/", "", "not a unicast address"),
    ],
)
def test_the_destination_policy_refuses(url: str, allow: str, why: str) -> None:
    with pytest.raises(destinations.Refused, match=why):
        destinations.check(url, destinations.Allowed.parse(allow))


@pytest.mark.parametrize(
    ("url", "allow", "address", "port"),
    [
        ("http://127.0.0.1:9/", "loopback", "127.0.0.1", 9),
        ("http://10.1.2.3/", "private", "10.1.2.3", 80),
        ("http://10.1.2.3/", "10.1.0.0/16", "10.1.2.3", 80),
        ("https://93.184.216.34/hook", "", "93.184.216.34", 443),  # a public address needs nothing
        ("http://[::1]:8080/", "loopback", "::1", 8080),
    ],
)
def test_the_destination_policy_allows_what_the_daemon_names(
    url: str, allow: str, address: str, port: int
) -> None:
    where = destinations.check(url, destinations.Allowed.parse(allow))
    assert (where.address, where.port) == (address, port)


def test_a_bad_allow_setting_is_one_clear_error() -> None:
    from manager.errors import UserError

    with pytest.raises(UserError, match="VARIANTCTL_WEBHOOK_ALLOW: 'intranet' is not"):
        destinations.Allowed.parse("loopback, intranet")


def test_the_call_goes_to_the_address_that_was_checked() -> None:
    """The connection is made to the checked address (no second lookup to rebind), with the URL's
    own host name in the Host header."""
    with server(_reply(200, b"", "text/plain")) as (url, seen):
        port = int(url.rsplit(":", 1)[1])
        where = destinations.Destination("http", "hooks.example.invalid", port, "127.0.0.1", "/x")
        connection = send._connection(where, 2.0)
        connection.request("POST", where.target, body=b"{}", headers={"Host": send._host(where)})
        assert connection.getresponse().status == 200
        connection.close()
    assert seen == [f"POST /x hooks.example.invalid:{port}"]


def test_loopback_is_refused_unless_the_daemon_allows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    with server(_reply(200, b"", "text/plain")) as (url, seen):
        monkeypatch.delenv("VARIANTCTL_WEBHOOK_ALLOW")
        answer = send.post(url, b"{}", {}, 2.0)
        assert answer.status == 0 and "loopback address (allow it with" in answer.text
        monkeypatch.setenv("VARIANTCTL_WEBHOOK_ALLOW", "loopback")
        assert send.post(url, b"{}", {}, 2.0).ok
    assert len(seen) == 1


def test_a_redirecting_gate_holds_and_leaks_nothing(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    """The probe's attack: a confirm-rollout gate whose receiver redirects to an internal page."""
    with (
        server(_reply(200, SECRET_PAGE, "text/plain")) as (internal, internal_seen),
        server(_reply(302, b"", "text/plain", Location=f"{internal}/creds")) as (url, seen),
        make_world(tmp_path, artifacts) as world,
    ):
        hooks = (
            f"  - {{name: approve, type: confirm-rollout, url: '{url}/approve', timeout: 1s,"
            " every: 100ms, deadline: 1h}\n"
        )
        rollout_id = world.start(hooked(hooks))
        reconciler = world.reconciler()
        rounds_until(world, lambda: len(seen) >= 2, reconciler)
        assert world.rollout(rollout_id).state == "pending", "the gate holds"
        assert internal_seen == []
        answered = audit.history(world.database, audit.HistoryFilter(action="gate.answered", limit=None))
        assert answered and all(json.loads(e.payload)["status"] == 302 for e in answered)
        # The history shows the hook's host and a hash of its URL, never its path (finding 7).
        assert all(json.loads(e.payload)["url"] == destinations.redacted(f"{url}/approve") for e in answered)
        assert all("/approve" not in json.loads(e.payload)["url"] for e in answered)
        everything = json.dumps(
            [(e.reason, e.payload) for e in audit.history(world.database, audit.HistoryFilter(limit=None))]
        )
        assert "AccessKeyId" not in everything


def test_a_hook_url_is_shown_without_its_path_query_or_credentials() -> None:
    secret = "https://user:pw@hooks.slack.com:443/services/T000/B000/XXXXSECRET?token=abc"
    shown = destinations.redacted(secret)
    assert shown.startswith("https://hooks.slack.com:443/…#sha256:")
    assert not any(part in shown for part in ("services", "XXXXSECRET", "token", "user", "pw"))
    assert destinations.redacted(secret) == shown != destinations.redacted(secret + "x")
