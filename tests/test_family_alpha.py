"""`decisions.familyAlpha`: the chance that any acting metric wrongly decides an A/A, split over the
metrics (Bonferroni), refused beside a metric's own alpha, stated by `policy validate` and `simulate`,
and held by the decisions themselves (an A/A simulated through `decide`)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from manager import policy as policies
from manager.cli.main import cli
from manager.config.yamlfile import ConfigError
from manager.policy.family import family_error
from manager.rollout.simulate import Scenario, Streams, simulate

BENCHMARK = (Path(__file__).resolve().parent.parent / "examples" / "policies" / "benchmark.yaml").read_text()
# The benchmark policy with the family's alpha instead of each metric's own
FAMILY = re.sub(r",\s*alpha: 0\.05", "", BENCHMARK).replace(
    "plannedSamples: 5000}", "plannedSamples: 5000, familyAlpha: 0.05}"
)


def test_the_family_alpha_is_split_over_the_acting_metrics_only() -> None:
    policy = policies.parse(FAMILY)
    assert [m.alpha for m in policy.metrics] == pytest.approx([0.05 / 3] * 3)
    with_dry_run = FAMILY.replace("minSamples: 20000}", "minSamples: 20000, dryRun: true}", 1)
    policy = policies.parse(with_dry_run)
    alphas = {m.name: m.alpha for m in policy.metrics}
    # a dry run keeps its own
    assert alphas == pytest.approx({"accuracy": 0.025, "latency": 0.05, "5xx": 0.025})
    family = family_error(policy)
    assert family.false_rollback == pytest.approx(0.05) and family.false_promotion == pytest.approx(0.025)


def test_without_it_the_family_error_is_the_sum_and_is_said_so() -> None:
    family = family_error(policies.parse(BENCHMARK))
    assert family.false_rollback == pytest.approx(0.15) and family.family_alpha is None
    assert "set decisions.familyAlpha" in family.lines()[0]
    # a sample-ratio mismatch that rolls back may also roll back a good candidate, at its own alpha
    rolls_back = BENCHMARK.replace("decisions: {", "decisions: {onSampleRatioMismatch: rollback, ")
    assert family_error(policies.parse(rolls_back)).false_rollback == pytest.approx(0.151)


def test_a_metric_alpha_beside_the_family_alpha_is_refused() -> None:
    both = FAMILY.replace("minSamples: 100}", "minSamples: 100, alpha: 0.04}")
    with pytest.raises(ConfigError, match="metric accuracy also sets its own `alpha`"):
        policies.parse(both)
    with pytest.raises(ConfigError, match="familyAlpha"):
        policies.parse(FAMILY.replace("familyAlpha: 0.05", "familyAlpha: 0.7"))


def test_policy_validate_states_the_family_wise_rates(tmp_path: Path) -> None:
    for text, expected in ((BENCHMARK, "at most 0.15"), (FAMILY, "at most 0.05 (familyAlpha 0.05 split")):
        path = tmp_path / "p.yaml"
        path.write_text(text)
        result = CliRunner().invoke(cli, ["policy", "validate", str(path)])
        assert result.exit_code == 0, result.output
        assert f"family-wise false rollback of an A/A candidate: {expected}" in result.stdout


# The A/A: accuracy at 70%, a look every 50 requests per arm, capped at 20,000 per arm. Its
# wrong decisions under the three metrics' own alphas were 6.8% (over the 5% an operator reads).
AA = Scenario("aa-70", "proportion", 0.70)
STREAMS = Streams(check_every=50, max_per_arm=20_000)


@pytest.mark.slow
def test_the_family_alpha_holds_for_the_whole_policy_on_an_a_a() -> None:
    runs = 1000
    summary = simulate(FAMILY, AA, STREAMS, runs, seed=5)
    wrong = summary.rollback + summary.promote
    assert wrong <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs), summary
    unsplit = simulate(BENCHMARK, AA, STREAMS, runs, seed=5)
    assert unsplit.rollback + unsplit.promote > wrong  # the same runs, each metric at 0.05: more of them


def test_simulate_states_the_bound_beside_what_it_measured(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(FAMILY)
    args = ["simulate", "--policy", str(path), "--kind", "proportion", "--baseline", "0.7"]
    result = CliRunner().invoke(cli, [*args, "--runs", "40", "--max-per-arm", "2000", "-o", "json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["family_alpha"] == 0.05 and shown["family_false_rollback_bound"] == pytest.approx(0.05)
    assert shown["p_false_promotion"] == shown["p_promote"]  # margin 0: an A/A promoted is a false promotion
    table = CliRunner().invoke(cli, [*args, "--runs", "40", "--max-per-arm", "2000"])
    assert "family-wise error" in table.stdout and "measured" in table.stdout
