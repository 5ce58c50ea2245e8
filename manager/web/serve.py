"""Serving the dashboard: in the foreground (`variantctl dashboard`) or on a thread of the daemon
(`variantctl daemon --http HOST:PORT`); uvicorn with one worker, bound to 127.0.0.1 unless told."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from manager.errors import UserError


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` (or `:PORT` for 127.0.0.1)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--http {text!r}: give HOST:PORT, e.g. 127.0.0.1:8080")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def server(url: str, host: str, port: int, operators: Any, poll: float = 2.0) -> Any:
    """`operators`: the token file's (`auth.Operators.from_file`), None for a read-only dashboard."""
    import uvicorn

    from manager.web.app import create_app

    app = create_app(url, operators, poll, host, port)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, workers=1)
    return uvicorn.Server(config)


def start_in_thread(url: str, host: str, port: int, operators: Any, timeout: float = 15.0) -> Any:
    """The dashboard and /metrics on a daemon thread; refused in one line if it cannot listen."""
    serving = server(url, host, port, operators)
    thread = threading.Thread(target=serving.run, name="http", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not serving.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise UserError(f"--http {host}:{port}: could not listen there (in use, or not an address here)")
        time.sleep(0.02)
    return serving


def reload_on_sighup(operators: Any) -> None:
    """`kill -HUP` makes the dashboard read its token file again (it also does when the file
    changes): for the commands that serve it, in their main thread."""
    if operators is not None:
        signal.signal(signal.SIGHUP, lambda *_: operators.reload())
