"""Where captured data and labels are read from: an S3 bucket, or a local directory laid out the same."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from manager.errors import UserError


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


class ObjectStore(Protocol):
    def children(self, prefix: str) -> list[str]:
        """The names one level below `prefix` (which ends in '/' or is empty)."""
        ...

    def list(self, prefix: str, after: str) -> Iterator[ObjectInfo]:
        """Every object under `prefix` whose key sorts after `after`, in key order."""
        ...

    def read(self, key: str, start: int, length: int) -> bytes:
        """Up to `length` bytes of `key` from byte `start`."""
        ...


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def children(self, prefix: str) -> list[str]:
        folder = self.root / prefix
        if not folder.is_dir():
            return []
        return sorted(e.name for e in os.scandir(folder) if e.is_dir())

    def list(self, prefix: str, after: str) -> Iterator[ObjectInfo]:
        yield from self._walk(prefix, after)

    def _walk(self, key_prefix: str, after: str) -> Iterator[ObjectInfo]:
        folder = self.root / key_prefix
        if not folder.is_dir():
            return
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            key = key_prefix + entry.name
            if entry.is_dir():
                subtree = key + "/"
                # Every key in a subtree that sorts wholly before `after` was read already.
                if after and subtree < after and not after.startswith(subtree):
                    continue
                yield from self._walk(subtree, after)
            elif key > after:
                try:
                    stat = entry.stat()
                except OSError:  # listed but unreadable (a dangling link): reported when read
                    yield ObjectInfo(key, 1, datetime.now(UTC))
                    continue
                yield ObjectInfo(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))

    def read(self, key: str, start: int, length: int) -> bytes:
        with open(self.root / key, "rb") as handle:
            handle.seek(start)
            return handle.read(length)


class S3Store:
    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def children(self, prefix: str) -> list[str]:
        names: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, Delimiter="/"
        ):
            names += [p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", [])]
        return sorted(names)

    def list(self, prefix: str, after: str) -> Iterator[ObjectInfo]:
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, StartAfter=after or prefix
        ):
            for item in page.get("Contents", []):
                yield ObjectInfo(item["Key"], item["Size"], item["LastModified"])

    def read(self, key: str, start: int, length: int) -> bytes:
        response = self.client.get_object(
            Bucket=self.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}"
        )
        body: bytes = response["Body"].read()
        return body


def open_store(uri: str, s3_client: Any = None) -> tuple[ObjectStore, str]:
    """The store behind `s3://bucket/prefix` or `file:///dir`, and the key prefix inside it."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise UserError(f"{uri!r} needs a bucket: s3://bucket/prefix")
        if s3_client is None:
            from manager.platforms import aws

            s3_client = aws.client("s3")
        prefix = parsed.path.strip("/")
        return S3Store(s3_client, parsed.netloc), (prefix + "/" if prefix else "")
    if parsed.scheme in ("file", ""):
        return LocalStore(Path(unquote(parsed.path if parsed.scheme else uri))), ""
    raise UserError(f"{uri!r}: read captured data and labels from s3:// or file:// only")
