"""Trainers: training on bundled data with lineage, fingerprints, serving the artifact, the offline
gate, and bad input refused in one line with nothing left behind."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_breast_cancer
from sklearn.dummy import DummyClassifier
from sqlalchemy import select

from manager.cli.main import cli
from manager.config.yamlfile import ConfigError, parse
from manager.db import Database
from manager.errors import UserError
from manager.history import audit
from manager.local_sagemaker import LocalSageMaker
from manager.registry import models
from manager.registry.tables import ModelVersion, TrainingRun
from trainers.config import TrainConfig
from trainers.datasets import apply_shift, load, split
from trainers.gate import local_scorer, offline_gate
from trainers.sklearn_local import SklearnTrainer, _halving_plan

from .local_sagemaker_support import create_model, first_row, variant, wait_status

CONFIG = """
model: churn
estimator: logistic_regression
objective: {{metric: roc_auc}}
search:
  strategy: {strategy}
  max_jobs: 6
  seed: 1
  ranges:
    C: {{type: continuous, min: 0.01, max: 10, scale: log}}
output: {output}
gate: {{metric: roc_auc, margin: 0.01}}
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(CONFIG.format(strategy="random", output=tmp_path / "artifacts"))
    return path


@pytest.fixture
def cli_db(database: Database, db_path: Path) -> tuple[Database, list[str]]:
    return database, ["--db", str(db_path), "--actor", "trainer-test"]


def _train(args: list[str], *more: str) -> tuple[int, dict[str, object], str]:
    result = CliRunner().invoke(cli, [*args, "train", *more, "-o", "json"])
    return result.exit_code, (json.loads(result.stdout) if result.stdout.strip() else {}), result.stderr


def test_train_registers_a_candidate_with_lineage(
    cli_db: tuple[Database, list[str]], config_file: Path
) -> None:
    database, args = cli_db
    code, first, _ = _train(args, "--data", "sklearn:breast_cancer", "--config", str(config_file))
    assert code == 0 and first["model"] == "churn:1" and first["status"] == "approved"
    code, second, _ = _train(
        args,
        "--data",
        "sklearn:breast_cancer",
        "--config",
        str(config_file),
        "--shift",
        "noise:0.05",
        "--seed",
        "1",
    )
    assert code == 0 and second["replaces"] == "churn:1"
    with database.read() as session:
        v2 = models.get(session, "churn:2")
        run = session.get(TrainingRun, v2.training_run_id)
        assert run is not None and run.outcome == "succeeded" and run.trainer == "sklearn"
        assert run.inputs["fingerprint"] == v2.dataset_fingerprint and run.inputs["shift"] == "noise:0.05"
        assert v2.replaces is not None and v2.replaces.ref == "churn:1"
        assert set(v2.metrics) == {"validation", "test"} and 0.9 < v2.metrics["test"]["roc_auc"] <= 1
        assert "C" in v2.training_run.hyperparameters if v2.training_run else False
    actions = [e.action for e in audit.history(database, audit.HistoryFilter(model="churn"))]
    assert actions[:4] == ["model.gate", "model.train", "model.register", "model.gate"]
    sidecar = json.loads((Path(str(second["artifact_uri"])[7:]).parent / "model.json").read_text())
    assert sidecar["fingerprint"] == second["fingerprint"] and sidecar["estimator"] == "logistic_regression"


def test_fingerprint_follows_the_data(tmp_path: Path) -> None:
    assert load("sklearn:breast_cancer").fingerprint == load("sklearn:breast_cancer").fingerprint
    assert load("sklearn:breast_cancer").fingerprint != load("sklearn:breast_cancer", "noise:0.1").fingerprint
    assert (
        load("sklearn:breast_cancer", "noise:0.1", 1).fingerprint
        != load("sklearn:breast_cancer", "noise:0.1", 2).fingerprint
    )
    x, y = load_breast_cancer(return_X_y=True)
    csv = tmp_path / "data.csv"
    np.savetxt(csv, np.column_stack([y, x]), delimiter=",")
    before = load(str(csv)).fingerprint
    csv.write_text(csv.read_text().replace("\n", "\n", 1)[:-1] + "0\n")
    assert load(str(csv)).fingerprint != before


def test_splits_are_deterministic() -> None:
    data = load("sklearn:breast_cancer")
    a, b = split(data, seed=5), split(data, seed=5)
    assert np.array_equal(a.x_test, b.x_test) and np.array_equal(a.y_train, b.y_train)
    assert not np.array_equal(split(data, seed=6).x_test, a.x_test)
    assert len(a.y_train) + len(a.y_val) + len(a.y_test) == data.rows


def test_shift_changes_the_data_it_claims_to() -> None:
    x, y = load_breast_cancer(return_X_y=True)
    noisy, same_y = apply_shift(x, y, "noise:0.5", 0)
    assert np.array_equal(same_y, y) and not np.allclose(noisy, x)
    scaled, _ = apply_shift(x, y, "scale:0.1", 0)
    assert np.allclose(scaled, x * 1.1)
    resampled, _ = apply_shift(x, y, "resample:2", 0)
    assert resampled[:, 0].mean() > x[:, 0].mean()  # favours rows with a high first feature


def test_the_artifact_serves_from_the_local_sagemaker(host: LocalSageMaker, config_file: Path) -> None:
    config = parse(config_file.read_text(), TrainConfig)
    result = SklearnTrainer().train(config, load("sklearn:breast_cancer"))
    sm, rt = host.client("sagemaker"), host.client("sagemaker-runtime")
    create_model(sm, "churn-1", Path(result.artifact_uri[len("file://") :]))
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[variant("A", "churn-1")])
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    wait_status(sm, "ep")
    served = float(
        rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=first_row())["Body"].read()
    )
    x, _ = load_breast_cancer(return_X_y=True)
    local = joblib.load(result.artifact_uri[len("file://") :]).predict_proba(x[:1])[0, 1]
    assert served == pytest.approx(local)


def test_the_gate_rejects_a_dummy_classifier(database: Database, config_file: Path, tmp_path: Path) -> None:
    config = parse(config_file.read_text(), TrainConfig)
    data = load("sklearn:breast_cancer")
    good = SklearnTrainer().train(config, data)
    dummy_path = tmp_path / "dummy.joblib"
    joblib.dump(DummyClassifier(strategy="prior").fit(data.x, data.y), dummy_path)
    with database.write() as session:
        baseline = models.register(
            session, models.NewVersion("churn", good.artifact_uri, "sklearn", status="serving"), "t"
        )
        bad = models.register(session, models.NewVersion("churn", str(dummy_path), "sklearn"), "t")
        verdict = offline_gate(session, config, data, bad, baseline, local_scorer(data.task), "t")
        assert verdict is not None and not verdict.passed
        assert bad.status == "rejected"
        assert verdict.candidate == pytest.approx(0.5) and verdict.baseline > 0.95
    [event] = audit.history(database, audit.HistoryFilter(action="model.gate"))
    payload = json.loads(event.payload)
    assert (payload["baseline_version"], payload["status"]) == ("churn:1", "rejected")
    assert payload["evidence"]["passed"] is False and payload["evidence"]["rows"] == 114
    assert "offline gate failed: roc_auc candidate 0.5000" in (event.reason or "")


def test_halving_search_spends_less_on_full_data(tmp_path: Path) -> None:
    text = CONFIG.format(strategy="halving", output=tmp_path / "a").replace("max_jobs: 6", "max_jobs: 9")
    config = parse(text, TrainConfig)
    calls: list[tuple[int, int]] = []
    result = SklearnTrainer().train(
        config,
        load("sklearn:breast_cancer"),
        lambda done, planned, value, best: calls.append((done, planned)),
    )
    plan = _halving_plan(9, 341, 3)
    assert plan[0][1] == 9 and plan[-1] == (341, 1) and [n for _, n in plan] == [9, 9, 3, 1][-len(plan) :]
    assert result.search["jobs"] == sum(n for _, n in plan) == calls[-1][0] == calls[-1][1]


def _model_count(database: Database) -> int:
    with database.read() as session:
        return len(list(session.scalars(select(ModelVersion))))


BAD_DATA = {
    "missing": None,
    "empty": "",
    "non_numeric": "1,2.0,abc\n0,1.0,2.0\n" * 20,
    "constant": "1,2.0,3.0\n" * 40,
    "nan_target": "1,2,3\n0,2,3\n,2,3\n" * 15,
}


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing", "no data file at"),
        ("empty", "is empty"),
        ("non_numeric", "feature column 2 (CSV column 3) is not numeric: 'abc' on line 1"),
        ("constant", "the target is constant"),
        ("nan_target", "missing (NaN) values"),
    ],
)
def test_bad_data_is_one_line_and_leaves_nothing(
    cli_db: tuple[Database, list[str]], config_file: Path, tmp_path: Path, case: str, message: str
) -> None:
    database, args = cli_db
    path = tmp_path / f"{case}.csv"
    if BAD_DATA[case] is not None:
        path.write_text(str(BAD_DATA[case]))
    code, _, stderr = _train(args, "--data", str(path), "--config", str(config_file))
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert _model_count(database) == 0 and not (tmp_path / "artifacts").exists()


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            ("ranges:\n    C: {type: continuous, min: 0.01, max: 10, scale: log}", "ranges: {}"),
            ":9: search.ranges: Value error, the search space is empty",
        ),
        (
            ("min: 0.01, max: 10", "min: 10, max: 0.01"),
            ":10: search.ranges.C: Value error, min (10) is greater than max",
        ),
        (("estimator: logistic_regression", "estimator: deep_forest"), ":3: estimator: Input should be"),
        (("metric: roc_auc}", "metric: auroc}"), ":4: objective.metric: Input should be"),
    ],
)
def test_bad_config_names_the_line(
    cli_db: tuple[Database, list[str]], config_file: Path, edit: tuple[str, str], message: str
) -> None:
    database, args = cli_db
    config_file.write_text(config_file.read_text().replace(*edit))
    code, _, stderr = _train(args, "--data", "sklearn:breast_cancer", "--config", str(config_file))
    assert code == 2 and message in stderr, stderr
    assert _model_count(database) == 0


def test_wrong_estimator_for_the_task_and_unknown_hyperparameter(config_file: Path) -> None:
    with pytest.raises(UserError, match="logistic_regression is a classifier"):
        regression = config_file.read_text().replace("roc_auc", "rmse")
        SklearnTrainer().train(parse(regression, TrainConfig), load("sklearn:diabetes"))
    text = config_file.read_text().replace("C: {", "gamma: {")
    with pytest.raises(UserError, match="LogisticRegression has no hyperparameter gamma"):
        SklearnTrainer().train(parse(text, TrainConfig), load("sklearn:breast_cancer"))


def test_config_reports_every_error_with_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse("model: bad_name\nobjective: {}\nsplit: {validation: 2}\n", TrainConfig)
    lines = str(info.value).splitlines()
    assert any(line.startswith("<config>:1: model:") for line in lines)
    assert any(line.startswith("<config>:2: objective.metric: Field required") for line in lines)
    assert any(line.startswith("<config>:3: split.validation:") for line in lines)


def test_models_compare_gives_an_interval(cli_db: tuple[Database, list[str]], config_file: Path) -> None:
    _, args = cli_db
    _train(args, "--data", "sklearn:breast_cancer", "--config", str(config_file))
    _train(
        args,
        "--data",
        "sklearn:breast_cancer",
        "--config",
        str(config_file),
        "--shift",
        "noise:1.0",
        "--no-gate",
    )
    result = CliRunner().invoke(
        cli,
        [
            *args,
            "models",
            "compare",
            "churn:1",
            "churn:2",
            "--data",
            "sklearn:breast_cancer",
            "--rounds",
            "300",
            "-o",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = {r["metric"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"accuracy", "roc_auc", "log_loss", "f1"}
    auc = rows["roc_auc"]
    assert auc["ci_low"] <= auc["B - A"] <= auc["ci_high"]
    assert auc["B - A"] == pytest.approx(auc["churn:2"] - auc["churn:1"], abs=1e-3)


def test_a_csv_with_its_target_last_is_told_where_the_target_goes(
    cli_db: tuple[Database, list[str]], config_file: Path, tmp_path: Path
) -> None:
    """Issue 31, item 7: the label in the last column made the data read as regression, and the user
    was told only that roc_auc does not apply to regression models."""
    database, args = cli_db
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 4))
    label = (x[:, 0] > 0).astype(int)
    path = tmp_path / "label-last.csv"
    path.write_text(
        "".join(
            ",".join([*(f"{v:.4f}" for v in row), str(t)]) + "\n" for row, t in zip(x, label, strict=True)
        )
    )
    code, _, stderr = _train(args, "--data", str(path), "--config", str(config_file))
    assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert "metric 'roc_auc' does not apply to regression models" in stderr
    assert "the last column holds 2 whole values, like a class label: the target goes first" in stderr
    assert _model_count(database) == 0
