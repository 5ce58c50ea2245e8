"""The one policy validator: what it refuses, and how the YAML under it is read safely."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from manager import policy
from manager.config.yamlfile import MAX_BYTES, ConfigError

BASE = """
name: p
target:
  endpoint: churn-prod
  candidate: {model: churn, newestApproved: true}
  captureDestination: s3://b/capture
  groundTruth: s3://b/labels
stepWeights: [10, 50]
metrics:
  - {name: accuracy, source: quality, measure: accuracy, kind: proportion, higherIsBetter: true,
     role: primary}
  - {name: 5xx, source: cloudwatch, measure: errors_5xx, kind: errors, higherIsBetter: false}
"""
MAE = "  - {{name: mae, source: quality, measure: abs_error, kind: {kind}, higherIsBetter: {higher}}}\n"
GUARDRAIL = "  - {name: 5xx, source: cloudwatch, measure: errors_5xx, kind: errors, higherIsBetter: false}\n"


def test_the_base_policy_is_valid() -> None:
    parsed = policy.parse(BASE)
    assert parsed.primary is not None and parsed.primary.name == "accuracy"


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda t: t.split("metrics:")[0] + "metrics: []\n", "exactly one metric `role: primary`"),
        (lambda t: t.replace("     role: primary}", "     role: guardrail}"), "this policy has 0"),
        (
            lambda t: t.replace(
                "kind: errors, higherIsBetter: false}", "kind: errors, higherIsBetter: false, role: primary}"
            ),
            "this policy has 2",
        ),
        (lambda t: t.replace("role: primary}", "role: primary, dryRun: true}"), "cannot be a dry run"),
        (lambda t: t.replace("measure: accuracy", "measure: acuracy"), "not 'acuracy'"),
        (
            lambda t: t.replace("measure: errors_5xx, kind: errors", "measure: errors_5xx, kind: mean"),
            "measure errors_5xx is a count of 5xx answers (fewer is better): it takes `kind: errors`",
        ),
        (lambda t: t.replace("  groundTruth: s3://b/labels\n", ""), "quality metrics need"),
        (lambda t: t.replace("  captureDestination: s3://b/capture\n", ""), "quality metrics need"),
        (lambda t: t + "decisions: {maxDuration: 99999999999999d}\n", "maxDuration"),
        (lambda t: t + "decisions: {maxSamples: 1e20}\n", "maxSamples"),
        (lambda t: t + "decisions: {promotion: {mode: blueGreen}}\n", "needs its `blueGreen` settings"),
        (
            lambda t: (
                t + "decisions: {promotion: {mode: blueGreen, blueGreen: {routing: CANARY, "
                "sizePercent: 80}}}\n"
            ),
            "at most 50 percent",
        ),
        (
            lambda t: t + "decisions: {promotion: {mode: blueGreen, blueGreen: {routing: LINEAR}}}\n",
            "needs `sizePercent`",
        ),
        (
            lambda t: (
                t
                + "decisions: {promotion: {mode: blueGreen, blueGreen: {alarms: [a,b,c,d,e,f,g,h,i,j,k]}}}\n"
            ),
            "alarms",
        ),
        (
            lambda t: t.replace(
                "  endpoint: churn-prod\n",
                "  endpoint: churn-prod\n  baselineVariant: same\n  candidateVariant: same\n",
            ),
            "must differ",
        ),
        (lambda t: t + "name: again\n", "given twice"),
        (lambda t: t + GUARDRAIL, "metric names must differ"),
        (
            lambda t: (
                t
                + "  - {name: mae, source: quality, measure: abs_error, kind: mean, higherIsBetter: false}\n"
            ),
            "a classifier (accuracy) or a regressor",
        ),
        (
            lambda t: t + "webhooks:\n  - {name: gate, type: pre-rollout, url: 'ftp://ci/x'}\n",
            "is not an http(s) URL",
        ),
        (
            lambda t: (
                t
                + "webhooks:\n  - {name: gate, type: confirm-promotion, url: 'https://ci/x', format: slack}\n"
            ),
            "`format`, `events` and `template` are for events",
        ),
        (
            lambda t: t + "webhooks:\n  - {name: a, url: 'https://x/1'}\n  - {name: a, url: 'https://x/2'}\n",
            "webhook names must differ",
        ),
        (  # issue 31, item 1: a regression's error pointing up would promote the worse model
            lambda t: t.replace("metrics:\n", "metrics:\n" + MAE.format(kind="mean", higher="true")),
            "measure abs_error is a regression's absolute error per request (lower is better): it takes "
            "`kind: mean`, `higherIsBetter: false`, not `kind: mean`, `higherIsBetter: true`",
        ),
        (
            lambda t: t.replace("metrics:\n", "metrics:\n" + MAE.format(kind="proportion", higher="true")),
            "it takes `kind: mean`, `higherIsBetter: false`, not `kind: proportion`",
        ),
    ],
    ids=[
        "no-metrics",
        "no-primary",
        "two-primaries",
        "dry-run-primary",
        "misspelt-measure",
        "errors-kind-mismatch",
        "quality-without-labels",
        "quality-without-capture",
        "huge-duration",
        "huge-count",
        "blue-green-without-settings",
        "blue-green-canary-80",
        "linear-without-size",
        "eleven-alarms",
        "equal-variant-names",
        "duplicate-key",
        "duplicate-metric",
        "classifier-and-regressor",
        "webhook-not-http",
        "gate-in-slack-format",
        "duplicate-webhook",
        "regression-error-pointing-up",
        "regression-error-as-proportion",
    ],
)
def test_a_policy_that_cannot_mean_anything_is_refused(edit: object, message: str) -> None:
    text = edit(BASE)  # type: ignore[operator]
    with pytest.raises(ConfigError) as caught:
        policy.parse(text)
    assert message in str(caught.value), str(caught.value)


def test_an_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 2048
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than"):
        policy.load(bomb)
    # a generous bound, to tell "refused before expanding" from "expanded for minutes"
    assert time.perf_counter() - started < 30


def test_anchors_within_the_limit_still_work() -> None:
    text = BASE.replace("  - {name: 5xx, source: cloudwatch,", "  - &guard {name: 5xx, source: cloudwatch,")
    assert policy.parse(text).metrics[1].name == "5xx"


@pytest.mark.parametrize(
    "content,message",
    [
        (b"name: \xff\n", "not UTF-8 text"),
        (b"[" * 20_000 + b"]" * 20_000, "nested too deeply"),
        (b"# padding\n" * (MAX_BYTES // 10 + 1), "larger than"),
        (b"- just\n- a list\n", "expected a mapping"),
        (b"name: [unclosed\n", "not valid YAML"),
    ],
    ids=["not-utf8", "deep-nesting", "too-large", "not-a-mapping", "broken-yaml"],
)
def test_a_file_that_is_not_a_policy_gets_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        policy.load(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_misspelt_key_gets_the_nearest_setting() -> None:
    """Issue 31, item 7: `setWieght: Extra inputs are not permitted` said nothing of `setWeight`."""
    with pytest.raises(ConfigError) as caught:
        policy.parse(BASE.replace("stepWeights: [10, 50]", "steps: [{setWieght: {percent: 10}}]"))
    assert "setWieght: not a setting here; did you mean 'setWeight'?" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        policy.parse(BASE + "zzzqqq: 1\n")
    assert "zzzqqq: not a setting here" in str(caught.value) and "did you mean" not in str(caught.value)
