"""Latency as a distribution (issue 32): a `kind: quantile` guardrail counts each variant's requests over a
threshold fixed at the start (the baseline's percentile over the hour before it, times 1 + margin) with
CloudWatch's percentile rank statistic, and the conditional-binomial e-value asks whether the
candidate's are more frequent. A/A false alarms stay under alpha whatever the looks; a candidate 10%
slower at p90 is caught; one whose mean is 10% higher with its p90 unchanged is not flagged."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from manager import policy as policies
from manager.cli.main import cli
from manager.config.yamlfile import ConfigError
from manager.history import audit
from manager.local_sagemaker import LocalSageMaker
from manager.local_sagemaker.runtime import EXTRA_LATENCY_MS
from manager.metrics.cloudwatch import CloudWatchSource
from manager.names import model_name
from manager.platforms.base import ModelSpec
from manager.platforms.sagemaker import SageMakerPlatform
from manager.rollout import thresholds
from manager.rollout.simulate import SCENARIOS, Streams, simulate

from .rollout_support import CANARY, ENDPOINT, make_world, policy_text

LATENCY = (
    Path(__file__).resolve().parent.parent / "examples" / "policies" / "benchmark-latency.yaml"
).read_text()
P90 = """  - {name: p90, source: cloudwatch, measure: model_latency_ms, kind: quantile, quantile: 90,
     higherIsBetter: false, test: {margin: 0.1}, minSamples: 20}
"""


def test_the_local_cloudwatch_answers_percentile_rank_as_aws_defines_it(tmp_path: Path) -> None:
    with LocalSageMaker(tmp_path / "sm", metric_bucket_seconds=1) as host:
        cloudwatch = host.client("cloudwatch")
        now = datetime.now(UTC).replace(microsecond=0)
        data = [{"MetricName": "L", "Value": float(v), "Timestamp": now} for v in range(1, 101)]
        for i in range(0, 100, 20):
            cloudwatch.put_metric_data(Namespace="App", MetricData=data[i : i + 20])

        def stat(name: str) -> float:
            query = {
                "Id": "q",
                "MetricStat": {"Metric": {"Namespace": "App", "MetricName": "L"}, "Period": 60, "Stat": name},
            }
            got = cloudwatch.get_metric_data(
                MetricDataQueries=[query],
                StartTime=now - timedelta(minutes=2),
                EndTime=now + timedelta(minutes=2),
            )["MetricDataResults"][0]["Values"]
            return float(got[0])

        assert stat("PR(:90)") == 90.0  # values at most 90 (the upper bound is inclusive)
        assert stat("PR(10:20)") == 10.0  # 11..20 (the lower bound is not)
        assert stat("PR(95:)") == 5.0
        with pytest.raises(cloudwatch.exceptions.ClientError, match="PR\\(low:high\\)"):
            stat("PR(:)")


@pytest.mark.parametrize(
    "metric,message",
    [
        (P90.replace("model_latency_ms", "errors_5xx"), "reads CloudWatch's latency"),
        (P90.replace(" quantile: 90,", ""), "with its `quantile`"),
        (P90.replace("higherIsBetter: false", "higherIsBetter: true"), "higherIsBetter: false"),
        (P90.replace("kind: quantile", "kind: mean"), "belong to a `kind: quantile` metric"),
    ],
)
def test_a_quantile_guardrail_is_a_latency_guardrail(metric: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        policies.parse(policy_text(CANARY).replace("decisions:", metric + "decisions:"))


@pytest.mark.slow
def test_a_a_holds_alpha_a_slower_p90_is_caught_and_a_longer_tail_alone_is_not() -> None:
    runs, streams = 600, Streams(check_every=100, max_per_arm=20_000)
    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs)
    aa = simulate(LATENCY, SCENARIOS["aa-p90"], streams, runs, seed=1)
    assert aa.rollback <= bound, aa
    slower = simulate(LATENCY, SCENARIOS["p90+10%"], streams, runs, seed=2)
    assert slower.rollback >= 0.9 and slower.median_per_arm < 5000, slower
    tail = simulate(LATENCY, SCENARIOS["mean+10%-p90-same"], streams, runs, seed=3)
    assert tail.truth == "same" and tail.rollback <= bound, tail


def test_simulate_names_the_latency_scenarios(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(LATENCY)
    shown = CliRunner().invoke(
        cli,
        [
            "simulate",
            "--policy",
            str(path),
            "--scenario",
            "p90+10%",
            "--runs",
            "40",
            "--max-per-arm",
            "5000",
            "-o",
            "json",
        ],
    )
    assert shown.exit_code == 0, shown.output
    assert '"metric": "p90"' in shown.stdout and '"truth": "worse"' in shown.stdout


class SlowCandidate(SageMakerPlatform):
    """The candidate's SageMaker model is told to take 20 ms longer per request (the host's knob)."""

    def ensure_model(self, spec: ModelSpec) -> None:
        if spec.name == model_name("churn", 2):
            spec = replace(spec, environment={**spec.environment, EXTRA_LATENCY_MS: "20"})
        super().ensure_model(spec)


def test_a_slower_candidate_is_rolled_back_on_its_p90(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    with make_world(tmp_path, artifacts) as world, world.traffic():
        world.platform = SlowCandidate(world.host.client("sagemaker"), world.host.client("sagemaker-runtime"))
        source = CloudWatchSource(world.host.client("cloudwatch"), lag=timedelta(seconds=1), period=1)
        deadline = time.monotonic() + 30
        while (
            source.baseline_quantile(ENDPOINT, "baseline", "model_latency_ms", 90, datetime.now(UTC)) is None
        ):
            assert time.monotonic() < deadline, "the baseline's latency never reached CloudWatch"
            time.sleep(0.1)
        rollout_id = world.start(policy_text(CANARY).replace("decisions:", P90 + "decisions:"))
        row = world.tick_until(rollout_id, ("rolled_back", "promoted"), timeout=90)
    assert row.state == "rolled_back" and "p90" in (row.reason or ""), row.reason
    fixed = audit.history(world.database, audit.HistoryFilter(action=thresholds.EVENT, limit=None))
    assert len(fixed) == 1 and "the baseline's p90" in (fixed[0].reason or "")
    entry: dict[str, Any] = json.loads(fixed[0].payload)["thresholds"]["p90"]
    assert entry["threshold_ms"] == pytest.approx(entry["baseline_ms"] * 1.1)
    assert entry["threshold_ms"] < 20  # the baseline is fast; the candidate takes 20 ms more
