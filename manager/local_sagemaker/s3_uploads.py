"""S3's multipart uploads: parts staged under `<s3_root>/.s3multipart/<upload id>/` until completed
(assembled into the object, ETag `<md5 of the parts' md5s>-<parts>`) or aborted."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from manager.local_sagemaker.s3_store import (
    CHUNK,
    MIN_PART_BYTES,
    NS,
    UPLOADS_DIR,
    S3Error,
    Store,
    described,
    iso_time,
    receive,
    xml_doc,
    xml_response,
    xml_tag,
)


class Uploads:
    """The multipart operations of `S3App`, on its store."""

    store: Store

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
            **described(request),
        }
        (path / "upload.json").write_text(json.dumps(info))
        return xml_response(
            f'<InitiateMultipartUploadResult xmlns="{NS}">{xml_tag("Bucket", bucket)}{xml_tag("Key", key)}'
            f"{xml_tag('UploadId', upload_id)}</InitiateMultipartUploadResult>"
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
            md5, _ = await receive(request, staged)
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
                f"<Part>{xml_tag('PartNumber', int(part.name[5:]))}{xml_tag('ETag', etag)}"
                f"{xml_tag('Size', part.stat().st_size)}"
                f"{xml_tag('LastModified', iso_time(part.stat().st_mtime))}</Part>"
            )
        return xml_response(
            f'<ListPartsResult xmlns="{NS}">{xml_tag("Bucket", bucket)}{xml_tag("Key", key)}'
            f"{xml_tag('UploadId', upload_id)}{xml_tag('IsTruncated', 'false')}"
            f"{''.join(parts)}</ListPartsResult>"
        )

    def list_uploads(self, bucket: str) -> Response:
        self.store.bucket_dir(bucket)
        rows = []
        for info_file in sorted((self.store.root / UPLOADS_DIR).glob("*/upload.json")):
            info = json.loads(info_file.read_text())
            if info["bucket"] == bucket:
                rows.append(
                    f"<Upload>{xml_tag('Key', info['key'])}{xml_tag('UploadId', info_file.parent.name)}"
                    f"{xml_tag('Initiated', iso_time(info['initiated']))}</Upload>"
                )
        return xml_response(
            f'<ListMultipartUploadsResult xmlns="{NS}">{xml_tag("Bucket", bucket)}'
            f"{xml_tag('IsTruncated', 'false')}{''.join(rows)}</ListMultipartUploadsResult>"
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
        return xml_doc(
            "CompleteMultipartUploadResult",
            f"{xml_tag('Location', f'/{bucket}/{key}')}{xml_tag('Bucket', bucket)}{xml_tag('Key', key)}"
            f"{xml_tag('ETag', meta['etag'])}",
        )
