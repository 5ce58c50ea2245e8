"""`ListObjects` (V1 and V2) over the local S3's store."""

from __future__ import annotations

import base64
from typing import Any, NamedTuple
from urllib.parse import quote

from starlette.responses import Response

from manager.local_sagemaker.s3_store import (
    MAX_KEYS,
    NS,
    OWNER,
    S3Error,
    Store,
    iso_time,
    xml_response,
    xml_tag,
)


class Asked(NamedTuple):
    """What a listing's query asks for."""

    v2: bool
    prefix: str
    delimiter: str
    encode: bool  # encoding-type=url
    max_keys: int
    after: str  # list the keys after this one (marker, start-after or the continuation token)

    def enc(self, value: str) -> str:
        return quote(value, safe="/~") if self.encode else value


def list_objects(store: Store, bucket: str, q: Any) -> Response:
    """`ListObjects` and `ListObjectsV2`: prefix, delimiter, marker or continuation, url encoding."""
    asked = _arguments(q)
    v2, prefix, delimiter, _encode, max_keys, after = asked
    enc = asked.enc
    contents: list[str] = []
    prefixes: list[str] = []
    seen_prefixes: set[str] = set()
    truncated = False
    last = ""
    for key in store.keys(bucket, prefix):
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
                prefixes.append(f"<CommonPrefixes>{xml_tag('Prefix', enc(common))}</CommonPrefixes>")
                last = common
                continue
        if len(contents) + len(prefixes) >= max_keys:
            truncated = True
            break
        path = store.root / bucket / key
        try:
            meta = store.meta(bucket, key, path)
            stat = path.stat()
        except FileNotFoundError:  # deleted while listing
            continue
        owner = "" if v2 and q.get("fetch-owner") != "true" else OWNER
        contents.append(
            f"<Contents>{xml_tag('Key', enc(key))}{xml_tag('LastModified', iso_time(stat.st_mtime))}"
            f"{xml_tag('ETag', meta['etag'])}{xml_tag('Size', stat.st_size)}"
            f"{xml_tag('StorageClass', 'STANDARD')}{owner}</Contents>"
        )
        last = key
    head = _head(q, bucket, asked, truncated, last, len(contents) + len(prefixes))
    body = f"{head}{''.join(contents)}{''.join(prefixes)}"
    return xml_response(f'<ListBucketResult xmlns="{NS}">{body}</ListBucketResult>')


def _arguments(q: Any) -> Asked:
    """What the query asks for, refused with S3's error when it is not a listing S3 would do."""
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
        raise S3Error("InvalidArgument", "Argument maxKeys must be an integer between 0 and 2147483647", 400)
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
    return Asked(v2, prefix, delimiter, encode, max_keys, after)


def _head(q: Any, bucket: str, asked: Asked, truncated: bool, last: str, key_count: int) -> str:
    """The listing's fields before its contents: what was asked, and where the next page starts."""
    enc, prefix, delimiter = asked.enc, asked.prefix, asked.delimiter
    head = (
        f"{xml_tag('Name', bucket)}{xml_tag('Prefix', enc(prefix))}{xml_tag('MaxKeys', asked.max_keys)}"
        f"{xml_tag('IsTruncated', str(truncated).lower())}"
    )
    if delimiter:
        head += xml_tag("Delimiter", enc(delimiter))
    if asked.encode:
        head += xml_tag("EncodingType", "url")
    if asked.v2:
        head += xml_tag("KeyCount", key_count)
        if "continuation-token" in q:
            head += xml_tag("ContinuationToken", q["continuation-token"])
        if "start-after" in q:
            head += xml_tag("StartAfter", enc(q["start-after"]))
        if truncated:
            head += xml_tag("NextContinuationToken", base64.urlsafe_b64encode(last.encode()).decode())
    else:
        head += xml_tag("Marker", enc(asked.after))
        if truncated and delimiter:
            head += xml_tag("NextMarker", enc(last))
    return head
