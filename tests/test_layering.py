"""The import rules and the size limits of DESIGN.md and the README's architecture section, enforced:
each failure names the module and the offending import (or the module or function too large).

Imports inside functions count too (the CLI imports lazily), so a rule cannot be dodged by moving an
import into a function body; imports under `if TYPE_CHECKING:` do not (they never run). Every rule is
also run against an injected violation, so that a checker that cannot fail would fail here.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("manager", "trainers")
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
    "manager.rollout.verdicts",
    "manager.rollout.judge",
    "manager.rollout.operator_rules",
)
DECISION_CORE = (
    "manager.rollout.decide",
    "manager.rollout.operator_rules",
    "manager.rollout.judge",
    "manager.rollout.verdicts",
    "manager.stats",
)
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
MAX_TOP_LEVEL_MODULES = 8  # manager/*.py, __init__ and __main__ included


# ---- reading the code -----------------------------------------------------------------------------


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _files(*packages: str) -> list[Path]:
    out: list[Path] = []
    for package in packages:
        target = ROOT / Path(*package.split("."))
        out += sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]
    return out


MODULES = {_module(p): p for p in _files(*PACKAGES)}


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node that can run: `if TYPE_CHECKING:` blocks are left out."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in _runtime_nodes_of(child))
            continue
        yield node
        yield from _runtime_nodes(node)


def _runtime_nodes_of(node: ast.AST) -> Iterator[ast.AST]:
    yield node
    yield from _runtime_nodes(node)


@functools.cache
def _imports_in(source: str, package: str) -> list[tuple[int, str]]:
    """(line, module) for every import that runs, relative imports resolved. `from a import b` counts
    as an import of `a.b` when that is a module, else of `a` (and of `a.b`, which the rules match)."""
    found = []
    for node in _runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names = [f"{base}.{alias.name}" for alias in node.names]
            if not all(name in MODULES for name in names):
                found.append((node.lineno, base))
            found += [(node.lineno, name) for name in names if base.startswith(PACKAGES)]
    return found


def _package_of(path: Path) -> str:
    return _module(path) if path.name == "__init__.py" else _module(path).rsplit(".", 1)[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    return _imports_in(path.read_text(), _package_of(path))


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# ---- the import rules -----------------------------------------------------------------------------

# name: (whose imports, forbidden, allowed after all)
RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "the registry never imports the decision core, policies, the CLI or the web": (
        ("manager.registry",),
        ("manager.rollout", "manager.stats", "manager.policy", "manager.cli", "manager.web", "manager.views"),
        (),
    ),
    "the reconciler and endpoint creation depend on the platform protocol only": (
        ("manager.rollout",),
        (
            "manager.platforms.sagemaker",
            "manager.platforms.aws",
            "manager.platforms.factory",
            "boto3",
            "botocore",
        ),
        (),
    ),
    "the local SageMaker knows nothing of the rest of manager": (
        ("manager.local_sagemaker",),
        ("manager",),
        ("manager.local_sagemaker",),
    ),
    "the platforms never import the local SageMaker": (
        ("manager.platforms",),
        ("manager.local_sagemaker",),
        (),
    ),
    "the web never imports the CLI": (("manager.web",), ("manager.cli",), ()),
    "the CLI imports the web's entry points only (rows come from manager.views)": (
        ("manager.cli",),
        ("manager.web",),
        ("manager.web.serve", "manager.web.auth"),
    ),
    "the views import neither face": (("manager.views",), ("manager.cli", "manager.web"), ()),
    "the observation types are a leaf": (
        ("manager.metrics.samples",),
        ("manager",),
        ("manager.metrics.samples",),
    ),
    "boto3 is imported only by the client factory (and the local SageMaker's client aimed at itself)": (
        PACKAGES,
        ("boto3",),
        (),
    ),
}
# Who may import boto3: the one session and client factory; the local SageMaker, sealed from the rest,
# has its own `client()` aimed at itself (for tests and the demo).
BOTO3_MODULES = ("manager.platforms.aws", "manager.local_sagemaker.server")


def _violations_of(rule: str, sources: dict[str, tuple[str, str]]) -> list[str]:
    """The rule's violations in `sources`: module -> (package, source text)."""
    packages, forbidden, allowed = RULES[rule]
    exempt = BOTO3_MODULES if "boto3" in forbidden else ()
    return [
        f"{module}:{line} imports {name}"
        for module, (package, source) in sources.items()
        if _within(module, packages) and not _within(module, exempt)
        for line, name in _imports_in(source, package)
        if _within(name, forbidden) and not _within(name, allowed)
    ]


@functools.cache
def _sources() -> dict[str, tuple[str, str]]:
    return {module: (_package_of(path), path.read_text()) for module, path in MODULES.items()}


@pytest.mark.parametrize("rule", list(RULES))
def test_import_rule(rule: str) -> None:
    assert _violations_of(rule, _sources()) == [], rule


# An injected violation of each rule: (module, its source). Each must be reported.
INJECTED = {
    "the registry never imports the decision core, policies, the CLI or the web": (
        "manager.registry.fake",
        "def f():\n    from manager.cli import render\n",
    ),
    "the reconciler and endpoint creation depend on the platform protocol only": (
        "manager.rollout.fake",
        "from manager.platforms.aws import client\n",
    ),
    "the local SageMaker knows nothing of the rest of manager": (
        "manager.local_sagemaker.fake",
        "from manager.registry import tables\n",
    ),
    "the platforms never import the local SageMaker": (
        "manager.platforms.fake",
        "import manager.local_sagemaker.app\n",
    ),
    "the web never imports the CLI": ("manager.web.fake", "from manager.cli.models import LIST_COLUMNS\n"),
    "the CLI imports the web's entry points only (rows come from manager.views)": (
        "manager.cli.fake",
        "from manager.web import pages\n",
    ),
    "the views import neither face": ("manager.views.fake", "from manager.web import app\n"),
    "the observation types are a leaf": ("manager.metrics.samples", "from manager.db import Database\n"),
    "boto3 is imported only by the client factory (and the local SageMaker's client aimed at itself)": (
        "manager.history.fake",
        "def f():\n    import boto3\n",
    ),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_each_import_rule_fails_on_an_injected_violation(rule: str) -> None:
    module, source = INJECTED[rule]
    found = _violations_of(rule, {module: (module.rsplit(".", 1)[0], source)})
    assert len(found) >= 1 and found[0].startswith(f"{module}:"), (rule, found)


RULES_REGISTRY = next(iter(RULES))


def test_type_only_imports_do_not_count() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from manager.cli import render\n"
    assert _violations_of(RULES_REGISTRY, {"manager.registry.fake": ("manager.registry", source)}) == []


def test_the_rule_checker_sees_lazy_and_relative_imports() -> None:
    """The checker itself: an import inside a function and a `from .x import y` are both found."""
    source = "def f():\n    from manager.rollout import decide\n\nfrom . import tables\n"
    found = _imports_in(source, "manager.registry")
    assert (2, "manager.rollout.decide") in found and (4, "manager.registry.tables") in found


@pytest.mark.parametrize("module", (*DECISION_CORE, "manager.metrics.samples"))
def test_the_decision_core_does_no_io(module: str) -> None:
    """decide, judge, verdicts and stats import only pure modules: no database, no network, no files."""
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


# ---- no circles -----------------------------------------------------------------------------------


def _graph(sources: dict[str, tuple[str, str]]) -> dict[str, set[str]]:
    """module -> the modules of ours it imports (each name resolved to the longest module it names)."""
    known = set(sources)
    graph: dict[str, set[str]] = {}
    for module, (package, source) in sources.items():
        edges = set()
        for _line, name in _imports_in(source, package):
            while name and name not in known:
                name = name.rsplit(".", 1)[0] if "." in name else ""
            if name and name != module:
                edges.add(name)
        graph[module] = edges
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.append(sorted(group))
    return found


def test_no_circles_between_modules() -> None:
    """No two modules import each other, directly or through others, even lazily (a lazy import is
    how a circle hides, not how it is broken)."""
    assert _circles(_graph(_sources())) == []


def test_a_circle_is_found() -> None:
    sources = {
        "manager.a": ("manager", "from manager import b\n"),
        "manager.b": ("manager", "def f():\n    from manager.c import x\n"),
        "manager.c": ("manager", "import manager.a\n"),
        "manager.d": ("manager", "import manager.a\n"),
    }
    assert _circles(_graph(sources)) == [["manager.a", "manager.b", "manager.c"]]


# ---- sizes ----------------------------------------------------------------------------------------


def _too_large(path: str, source: str) -> list[str]:
    lines = len(source.splitlines())
    found = [f"{path}: {lines} lines (at most {MAX_MODULE_LINES})"] if lines > MAX_MODULE_LINES else []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(
                    f"{path}:{node.lineno} {node.name}: {length} lines (at most {MAX_FUNCTION_LINES})"
                )
    return found


def test_no_module_over_500_lines_and_no_function_over_80() -> None:
    found = [
        problem
        for path in _files(*PACKAGES)
        for problem in _too_large(str(path.relative_to(ROOT)), path.read_text())
    ]
    assert found == []


def test_the_size_check_fails_on_injected_sizes() -> None:
    long_function = "def f():\n" + "    x = 1\n" * 80
    assert _too_large("fake.py", long_function) == ["fake.py:1 f: 81 lines (at most 80)"]
    assert _too_large("fake.py", "x = 1\n" * 501) == ["fake.py: 501 lines (at most 500)"]
    assert _too_large("fake.py", "x = 1\n" * 500 + "") == []


def test_the_top_level_holds_at_most_eight_modules() -> None:
    top = sorted(p.name for p in (ROOT / "manager").glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
