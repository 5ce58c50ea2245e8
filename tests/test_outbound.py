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

from manager.history import audit
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


def test_a_hook_url_that_is_a_secret_is_read_by_the_daemon_and_never_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 7: a Slack URL is a credential. `urlFrom: env:NAME` (or `file:PATH`) keeps it out of
    the registry; an inline URL is recorded redacted."""
    from manager.db import Database
    from manager.registry import migrate
    from manager.registry.tables import WebhookTarget

    from .conftest import Cli

    with server(_reply(200, b"", "text/plain")) as (url, seen):
        secret_url = f"{url}/services/T000/B000/XXXXSECRET"
        monkeypatch.setenv("TEAM_HOOK_URL", secret_url)
        db = tmp_path / "registry.db"
        run = Cli(db)
        assert run("db", "upgrade").exit_code == 0
        added = run("webhooks", "add", "team", "--url-from", "env:TEAM_HOOK_URL", "--format", "slack")
        assert added.exit_code == 0 and "from env:TEAM_HOOK_URL" in added.output, added.output
        inline = run("webhooks", "add", "sink", "--url", f"{url}/sink?token=abc123")
        assert inline.exit_code == 0 and "token=abc123" not in inline.output
        both = run("webhooks", "add", "x", "--url", url, "--url-from", "env:TEAM_HOOK_URL")
        assert both.exit_code == 2 and "give `url`, or `urlFrom`" in both.output
        listed = run("webhooks", "targets", "-o", "json")
        assert "XXXXSECRET" not in listed.output and "token=abc123" not in listed.output
        assert "from the daemon (urlFrom)" in listed.output and "inline (shown redacted)" in listed.output
        history = run("history", "-o", "json")
        assert "XXXXSECRET" not in history.output and "abc123" not in history.output
        database = Database(f"sqlite:///{db}")
        migrate.upgrade(database)
        with database.read() as session:
            assert session.get(WebhookTarget, "team").spec["urlFrom"] == "env:TEAM_HOOK_URL"
        database.dispose()
        # The daemon reads the URL when it sends; without the variable it says so.
        assert send.post("env:TEAM_HOOK_URL", b"{}", {}, 2.0).ok
        assert seen[-1].startswith("POST /services/T000/B000/XXXXSECRET")
        monkeypatch.delenv("TEAM_HOOK_URL")
        missing = send.post("env:TEAM_HOOK_URL", b"{}", {}, 2.0)
        assert missing.status == 0 and "TEAM_HOOK_URL is not set in the daemon" in missing.text
        (tmp_path / "hook-url").write_text(secret_url + "\n")
        assert send.post(f"file:{tmp_path / 'hook-url'}", b"{}", {}, 2.0).ok


def test_an_inline_hook_url_is_redacted_in_the_history_and_on_every_surface(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    """Finding 7: a policy's inline hook URL went into the history inside the policy text, to every
    receiver in the `started` event, and onto pages shown without sign-in."""
    from manager.registry.tables import Rollout

    from .conftest import Cli

    hooks = "  - {name: team, url: 'https://hooks.slack.com/services/T000/B000/XXXXSECRET', format: slack}\n"
    with make_world(tmp_path, artifacts) as world:
        rollout_id = world.start(hooked(hooks))
        with world.database.read() as session:
            row = session.get(Rollout, rollout_id)
            assert row is not None and "XXXXSECRET" in row.policy_yaml, "the daemon keeps what it calls"
        everything = json.dumps(
            [(e.reason, e.payload) for e in audit.history(world.database, audit.HistoryFilter(limit=None))],
            ensure_ascii=False,
        )
        assert "XXXXSECRET" not in everything and "hooks.slack.com/…#sha256:" in everything.replace(
            "\\u2026", "…"
        )
        run = Cli(world.db_path)
        shown = run("rollout", "show", str(rollout_id), "--policy")
        assert shown.exit_code == 0, shown.output
        assert (
            "XXXXSECRET" not in shown.output and "the text matches its hash and the history" in shown.output
        )
        report = run("rollout", "report", str(rollout_id), "--format", "json", "-o", str(tmp_path / "r.json"))
        assert report.exit_code == 0 and "XXXXSECRET" not in (tmp_path / "r.json").read_text()
        assert audit.verify(world.database).ok
