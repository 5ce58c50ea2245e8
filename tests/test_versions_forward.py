"""Issue 31, items 3 and 4, through the CLI on a local SageMaker: versions never go backwards silently,
`endpoints create` says which version it serves, and a forgotten endpoint's models are approved again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from manager.local_sagemaker import LocalSageMaker

from .conftest import Cli

POLICY = """
name: sugar
target:
  endpoint: sugar-prod
  candidate: {model: sugar, VERSION}
steps: [{setWeight: {percent: 10}}, {analysis: {}}]
metrics:
  - {name: 5xx, role: primary, source: cloudwatch, measure: errors_5xx, kind: errors, higherIsBetter: false,
     onNoData: pass}
decisions: {maxDuration: 5m}
"""


@pytest.fixture
def sugar(aws_env: LocalSageMaker, tmp_path: Path, artifacts: dict[str, Path]) -> Cli:
    """sugar:1 approved; sugar:2 rejected by the gate, then approved by a person; sugar:3 a candidate."""
    cli = Cli(tmp_path / "registry.db")
    assert cli("db", "upgrade").exit_code == 0
    for _ in range(3):
        artifact = f"--artifact={artifacts['ridge']}"
        registered = cli("models", "register", "sugar", artifact, "--framework=sklearn")
        assert registered.exit_code == 0, registered.output
    assert cli("models", "approve", "sugar:1", "--reason", "baseline").exit_code == 0
    assert cli("models", "reject", "sugar:2", "--reason", "the gate failed").exit_code == 0
    assert cli("models", "approve", "sugar:2", "--reason", "looked again").exit_code == 0
    return cli


def _policy(tmp_path: Path, version: str) -> str:
    path = tmp_path / f"policy-{version.replace(' ', '').replace(':', '-')}.yaml"
    path.write_text(POLICY.replace("VERSION", version))
    return str(path)


def _status(cli: Cli, ref: str) -> str:
    shown = cli("models", "show", ref, "-o", "json")
    assert shown.exit_code == 0, shown.output
    return str(json.loads(shown.stdout)["status"])


def test_a_bare_name_serves_the_newest_approved_version_and_says_which(sugar: Cli) -> None:
    created = sugar("endpoints", "create", "sugar-prod", "--model", "sugar")
    assert created.exit_code == 0, created.output
    # sugar:3 is newer but only a candidate; sugar:2 is the newest approved
    assert "serving sugar:2 (config" in created.stdout
    assert _status(sugar, "sugar:2") == "serving" and _status(sugar, "sugar:3") == "candidate"


def test_newest_approved_never_goes_backwards(sugar: Cli, tmp_path: Path) -> None:
    assert sugar("endpoints", "create", "sugar-prod", "--model", "sugar:2").exit_code == 0
    refused = sugar("rollout", "start", "--policy", _policy(tmp_path, "newestApproved: true"))
    assert refused.exit_code == 2
    assert refused.stderr == (
        "error: no approved version of sugar is newer than sugar:2, which serves now; the newest approved is "
        "sugar:1: name it (candidate: {model: sugar, version: 1}) to go back to it on purpose\n"
    )
    assert sugar("rollout", "list", "--all", "-o", "json").stdout.strip() == "[]"
    planned = sugar("rollout", "plan", _policy(tmp_path, "newestApproved: true"))
    assert planned.exit_code == 2 and "no approved version of sugar is newer than sugar:2" in planned.stderr

    # named on purpose, it starts, and says so on the terminal and in the history
    started = sugar("rollout", "start", "--policy", _policy(tmp_path, "version: 1"))
    assert started.exit_code == 0, started.output
    assert "rollout 1 started: sugar:1 beside sugar:2" in started.stdout
    assert "note: sugar:1 is older than sugar:2, which it would replace" in started.stderr
    events = json.loads(sugar("history", "--action", "rollout.start", "-o", "json").stdout)
    assert [e["payload"]["older_than_baseline"] for e in events] == [True]


def test_newest_approved_takes_a_newer_version_over_an_older_one(sugar: Cli, tmp_path: Path) -> None:
    assert sugar("endpoints", "create", "sugar-prod", "--model", "sugar:1").exit_code == 0
    started = sugar("rollout", "start", "--policy", _policy(tmp_path, "newestApproved: true"))
    assert started.exit_code == 0, started.output
    assert "rollout 1 started: sugar:2 beside sugar:1" in started.stdout and "note:" not in started.stderr


def test_forgetting_an_endpoint_approves_its_models_again(sugar: Cli, tmp_path: Path) -> None:
    assert sugar("endpoints", "create", "sugar-prod", "--model", "sugar:2").exit_code == 0
    assert sugar("endpoints", "create", "other-prod", "--model", "sugar:1").exit_code == 0
    refused = sugar("models", "approve", "sugar:2", "--reason", "by hand")
    assert refused.exit_code == 2 and "sugar:2 is serving; it cannot be approved now" in refused.stderr

    forgot = sugar("endpoints", "forget", "sugar-prod", "--reason", "start over", "--delete-endpoint")
    assert forgot.exit_code == 0, forgot.output
    assert _status(sugar, "sugar:2") == "approved"  # it served only sugar-prod
    assert _status(sugar, "sugar:1") == "serving"  # other-prod still serves it
    moved = json.loads(sugar("history", "--model", "sugar", "--action", "model.status", "-o", "json").stdout)
    assert moved[0]["reason"] == "sugar-prod was forgotten; it serves no managed endpoint"

    # and it can serve again, with nothing guessed: the bare name finds it
    again = sugar("endpoints", "create", "sugar-prod", "--model", "sugar")
    assert again.exit_code == 0, again.output
    assert "serving sugar:2" in again.stdout
    assert sugar("audit", "verify").exit_code == 0
