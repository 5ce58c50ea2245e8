"""A real HTTP receiver on 127.0.0.1 for webhook tests: it records every request and answers as the
test scripts it (a status per call, per idempotency key, or a hang longer than the caller waits)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def signed_by(self, secret: bytes) -> bool:
        sent = self.headers.get("X-Variantctl-Signature-256", "")
        expected = "sha256=" + hmac.new(secret, self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(sent, expected)


@dataclass
class Receiver:
    """`answer(request, calls_with_this_key)` -> an HTTP status, or None to hang for `hang` seconds."""

    answer: Callable[[Request, int], int | None] = lambda _r, _n: 200
    hang: float = 5.0
    requests: list[Request] = field(default_factory=list)
    accepted: dict[str, list[Request]] = field(default_factory=dict)  # 2xx answers, by idempotency key
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, request: Request) -> int | None:
        with self._lock:
            self.requests.append(request)
            key = request.headers.get("Idempotency-Key", request.path)
            calls = sum(1 for r in self.requests if r.headers.get("Idempotency-Key", r.path) == key)
        status = self.answer(request, calls)
        if status is not None and 200 <= status < 300:
            with self._lock:
                self.accepted.setdefault(key, []).append(request)
        return status

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"receiver: timed out waiting for {what or predicate}")


@contextmanager
def receiver(
    answer: Callable[[Request, int], int | None] | None = None, hang: float = 5.0
) -> Iterator[Receiver]:
    state = Receiver(hang=hang) if answer is None else Receiver(answer=answer, hang=hang)
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = Request(self.path, dict(self.headers.items()), self.rfile.read(length))
            status = state.handle(request)
            if status is None:
                stop.wait(state.hang)
                return
            text = b"ok" if status < 300 else b"no: the load test has not passed"
            self.send_response(status)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
