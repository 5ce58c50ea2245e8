"""Dashboard sessions are kept by the dashboard and can end (issue 28, finding 2): sign-out ends the
session itself, removing an operator from the token file ends theirs and adding one lets them in
(the file is read again when it changes), sessions expire and idle out, failed sign-ins are logged,
counted and throttled, the Host must be one it serves, and what a cookie or a link carries cannot
break or word a page (finding 8's smaller items)."""

from __future__ import annotations

import http.client as httplib
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from manager.web import auth

from .rollout_support import CANARY, make_world, policy_text
from .test_dashboard import TOKEN, http, metrics, served, total, until

BOB = "bob-token-9876543210zyxwvu"


def _sign_in(base: str, token: str) -> tuple[int, str | None]:
    """POST /login from the dashboard's own page; the session cookie it sets (name=value), if any."""
    parts = urlsplit(base)
    connection = httplib.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request(
        "POST",
        "/login",
        body=f"token={token}",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": base},
    )
    answer = connection.getresponse()
    answer.read()
    cookie = answer.getheader("Set-Cookie")
    connection.close()
    return answer.status, cookie.split(";")[0] if cookie else None


def _act(base: str, rollout_id: int, cookie: str, intent: str = "pause") -> tuple[int, str]:
    _, page = http("GET", f"{base}/rollouts/{rollout_id}", headers={"Cookie": cookie})
    found = re.search(r"name='csrf' value='([0-9a-f]+)'", page)
    csrf = found.group(1) if found else ""
    body = f"intent={intent}&reason=from+the+test&csrf={csrf}".encode()
    return http("POST", f"{base}/rollouts/{rollout_id}/actions", body, {"Cookie": cookie, "Origin": base})


def test_sign_out_and_removal_end_a_session_and_an_added_operator_gets_in(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice {TOKEN}\n")
    with make_world(tmp_path, artifacts) as world, served(world, tokens) as base:
        rollout_id = world.start(policy_text(CANARY))
        status, cookie = _sign_in(base, TOKEN)
        assert (
            status == 303
            and cookie is not None
            and cookie.startswith(f"variantctl_session_{urlsplit(base).port}=")
        )
        assert "|" not in cookie and "alice" not in cookie, "the cookie holds only a random id"
        page = http("GET", f"{base}/", headers={"Cookie": cookie})[1]
        assert "signed in as <b>alice</b>" in page
        # Sign-out from another site is refused, and the session lives on.
        assert (
            http("POST", f"{base}/logout", b"", {"Cookie": cookie, "Origin": "http://localhost:1"})[0] == 403
        )
        assert "signed in as" in http("GET", f"{base}/", headers={"Cookie": cookie})[1]
        csrf = re.search(r"name='csrf' value='([0-9a-f]+)'", page)
        assert csrf is not None
        out = http(
            "POST", f"{base}/logout", f"csrf={csrf.group(1)}".encode(), {"Cookie": cookie, "Origin": base}
        )
        assert out[0] in (200, 303)
        assert "signed in as" not in http("GET", f"{base}/", headers={"Cookie": cookie})[1], "ended here"
        assert _act(base, rollout_id, cookie)[0] == 401
        # Removed from the file: the session ends at once; bob, added, gets in without a restart.
        status, cookie = _sign_in(base, TOKEN)
        assert status == 303 and cookie is not None
        tokens.write_text(f"bob {BOB}\n")
        # The file's change is noticed at its next check (at most once a second): poll for it.
        until(lambda: "signed in as" not in http("GET", f"{base}/", headers={"Cookie": cookie})[1], 10)
        status, bob = _sign_in(base, BOB)
        assert status == 303 and bob is not None
        assert "signed in as <b>bob</b>" in http("GET", f"{base}/", headers={"Cookie": bob})[1]


def test_failed_sign_ins_are_counted_and_throttled(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice {TOKEN}\n")
    with make_world(tmp_path, artifacts) as world, served(world, tokens) as base:
        statuses = [_sign_in(base, f"wrong-token-{i:04d}-xxxxxxxx")[0] for i in range(7)]
        assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429]
        assert _sign_in(base, TOKEN)[0] == 429, "even the right token waits out the window"
        counted = total(metrics(base), "variantctl_dashboard_signin_failures_total", how="sign-in")
        assert counted == 5


def test_what_a_cookie_a_link_or_a_host_carries_cannot_break_or_word_a_page(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice {TOKEN}\n")
    with make_world(tmp_path, artifacts) as world, served(world, tokens) as base:
        rollout_id = world.start(policy_text(CANARY))
        port = urlsplit(base).port
        for cookie in (
            f"variantctl_session_{port}=\xe9t\xe9".encode("latin-1"),
            b"variantctl_session_1=a|b|c",
        ):
            connection = httplib.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.putrequest("GET", "/login")
            connection.putheader("Cookie", cookie)
            connection.endheaders()
            answer = connection.getresponse()
            assert answer.status == 200, "a malformed cookie is no session, not an error"
            connection.close()
        status, page = http("GET", f"{base}/rollouts/{rollout_id}?notice=Your+session+expired%2C+call+555")
        assert status == 200 and "call 555" not in page
        assert http("GET", f"{base}/rollouts/{2**70}")[0] == 404
        assert http("GET", f"{base}/history?limit={2**70}")[0] == 409
        assert http("GET", f"{base}/history?rollout={2**70}")[0] == 409
        refused = http("GET", f"{base}/", headers={"Host": "rebound.attacker.test"})
        assert refused[0] == 403 and "not one this dashboard serves" in refused[1]


def test_sessions_expire_and_idle_out() -> None:
    operators = auth.Operators({TOKEN: "alice"}, max_age=100.0, idle=30.0)
    sid = operators.session("alice", now=1000.0)
    assert operators.operator(sid, now=1020.0) == "alice"
    assert operators.operator(sid, now=1045.0) == "alice", "used at 1020: idle counts from there"
    assert operators.operator(sid, now=1080.0) is None, "idle for 35 s"
    sid = operators.session("alice", now=2000.0)
    for t in range(2000, 2100, 20):
        assert operators.operator(sid, now=float(t)) == "alice"
    assert operators.operator(sid, now=2100.0) is None, "past its lifetime, however busy"


def test_a_token_file_others_may_read_a_weak_token_or_a_public_address_is_warned_of(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("alice aaaaaaaaaaaaaaaaaaaa\nbob " + BOB + "\n")
    tokens.chmod(0o644)
    said = auth.warnings(auth.Operators.from_file(tokens), "0.0.0.0")
    assert any("not loopback, over plain HTTP" in w for w in said)
    assert any("may be read by others (mode 644)" in w for w in said)
    assert [w for w in said if "looks weak" in w] == [
        "the token of alice looks weak (1 distinct characters): use a random one"
    ]
    tokens.chmod(0o600)
    tokens.write_text("bob " + BOB + "\n")
    assert auth.warnings(auth.Operators.from_file(tokens), "127.0.0.1") == []


@pytest.mark.parametrize(("hours", "minutes"), [("0", None), ("x", None), (None, "-1")])
def test_bad_session_lifetimes_are_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hours: Any, minutes: Any
) -> None:
    from manager.errors import UserError

    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice {TOKEN}\n")
    for name, value in (("VARIANTCTL_SESSION_HOURS", hours), ("VARIANTCTL_SESSION_IDLE_MINUTES", minutes)):
        if value is not None:
            monkeypatch.setenv(name, value)
    with pytest.raises(UserError, match="VARIANTCTL_SESSION_"):
        auth.Operators.from_file(tokens)


def test_an_operator_name_with_a_bar_keeps_a_working_session(tmp_path: Path) -> None:
    """Finding 8: a token-file name holding `|` gave a dead session (the old cookie was NAME|EXPIRY|SIG)."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ops|oncall {TOKEN}\n")
    operators = auth.Operators.from_file(tokens)
    sid = operators.session("ops|oncall")
    assert operators.operator(sid) == "ops|oncall"
    assert operators.csrf_ok(sid, operators.csrf(sid)) and not operators.csrf_ok(sid, "é" * 64)
