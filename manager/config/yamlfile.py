"""YAML files validated by pydantic, with every error reported as `file:line: field.path: message`."""

from __future__ import annotations

import functools
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from manager.errors import UserError

T = TypeVar("T", bound=BaseModel)


class ConfigError(UserError):
    """A configuration file is invalid; the message holds one line per problem."""


def _lines(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            _lines(value, (*path, key.value), out)
            out.setdefault((*path, key.value), key.start_mark.line + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _lines(item, (*path, index), out)


def _line_of(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int:
    """The line of the deepest part of `loc` that the file has (a missing field: its parent's line)."""
    parts = tuple(str(p) if not isinstance(p, int) else p for p in loc)
    for end in range(len(parts), -1, -1):
        if parts[:end] in lines:
            return lines[parts[:end]]
    return 1


MAX_BYTES = 1 << 20  # a policy or training config is a few KB; 1 MB leaves room and bounds the work
MAX_NODES = 100_000  # after aliases are expanded: a 1.7 KB "billion laughs" file expands to billions


def read(path: Path) -> str:
    """The file's text, refused with one line when it is unreadable, too large or not UTF-8."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_BYTES // 1024} KB; this is not a configuration file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start} is {raw[exc.start]:#04x})") from None


def load(path: Path, model: type[T]) -> T:
    return parse(read(path), model, str(path))


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain value", key_node.start_mark
                ) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} given twice in one mapping (first on line {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: yaml.Node) -> int:
    """How many nodes the document has once every alias is expanded, without expanding them."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative post-order over the node graph (aliases make it a DAG)
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if done or not children:
            sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), MAX_NODES + 1)
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _compose(text: str, name: str) -> tuple[yaml.Node | None, Any]:
    if len(text.encode()) > MAX_BYTES:
        raise ConfigError(f"{name}: larger than {MAX_BYTES // 1024} KB; this is not a configuration file")
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is not None and _expanded_size(node) > MAX_NODES:
                raise ConfigError(
                    f"{name}: expands to more than {MAX_NODES:,} values through its aliases; refused"
                )
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark else name
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise ConfigError(f"{name}: nested too deeply to be a configuration file") from None
    return node, data


def parse(text: str, model: type[T], name: str = "<config>") -> T:
    node, data = _compose(text, name)
    if not isinstance(data, dict):
        raise ConfigError(f"{name}:1: expected a mapping of settings at the top level")
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        try:
            _lines(node, (), lines)
        except RecursionError:
            raise ConfigError(f"{name}: nested too deeply to be a configuration file") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            field = ".".join(str(p) for p in loc) or "(top level)"
            message = error["msg"]
            if error["type"] == "extra_forbidden" and loc:
                message = _unknown_key(str(loc[-1]), model)
            problems.append(f"{name}:{_line_of(loc, lines)}: {field}: {message}")
        raise ConfigError("\n".join(problems)) from None


def _unknown_key(key: str, model: type[BaseModel]) -> str:
    """A key no setting has, with the nearest one the file's schema knows (a typo: `setWieght`)."""
    import difflib

    close = difflib.get_close_matches(key, sorted(_known_keys(model)), n=1, cutoff=0.75)
    return f"not a setting here{f'; did you mean {close[0]!r}?' if close else ''}"


@functools.lru_cache(maxsize=32)
def _known_keys(model: type[BaseModel]) -> frozenset[str]:
    """Every key (alias or name) of `model` and of every model its fields hold, however nested."""
    found: set[str] = set()
    todo: list[Any] = [model]
    seen: set[Any] = set()
    while todo:
        kind = todo.pop()
        if kind in seen:
            continue
        seen.add(kind)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            for field_name, info in kind.model_fields.items():
                found.add(info.alias or field_name)
                todo.append(info.annotation)
        else:
            todo.extend(typing.get_args(kind))
    return frozenset(found)
