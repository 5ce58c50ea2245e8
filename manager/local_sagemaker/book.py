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


class Book(Generic[T]):
    """One kind of resource by name: `kind` as its ARNs spell it, `noun` as AWS's messages do."""

    kind: str
    noun: str

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
