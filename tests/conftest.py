from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

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
    # Webhook receivers in tests listen on 127.0.0.1, which the daemon calls only when told to
    # (manager/webhooks/destinations.py); tests of the destination policy set their own.
    monkeypatch.setenv("VARIANTCTL_WEBHOOK_ALLOW", "loopback")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "registry.db"


PG_ADMIN_URL = os.environ.get("VARIANTCTL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
# CI sets this: there, a PostgreSQL that cannot be reached fails the run instead of skipping tests.
REQUIRE_PG = os.environ.get("VARIANTCTL_REQUIRE_PG") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "backends: run on SQLite and on PostgreSQL (`backend` says which)")


# The longest files, longest first (seconds in a `make test` on 2 cores, 2026-12-06). `make unit` hands
# whole files to its workers in collection order (--dist loadfile --no-loadscope-reorder), so these
# start first and the short files fill in around them; one of them started last would be the run's tail.
LONGEST_FIRST = (
    "test_readme.py",  # 437
    "test_crash.py",  # 377
    "test_crash_exits.py",  # 277
    "test_rollouts.py",  # 195
    "test_simulate.py",
    "test_scale_out.py",
    "test_crash_scaling.py",  # 72
    "test_rollouts_in_a_row.py",
    "test_replay.py",
    "test_packaging.py",
    "test_leader.py",
    "test_rollout_exits.py",
    "test_autoscaled_rollouts.py",  # 40
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("backends")
    if "backend" in metafunc.fixturenames and marker is not None:
        # `@pytest.mark.backends("sqlite")` on one test narrows its module's `backends` mark.
        metafunc.parametrize("backend", list(marker.args or ("sqlite", "postgresql")))


@pytest.fixture
def backend() -> str:
    """The registry's database kind; tests marked `backends` run once for each."""
    return "sqlite"


@contextmanager
def throwaway_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (dropped after it); skipped when PostgreSQL is
    unreachable, except in CI (VARIANTCTL_REQUIRE_PG=1), where that fails."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"variantctl_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    except OperationalError as exc:
        admin.dispose()
        reason = f"no PostgreSQL at {PG_ADMIN_URL}: {str(exc.orig).splitlines()[0]}"
        if REQUIRE_PG:
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture
def db_url(backend: str, db_path: Path) -> Iterator[str]:
    """The registry's URL: a SQLite file, or a throwaway PostgreSQL database."""
    if backend == "sqlite":
        yield f"sqlite:///{db_path}"
        return
    with throwaway_pg_database() as url:
        yield url


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    """A real registry at the schema head (SQLite, or PostgreSQL for tests marked `backends`)."""
    db = Database(db_url)
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

    def __init__(self, db: Path | str) -> None:
        self.db = str(db)
        self.runner = CliRunner()

    def __call__(self, *args: str, actor: str = "tester") -> Result:
        return self.runner.invoke(cli, ["--db", self.db, "--actor", actor, *args], catch_exceptions=False)


@pytest.fixture
def run(db_url: str, db_path: Path, backend: str) -> Cli:
    return Cli(db_path if backend == "sqlite" else db_url)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Trained scikit-learn models saved with joblib: `logistic`, `prior` (binary) and `ridge`."""
    return train_artifacts(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="session")
def demo_promoted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The registry a real `promote` demo leaves behind (one per test worker; read it, never write)."""
    from manager.demo import scenarios as demo

    workdir = tmp_path_factory.mktemp("demo-promoted")
    result = demo.run(workdir, "promote", timeout=110, say=lambda _: None)
    assert result["outcome"] == "promoted", result
    return workdir / "registry.db"


@pytest.fixture
def host(tmp_path: Path) -> Iterator[LocalSageMaker]:
    """A local SageMaker on a free port of 127.0.0.1, with a short provisioning delay."""
    # Seeded: weighted routing draws the same sequence every run, so the share bounds cannot flake.
    with LocalSageMaker(tmp_path / "state", provision_delay=0.2, seed=20261128) as running:
        yield running


@pytest.fixture
def aws_env(host: LocalSageMaker, monkeypatch: pytest.MonkeyPatch) -> LocalSageMaker:
    """boto3 (and so every variantctl command) aimed at the test's local SageMaker."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", host.url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    return host
