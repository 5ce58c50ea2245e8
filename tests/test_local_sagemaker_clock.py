"""The local SageMaker's clock, which tests hold and move instead of racing: in-process, over HTTP at
/_local/clock, and held from start-up by `local-sagemaker serve --clock held` (or its variable)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from manager.local_sagemaker import LocalSageMaker
from manager.local_sagemaker.clock import ClockError, HostClock

from .local_sagemaker_support import create_model, first_row, until, variant, wait_status


def test_a_held_clock_stands_still_and_moves_only_forward_by_what_it_is_told() -> None:
    clock = HostClock("held")
    start = clock()
    assert clock() == start and clock.held
    assert clock.advance(2.5) == start + 2.5 == clock()
    assert clock.hold() == start + 2.5  # holding a held clock changes nothing
    for bad in (-1, float("nan"), float("inf"), "5", True, 10**9):
        with pytest.raises(ClockError):
            clock.advance(bad)  # type: ignore[arg-type]
    assert clock() == start + 2.5
    resumed = clock.release()
    assert not clock.held and resumed >= start + 2.5  # it runs on from where it stood, never back
    assert clock() >= resumed


def test_a_running_clock_can_be_moved_on_and_stays_ahead_of_real_time() -> None:
    clock = HostClock()
    assert not clock.held and abs(clock() - time.time()) < 5
    clock.advance(3600)
    assert clock() - time.time() > 3590
    with pytest.raises(ClockError, match="one of real, held"):
        HostClock("frozen")  # type: ignore[arg-type]
    with pytest.raises(ClockError, match="unknown clock field"):
        clock.apply({"rewind": 5})


def _admin(url: str, body: Any = None, content_type: str = "application/json") -> tuple[int, Any]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url + "/_local/clock", data=data, method="POST" if data else "GET")
    if data is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_an_endpoint_stays_creating_until_the_clock_is_moved_over_http(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with LocalSageMaker(tmp_path / "state", provision_delay=30, seed=1) as host:
        sm = host.client("sagemaker")
        status, state = _admin(host.url, {"hold": True})
        assert status == 200 and state["mode"] == "held"
        create_model(sm, "m", artifacts["logistic"])
        sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[variant("A", "m")])
        sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
        # The model loads in real time; the 30-second provisioning waits for the clock, however long.
        endpoint = host.control.endpoints.table["ep"]
        until(lambda: endpoint.pending is not None and endpoint.pending.load.done(), "the model to load")
        assert sm.describe_endpoint(EndpointName="ep")["EndpointStatus"] == "Creating"
        status, state = _admin(host.url, {"advance": 29.5})
        assert sm.describe_endpoint(EndpointName="ep")["EndpointStatus"] == "Creating"
        status, state = _admin(host.url, {"advance": 0.5})
        assert status == 200 and state["mode"] == "held"
        described = sm.describe_endpoint(EndpointName="ep")
        assert described["EndpointStatus"] == "InService"
        held_at = datetime.fromisoformat(state["now"])
        # stamped on the host's clock (to the millisecond, as AWS's timestamps are)
        assert abs(described["LastModifiedTime"] - held_at) <= timedelta(milliseconds=1)

        # Metric periods follow it too: a request a day ahead lands in that day's bucket.
        _admin(host.url, {"advance": 86400})
        host.client("sagemaker-runtime").invoke_endpoint(
            EndpointName="ep", ContentType="text/csv", Body=first_row()
        )
        points = host.metrics.datapoints(
            ("ep", "A", "Invocations"), held_at, held_at + timedelta(days=2), 60, "Sum"
        )
        tomorrow = (held_at + timedelta(days=1)).timestamp() - 60  # its 60-second bucket's start
        assert [(slot >= tomorrow, value) for slot, value in points] == [(True, 1.0)]

        status, state = _admin(host.url, {"release": True})
        assert state["mode"] == "real" and datetime.fromisoformat(state["now"]) >= held_at


def test_the_clock_admin_refuses_bad_requests_with_one_clear_error(tmp_path: Path) -> None:
    with LocalSageMaker(tmp_path / "state") as host:
        before = _admin(host.url)[1]["epoch"]
        # text/plain is what a page on another site can send without asking: refused
        assert _admin(host.url, {"advance": 60}, "text/plain")[0] == 415
        assert _admin(host.url, {"advance": -60})[1]["message"].startswith("the clock never goes back")
        assert _admin(host.url, {"wind": 1})[0] == 400
        assert _admin(host.url, b"not json")[0] == 400
        assert _admin(host.url)[1]["epoch"] - before < 30  # none of them moved it


def _serve(tmp_path: Path, env: dict[str, str], *flags: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "manager", "local-sagemaker", "serve", "--state-dir", str(tmp_path), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    assert "listening on" in first, first + process.stdout.read()
    return process, first.split("listening on ")[1].split()[0]


@pytest.mark.parametrize(
    ("env", "flags"), [({}, ("--clock", "held")), ({"VARIANTCTL_LOCAL_CLOCK": "held"}, ())]
)
def test_serve_can_start_with_its_clock_held(
    tmp_path: Path, env: dict[str, str], flags: tuple[str, ...]
) -> None:
    process, url = _serve(tmp_path, env, *flags)
    try:
        state = _admin(url)[1]
        assert state["mode"] == "held"
        assert _admin(url, {"advance": 90})[1]["epoch"] == pytest.approx(state["epoch"] + 90)
        stamp = datetime.fromtimestamp(state["epoch"] + 90, UTC)
        assert datetime.fromisoformat(_admin(url)[1]["now"]) == stamp
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


def test_serve_refuses_an_unknown_clock_mode(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "manager", "local-sagemaker", "serve", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "VARIANTCTL_LOCAL_CLOCK": "frozen"},
        timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'frozen' is not one of 'real', 'held'" in result.stderr


def test_wait_status_still_works_with_a_real_clock(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    """The default stays real time: nothing needs moving for a user's endpoint to come up."""
    with LocalSageMaker(tmp_path / "state", provision_delay=0.05) as host:
        sm = host.client("sagemaker")
        create_model(sm, "m", artifacts["logistic"])
        sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[variant("A", "m")])
        sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
        assert wait_status(sm, "ep")["EndpointStatus"] == "InService"
