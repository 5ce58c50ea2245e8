"""Exports an outsider can verify: `audit export` in each format, then `audit verify --file` with no
database; each kind of tampering with an export named; CDEvents lines valid against the CDEvents
v0.5.1 JSON schemas (vendored in tests/cdevents_schemas with their licence)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from manager.registry import rollouts
from manager.rollout import endpoints

from .audit_support import rechain
from .conftest import Cli
from .rollout_support import CANARY, ENDPOINT, checkpointed, forced_promotion, make_world, policy_text

SCHEMAS = Path(__file__).parent / "cdevents_schemas"
NO_DATABASE = "/nonexistent/dir/registry.db"  # verify --file must not need one


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, artifacts: dict[str, Path]) -> Iterator[Path]:
    """Created (deployed), promoted by force (upgraded), a second rollout aborted (rolled back), then
    the endpoint forgotten (removed)."""
    tmp = tmp_path_factory.mktemp("exports")
    with make_world(tmp, artifacts) as world:
        forced_promotion(world, policy_text(CANARY, min_samples=10_000), "carol", "ship it")
        Cli(world.db_path)("models", "approve", "churn:1", "--reason", "back as a candidate")
        second = world.start(policy_text(CANARY, min_samples=10_000).replace("version: 2", "version: 1"))
        world.tick_until(second, ("running",))
        with world.database.write() as session:
            rollouts.set_intent(session, second, "abort", "pager", "dave")
        world.tick_until(second, ("aborted",))
        endpoints.forget(world.database, None, ENDPOINT, "ops", "moved to another account")
        db_path = world.db_path
    yield checkpointed(db_path)


def _export(registry: Path, tmp_path: Path, fmt: str, *args: str) -> Path:
    target = tmp_path / f"export.{fmt}"
    result = Cli(registry)("audit", "export", "--format", fmt, "-o", str(target), *args)
    assert result.exit_code == 0, result.output
    return target


def _verify(path: Path, *args: str) -> Any:
    return Cli(NO_DATABASE)("audit", "verify", "--file", str(path), *args)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "cdevents"])
def test_an_export_verifies_offline_in_each_format(registry: Path, tmp_path: Path, fmt: str) -> None:
    path = _export(registry, tmp_path, fmt)
    head = Cli(registry)("audit", "verify").output.split("head ")[1].split()[0]
    result = _verify(path, "--expect-head", head)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: ") and f"last {head}" in result.output
    assert "the kept head matches" in result.output
    alone = _verify(path)  # from seq 1, but nothing vouches for it
    assert alone.exit_code == 1 and alone.output.startswith("self-consistent, not anchored"), alone.output
    allowed = _verify(path, "--allow-unanchored")
    assert allowed.exit_code == 0 and "self-consistent, not anchored" in allowed.output


def test_an_export_forged_from_the_genesis_does_not_verify(registry: Path, tmp_path: Path) -> None:
    """Issue 28, finding 6: an export rewritten consistently from seq 1 verified ("starts at the
    genesis"): anyone can write a consistent chain from the genesis."""
    from manager.history import audit

    path = _export(registry, tmp_path, "jsonl")
    head = Cli(registry)("audit", "verify").output.split("head ")[1].split()[0]
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        record["actor"] = "nobody"
    rechain(records, audit.GENESIS)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    forged = _verify(path)
    assert forged.exit_code == 1 and "not anchored" in forged.output
    caught = _verify(path, "--expect-head", head)
    assert caught.exit_code == 1 and "TAMPERED" in caught.output


def test_a_partial_export_needs_an_anchor(registry: Path, tmp_path: Path) -> None:
    full = [json.loads(line) for line in _export(registry, tmp_path, "jsonl").read_text().splitlines()]
    middle = full[len(full) // 2]
    part = _export(registry, tmp_path, "jsonl", "--since", middle["at"])
    first = json.loads(part.read_text().splitlines()[0])
    unanchored = _verify(part)
    assert unanchored.exit_code == 1 and unanchored.output.startswith("self-consistent, not anchored: ")
    anchored = _verify(part, "--expect-head", f"{first['seq'] - 1}:{first['prev_hash']}")
    assert anchored.exit_code == 0 and "the kept head matches" in anchored.output
    wrong = _verify(part, "--expect-head", f"{first['seq'] - 1}:{'0' * 64}")
    assert wrong.exit_code == 1 and "TAMPERED" in wrong.output


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _edit_payload(line: str) -> str:
    record = json.loads(line)
    record["reason"] = "nothing to see here"
    return json.dumps(record)


@pytest.mark.parametrize(
    "tamper,named",
    [
        (lambda lines: [*lines[:3], _edit_payload(lines[3]), *lines[4:]], "seq 4 was altered"),
        (lambda lines: [*lines[:3], *lines[4:]], "seq 4 is missing"),
        (lambda lines: [*lines[:3], lines[4], lines[3], *lines[5:]], "seq 4 is missing"),
        (lambda lines: [*lines[:-1], lines[-1].replace('"prev_hash":"', '"prev_hash":"f', 1)], "chain link"),
        (lambda lines: [*lines[:2], "not json", *lines[2:]], ":3: not JSON"),
    ],
    ids=["edited", "deleted", "reordered", "relinked", "garbage"],
)
def test_each_tampering_with_an_export_is_named(
    registry: Path, tmp_path: Path, tamper: Any, named: str
) -> None:
    path = _export(registry, tmp_path, "jsonl")
    path.write_text("\n".join(tamper(_lines(path))) + "\n")
    result = _verify(path)
    assert result.exit_code in (1, 2) and named in result.output, result.output
    assert "Traceback" not in result.output


def test_an_edited_csv_cell_is_caught(registry: Path, tmp_path: Path) -> None:
    path = _export(registry, tmp_path, "csv")
    rows = list(csv.reader(io.StringIO(path.read_text())))
    rows[5][2] = "mallory"  # the actor of seq 5
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    path.write_text(buffer.getvalue())
    result = _verify(path)
    assert result.exit_code == 1 and "seq 5 was altered" in result.output


def _validator(schema_type: str) -> Any:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    resources = [
        (doc["$id"], Resource.from_contents(doc))
        for doc in (json.loads(p.read_text()) for p in SCHEMAS.rglob("*.json"))
    ]
    registry = Registry().with_resources(resources)
    name = {
        "service.deployed": "servicedeployed",
        "service.upgraded": "serviceupgraded",
        "service.rolledback": "servicerolledback",
        "service.removed": "serviceremoved",
    }.get(schema_type)
    schema = json.loads((SCHEMAS / (f"{name}.json" if name else "custom/schema.json")).read_text())
    return Draft202012Validator(schema, registry=registry)


def test_cdevents_lines_are_valid_cdevents_in_cloudevents(registry: Path, tmp_path: Path) -> None:
    lines = [json.loads(line) for line in _lines(_export(registry, tmp_path, "cdevents"))]
    kinds: dict[str, list[dict[str, Any]]] = {}
    for envelope in lines:
        assert envelope["specversion"] == "1.0" and envelope["datacontenttype"] == "application/json"
        data = envelope["data"]
        assert envelope["type"] == data["context"]["type"] and envelope["id"] == data["context"]["id"]
        short = ".".join(data["context"]["type"].split(".")[2:4])
        errors = sorted(e.message for e in _validator(short).iter_errors(data))
        assert not errors, (short, errors)
        kinds.setdefault(short, []).append(data)
    assert set(kinds) == {
        "service.deployed",
        "service.upgraded",
        "service.rolledback",
        "service.removed",
        "variantctl-history.recorded",
    }
    assert len(kinds["service.deployed"]) == 1 and len(kinds["service.rolledback"]) == 1
    upgraded = kinds["service.upgraded"][0]
    assert upgraded["subject"]["content"] == {
        "environment": {"id": ENDPOINT, "source": "/variantctl/history/endpoints"},
        "artifactId": "pkg:generic/churn@2",
    }
    decision = upgraded["customData"]["decision"]
    assert decision["decision"] == "promote" and decision["requested_by"]["actor"] == "carol"
    rolledback = kinds["service.rolledback"][0]
    assert rolledback["subject"]["content"]["artifactId"] == "pkg:generic/churn@2"  # what serves again
    assert rolledback["customData"]["decision"]["requested_by"]["actor"] == "dave"
    chain = [d["customData"]["variantctl"]["seq"] for d in (e["data"] for e in lines)]
    assert chain == list(range(1, len(lines) + 1))


def test_export_of_an_empty_range_says_so(registry: Path) -> None:
    result = Cli(registry)("audit", "export", "--since", "2999-01-01")
    assert result.exit_code == 2 and result.output == "error: no events in that range\n"
