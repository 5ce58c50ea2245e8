"""The local S3's objects on disk (`Store`: a bucket is a directory, a key a file, metadata beside the
tree), S3's XML and errors, and a request body received into a staged file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import Response

BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
NS = "http://s3.amazonaws.com/doc/2006-03-01/"
META_DIR = ".s3meta"
UPLOADS_DIR = ".s3multipart"
MAX_KEY_BYTES = 1024
MAX_KEYS = 1000
MIN_PART_BYTES = 5 * 1024 * 1024
CHUNK = 1024 * 1024
OWNER = "<Owner><ID>local</ID><DisplayName>local</DisplayName></Owner>"


class S3Error(Exception):
    def __init__(self, code: str, message: str, status: int, **fields: str) -> None:
        super().__init__(message)
        self.code, self.message, self.status, self.fields = code, message, status, fields


def no_bucket(bucket: str) -> S3Error:
    return S3Error("NoSuchBucket", "The specified bucket does not exist", 404, BucketName=bucket)


def no_key(key: str) -> S3Error:
    return S3Error("NoSuchKey", "The specified key does not exist.", 404, Key=key)


def xml_response(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    text = f'<?xml version="1.0" encoding="UTF-8"?>\n{body}'
    return Response(text, status_code=status, media_type="application/xml", headers=headers)


def xml_doc(root: str, inner: str) -> Response:
    return xml_response(f'<{root} xmlns="{NS}">{inner}</{root}>')


def xml_tag(name: str, value: Any) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


async def drain(request: Request) -> None:
    with contextlib.suppress(Exception):  # already read, or the client went away: nothing to drain
        async for _ in request.stream():
            pass


def described(request: Request) -> dict[str, Any]:
    """What a PUT (or a multipart upload's start) says of its object: type and user metadata."""
    return {
        "content_type": request.headers.get("content-type", "binary/octet-stream"),
        "user": {k: v for k, v in request.headers.items() if k.startswith("x-amz-meta-")},
    }


def is_s3_request(scope: dict[str, Any]) -> bool:
    """True when the request's SigV4 credential scope (header or presigned query) names s3."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return b"/s3/aws4_request" in value
    query = scope.get("query_string", b"")
    return b"X-Amz-Credential=" in query and b"%2Fs3%2Faws4_request" in query


class Store:
    """Buckets and objects as directories and files."""

    def __init__(self, root: Path, region: str) -> None:
        self.root = root
        self.region = region
        root.mkdir(parents=True, exist_ok=True)

    # ---- names ----------------------------------------------------------------------------------

    def bucket_dir(self, bucket: str, must_exist: bool = True) -> Path:
        if not BUCKET_NAME.match(bucket) or ".." in bucket:
            raise S3Error("InvalidBucketName", "The specified bucket is not valid.", 400, BucketName=bucket)
        path = self.root / bucket
        if must_exist and not path.is_dir():
            raise no_bucket(bucket)
        return path

    def object_path(self, bucket: str, key: str) -> Path:
        base = self.bucket_dir(bucket)
        if not key or len(key.encode()) > MAX_KEY_BYTES:
            raise S3Error("KeyTooLongError", "Your key is too long", 400)
        segments = key.split("/")
        if any(s in (".", "..") for s in segments) or "\x00" in key or "" in segments[:-1]:
            raise S3Error(
                "InvalidArgument",
                f"the local S3 stores keys as files: {key!r} has a '.', '..' or empty path segment",
                400,
            )
        return base / key

    def meta_path(self, bucket: str, key: str) -> Path:
        return self.root / META_DIR / bucket / f"{key}.json"

    # ---- objects --------------------------------------------------------------------------------

    def meta(self, bucket: str, key: str, path: Path) -> dict[str, Any]:
        """The object's metadata; computed (and kept) for a file written by other means."""
        stat = path.stat()
        meta_file = self.meta_path(bucket, key)
        try:
            meta: dict[str, Any] = json.loads(meta_file.read_text())
            if meta.get("mtime_ns") == stat.st_mtime_ns and meta.get("size") == stat.st_size:
                return meta
        except (OSError, ValueError):
            pass
        digest = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                digest.update(chunk)
        meta = {"etag": f'"{digest.hexdigest()}"', "content_type": "binary/octet-stream", "user": {}}
        self._write_meta(bucket, key, path, meta)
        return meta

    def _write_meta(self, bucket: str, key: str, path: Path, meta: dict[str, Any]) -> None:
        stat = path.stat()
        meta = {**meta, "mtime_ns": stat.st_mtime_ns, "size": stat.st_size}
        meta_file = self.meta_path(bucket, key)
        meta_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = meta_file.with_name(f".{meta_file.name}.{uuid.uuid4().hex}")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, meta_file)

    def existing(self, bucket: str, key: str) -> Path:
        path = self.object_path(bucket, key)
        if not path.is_file():
            raise no_key(key)
        return path

    def install(self, bucket: str, key: str, staged: Path, meta: dict[str, Any]) -> dict[str, Any]:
        """Move a fully written file into place (atomic), with its metadata."""
        path = self.object_path(bucket, key)
        if path.is_dir():
            raise S3Error(
                "InvalidArgument", f"the local S3 holds keys under {key!r}/: it cannot also be an object", 400
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, path)
        self._write_meta(bucket, key, path, meta)
        return meta

    def staging(self) -> Path:
        tmp = self.root / UPLOADS_DIR / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkstemp(dir=tmp)[1])

    def delete(self, bucket: str, key: str) -> None:
        path = self.object_path(bucket, key)
        if path.is_file():
            path.unlink()
            self.meta_path(bucket, key).unlink(missing_ok=True)
            base = self.bucket_dir(bucket)
            parent = path.parent
            while parent != base and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent

    def keys(self, bucket: str, prefix: str) -> Iterator[str]:
        """Every key under the prefix, in S3's order (by UTF-8 bytes)."""
        base = self.bucket_dir(bucket)
        start = base / prefix.rsplit("/", 1)[0] if "/" in prefix else base
        if not start.is_dir():
            return iter(())
        found = []
        for directory, dirs, files in os.walk(start):
            dirs[:] = [d for d in dirs if not d.startswith(".s3")]
            rel = os.path.relpath(directory, base)
            for name in files:
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    found.append(key)
        return iter(sorted(found, key=lambda k: k.encode()))


async def receive(request: Request, staged: Path) -> tuple[str, int]:
    """Write the body to `staged`; (md5 hex, size). Undoes `aws-chunked` framing if sent."""
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    chunked = "aws-chunked" in request.headers.get("content-encoding", "")
    buffer = b""
    with staged.open("wb") as out:
        async for piece in request.stream():
            if not chunked:
                digest.update(piece)
                out.write(piece)
                size += len(piece)
                continue
            buffer += piece
            while True:
                head, sep, rest = buffer.partition(b"\r\n")
                if not sep:
                    break
                length = int(head.split(b";")[0] or b"0", 16)
                if length == 0:
                    buffer = b""
                    break
                if len(rest) < length + 2:
                    break
                data = rest[:length]
                digest.update(data)
                out.write(data)
                size += length
                buffer = rest[length + 2 :]
    return digest.hexdigest(), size
