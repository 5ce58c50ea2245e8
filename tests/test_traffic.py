"""`variantctl traffic` with a model of the user's own: the rows it sends are rows the model accepts
(its own training data, found through the registry), and a refusal says why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from manager.local_sagemaker import LocalSageMaker

from .conftest import Cli


def _own_csv(path: Path, features: int = 5, rows: int = 120) -> Path:
    """A headerless CSV, the target first: a binary task on `features` columns (not a bundled set)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(rows, features))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    lines = (",".join([str(t), *(f"{v:.5f}" for v in row)]) for t, row in zip(y, x, strict=True))
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(path: Path, output: Path) -> Path:
    path.write_text(
        "model: mine\nestimator: logistic_regression\nobjective: {metric: roc_auc}\n"
        f"split: {{validation: 0.2, test: 0.2, seed: 1}}\noutput: {output}\n"
    )
    return path


@pytest.fixture
def own_endpoint(aws_env: LocalSageMaker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """`mine:1`, trained on a CSV of five features, serving on `mine-prod`; run from another directory."""
    cli = Cli(tmp_path / "registry.db")
    data = _own_csv(tmp_path / "mine.csv")
    config = _config(tmp_path / "train.yaml", tmp_path / "artifacts")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path)
    assert cli("db", "upgrade").exit_code == 0
    trained = cli("train", "--data", "mine.csv", "--config", str(config), "--no-gate")  # a relative path
    assert trained.exit_code == 0, trained.output
    assert cli("endpoints", "create", "mine-prod", "--model", "mine:1").exit_code == 0
    monkeypatch.chdir(elsewhere)  # the relative path is no longer right from here
    assert data.is_file()
    return cli


def test_traffic_sends_the_models_own_training_rows(own_endpoint: Cli, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    result = own_endpoint(
        *("traffic", "mine-prod", "--rate", "0", "--duration", "1s"),
        *("--labels", str(labels), "--label-delay", "0s"),
    )
    assert result.exit_code == 0, result.output
    answered = int(result.stdout.split(": ", 1)[1].split(" requests answered")[0])
    assert answered > 0 and ", 0 failed" in result.stdout, result.stdout
    assert list(labels.rglob("*.jsonl")), "labels were written"


def test_rows_the_model_refuses_are_shown_with_the_models_reason(own_endpoint: Cli) -> None:
    result = own_endpoint("traffic", "mine-prod", "--rate", "0", "--duration", "1s", "--data", "sklearn:wine")
    assert result.exit_code == 1
    # the model's own message, once, beside the count: 13 columns sent to a model of 5
    assert "0 requests answered" in result.stdout and "(ModelError x" in result.stdout
    assert "expected 5 features per row, got 13" in result.stdout, result.stdout


def test_a_registered_model_without_training_data_says_what_to_pass(
    aws_env: LocalSageMaker, tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    cli = Cli(tmp_path / "registry.db")
    assert cli("db", "upgrade").exit_code == 0
    artifact = str(artifacts["logistic"])
    registered = cli("models", "register", "ext", "--artifact", artifact, "--framework=sklearn")
    assert registered.exit_code == 0, registered.output
    assert cli("models", "approve", "ext:1", "--reason", "reviewed").exit_code == 0
    assert cli("endpoints", "create", "ext-prod", "--model", "ext:1").exit_code == 0
    result = cli("traffic", "ext-prod", "--duration", "1s")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: cannot tell which rows ext-prod accepts (ext:1 was registered, not trained here): "
        "pass --data CSV|sklearn:NAME\n"
    )
    unknown = cli("traffic", "nowhere", "--duration", "1s")
    assert unknown.exit_code == 2 and "no endpoint 'nowhere' in the registry" in unknown.stderr
