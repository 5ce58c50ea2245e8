"""Every bad input gets one clear line and exit 2, and changes nothing: table-driven over the classes
of mistake a user makes (policies, CLI arguments, --db targets, training CSVs), each checked against
a logical checksum of the registry taken before and after."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from manager.cli.main import cli

from .test_policy import BASE

BOMB = "\n".join(
    ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    + [f"{n}: &{n} [" + ",".join([f"*{p}"] * 9) + "]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)]
)


def checksum(path: Path) -> str:
    """The database's content, as SQL, hashed: unchanged content, same checksum (files may differ by
    WAL checkpoints, which change nothing)."""
    conn = sqlite3.connect(path)
    try:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
    finally:
        conn.close()


def write(folder: Path, name: str, content: str | bytes) -> str:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def csv_rows(rows: list[str]) -> str:
    good = [f"{i % 2},{(i % 2) + i / 1000},{i / 500}" for i in range(60)]
    return "\n".join(good[:10] + rows + good[10:]) + "\n"


def register(folder: Path, framework: str, *extra: str) -> list[str]:
    """`models register m` of a real file, with `--framework` and any further arguments."""
    artifact = write(folder, "a.joblib", b"x")
    return ["models", "register", "m", "--artifact", artifact, "--framework", framework, *extra]


Case = tuple[Callable[[Path], list[str]], str]
CASES: dict[str, Case] = {
    "policy-not-utf8": (lambda d: ["policy", "validate", write(d, "p.yaml", b"name: \xff\n")], "not UTF-8"),
    "policy-alias-bomb": (lambda d: ["policy", "validate", write(d, "p.yaml", BOMB)], "expands to more than"),
    "policy-duplicate-key": (
        lambda d: ["policy", "validate", write(d, "p.yaml", BASE + "name: twice\n")],
        "given twice",
    ),
    "start-huge-duration": (
        lambda d: [
            "rollout",
            "start",
            "--policy",
            write(d, "p.yaml", BASE + "decisions: {maxDuration: 99999999999999d}\n"),
        ],
        "maxDuration",
    ),
    "start-no-primary": (
        lambda d: [
            "rollout",
            "start",
            "--policy",
            write(d, "p.yaml", BASE.replace("role: primary", "role: guardrail")),
        ],
        "role: primary",
    ),
    "since-overflow": (lambda d: ["history", "--since", "99999999999d"], "longer than"),
    "limit-huge": (lambda d: ["history", "--limit", "1e20"], "1e20"),
    "metric-nan": (
        lambda d: register(d, "sklearn", "--metric", "auc=nan"),
        "finite",
    ),
    "metric-inf": (
        lambda d: register(d, "sklearn", "--metric", "auc=inf"),
        "finite",
    ),
    "revision-garbage": (lambda d: ["db", "upgrade", "--revision", "garbage"], "garbage"),
    "actor-newline": (lambda d: ["--actor", "alice\nbob", "history"], "control character"),
    "actor-long": (lambda d: ["--actor", "a" * 500, "history"], "at most 128"),
    "artifact-uri-long": (
        lambda d: [
            "models",
            "register",
            "m",
            "--artifact",
            "s3://bucket/" + "k" * 2000,
            "--framework",
            "sklearn",
        ],
        "at most 1024",
    ),
    "framework-empty": (
        lambda d: register(d, ""),
        "--framework is empty",
    ),
    "framework-newline": (
        lambda d: register(d, "a\nb"),
        "control character",
    ),
    "expect-head-garbage": (lambda d: ["audit", "verify", "--expect-head", "garbage"], "is not a head"),
    "train-ragged-csv": (
        lambda d: ["train", "--data", write(d, "d.csv", csv_rows(["1,0.5"])), "--config", str(TRAIN_CONFIG)],
        "fields",
    ),
    "train-nan-target": (
        lambda d: [
            "train",
            "--data",
            write(d, "d.csv", csv_rows(["nan,0.5,0.2"])),
            "--config",
            str(TRAIN_CONFIG),
        ],
        "NaN",
    ),
    "train-text-feature": (
        lambda d: [
            "train",
            "--data",
            write(d, "d.csv", csv_rows(["1,abc,0.2"])),
            "--config",
            str(TRAIN_CONFIG),
        ],
        "not numeric",
    ),
    "unknown-model": (lambda d: ["models", "show", "nope:3"], "no model"),
    "train-bad-parameter": (
        lambda d: [
            "train",
            "--data",
            "sklearn:breast_cancer",
            "--config",
            write(
                d,
                "t.yaml",
                "model: tiny\nestimator: logistic_regression\nparams: {C: -1}\n"
                f"objective: {{metric: roc_auc}}\noutput: {d / 'artifacts'}\n",
            ),
        ],
        "the training config's params (or search ranges): The 'C' parameter of LogisticRegression",
    ),
    # issue 31, item 10: these reached the database or a parser and ended in `internal error`
    "limit-beyond-64-bits": (lambda d: ["history", "--limit", str(10**20)], "too large"),
    "version-beyond-64-bits": (lambda d: ["models", "show", f"churn:{10**20}"], "too large"),
    "metrics-nested-100000-deep": (
        lambda d: [
            "models",
            "register",
            "deep",
            "--artifact",
            write(d, "m.joblib", "x"),
            "--framework",
            "sklearn",
            "--metrics-file",
            write(d, "deep.json", "[" * 100_000 + "]" * 100_000),
        ],
        "nested too deeply",
    ),
    "at-garbage": (lambda d: ["endpoints", "show", "churn-prod", "--at", "yesterday-ish"], "invalid time"),
    "at-unknown-endpoint": (lambda d: ["endpoints", "show", "nope", "--at", "now"], "knows no endpoint"),
    "history-show-missing": (lambda d: ["history", "show", "99999"], "no event 99999"),
    "report-unknown-rollout": (
        lambda d: ["rollout", "report", "42", "-o", str(d / "r.html")],
        "no rollout 42",
    ),
    "export-empty-range": (lambda d: ["audit", "export", "--since", "2999-01-01"], "no events in that range"),
    "verify-file-missing": (lambda d: ["audit", "verify", "--file", str(d / "absent.jsonl")], "cannot read"),
    "verify-file-not-utf8": (
        lambda d: ["audit", "verify", "--file", write(d, "e.jsonl", b"\xff\xfe")],
        "UTF-8",
    ),
    "verify-file-not-events": (
        lambda d: ["audit", "verify", "--file", write(d, "e.jsonl", '{"a": 1}\n')],
        "not an exported event",
    ),
    "verify-public-key-garbage": (
        lambda d: ["audit", "verify", "--digests", str(d), "--public-key", write(d, "k.pem", "nope")],
        "not a PEM public key",
    ),
    "digest-without-key": (
        lambda d: ["audit", "digest", "--to", str(d / "digests"), "--key", str(d / "no-key.pem")],
        "no signing key",
    ),
    "keygen-over-a-key": (
        lambda d: ["audit", "keygen", "--key", write(d, "key.pem", "an existing key")],
        "never overwritten",
    ),
}
TRAIN_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "training" / "breast-cancer.yaml"


@pytest.fixture
def registry(tmp_path: Path, artifact: Path) -> Path:
    path = tmp_path / "registry.db"
    runner = CliRunner()
    assert runner.invoke(cli, ["--db", str(path), "db", "upgrade"]).exit_code == 0
    registered = runner.invoke(
        cli,
        [
            "--db",
            str(path),
            "models",
            "register",
            "churn",
            "--artifact",
            str(artifact),
            "--framework",
            "sklearn",
        ],
    )
    assert registered.exit_code == 0, registered.output
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_input_gets_one_line_exit_2_and_changes_nothing(
    case: str, registry: Path, tmp_path: Path
) -> None:
    build, fragment = CASES[case]
    folder = tmp_path / "inputs"
    folder.mkdir()
    args = build(folder)
    before = checksum(registry)
    result = CliRunner().invoke(cli, ["--db", str(registry), *args])
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert fragment in result.stderr, result.stderr
    own = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    if own:  # ours: exactly one line; click's own usage errors keep click's usage block
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert checksum(registry) == before


@pytest.mark.parametrize(
    "target,fragment",
    [
        (
            lambda d: write(d, "notdb.db", b"this is not a database, it is a text file\n" * 100),
            "not a database",
        ),
        (lambda d: "postgresql+psycopg://postgres@127.0.0.1:1/none", "cannot use the registry database"),
        (lambda d: "", "--db is empty"),
    ],
    ids=["not-sqlite", "refused-postgres", "empty"],
)
def test_a_bad_db_target_gets_one_line(target: Callable[[Path], str], fragment: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--db", target(tmp_path), "history"])
    assert result.exit_code == 2 and fragment in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_db_upgrade_never_adopts_another_applications_file(tmp_path: Path) -> None:
    other = tmp_path / "crm.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('ada')")
    conn.commit()
    conn.close()
    before = checksum(other)
    result = CliRunner().invoke(cli, ["--db", str(other), "db", "upgrade"])
    assert result.exit_code == 2 and "another application's tables (customers)" in result.stderr
    assert checksum(other) == before


def test_a_db_url_with_an_unknown_driver_is_one_line() -> None:
    """Issue 31, item 10: it ended in `internal error: NoSuchModuleError`."""
    result = CliRunner().invoke(cli, ["--db", "foo://host/db", "models", "list"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip() == (
        "error: --db: no database driver 'foo'; give a file path, sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
    )
