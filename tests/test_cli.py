"""The CLI through click's runner, and once as a real subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result

from manager.db import Database
from manager.history import audit

from .conftest import Cli

pytestmark = pytest.mark.backends  # each test runs on SQLite and on PostgreSQL


@pytest.fixture
def ready(run: Cli) -> Cli:
    assert run("db", "upgrade").exit_code == 0
    return run


def _one_line_error(result: Result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    stderr = result.stderr.strip()
    assert len(stderr.splitlines()) == 1, stderr
    assert "Traceback" not in stderr
    return str(stderr)


def test_register_list_show(ready: Cli, artifact: Path) -> None:
    out = ready(
        "models",
        "register",
        "churn",
        "--artifact",
        str(artifact),
        "--framework",
        "sklearn",
        "--framework-version",
        "1.9.1",
        "--metric",
        "auc=0.91",
        "--metric",
        "f1=0.8",
    )
    assert out.exit_code == 0 and "registered churn:1 (candidate)" in out.stdout
    ready("models", "register", "churn", "--artifact", artifact.as_uri(), "--framework", "sklearn")

    listed = json.loads(ready("models", "list", "--output", "json").stdout)
    assert [m["model"] for m in listed] == ["churn:2", "churn:1"]
    assert listed[1]["metrics"] == {"auc": 0.91, "f1": 0.8}
    assert listed[1]["artifact_uri"] == artifact.as_uri()

    shown = json.loads(ready("models", "show", "churn:1", "-o", "json").stdout)
    assert shown["framework_version"] == "1.9.1" and shown["version"] == 1
    assert "churn:2" in ready("models", "show", "churn").stdout


def test_register_reads_a_metrics_file(ready: Cli, artifact: Path, tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"rmse": 52.1}')
    out = ready(
        "models",
        "register",
        "diab",
        "--artifact",
        str(artifact),
        "--framework",
        "sklearn",
        "--metrics-file",
        str(metrics),
        "--metric",
        "r2=0.4",
        "-o",
        "json",
    )
    assert json.loads(out.stdout)["metrics"] == {"rmse": 52.1, "r2": 0.4}


def test_history_filters_and_formats(ready: Cli, artifact: Path, database: Database) -> None:
    for name, who in (("churn", "alice"), ("fraud", "bob"), ("churn", "bob")):
        ready("models", "register", name, "--artifact", str(artifact), "--framework", "sklearn", actor=who)
    audit.record(
        database,
        "daemon",
        audit.Event(
            "rollout.start", "rollout", "1", endpoint="ep-a", model="churn", reason="policy canary.yaml"
        ),
    )

    def seqs(*args: str) -> list[int]:
        return [e["seq"] for e in json.loads(ready("history", *args, "-o", "json").stdout)]

    assert seqs() == [5, 4, 3, 2, 1]  # newest first; 1 is the db upgrade
    assert seqs("--model", "churn") == [5, 4, 2]
    assert seqs("--endpoint", "ep-a") == [5]
    assert seqs("--actor", "bob") == [4, 3]
    assert seqs("--action", "model.register", "--limit", "2") == [4, 3]
    assert seqs("--since", "1h", "--until", "now") == [5, 4, 3, 2, 1]
    assert seqs("--until", "2000-01-01") == []
    assert seqs("--since", "2000-01-01T00:00:00Z", "--model", "fraud") == [3]

    rows = list(csv.DictReader(io.StringIO(ready("history", "-o", "csv").stdout)))
    assert [r["seq"] for r in rows] == ["5", "4", "3", "2", "1"]
    assert json.loads(rows[0]["payload"]) == {}
    assert rows[0]["reason"] == "policy canary.yaml"

    table = ready("history", "--model", "fraud").stdout
    assert "model.register" in table and "bob" in table


@pytest.mark.backends("sqlite")  # it opens the SQLite file itself
def test_audit_verify_exit_codes(ready: Cli, artifact: Path, db_path: Path) -> None:
    ready("models", "register", "churn", "--artifact", str(artifact), "--framework", "sklearn")
    ok = ready("audit", "verify")
    assert ok.exit_code == 0 and ok.stdout.startswith("ok: 2 events")
    head = ok.stdout.split("; head ")[1].split()[0]
    ready("models", "register", "churn", "--artifact", str(artifact), "--framework", "sklearn")
    assert ready("audit", "verify", "--expect-head", head).exit_code == 0, "a live registry passes"
    garbage = ready("audit", "verify", "--expect-head", "not-a-hash")
    assert garbage.exit_code == 2 and "is not a head" in garbage.stderr and "TAMPERED" not in garbage.stderr

    import sqlite3

    conn = sqlite3.connect(db_path)
    conn.execute("DROP TRIGGER audit_events_no_update")
    conn.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
    conn.commit()
    conn.close()
    bad = ready("audit", "verify")
    assert bad.exit_code == 1
    assert bad.stderr.startswith("TAMPERED at seq 2:")


@pytest.mark.parametrize(
    "args,message",
    [
        (("models", "show", "nope"), "no model 'nope' in the registry"),
        (("models", "show", "churn:x"), "use NAME or NAME:VERSION"),
        (("history", "--since", "last tuesday"), "invalid time 'last tuesday'"),
        (("history", "--since", "2026-02-30"), "invalid time '2026-02-30'"),
        (("history", "--since", "1h", "--until", "2h"), "must be before --until"),
        (("endpoints", "show", "nope"), "no endpoint 'nope' in the registry"),
        (("models", "register", "bad_name", "--artifact", "s3://b/k", "--framework", "x"), "is invalid"),
        (
            ("models", "register", "m", "--artifact", "s3://b/k", "--framework", "x", "--metric", "auc"),
            "use NAME=NUMBER",
        ),
        (("models", "register", "m", "--artifact", "/no/such/file", "--framework", "x"), "does not exist"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(ready: Cli, args: tuple[str, ...], message: str) -> None:
    assert message in _one_line_error(ready(*args))


@pytest.mark.backends("sqlite")  # it opens the SQLite file itself
def test_missing_database_is_a_clear_error(run: Cli, db_path: Path) -> None:
    for args in (("history",), ("models", "list"), ("audit", "verify")):
        assert "no registry at" in _one_line_error(run(*args))
    assert not db_path.exists(), "a read must not create an empty registry"


def test_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = Cli(blocker / "registry.db")("db", "upgrade")
    assert "cannot create registry directory" in _one_line_error(result)


def test_a_foreign_sqlite_file_is_not_taken_for_a_registry(tmp_path: Path) -> None:
    import sqlite3

    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    assert "is not a variantctl registry" in _one_line_error(Cli(other)("models", "list"))


def test_bad_usage_exits_2(ready: Cli) -> None:
    assert ready("history", "--output", "xml").exit_code == 2
    assert ready("history", "--limit", "0").exit_code == 2


def test_help_imports_nothing_heavy() -> None:
    """`variantctl --help` must stay fast: no pandas, scikit-learn, boto3 or SQLAlchemy at start-up."""
    probe = (
        "import sys; from manager.cli.main import cli; "
        "heavy = {'pandas', 'sklearn', 'boto3', 'sqlalchemy', 'alembic', 'numpy'}; "
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_real_subprocess_end_to_end(tmp_path: Path, artifact: Path) -> None:
    env = {**os.environ, "VARIANTCTL_DB": str(tmp_path / "sub.db"), "VARIANTCTL_ACTOR": "ci"}
    script = Path(sys.executable).parent / "variantctl"

    def call(*args: str, via_module: bool = False) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "manager", *args] if via_module else [str(script), *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)

    assert call("db", "upgrade").returncode == 0
    reg = call(
        "models", "register", "churn", "--artifact", str(artifact), "--framework", "sklearn", via_module=True
    )
    assert reg.returncode == 0, reg.stderr
    history = call("history", "--output", "json")
    assert history.returncode == 0
    events = json.loads(history.stdout)
    assert [e["action"] for e in events] == ["model.register", "db.upgrade"]
    assert {e["actor"] for e in events} == {"ci"}
    missing = call("models", "show", "ghost")
    assert missing.returncode == 2
    assert missing.stderr == "error: no model 'ghost' in the registry\n"


def test_shell_completion_scripts_and_completions() -> None:
    """The installed `variantctl` writes each shell's completion script, and completes subcommands
    and option choices (click's completion, as the README sets it up)."""
    import os
    import shutil
    import subprocess

    exe = shutil.which("variantctl", path=str(Path(sys.executable).parent))
    assert exe is not None

    def ask(**env: str) -> str:
        done = subprocess.run([exe], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    for shell in ("bash", "zsh", "fish"):
        assert "_VARIANTCTL_COMPLETE" in ask(_VARIANTCTL_COMPLETE=f"{shell}_source")
    words = ask(_VARIANTCTL_COMPLETE="bash_complete", COMP_WORDS="variantctl rollout ", COMP_CWORD="2")
    assert {"plain,start", "plain,pause", "plain,abort", "plain,watch"} <= set(words.split())
    formats = ask(
        _VARIANTCTL_COMPLETE="bash_complete", COMP_WORDS="variantctl daemon --log-format ", COMP_CWORD="3"
    )
    assert set(formats.split()) == {"plain,text", "plain,json"}
