"""`simulate`, seeded and fast: the A/A bound and the direction of every scenario, through `decide`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from manager.cli.main import cli
from manager.rollout.simulate import SCENARIOS, Streams, simulate

POLICY = (Path(__file__).resolve().parent.parent / "examples" / "policies" / "benchmark.yaml").read_text()
LATENCY = (
    Path(__file__).resolve().parent.parent / "examples" / "policies" / "benchmark-latency.yaml"
).read_text()
# An A/A scenario's runs bound its false decisions at 5% + 3 standard errors (6.4% at 1,000 runs: the
# rate itself, to a tenth of a point, is benchmarks/decision_quality.py's, over 10,000 runs).
RUNS = 1000


# The A/A scenarios run until the maximum sample (nothing to find): the longest runs by far.
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith("aa-") else n for n in sorted(SCENARIOS)]
)
def test_every_scenario_goes_the_right_way(name: str) -> None:
    scenario = SCENARIOS[name]
    runs = RUNS if scenario.truth == "same" else 500  # the A/A bound needs the runs; a direction does not
    # the latency quantile scenarios need a quantile guardrail: benchmark-latency.yaml's
    policy = LATENCY if scenario.kind == "quantile" else POLICY
    summary = simulate(policy, scenario, Streams(), runs, seed=7)
    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs)
    # Every metric of the policy streams, as in the daemon: the scenario's metric carries the effect,
    # the others are A/A and may still reject at their own alpha. The scenario's metric is judged on
    # its own decisions; the others' false alarms are bounded by their alphas.
    own_wrong = summary.wrong - summary.rollback_by_others
    if scenario.truth == "same":
        assert own_wrong <= bound, f"{name}: {own_wrong:.3f} false decisions on its own metric"
    else:
        assert summary.correct + summary.rollback_by_others >= 0.95 and own_wrong <= 0.01, summary
        assert summary.exposure > 0
    assert summary.rollback_by_others <= 0.10 + 3 * math.sqrt(0.1 * 0.9 / runs)  # two A/A guardrails


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


def test_a_5xx_guardrail_rolls_back_a_5xx_scenario_as_the_daemon_would() -> None:
    """canary.yaml's primary is accuracy; its 5xx guardrail still acts, because every metric streams."""
    canary = (Path(__file__).resolve().parent.parent / "examples" / "policies" / "canary.yaml").read_text()
    summary = simulate(canary, SCENARIOS["5xx-0.5%-to-1.5%"], Streams(), 200, seed=11)
    assert summary.rollback >= 0.9 and summary.promote <= 0.01, summary
    assert summary.rollback_at_limit == 0.0


def test_a_dry_run_metric_is_simulated_and_said_so(tmp_path: Path) -> None:
    canary = Path(__file__).resolve().parent.parent / "examples" / "policies" / "canary.yaml"
    result = CliRunner().invoke(
        cli, ["simulate", "--policy", str(canary), "--scenario", "latency+5%", "--runs", "50", "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["metric"] == "latency" and shown["metric_is_dry_run"] is True
    assert any("dry run" in w for w in shown["warnings"])


PAIRED = Path(__file__).resolve().parent.parent / "examples" / "policies" / "benchmark-paired.yaml"


def test_paired_scenarios_decide_right_with_nobody_served_by_the_candidate() -> None:
    for effect, outcome in ((-0.05, "rollback"), (0.05, "promote")):
        result = CliRunner().invoke(
            cli,
            [
                "simulate",
                "--policy",
                str(PAIRED),
                "--kind",
                "proportion",
                "--baseline",
                "0.85",
                "--effect",
                str(effect),
                "--disagreement",
                "0.1",
                "--runs",
                "60",
                "--max-per-arm",
                "20000",
                "--processes",
                "1",
                "-o",
                "json",
            ],
        )
        assert result.exit_code == 0, result.output
        record = json.loads(result.output)
        assert record["design"] == "paired" and record["harm_exposure"] == 0
        assert record[f"p_{outcome}"] == 1.0
        # 5 points of accuracy on 10% disagreement: theta 0.75, a few hundred pairs
        assert record["median_samples_per_arm"] < 1000


def test_paired_simulation_refuses_what_it_cannot_simulate() -> None:
    policy = Path(__file__).resolve().parent.parent / "examples" / "policies" / "benchmark.yaml"
    for args, words in (
        (["--policy", str(policy), "--scenario", "accuracy-2pp", "--disagreement", "0.1"], "no replay step"),
        (["--policy", str(PAIRED), "--scenario", "accuracy-5pp", "--disagreement", "0.03"], "at least"),
        (["--policy", str(PAIRED), "--scenario", "aa-latency", "--disagreement", "0.1"], "no mean metric"),
    ):
        result = CliRunner().invoke(cli, ["simulate", *args, "--runs", "10"])
        assert result.exit_code == 2 and words in result.output, result.output
        assert "Traceback" not in result.output
