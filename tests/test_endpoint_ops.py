"""Issue 31: `endpoints set-weights` (an operator's weights, through UpdateEndpointWeightsAndCapacities
on the local SageMaker, recorded, verified, refused under a rollout) and `endpoints history` (what an
endpoint served, when, for how long, under which rollout)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from manager.cli.main import cli
from manager.db import Database
from manager.local_sagemaker import LocalSageMaker
from manager.registry.tables import Endpoint

from .conftest import Cli
from .local_sagemaker_support import create_model, variant, wait_status
from .rollout_support import CANARY, ENDPOINT, make_world, policy_text


@pytest.fixture
def two_variants(aws_env: LocalSageMaker, tmp_path: Path, artifacts: dict[str, Path]) -> Cli:
    """`ep` serving variants A and B (weights 1 and 1), made with boto3 and adopted."""
    sm = aws_env.client("sagemaker")
    create_model(sm, "m", artifacts["logistic"])
    sm.create_endpoint_config(
        EndpointConfigName="c", ProductionVariants=[variant("A", "m"), variant("B", "m")]
    )
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    wait_status(sm, "ep")
    run = Cli(tmp_path / "registry.db")
    assert run("db", "upgrade").exit_code == 0
    adopted = run("endpoints", "adopt", "ep")
    assert adopted.exit_code == 0, adopted.output
    return run


def _on_sagemaker(host: LocalSageMaker) -> dict[str, float]:
    described = host.client("sagemaker").describe_endpoint(EndpointName="ep")
    return {v["VariantName"]: v["CurrentWeight"] for v in described["ProductionVariants"]}


def test_an_operators_weights_are_set_recorded_and_verified(
    two_variants: Cli, aws_env: LocalSageMaker, tmp_path: Path
) -> None:
    done = two_variants("endpoints", "set-weights", "ep", "A=3", "B=1", "--reason", "drain B", actor="alice")
    assert done.exit_code == 0, done.output
    assert "endpoint ep serves A 75%, B 25%" in done.stdout
    assert _on_sagemaker(aws_env) == {"A": 3.0, "B": 1.0}
    shown = json.loads(two_variants("endpoints", "show", "ep", "-o", "json").stdout)
    assert {v["variant"]: v["share"] for v in shown["variant_details"]} == {"A": 75.0, "B": 25.0}
    [event] = json.loads(two_variants("history", "--action", "endpoint.weights", "-o", "json").stdout)
    assert (event["actor"], event["reason"]) == ("alice", "drain B")
    assert event["payload"]["before"] == {"A": 1.0, "B": 1.0}
    at = json.loads(two_variants("endpoints", "show", "ep", "--at", "0s", "-o", "json").stdout)
    by_variant = {v["variant"]: v for v in at["variants"]}
    assert (by_variant["A"]["share"], by_variant["B"]["share"]) == (75.0, 25.0)
    assert by_variant["A"]["weight_by"]["seq"] == event["seq"]
    assert two_variants("audit", "verify").exit_code == 0

    database = Database(f"sqlite:///{tmp_path / 'registry.db'}")
    with database.write() as session:  # an edit that bypassed the history
        session.execute(update(Endpoint).values(weights={"A": 1.0, "B": 9.0}))
    verified = two_variants("audit", "verify")
    assert verified.exit_code == 1 and "ep's operator weights are" in verified.output
    database.dispose()


@pytest.mark.parametrize(
    "pairs,message",
    [
        (("A:3",), "'A:3': give VARIANT=WEIGHT"),
        (("A=-1",), "'A=-1': give VARIANT=WEIGHT"),
        (("A=nan",), "'A=nan': give VARIANT=WEIGHT"),
        (("A=1", "A=2"), "variant A is given twice"),
        (("C=1",), "ep has no production variant C; it has A, B"),
        (("A=0", "B=0"), "ep: the weights would all be 0, and nothing would serve"),
        ((), "give at least one VARIANT=WEIGHT"),
    ],
)
def test_bad_weights_are_one_line_and_change_nothing(
    two_variants: Cli, aws_env: LocalSageMaker, pairs: tuple[str, ...], message: str
) -> None:
    refused = two_variants("endpoints", "set-weights", "ep", *pairs, "--reason", "x")
    assert refused.exit_code == 2 and refused.stderr.startswith(f"error: {message}"), refused.output
    assert len(refused.stderr.splitlines()) == 1
    assert _on_sagemaker(aws_env) == {"A": 1.0, "B": 1.0}
    assert json.loads(two_variants("history", "--action", "endpoint.weights", "-o", "json").stdout) == []


def test_a_rollout_owns_the_weights_and_history_tells_what_served(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with make_world(tmp_path, artifacts) as world:
        rollout_id = world.start(policy_text(CANARY))
        args = ["--db", world.db, "endpoints"]
        refused = CliRunner().invoke(cli, [*args, "set-weights", ENDPOINT, "baseline=1", "--reason", "x"])
        assert refused.exit_code == 2
        assert refused.stderr.startswith(
            f"error: endpoint {ENDPOINT} has rollout {rollout_id} (pending); it owns the weights"
        )
        world.tick_until(rollout_id, ("promoted",))
        shown = CliRunner().invoke(cli, [*args, "history", ENDPOINT, "-o", "json"])
        assert shown.exit_code == 0, shown.output
        rows = json.loads(shown.stdout)
        # created serving churn:1; the rollout's config with both; the promoted config, serving now
        assert [r["rollout"] for r in rows] == [None, rollout_id, rollout_id]
        assert rows[0]["models"] == "baseline: churn:1"
        assert "candidate: churn:2" in rows[1]["models"]
        assert rows[-1]["until"] is None and rows[-1]["for"].endswith("(serving)")
        assert rows[0]["until"] == rows[1]["from"]
        table = CliRunner().invoke(cli, [*args, "history", ENDPOINT]).stdout
        assert "churn:1" in table and "serving" in table
        missing = CliRunner().invoke(cli, [*args, "history", "nowhere"])
        assert missing.exit_code == 2 and "the history knows no endpoint 'nowhere'" in missing.stderr


def test_undo_goes_back_as_a_recorded_rollout(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    """Issue 31: `rollout undo` (Argo's undo) is a rollout back to the version the last promotion
    replaced, under the endpoint's last policy: recorded, with its steps, never a silent swap."""
    with make_world(tmp_path, artifacts) as world:
        run = ["--db", world.db, "--actor", "bob", "rollout", "undo", ENDPOINT]
        nothing = CliRunner().invoke(cli, [*run, "--reason", "x"])
        assert nothing.exit_code == 2
        assert "nothing to undo: no rollout put churn:1 on churn-prod; name the version" in nothing.stderr
        no_policy = CliRunner().invoke(cli, [*run, "--to-version", "2", "--reason", "x"])
        assert (
            no_policy.exit_code == 2 and "give the policy to undo under (--policy FILE)" in no_policy.stderr
        )

        first = world.start(policy_text(CANARY))
        world.tick_until(first, ("promoted",))
        undone = CliRunner().invoke(cli, [*run, "--reason", "the numbers were wrong"])
        assert undone.exit_code == 0, undone.output
        second = first + 1
        assert f"rollout {second} started: undo to churn:1 beside churn:2 on {ENDPOINT}" in undone.stdout
        [event] = json.loads(
            CliRunner()
            .invoke(cli, ["--db", world.db, "history", "--action", "rollout.undo", "-o", "json"])
            .stdout
        )
        assert event["actor"] == "bob" and event["reason"] == (
            f"undo: back to churn:1 (what rollout {first} replaced) from churn:2: the numbers were wrong"
        )
        world.tick_until(second, ("promoted",))  # through the policy's steps, as any rollout
        shown = json.loads(
            CliRunner().invoke(cli, ["--db", world.db, "endpoints", "show", ENDPOINT, "-o", "json"]).stdout
        )
        assert [v["model"] for v in shown["variant_details"]] == ["churn:1"]
        again = CliRunner().invoke(cli, [*run, "--to-version", "1", "--reason", "x"])
        assert again.exit_code == 2 and "churn:1 is already serving on churn-prod" in again.stderr
