"""What every table of SageMaker resources shares: lookup by name in any case, ARNs, and the
host's clock, tags and save."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from manager.local_sagemaker.protocol import sagemaker_arn, validation
from manager.local_sagemaker.tags import TagBook

T = TypeVar("T")


@dataclass
class Shared:
    """The host's parts a resource table uses: its region (for ARNs), its clock, its tags, and
    `save`, which persists the whole control plane."""

    region: str
    clock: Callable[[], float]
    save: Callable[[], None]
    tags: TagBook

    def arn(self, kind: str, name: str) -> str:
        return sagemaker_arn(self.region, kind, name)


def find(table: dict[str, T], name: Any) -> T | None:
    """An entry by name. Names that differ only in case are one name, as on AWS: an entry keeps
    the spelling it was created with and is found by any other."""
    key = str(name)
    hit = table.get(key)  # the spelling it was created with: the common case stays a dict lookup
    if hit is not None:
        return hit
    key = key.lower()
    # A snapshot: the runtime looks endpoints up while request handlers add and delete them.
    return next((entry for n, entry in tuple(table.items()) if n.lower() == key), None)


LIST_DEFAULT_MAX = 100  # what the control plane's lists have always returned without MaxResults


class Book(Generic[T]):
    """One kind of resource by name: `kind` as its ARNs spell it, `noun` as AWS's messages do. A
    resource kept as a dict with `<Noun>Name`, `<Noun>Arn` and `CreationTime` (`field`, e.g.
    "Model"; `plural` names its List response's key) gets Delete and List from `delete` and `listing`."""

    kind: str
    noun: str
    field: str = ""
    plural: str = ""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.table: dict[str, T] = {}

    def arn(self, name: str) -> str:
        return self.shared.arn(self.kind, name)

    def get(self, name: Any) -> T:
        entry = find(self.table, name)
        if entry is None:
            raise validation(f'Could not find {self.noun} "{self.arn(str(name))}".')
        return entry

    def delete(self, req: dict[str, Any]) -> dict[str, Any]:
        """`Delete<Noun>`: gone by any spelling of its name, with its tags."""
        entry: Any = self.get(req.get(f"{self.field}Name", ""))
        del self.table[entry[f"{self.field}Name"]]
        self.shared.tags.forget(entry[f"{self.field}Arn"])
        self.shared.save()
        return {}

    def listing(self, req: dict[str, Any]) -> dict[str, Any]:
        """`List<Nouns>`: name, ARN and creation time, sorted and paged as AWS does."""
        from manager.local_sagemaker.listing import page, sorted_by

        name, arn = f"{self.field}Name", f"{self.field}Arn"
        rows = [
            {name: e[name], arn: e[arn], "CreationTime": e["CreationTime"]}  # type: ignore[index]
            for e in self.table.values()
        ]
        return page(req, rows, self.plural, sorted_by(name), default_max=LIST_DEFAULT_MAX)
