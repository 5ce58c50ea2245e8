"""S3's REST API over the host's `<s3_root>/` directory: `s3://bucket/key` is `<s3_root>/bucket/key`.

What boto3's `upload_file`/`download_file`, its resource collections and the SageMaker SDK's
`upload_data`/`S3Downloader` use: buckets (create, head, list, delete, location), objects (put, get
with ranges, head, delete, delete several, copy), `ListObjects` and `ListObjectsV2` (prefix,
delimiter, continuation, `encoding-type=url`) and multipart uploads, with S3's XML error codes.

Requests reach this app when their SigV4 credential scope names `s3` (path-style addressing:
`http://host:port/bucket/key`). Object metadata (content type, ETag, `x-amz-meta-*`) lives beside
the tree in `<s3_root>/.s3meta/`; a file put there by any other means is an object too (its ETag is
computed when first asked). Keys are files, so a key with `.`/`..` or empty segments, which would
leave the bucket's directory or collide with another key, is refused (`InvalidArgument`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from starlette.concurrency import run_in_threadpool
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


def _xml(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    text = f'<?xml version="1.0" encoding="UTF-8"?>\n{body}'
    return Response(text, status_code=status, media_type="application/xml", headers=headers)


def _doc(root: str, inner: str) -> Response:
    return _xml(f'<{root} xmlns="{NS}">{inner}</{root}>')


def _tag(name: str, value: Any) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


async def _drain(request: Request) -> None:
    with contextlib.suppress(Exception):  # already read, or the client went away: nothing to drain
        async for _ in request.stream():
            pass


def _described(request: Request) -> dict[str, Any]:
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


class S3App:
    """The ASGI app."""

    def __init__(self, root: Path, region: str) -> None:
        self.store = Store(root, region)
        self.region = region

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        request_id = uuid.uuid4().hex[:16].upper()
        try:
            response = await self.dispatch(request)
        except S3Error as error:
            await _drain(request)  # a refused upload's body must not be read as the next request
            response = self.error(error, request, request_id)
        except Exception as exc:  # a bug in the host: S3's shape, never a dead server
            response = self.error(
                S3Error("InternalError", f"{type(exc).__name__}: {exc}", 500), request, request_id
            )
        response.headers["x-amz-request-id"] = request_id
        response.headers["x-amz-id-2"] = base64.b64encode(request_id.encode()).decode()
        await response(scope, receive, send)

    @staticmethod
    def error(error: S3Error, request: Request, request_id: str) -> Response:
        if request.method == "HEAD":  # S3 answers HEAD errors with no body
            return Response(status_code=error.status)
        extra = "".join(_tag(k, v) for k, v in error.fields.items())
        body = (
            f"<Error>{_tag('Code', error.code)}{_tag('Message', error.message)}{extra}"
            f"{_tag('RequestId', request_id)}</Error>"
        )
        return _xml(body, error.status)

    async def dispatch(self, request: Request) -> Response:
        path = request.url.path
        bucket, _, raw_key = path.lstrip("/").partition("/")
        bucket, key = unquote(bucket), unquote(raw_key)
        q = request.query_params
        method = request.method
        if not bucket:
            if method == "GET":
                return self.list_buckets()
            raise S3Error("MethodNotAllowed", f"{method} / is not supported", 405)
        if not key:
            if method == "PUT":
                return self.create_bucket(bucket)
            if method == "HEAD":
                self.store.bucket_dir(bucket)
                return Response(headers={"x-amz-bucket-region": self.region})
            if method == "DELETE":
                return self.delete_bucket(bucket)
            if method == "GET" and "location" in q:
                self.store.bucket_dir(bucket)
                constraint = "" if self.region == "us-east-1" else escape(self.region)
                return _xml(f'<LocationConstraint xmlns="{NS}">{constraint}</LocationConstraint>')
            if method == "GET" and "uploads" in q:
                return self.list_uploads(bucket)
            if method == "GET":
                return await run_in_threadpool(self.list_objects, bucket, q)
            if method == "POST" and "delete" in q:
                return await self.delete_objects(bucket, request)
            raise S3Error("NotImplemented", f"the local S3 does not implement {method} on a bucket", 501)
        if method == "PUT" and "uploadId" in q:
            if "x-amz-copy-source" in request.headers:
                raise S3Error("NotImplemented", "the local S3 does not implement UploadPartCopy", 501)
            return await self.upload_part(bucket, key, q["uploadId"], q.get("partNumber", ""), request)
        if method == "PUT" and "x-amz-copy-source" in request.headers:
            return await run_in_threadpool(self.copy_object, bucket, key, request)
        if method == "PUT":
            if "tagging" in q or "acl" in q:
                raise S3Error("NotImplemented", "the local S3 does not implement object tagging or ACLs", 501)
            return await self.put_object(bucket, key, request)
        if method in ("GET", "HEAD"):
            if "uploadId" in q:
                return self.list_parts(bucket, key, q["uploadId"])
            return await run_in_threadpool(self.get_object, bucket, key, request)
        if method == "DELETE" and "uploadId" in q:
            return self.abort_upload(bucket, key, q["uploadId"])
        if method == "DELETE":
            self.store.delete(bucket, key)
            return Response(status_code=204)
        if method == "POST" and "uploads" in q:
            return self.create_upload(bucket, key, request)
        if method == "POST" and "uploadId" in q:
            return await self.complete_upload(bucket, key, q["uploadId"], request)
        raise S3Error("NotImplemented", f"the local S3 does not implement {method} on an object", 501)

    # ---- buckets --------------------------------------------------------------------------------

    def list_buckets(self) -> Response:
        rows = []
        for entry in sorted(self.store.root.iterdir()):
            if entry.is_dir() and BUCKET_NAME.match(entry.name):
                created = _iso(entry.stat().st_ctime)
                rows.append(f"<Bucket>{_tag('Name', entry.name)}{_tag('CreationDate', created)}</Bucket>")
        return _doc("ListAllMyBucketsResult", f"{OWNER}<Buckets>{''.join(rows)}</Buckets>")

    def create_bucket(self, bucket: str) -> Response:
        path = self.store.bucket_dir(bucket, must_exist=False)
        if path.is_dir() and self.region != "us-east-1":
            raise S3Error(
                "BucketAlreadyOwnedByYou",
                "Your previous request to create the named bucket succeeded and you already own it.",
                409,
                BucketName=bucket,
            )
        path.mkdir(parents=True, exist_ok=True)
        return Response(headers={"Location": f"/{bucket}"})

    def delete_bucket(self, bucket: str) -> Response:
        path = self.store.bucket_dir(bucket)
        if next(self.store.keys(bucket, ""), None) is not None:
            raise S3Error(
                "BucketNotEmpty", "The bucket you tried to delete is not empty", 409, BucketName=bucket
            )
        shutil.rmtree(path)
        shutil.rmtree(self.store.root / META_DIR / bucket, ignore_errors=True)
        return Response(status_code=204)

    # ---- listing --------------------------------------------------------------------------------

    def list_objects(self, bucket: str, q: Any) -> Response:
        v2 = q.get("list-type") == "2"
        prefix = q.get("prefix", "")
        delimiter = q.get("delimiter", "")
        encode = q.get("encoding-type") == "url"
        try:
            max_keys = int(q.get("max-keys", MAX_KEYS))
        except ValueError:
            raise S3Error(
                "InvalidArgument", "Provided max-keys not an integer or within integer range", 400
            ) from None
        if max_keys < 0:
            raise S3Error(
                "InvalidArgument", "Argument maxKeys must be an integer between 0 and 2147483647", 400
            )
        max_keys = min(max_keys, MAX_KEYS)
        if v2:
            token = q.get("continuation-token")
            after = q.get("start-after", "")
            if token is not None:
                try:
                    after = base64.urlsafe_b64decode(token.encode()).decode()
                except (ValueError, UnicodeDecodeError):
                    raise S3Error(
                        "InvalidArgument", "The continuation token provided is incorrect", 400
                    ) from None
        else:
            after = q.get("marker", "")

        def enc(value: str) -> str:
            return quote(value, safe="/~") if encode else value

        contents: list[str] = []
        prefixes: list[str] = []
        seen_prefixes: set[str] = set()
        truncated = False
        last = ""
        for key in self.store.keys(bucket, prefix):
            if after and key.encode() <= after.encode():
                continue
            if delimiter:
                cut = key.find(delimiter, len(prefix))
                if cut >= 0:
                    common = key[: cut + len(delimiter)]
                    if common in seen_prefixes or (after and common.encode() <= after.encode()):
                        continue
                    if len(contents) + len(prefixes) >= max_keys:
                        truncated = True
                        break
                    seen_prefixes.add(common)
                    prefixes.append(f"<CommonPrefixes>{_tag('Prefix', enc(common))}</CommonPrefixes>")
                    last = common
                    continue
            if len(contents) + len(prefixes) >= max_keys:
                truncated = True
                break
            path = self.store.root / bucket / key
            try:
                meta = self.store.meta(bucket, key, path)
                stat = path.stat()
            except FileNotFoundError:  # deleted while listing
                continue
            owner = "" if v2 and q.get("fetch-owner") != "true" else OWNER
            contents.append(
                f"<Contents>{_tag('Key', enc(key))}{_tag('LastModified', _iso(stat.st_mtime))}"
                f"{_tag('ETag', meta['etag'])}{_tag('Size', stat.st_size)}"
                f"{_tag('StorageClass', 'STANDARD')}{owner}</Contents>"
            )
            last = key
        head = (
            f"{_tag('Name', bucket)}{_tag('Prefix', enc(prefix))}{_tag('MaxKeys', max_keys)}"
            f"{_tag('IsTruncated', str(truncated).lower())}"
        )
        if delimiter:
            head += _tag("Delimiter", enc(delimiter))
        if encode:
            head += _tag("EncodingType", "url")
        if v2:
            head += _tag("KeyCount", len(contents) + len(prefixes))
            if "continuation-token" in q:
                head += _tag("ContinuationToken", q["continuation-token"])
            if "start-after" in q:
                head += _tag("StartAfter", enc(q["start-after"]))
            if truncated:
                head += _tag("NextContinuationToken", base64.urlsafe_b64encode(last.encode()).decode())
            root = "ListBucketResult"
        else:
            head += _tag("Marker", enc(after))
            if truncated and delimiter:
                head += _tag("NextMarker", enc(last))
            root = "ListBucketResult"
        return _xml(f'<{root} xmlns="{NS}">{head}{"".join(contents)}{"".join(prefixes)}</{root}>')

    # ---- objects --------------------------------------------------------------------------------

    @staticmethod
    async def _receive(request: Request, staged: Path) -> tuple[str, int]:
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

    async def put_object(self, bucket: str, key: str, request: Request) -> Response:
        self.store.object_path(bucket, key)  # bucket and key are valid before reading the body
        staged = self.store.staging()
        try:
            md5, _ = await self._receive(request, staged)
            declared = request.headers.get("content-md5")
            if declared and base64.b64decode(declared).hex() != md5:
                raise S3Error(
                    "BadDigest", "The Content-MD5 you specified did not match what we received.", 400
                )
            meta = {"etag": f'"{md5}"', **_described(request)}
            await run_in_threadpool(self.store.install, bucket, key, staged, meta)
        finally:
            staged.unlink(missing_ok=True)
        return Response(headers={"ETag": str(meta["etag"])})

    def copy_object(self, bucket: str, key: str, request: Request) -> Response:
        source = unquote(request.headers["x-amz-copy-source"]).lstrip("/").split("?versionId=")[0]
        src_bucket, _, src_key = source.partition("/")
        src = self.store.existing(src_bucket, src_key)
        meta = dict(self.store.meta(src_bucket, src_key, src))
        if request.headers.get("x-amz-metadata-directive") == "REPLACE":
            meta.update(_described(request))
        staged = self.store.staging()
        try:
            shutil.copyfile(src, staged)
            self.store.install(bucket, key, staged, meta)
        finally:
            staged.unlink(missing_ok=True)
        modified = _iso(time.time())
        return _doc("CopyObjectResult", f"{_tag('LastModified', modified)}{_tag('ETag', meta['etag'])}")

    def get_object(self, bucket: str, key: str, request: Request) -> Response:
        path = self.store.existing(bucket, key)
        meta = self.store.meta(bucket, key, path)
        stat = path.stat()
        headers = {
            "Content-Type": meta["content_type"],
            "ETag": meta["etag"],
            "Last-Modified": _http_date(stat.st_mtime),
            "Accept-Ranges": "bytes",
            **meta.get("user", {}),
        }
        since = request.headers.get("if-modified-since")
        match = request.headers.get("if-none-match")
        if match is not None and match == meta["etag"]:
            return Response(status_code=304, headers=headers)
        if since is not None:
            try:
                if int(stat.st_mtime) <= parsedate_to_datetime(since).timestamp():
                    return Response(status_code=304, headers=headers)
            except (TypeError, ValueError):
                pass
        size = stat.st_size
        start, end, status = 0, size - 1, 200
        wanted = request.headers.get("range")
        if wanted:
            found = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
            if found and (found.group(1) or found.group(2)):
                if found.group(1):
                    start = int(found.group(1))
                    end = min(int(found.group(2)), size - 1) if found.group(2) else size - 1
                else:
                    start, end = max(size - int(found.group(2)), 0), size - 1
                if start >= size or start > end:
                    raise S3Error("InvalidRange", "The requested range is not satisfiable", 416)
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(end - start + 1 if size else 0)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        with path.open("rb") as f:
            f.seek(start)
            body = f.read(end - start + 1) if size else b""
        return Response(body, status_code=status, headers=headers)

    async def delete_objects(self, bucket: str, request: Request) -> Response:
        self.store.bucket_dir(bucket)
        try:
            root = ElementTree.fromstring(await request.body())
        except ElementTree.ParseError:
            raise S3Error("MalformedXML", "The XML you provided was not well-formed", 400) from None
        quiet = any(el.tag.endswith("Quiet") and (el.text or "").strip() == "true" for el in root)
        done, errors = [], []
        for element in root:
            if not element.tag.endswith("Object"):
                continue
            key = next((el.text or "" for el in element if el.tag.endswith("Key")), "")
            try:
                self.store.delete(bucket, key)
                if not quiet:
                    done.append(f"<Deleted>{_tag('Key', key)}</Deleted>")
            except S3Error as error:
                errors.append(
                    f"<Error>{_tag('Key', key)}{_tag('Code', error.code)}"
                    f"{_tag('Message', error.message)}</Error>"
                )
        return _xml(f'<DeleteResult xmlns="{NS}">{"".join(done)}{"".join(errors)}</DeleteResult>')

    # ---- multipart ------------------------------------------------------------------------------

    def _upload_dir(self, bucket: str, key: str, upload_id: str) -> Path:
        self.store.object_path(bucket, key)
        if not re.fullmatch(r"[0-9a-f]{32}", upload_id):
            raise self._no_upload(upload_id)
        path = self.store.root / UPLOADS_DIR / upload_id
        try:
            info = json.loads((path / "upload.json").read_text())
        except (OSError, ValueError):
            raise self._no_upload(upload_id) from None
        if info["bucket"] != bucket or info["key"] != key:
            raise self._no_upload(upload_id)
        return path

    @staticmethod
    def _no_upload(upload_id: str) -> S3Error:
        return S3Error(
            "NoSuchUpload",
            "The specified upload does not exist. The upload ID may be invalid, or the upload may "
            "have been aborted or completed.",
            404,
            UploadId=upload_id,
        )

    def create_upload(self, bucket: str, key: str, request: Request) -> Response:
        self.store.object_path(bucket, key)
        upload_id = uuid.uuid4().hex
        path = self.store.root / UPLOADS_DIR / upload_id
        path.mkdir(parents=True)
        info = {
            "bucket": bucket,
            "key": key,
            "initiated": time.time(),
            **_described(request),
        }
        (path / "upload.json").write_text(json.dumps(info))
        return _xml(
            f'<InitiateMultipartUploadResult xmlns="{NS}">{_tag("Bucket", bucket)}{_tag("Key", key)}'
            f"{_tag('UploadId', upload_id)}</InitiateMultipartUploadResult>"
        )

    async def upload_part(
        self, bucket: str, key: str, upload_id: str, number: str, request: Request
    ) -> Response:
        path = self._upload_dir(bucket, key, upload_id)
        if not number.isdigit() or not 1 <= int(number) <= 10000:
            raise S3Error(
                "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive", 400
            )
        staged = self.store.staging()
        try:
            md5, _ = await self._receive(request, staged)
            os.replace(staged, path / f"part-{int(number):05d}")
            (path / f"part-{int(number):05d}.md5").write_text(md5)
        finally:
            staged.unlink(missing_ok=True)
        return Response(headers={"ETag": f'"{md5}"'})

    def list_parts(self, bucket: str, key: str, upload_id: str) -> Response:
        path = self._upload_dir(bucket, key, upload_id)
        parts = []
        for part in sorted(path.glob("part-?????")):
            etag = '"' + (path / f"{part.name}.md5").read_text() + '"'
            parts.append(
                f"<Part>{_tag('PartNumber', int(part.name[5:]))}{_tag('ETag', etag)}"
                f"{_tag('Size', part.stat().st_size)}"
                f"{_tag('LastModified', _iso(part.stat().st_mtime))}</Part>"
            )
        return _xml(
            f'<ListPartsResult xmlns="{NS}">{_tag("Bucket", bucket)}{_tag("Key", key)}'
            f"{_tag('UploadId', upload_id)}{_tag('IsTruncated', 'false')}{''.join(parts)}</ListPartsResult>"
        )

    def list_uploads(self, bucket: str) -> Response:
        self.store.bucket_dir(bucket)
        rows = []
        for info_file in sorted((self.store.root / UPLOADS_DIR).glob("*/upload.json")):
            info = json.loads(info_file.read_text())
            if info["bucket"] == bucket:
                rows.append(
                    f"<Upload>{_tag('Key', info['key'])}{_tag('UploadId', info_file.parent.name)}"
                    f"{_tag('Initiated', _iso(info['initiated']))}</Upload>"
                )
        return _xml(
            f'<ListMultipartUploadsResult xmlns="{NS}">{_tag("Bucket", bucket)}'
            f"{_tag('IsTruncated', 'false')}{''.join(rows)}</ListMultipartUploadsResult>"
        )

    def abort_upload(self, bucket: str, key: str, upload_id: str) -> Response:
        shutil.rmtree(self._upload_dir(bucket, key, upload_id))
        return Response(status_code=204)

    async def complete_upload(self, bucket: str, key: str, upload_id: str, request: Request) -> Response:
        path = self._upload_dir(bucket, key, upload_id)
        try:
            root = ElementTree.fromstring(await request.body())
        except ElementTree.ParseError:
            raise S3Error("MalformedXML", "The XML you provided was not well-formed", 400) from None
        wanted: list[tuple[int, str]] = []
        for entry in root:
            fields = {el.tag.rsplit("}", 1)[-1]: (el.text or "").strip() for el in entry}
            if not fields.get("PartNumber", "").isdigit():
                raise S3Error("MalformedXML", "The XML you provided was not well-formed", 400)
            wanted.append((int(fields["PartNumber"]), fields.get("ETag", "").strip('"')))
        if not wanted:
            raise S3Error("MalformedXML", "You must specify at least one part", 400)
        if [n for n, _ in wanted] != sorted({n for n, _ in wanted}):
            raise S3Error("InvalidPartOrder", "The list of parts was not in ascending order.", 400)
        files = []
        for i, (number, etag) in enumerate(wanted):
            part = path / f"part-{number:05d}"
            md5_file = path / f"part-{number:05d}.md5"
            if not part.is_file() or md5_file.read_text() != etag:
                raise S3Error(
                    "InvalidPart",
                    "One or more of the specified parts could not be found. The part may not have been "
                    "uploaded, or the specified entity tag may not have matched the part's entity tag.",
                    400,
                )
            if i < len(wanted) - 1 and part.stat().st_size < MIN_PART_BYTES:
                raise S3Error(
                    "EntityTooSmall",
                    "Your proposed upload is smaller than the minimum allowed object size.",
                    400,
                )
            files.append((part, etag))
        info = json.loads((path / "upload.json").read_text())

        def assemble() -> dict[str, Any]:
            staged = self.store.staging()
            try:
                with staged.open("wb") as out:
                    for part, _ in files:
                        with part.open("rb") as f:
                            shutil.copyfileobj(f, out, CHUNK)
                combined = hashlib.md5(b"".join(bytes.fromhex(e) for _, e in files), usedforsecurity=False)
                meta = {
                    "etag": f'"{combined.hexdigest()}-{len(files)}"',
                    "content_type": info["content_type"],
                    "user": info["user"],
                }
                self.store.install(bucket, key, staged, meta)
            finally:
                staged.unlink(missing_ok=True)
            shutil.rmtree(path)
            return meta

        meta = await run_in_threadpool(assemble)
        return _doc(
            "CompleteMultipartUploadResult",
            f"{_tag('Location', f'/{bucket}/{key}')}{_tag('Bucket', bucket)}{_tag('Key', key)}"
            f"{_tag('ETag', meta['etag'])}",
        )
