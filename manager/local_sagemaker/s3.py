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
import re
import shutil
import time
import uuid
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from manager.local_sagemaker.s3_listing import list_objects
from manager.local_sagemaker.s3_store import (
    BUCKET_NAME,
    META_DIR,
    NS,
    OWNER,
    S3Error,
    Store,
    described,
    drain,
    http_date,
    iso_time,
    receive,
    xml_doc,
    xml_response,
    xml_tag,
)
from manager.local_sagemaker.s3_uploads import Uploads


class S3App(Uploads):
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
            await drain(request)  # a refused upload's body must not be read as the next request
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
        extra = "".join(xml_tag(k, v) for k, v in error.fields.items())
        body = (
            f"<Error>{xml_tag('Code', error.code)}{xml_tag('Message', error.message)}{extra}"
            f"{xml_tag('RequestId', request_id)}</Error>"
        )
        return xml_response(body, error.status)

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
                return xml_response(f'<LocationConstraint xmlns="{NS}">{constraint}</LocationConstraint>')
            if method == "GET" and "uploads" in q:
                return self.list_uploads(bucket)
            if method == "GET":
                return await run_in_threadpool(list_objects, self.store, bucket, q)
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
                created = iso_time(entry.stat().st_ctime)
                rows.append(
                    f"<Bucket>{xml_tag('Name', entry.name)}{xml_tag('CreationDate', created)}</Bucket>"
                )
        return xml_doc("ListAllMyBucketsResult", f"{OWNER}<Buckets>{''.join(rows)}</Buckets>")

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

    # ---- objects --------------------------------------------------------------------------------

    async def put_object(self, bucket: str, key: str, request: Request) -> Response:
        self.store.object_path(bucket, key)  # bucket and key are valid before reading the body
        staged = self.store.staging()
        try:
            md5, _ = await receive(request, staged)
            declared = request.headers.get("content-md5")
            if declared and base64.b64decode(declared).hex() != md5:
                raise S3Error(
                    "BadDigest", "The Content-MD5 you specified did not match what we received.", 400
                )
            meta = {"etag": f'"{md5}"', **described(request)}
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
            meta.update(described(request))
        staged = self.store.staging()
        try:
            shutil.copyfile(src, staged)
            self.store.install(bucket, key, staged, meta)
        finally:
            staged.unlink(missing_ok=True)
        modified = iso_time(time.time())
        return xml_doc(
            "CopyObjectResult", f"{xml_tag('LastModified', modified)}{xml_tag('ETag', meta['etag'])}"
        )

    def get_object(self, bucket: str, key: str, request: Request) -> Response:
        path = self.store.existing(bucket, key)
        meta = self.store.meta(bucket, key, path)
        stat = path.stat()
        headers = {
            "Content-Type": meta["content_type"],
            "ETag": meta["etag"],
            "Last-Modified": http_date(stat.st_mtime),
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
                    done.append(f"<Deleted>{xml_tag('Key', key)}</Deleted>")
            except S3Error as error:
                errors.append(
                    f"<Error>{xml_tag('Key', key)}{xml_tag('Code', error.code)}"
                    f"{xml_tag('Message', error.message)}</Error>"
                )
        return xml_response(f'<DeleteResult xmlns="{NS}">{"".join(done)}{"".join(errors)}</DeleteResult>')
