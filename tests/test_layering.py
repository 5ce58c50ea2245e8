"""The import rules of DESIGN.md, enforced: each failure names the module and the offending import.

Imports inside functions count too (the CLI imports lazily), so a rule cannot be dodged by moving
an import into a function body.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE = (
    "numpy",
    "scipy",
    "math",
    "collections",
    "dataclasses",
    "datetime",
    "functools",
    "itertools",
    "typing",
)
PURE_MANAGER = (
    "manager.metrics.samples",
    "manager.stats",
    "manager.policy",
    "manager.clock",
    "manager.errors",
    "manager.names",
    "manager.registry.vocabulary",
)


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, relative imports resolved."""
    package = _module(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module(path)
    return _imports_in(path.read_text(), package)


def _imports_in(source: str, package: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.append((node.lineno, base))
            # `from manager.registry import rollouts` imports manager.registry.rollouts
            found += [
                (node.lineno, f"{base}.{alias.name}") for alias in node.names if base.startswith("manager")
            ]
    return found


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _files(*packages: str) -> list[Path]:
    out: list[Path] = []
    for package in packages:
        target = ROOT / Path(*package.split("."))
        out += sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]
    return out


def _violations(files: list[Path], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in files
        for line, name in _imports(path)
        if _offends(name, forbidden, allowed)
    ]


def _offends(name: str, forbidden: tuple[str, ...], allowed: tuple[str, ...]) -> bool:
    return _within(name, forbidden) and not _within(name, allowed)


RULES_FOR_REGISTRY = ("manager.rollout", "manager.stats", "manager.policy")
RULES = {
    "the registry never imports the decision core or policies": (
        ("manager.registry",),
        RULES_FOR_REGISTRY,
        (),
    ),
    "the reconciler and endpoint creation depend on the platform protocol only": (
        ("manager.rollout",),
        ("manager.platforms.sagemaker", "boto3", "botocore"),
        (),
    ),
    "the local SageMaker knows nothing of the rest of manager": (
        ("manager.local_sagemaker",),
        ("manager",),
        ("manager.local_sagemaker",),
    ),
    "the observation types are a leaf": (
        ("manager.metrics.samples",),
        ("manager",),
        ("manager.metrics.samples",),
    ),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_import_rule(rule: str) -> None:
    packages, forbidden, allowed = RULES[rule]
    assert _violations(_files(*packages), forbidden, allowed) == [], rule


@pytest.mark.parametrize("module", ["manager.rollout.decide", "manager.stats", "manager.metrics.samples"])
def test_the_decision_core_does_no_io(module: str) -> None:
    """decide and stats import only pure modules: no database, no network, no files."""
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _files(module)
        for line, name in _imports(path)
        if name != "__future__"
        and not _within(name, PURE)
        and not _within(name, PURE_MANAGER)
        and not name.startswith("collections.")
    ]
    assert bad == []


def test_the_rule_checker_sees_lazy_and_relative_imports() -> None:
    """The checker itself: an import inside a function and a `from .x import y` are both found."""
    source = "def f():\n    from manager.rollout import decide\n\nfrom . import tables\n"
    found = _imports_in(source, "manager.registry")
    assert (2, "manager.rollout.decide") in found and (4, "manager.registry.tables") in found
    assert [n for _, n in found if _offends(n, RULES_FOR_REGISTRY, ())] == [
        "manager.rollout",
        "manager.rollout.decide",
    ]
