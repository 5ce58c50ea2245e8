"""`adjust: prePeriodModel`: regression-adjusted confidence sequences with a covariate fitted before the
start. The adjusted test is the unadjusted one when there is nothing to adjust by; it holds its alpha
on an A/A and needs fewer labels when the covariate explains the outcome; a covariate fitted on the
rollout's own requests is refused, and the bias it would bring is measured here."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from manager import policy as policies
from manager.cli.main import cli
from manager.config.yamlfile import ConfigError
from manager.metrics import covariate
from manager.metrics.samples import Arm, PhaseData
from manager.rollout.judge import judge
from manager.rollout.simulate import Scenario, Streams, simulate
from manager.stats.adjusted import MIN_ADJUSTED, adjusted_sequence
from manager.stats.sequences import difference_sequence

ADJUSTED = Path(__file__).resolve().parent.parent / "examples" / "policies" / "benchmark-adjusted.yaml"
TEXT = ADJUSTED.read_text()
START = datetime(2026, 12, 1, tzinfo=UTC)


def _arm(y: np.ndarray, x: np.ndarray) -> Arm:
    return Arm(
        len(y), float(y.sum()), float((y * y).sum()), float(x.sum()), float((x * x).sum()), float(x @ y)
    )


def test_without_a_covariate_or_below_the_minimum_it_is_the_unadjusted_test() -> None:
    rng = np.random.default_rng(1)
    y_b, y_c = rng.binomial(1, 0.85, 500).astype(float), rng.binomial(1, 0.8, 500).astype(float)
    plain = difference_sequence(_arm(y_b, y_b * 0), _arm(y_c, y_c * 0), 0.05, 5000, True)
    same, adjustment = adjusted_sequence(_arm(y_b, y_b * 0), _arm(y_c, y_c * 0), 0.05, 5000, True)
    assert adjustment is None and same == plain  # x never varies: nothing to adjust by
    few = MIN_ADJUSTED - 1
    x = rng.normal(size=500)
    small = adjusted_sequence(_arm(y_b[:few], x[:few]), _arm(y_c[:few], x[:few]), 0.05, 5000, True)
    assert small[1] is None
    assert small[0] == difference_sequence(
        _arm(y_b[:few], x[:few]), _arm(y_c[:few], x[:few]), 0.05, 5000, True
    )


def test_a_correlated_covariate_narrows_the_interval_and_the_evidence_says_by_how_much() -> None:
    rng = np.random.default_rng(2)
    x_b, x_c = rng.normal(size=4000), rng.normal(size=4000)
    y_b = (0.9 * x_b + 0.45 * rng.normal(size=4000) > -1.0).astype(float)
    y_c = (0.9 * x_c + 0.45 * rng.normal(size=4000) > -0.9).astype(float)
    base, cand = _arm(y_b, x_b), _arm(y_c, x_c)
    adjusted, adjustment = adjusted_sequence(base, cand, 0.05, 5000, True)
    plain = difference_sequence(base, cand, 0.05, 5000, True)
    assert adjustment is not None and adjustment.explained > 0.3
    assert adjusted.high - adjusted.low < 0.85 * (plain.high - plain.low)
    metric = policies.parse(TEXT).metrics[0]
    verdict = judge(metric, [PhaseData(1, base, cand)], 1, policies.parse(TEXT), harm_only=False)
    assert verdict.evidence["adjusted"] is True
    assert verdict.evidence["variance_explained"] == pytest.approx(adjustment.explained)
    assert verdict.evidence["improvement_high"] == pytest.approx(adjusted.high)
    assert verdict.evidence["unadjusted_improvement_high"] == pytest.approx(plain.high)


def test_only_a_sequential_quality_metric_may_be_adjusted() -> None:
    latency = TEXT.replace(
        "metrics:\n",
        "metrics:\n  - {name: latency, source: cloudwatch, measure: model_latency_ms,"
        " kind: mean, higherIsBetter: false, adjust: prePeriodModel}\n",
    )
    with pytest.raises(ConfigError, match="sharpens a sequential test of a quality metric"):
        policies.parse(latency)


@pytest.mark.slow
def test_adjusted_a_a_holds_alpha_and_a_real_difference_needs_fewer_labels() -> None:
    runs, streams = 1000, Streams(check_every=100, max_per_arm=20_000)
    aa = simulate(TEXT, Scenario("aa", "proportion", 0.85, rho=0.6), streams, runs, seed=3)
    assert aa.wrong <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs), aa
    worse = Scenario("worse", "proportion", 0.85, -0.02, rho=0.6)
    adjusted = simulate(TEXT, worse, streams, 500, seed=4)
    plain = simulate(TEXT.replace(", adjust: prePeriodModel", ""), worse, streams, 500, seed=4)
    assert adjusted.correct >= 0.99 and plain.correct >= 0.99
    assert adjusted.median_per_arm <= 0.75 * plain.median_per_arm, (adjusted, plain)


def test_simulate_shows_labels_with_and_without_the_adjustment(tmp_path: Path) -> None:
    args = [
        "simulate",
        "--policy",
        str(ADJUSTED),
        "--kind",
        "proportion",
        "--baseline",
        "0.85",
        "--effect",
        "-0.05",
    ]
    missing = CliRunner().invoke(cli, [*args, "--runs", "20"])
    assert missing.exit_code == 2 and "give --rho" in missing.stderr
    beyond = CliRunner().invoke(cli, [*args, "--runs", "20", "--rho", "0.9"])
    assert beyond.exit_code == 2 and "at most 0.65" in beyond.stderr
    shown = CliRunner().invoke(cli, [*args, "--runs", "60", "--rho", "0.6", "-o", "json"])
    assert shown.exit_code == 0, shown.output
    record = json.loads(shown.stdout)
    assert record["unadjusted"]["rho"] == 0.6 and record["unadjusted"]["median_ratio"] < 1
    table = CliRunner().invoke(cli, [*args, "--runs", "60", "--rho", "0.6"])
    assert "samples per arm without adjust" in table.stdout


def _history(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    features = rng.normal(size=(n, 5))
    score = features @ np.array([1.0, 0.5, 0.0, 0.0, 0.0]) / math.sqrt(1.25)
    return features, (0.9 * score + 0.45 * rng.normal(size=n) > -1.03 + shift).astype(float)


def test_a_covariate_fitted_on_post_start_data_is_refused_and_would_bias_the_estimate() -> None:
    rng = np.random.default_rng(5)
    features, outcomes = _history(rng, 400, 0.0)
    served = [START + timedelta(seconds=i - 398) for i in range(400)]  # the last two at or after the start
    with pytest.raises(covariate.PostStartData, match="2 of 400 history rows were served at or after"):
        covariate.fit(features, outcomes, served, START, "correct")
    fitted = covariate.fit(features[:398], outcomes[:398], served[:398], START, "correct")
    assert fitted.rows == 398 and len(fitted.fingerprint) == 64 and fitted.last_served < START
    # Why: a candidate 5 points worse. Fitted on the baseline's history before the start, the covariate
    # leaves the estimate where it is; refitted on the rollout's own labelled requests (both arms),
    # it has seen their outcomes, follows the arms, and pulls the estimate towards no difference.
    before, after = [], []
    for seed in range(4):
        rng = np.random.default_rng(10 + seed)
        history, (x_b, y_b), (x_c, y_c) = (
            _history(rng, 4000, 0.0),
            _history(rng, 4000, 0.0),
            _history(rng, 4000, 0.18),
        )
        truth = y_c.mean() - y_b.mean()
        for fitted_on, out in (
            (history, before),
            ((np.vstack([x_b, x_c]), np.concatenate([y_b, y_c])), after),
        ):
            model = covariate.estimator(seed).fit(*fitted_on)
            base, cand = _arm(y_b, model.predict(x_b)), _arm(y_c, model.predict(x_c))
            out.append(adjusted_sequence(base, cand, 0.05, 5000, True)[0].estimate - truth)
    assert abs(np.mean(before)) < 0.006, before
    assert np.mean(after) > 0.008, after  # towards 0 from a difference of about -0.05
