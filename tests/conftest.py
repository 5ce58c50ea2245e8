from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from manager.cli.main import cli
from manager.db import Database
from manager.local_sagemaker import LocalSageMaker
from manager.registry import migrate

from .local_sagemaker_support import train_artifacts


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's own registry or identity."""
    monkeypatch.delenv("VARIANTCTL_DB", raising=False)
    monkeypatch.delenv("VARIANTCTL_ACTOR", raising=False)
    monkeypatch.delenv("VARIANTCTL_DEBUG", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "registry.db"


@pytest.fixture
def database(db_path: Path) -> Iterator[Database]:
    """A real SQLite file at the schema head."""
    db = Database(f"sqlite:///{db_path}")
    migrate.upgrade(db)
    yield db
    db.dispose()


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "model.joblib"
    path.write_bytes(b"not really a model, but a file that exists")
    return path


class Cli:
    """Runs variantctl in-process against one registry file, as a given actor."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.runner = CliRunner()

    def __call__(self, *args: str, actor: str = "tester") -> Result:
        return self.runner.invoke(
            cli, ["--db", str(self.db_path), "--actor", actor, *args], catch_exceptions=False
        )


@pytest.fixture
def run(db_path: Path) -> Cli:
    return Cli(db_path)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Trained scikit-learn models saved with joblib: `logistic`, `prior` (binary) and `ridge`."""
    return train_artifacts(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture
def host(tmp_path: Path) -> Iterator[LocalSageMaker]:
    """A local SageMaker on a free port of 127.0.0.1, with a short provisioning delay."""
    with LocalSageMaker(tmp_path / "state", provision_delay=0.2) as running:
        yield running
