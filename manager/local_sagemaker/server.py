"""Running the host: in-process as a context manager, or as `variantctl local-sagemaker serve`."""

from __future__ import annotations

import random
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from manager.local_sagemaker.app import Host, build_app
from manager.local_sagemaker.capture import CaptureWriter
from manager.local_sagemaker.clock import HostClock, Mode
from manager.local_sagemaker.control import ControlPlane
from manager.local_sagemaker.metrics import AlarmBook, MetricStore

DEFAULT_REGION = "us-east-1"
STARTUP_TIMEOUT = 30.0


class LocalSageMaker:
    """The host on 127.0.0.1 (port 0 picks a free port), serving until the block ends.

    State (models, configs, endpoints, weights) lives in `state_dir` and survives a
    restart; `s3://bucket/key` URIs map to `<s3_root>/bucket/key`.
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        s3_root: Path | str | None = None,
        provision_delay: float = 1.0,
        metric_bucket_seconds: int = 60,
        region: str = DEFAULT_REGION,
        log_level: str = "warning",
        seed: int | None = None,
        clock: HostClock | Mode = "real",
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        """`seed` makes routing, shadow copies and capture sampling repeatable (tests). `clock`:
        "held" starts the host's clock stopped (see `clock.py`); `self.clock` moves it."""
        self._tmp = tempfile.TemporaryDirectory(prefix="local-sagemaker-") if state_dir is None else None
        self.state_dir = Path(state_dir if state_dir is not None else self._tmp.name)  # type: ignore[union-attr]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.s3_root = Path(s3_root) if s3_root else self.state_dir / "s3"
        self.region = region
        self.bind = (host, port)
        self.log_level = log_level
        self.clock = clock if isinstance(clock, HostClock) else HostClock(clock)
        self.alarms = AlarmBook(self.clock)
        self.metrics = MetricStore(bucket_seconds=metric_bucket_seconds, clock=self.clock)
        self.control = ControlPlane(
            region,
            self.state_dir,
            self.s3_root,
            provision_delay,
            self.alarms,
            self.clock,
            seed=seed,
            metrics=self.metrics,
        )
        self.capture = CaptureWriter(self.s3_root, random.Random(seed))
        self.control.on_endpoint_gone = self.capture.release
        self.host = Host(self.control, self.metrics, self.alarms, self.capture, self.clock)
        # The names a request's Host may give: loopback's, the bound address, and those named.
        bound = () if host in ("0.0.0.0", "::") else (host,)
        self.app = build_app(self.host, (*bound, *allowed_hosts))
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def _socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self.bind[0] else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(self.bind)
        sock.listen(1024)
        sock.setblocking(False)
        return sock

    def _config(self) -> uvicorn.Config:
        return uvicorn.Config(
            self.app,
            log_level=self.log_level,
            access_log=False,
            lifespan="off",
            loop="auto",
            http="auto",
            timeout_keep_alive=75,
        )

    def start(self) -> str:
        sock = self._socket()
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self._server = uvicorn.Server(self._config())
        # uvicorn installs signal handlers only on the main thread: signals stay the embedder's.
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="local-sagemaker", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the local SageMaker did not start on {self.url}")
            time.sleep(0.01)
        return self.url

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self.capture.close()
        self.control.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LocalSageMaker:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client for `sagemaker`, `sagemaker-runtime` or `cloudwatch`, aimed at this host."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id="local",
            aws_secret_access_key="local",
            config=kwargs.pop("config", Config(retries={"mode": "standard", "max_attempts": 3})),
            **kwargs,
        )


def serve(
    state_dir: Path,
    host: str,
    port: int,
    provision_delay: float,
    metric_bucket_seconds: int,
    on_ready: Any,
    clock: Mode = "real",
    allowed_hosts: tuple[str, ...] = (),
) -> None:
    """Serve in the foreground until SIGINT or SIGTERM."""
    local = LocalSageMaker(
        state_dir,
        host=host,
        port=port,
        provision_delay=provision_delay,
        metric_bucket_seconds=metric_bucket_seconds,
        log_level="info",
        clock=clock,
        allowed_hosts=allowed_hosts,
    )
    sock = local._socket()
    bound_host, bound_port = sock.getsockname()[:2]
    local.url = f"http://{bound_host}:{bound_port}"
    server = uvicorn.Server(local._config())

    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler it
    # found: make that a no-op so the process ends normally, closing capture files, with status 0.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    on_ready(local.url)  # the socket is already listening: clients may connect from here on
    try:
        server.run(sockets=[sock])  # on uvloop, as configured; a bare asyncio.run would skip that
    finally:
        local.capture.close()
        local.control.close()
