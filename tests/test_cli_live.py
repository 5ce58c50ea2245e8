"""`variantctl endpoints status`: the live endpoint, through boto3, waiting with a timeout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from manager.cli.main import cli
from manager.local_sagemaker import LocalSageMaker

from .local_sagemaker_support import create_model, variant, wait_status


def test_status_waits_for_in_service(aws_env: LocalSageMaker, artifacts: dict[str, Path]) -> None:
    sm = aws_env.client("sagemaker")
    create_model(sm, "m", artifacts["logistic"])
    sm.create_endpoint_config(
        EndpointConfigName="c", ProductionVariants=[variant("A", "m", 3), variant("B", "m")]
    )
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    result = CliRunner().invoke(cli, ["endpoints", "status", "ep", "--wait", "--poll", "0.05", "-o", "json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["status"], shown["config"]) == ("InService", "c")
    assert shown["variants"] == {"A": "weight 3 (75.0%)", "B": "weight 1 (25.0%)"}


def test_status_times_out_with_exit_1(aws_env: LocalSageMaker, artifacts: dict[str, Path]) -> None:
    sm = aws_env.client("sagemaker")
    create_model(sm, "m", artifacts["logistic"])
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[variant("A", "m")])
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    wait_status(sm, "ep")
    aws_env.control.delay = 60.0  # the next change takes a minute
    sm.update_endpoint_weights_and_capacities(
        EndpointName="ep", DesiredWeightsAndCapacities=[{"VariantName": "A", "DesiredWeight": 2}]
    )
    result = CliRunner().invoke(
        cli, ["endpoints", "status", "ep", "--wait", "--timeout", "0.3", "--poll", "0.05"]
    )
    assert result.exit_code == 1
    assert "still Updating after 0.3 s" in result.stderr


def test_status_of_a_missing_endpoint(aws_env: LocalSageMaker) -> None:
    result = CliRunner().invoke(cli, ["endpoints", "status", "ghost"])
    assert result.exit_code == 2 and result.stderr.startswith("error: SageMaker has no endpoint 'ghost'")


def test_status_without_a_region_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    result = CliRunner().invoke(cli, ["endpoints", "status", "ep"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: AWS: You must specify a region")
