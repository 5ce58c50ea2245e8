"""Issue 31: a policy's own CloudWatch metric (Flagger's custom metric queries): any namespace, metric
and dimensions, read per variant from the local SageMaker's CloudWatch (published here with boto3's
PutMetricData, as an application would), judged by the same sequential rules: a candidate whose
checkout errors are five times the baseline's is rolled back on it. Bad queries are refused."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from manager import policy as policies
from manager.cli.main import cli

from .rollout_support import CANARY, ENDPOINT, make_world, policy_text

CHECKOUT = """  - {name: checkout, source: cloudwatch, kind: mean, higherIsBetter: false, role: guardrail,
     test: {type: sequential, margin: 0.5}, minSamples: 3,
     query: {namespace: Shop, metric: CheckoutErrors, stat: Average}}
"""


def test_a_custom_metric_rolls_back_a_worse_candidate(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    with make_world(tmp_path, artifacts) as world, world.traffic():
        cloudwatch = world.host.client("cloudwatch")
        stop = threading.Event()
        rng = random.Random(7)

        def publish() -> None:  # the application's own metric, per variant, every 0.2 s
            while not stop.wait(0.2):
                data = [
                    {
                        "MetricName": "CheckoutErrors",
                        "Dimensions": [
                            {"Name": "EndpointName", "Value": ENDPOINT},
                            {"Name": "VariantName", "Value": variant},
                        ],
                        "Value": level + rng.gauss(0, 0.1),
                    }
                    for variant, level in (("baseline", 1.0), ("candidate", 5.0))
                ]
                cloudwatch.put_metric_data(Namespace="Shop", MetricData=data)

        worker = threading.Thread(target=publish, daemon=True)
        worker.start()
        try:
            text = policy_text(CANARY).replace("decisions:", CHECKOUT + "decisions:")
            rollout_id = world.start(text)
            row = world.tick_until(rollout_id, ("rolled_back", "promoted"), timeout=90)
        finally:
            stop.set()
            worker.join(timeout=5)
        assert row.state == "rolled_back", row.reason
        assert "checkout" in (row.reason or "")
        status = CliRunner().invoke(
            cli, ["--db", world.db, "rollout", "status", str(rollout_id), "-o", "json"]
        )
        assert "checkout" in status.stdout


@pytest.mark.parametrize(
    "query,message",
    [
        ("{namespace: Shop, metric: M, stat: Median}", "'Median' is not a CloudWatch statistic"),
        (
            "{namespace: Shop, metric: M, dimensions: {EndpointName: '{endpoint}'}}",
            "no dimension names the variant",
        ),
        (
            "{namespace: Shop, metric: M, dimensions: {V: '{model}'}}",
            "only {endpoint} and {variant} are filled in",
        ),
        ("{namespace: ':x', metric: M}", "namespace"),
    ],
)
def test_a_bad_query_is_refused_with_its_reason(query: str, message: str) -> None:
    text = policy_text(CANARY).replace(
        "decisions:",
        f"  - {{name: q, source: cloudwatch, kind: mean, higherIsBetter: false, query: {query}}}\ndecisions:",
    )
    with pytest.raises(Exception, match=message):
        policies.parse(text)


@pytest.mark.parametrize(
    "metric,message",
    [
        (
            "{name: q, source: quality, kind: mean, higherIsBetter: false, query: {namespace: S, metric: M}}",
            "source: cloudwatch",
        ),
        (
            "{name: q, source: cloudwatch, kind: proportion, higherIsBetter: true,"
            " query: {namespace: S, metric: M}}",
            "not a proportion",
        ),
        (
            "{name: q, source: cloudwatch, kind: mean, higherIsBetter: false}",
            "give a `measure`, or a CloudWatch `query`",
        ),
    ],
)
def test_a_custom_metric_must_be_judged_as_cloudwatch_data(metric: str, message: str) -> None:
    text = policy_text(CANARY).replace("decisions:", f"  - {metric}\ndecisions:")
    with pytest.raises(Exception, match=message):
        policies.parse(text)
