"""A page on another port of this machine, open in Chromium, must not get the local SageMaker to act
(issue 28, finding 3): the probe's no-cors `text/plain` POSTs invoked an endpoint and set an alarm
through the CBOR route. And neither server answers a Host it does not serve (DNS rebinding)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from manager.local_sagemaker import LocalSageMaker

from .browser_support import browser, page_elsewhere
from .local_sagemaker_support import create_model, first_row, variant, wait_status

pytestmark = pytest.mark.slow


def _invocations(host: LocalSageMaker) -> float:
    """The endpoint's Invocations, as the host's own metric store counts them."""
    return sum(b.total for b in host.metrics._series.get(("ep", "AllTraffic", "Invocations"), {}).values())


def test_a_page_on_another_port_cannot_make_the_local_sagemaker_act(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with LocalSageMaker(tmp_path / "state", provision_delay=0.05) as host:
        sm, cw = host.client("sagemaker"), host.client("cloudwatch")
        create_model(sm, "m", artifacts["logistic"])
        sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[variant("AllTraffic", "m")])
        sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
        wait_status(sm, "ep")
        cw.put_metric_alarm(
            AlarmName="guard",
            MetricName="Invocation5XXErrors",
            Namespace="AWS/SageMaker",
            Statistic="Sum",
            Period=60,
            EvaluationPeriods=1,
            Threshold=1.0,
            ComparisonOperator="GreaterThanThreshold",
        )
        runtime = host.client("sagemaker-runtime")
        runtime.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=first_row())
        before = _invocations(host)
        assert before == 1
        row = first_row()
        page = (
            "<!doctype html><html><body><script>"
            f"const base = '{host.url}';"
            "const sent = [];"
            "for (let i = 0; i < 20; i++) {"
            f"  sent.push(fetch(base + '/endpoints/ep/invocations', {{method: 'POST', mode: 'no-cors',"
            f"    headers: {{'Content-Type': 'text/plain'}}, body: '{row}'}}));"
            "}"
            "sent.push(fetch(base + '/service/GraniteServiceVersion20100801/operation/SetAlarmState',"
            "  {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'},"
            "   body: 'x'}));"
            "sent.push(fetch(base + '/', {method: 'POST', mode: 'no-cors', headers: {'Content-Type':"
            "  'text/plain'}, body: '{\"EndpointName\": \"ep\"}'}));"
            "Promise.allSettled(sent).then(() => { document.title = 'sent'; });"
            "</script></body></html>"
        ).encode()
        driver = browser()
        try:
            with page_elsewhere(page) as url:
                driver.get(url)
                deadline = time.monotonic() + 30
                while driver.title != "sent":
                    assert time.monotonic() < deadline, "the page never finished sending"
                    time.sleep(0.05)
        finally:
            driver.quit()
        assert _invocations(host) == before, "no invocation from the page was answered"
        [alarm] = cw.describe_alarms(AlarmNames=["guard"])["MetricAlarms"]
        assert alarm["StateValue"] != "ALARM"
        assert sm.describe_endpoint(EndpointName="ep")["EndpointStatus"] == "InService"


@pytest.mark.parametrize("name", ["evil.example", "rebound.attacker.test:8080", "10.0.0.5"])
def test_a_host_name_it_does_not_serve_is_refused(tmp_path: Path, name: str) -> None:
    """DNS rebinding: a name the attacker controls, made to resolve to 127.0.0.1, reaches the port;
    the Host header still names the attacker's name."""
    with LocalSageMaker(tmp_path / "state") as host:
        request = urllib.request.Request(f"{host.url}/_local/health", headers={"Host": name})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == 403 and b"not one this local SageMaker serves" in caught.value.read()
        ok = urllib.request.urlopen(urllib.request.Request(f"{host.url}/_local/health"), timeout=10)
        assert ok.status == 200
    with LocalSageMaker(tmp_path / "other", allowed_hosts=(name.split(":")[0],)) as named:
        request = urllib.request.Request(f"{named.url}/_local/health", headers={"Host": name})
        assert urllib.request.urlopen(request, timeout=10).status == 200, "a name it was told to serve"
