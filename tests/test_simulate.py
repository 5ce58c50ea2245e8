"""`simulate`, seeded and fast: the A/A bound and the direction of every scenario, through `decide`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from manager.cli.main import cli
from manager.simulate import SCENARIOS, Streams, simulate

POLICY = (Path(__file__).resolve().parent.parent / "examples" / "policies" / "benchmark.yaml").read_text()
RUNS = 2000


# The A/A scenarios run until the maximum sample (nothing to find): the longest runs by far.
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith("aa-") else n for n in sorted(SCENARIOS)]
)
def test_every_scenario_goes_the_right_way(name: str) -> None:
    scenario = SCENARIOS[name]
    runs = RUNS if scenario.truth == "same" else 500  # the A/A bound needs the runs; a direction does not
    summary = simulate(POLICY, scenario, Streams(), runs, seed=7)
    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs)
    if scenario.truth == "same":
        assert summary.wrong <= bound, f"{name}: {summary.wrong:.3f} false decisions"
    else:
        assert summary.correct >= 0.95 and summary.wrong <= 0.01, summary
        assert summary.exposure > 0


def test_runs_are_reproducible_and_seeds_matter() -> None:
    scenario = SCENARIOS["accuracy-2pp"]
    first = simulate(POLICY, scenario, Streams(), 200, seed=1, processes=1)
    assert simulate(POLICY, scenario, Streams(), 200, seed=1, processes=2) == first
    assert simulate(POLICY, scenario, Streams(), 200, seed=2, processes=1) != first


def test_label_delay_costs_time_not_correctness() -> None:
    scenario = SCENARIOS["accuracy-5pp"]
    prompt = simulate(POLICY, scenario, Streams(), 300, seed=3)
    late = simulate(POLICY, scenario, Streams(label_delay_minutes=5), 300, seed=3)
    assert late.correct >= 0.99 and late.median_minutes > prompt.median_minutes + 4
    assert late.exposure > prompt.exposure  # the worse model serves while labels are on their way


def test_cli_json_and_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    result = CliRunner().invoke(
        cli, ["simulate", "--policy", str(path), "--scenario", "accuracy-5pp", "--runs", "100", "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["p_rollback"] == 1.0 and figures["median_samples_per_arm"] > 0
    custom = CliRunner().invoke(
        cli,
        [
            "simulate",
            "--policy",
            str(path),
            "--kind",
            "proportion",
            "--baseline",
            "0.9",
            "--effect",
            "-0.1",
            "--runs",
            "50",
            "-o",
            "json",
        ],
    )
    assert custom.exit_code == 0 and json.loads(custom.stdout)["p_rollback"] == 1.0
    missing = CliRunner().invoke(cli, ["simulate", "--policy", str(path), "--runs", "50"])
    assert missing.exit_code == 2 and "give --scenario" in missing.stderr
