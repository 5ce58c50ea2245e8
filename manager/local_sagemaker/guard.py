"""What a browser page must not get the local SageMaker to do.

The host listens on a port of this machine, so any page open in a browser here can send it requests.
A browser sends a "simple" request (a POST of `text/plain`, a form, or `multipart/form-data`) to
another origin without asking first, and a name that resolves to 127.0.0.1 (DNS rebinding) makes the
page's own origin reach it. AWS's SDKs never send what a browser sends, so the host refuses:

- a `Host` it does not serve: loopback names (and the address it is bound to) unless told others;
- any request a browser marks as coming from a page (`Origin`, or `Sec-Fetch-Site` cross-site or
  same-site): boto3 sends neither;
- on the JSON protocols, a body that is not `application/x-amz-json-1.0/1.1`; on the CBOR route, a
  request without its `Smithy-Protocol: rpc-v2-cbor` header; on the runtime, the content types a
  form can send (`text/plain`, `application/x-www-form-urlencoded`, `multipart/form-data`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from manager.local_sagemaker.s3_store import is_s3_request

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
FORM_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")


def host_name(header: str) -> str:
    """`Host` without its port (`[::1]:8080` -> `::1`)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """A pure ASGI middleware in front of every route of the host (S3's included)."""

    def __init__(self, app: Any, allowed_hosts: Iterable[str] = ()) -> None:
        self.app = app
        names = (*LOOPBACK_NAMES, *allowed_hosts)
        self.allowed = {h.strip().lower().strip("[]") for h in names if h.strip()}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self.problem(scope)
        if problem is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"__type": "AccessDeniedException", "message": problem}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"application/x-amz-json-1.1"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def problem(self, scope: Any) -> str | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = host_name(headers.get("host", ""))
        if host not in self.allowed:
            return (
                f"Host {headers.get('host', '')!r} is not one this local SageMaker serves "
                "(start it with --allowed-host NAME to serve another name)"
            )
        if "origin" in headers or headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return "a request from a web page: the local SageMaker answers SDKs, not pages"
        path, method = scope.get("path", ""), scope.get("method", "")
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if is_s3_request(scope):
            return None  # signed for S3 in an Authorization header or query: no form can do that
        if method == "POST" and path == "/" and not kind.startswith("application/x-amz-json-1."):
            return f"content type {kind or 'none'!r}: the JSON protocols take application/x-amz-json-1.x"
        if path.startswith("/service/") and headers.get("smithy-protocol") != "rpc-v2-cbor":
            return "the CBOR protocol needs its Smithy-Protocol: rpc-v2-cbor header"
        if path.endswith("/invocations") and kind in FORM_TYPES:
            return f"content type {kind!r}: no model here reads it (send text/csv or application/json)"
        return None
