"""Rehearsal traffic: requests to an endpoint through boto3, each with an inference id, and the
ground truth for them written later in SageMaker Model Monitor's format, as a labelling pipeline
would. `variantctl traffic` and the demo use it, so an operator can rehearse a policy on the local
SageMaker (or a staging endpoint) exactly as the demo does."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from manager.clock import Pacer
from manager.errors import UserError


class LabelWriter:
    """Model Monitor ground truth under `<location>/yyyy/mm/dd/hh/`: a `file://` directory (or a
    plain path), or `s3://bucket/prefix` through boto3."""

    def __init__(self, location: str, s3_client: Any = None) -> None:
        parsed = urlparse(location)
        self.location = location
        self.s3: Any = None
        if parsed.scheme in ("", "file"):
            self.folder: Path | None = Path(unquote(parsed.path) if parsed.scheme else location)
            self.bucket, self.prefix = "", ""
        elif parsed.scheme == "s3":
            if not parsed.netloc:
                raise UserError(f"{location!r} needs a bucket: s3://bucket/prefix")
            self.folder = None
            self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
            if s3_client is None:
                from manager.platforms import aws

                s3_client = aws.client("s3")
            self.s3 = s3_client
        else:
            raise UserError(
                f"labels location {location!r}: use a directory, file:///dir or s3://bucket/prefix"
            )

    def write(self, labelled: list[tuple[str, float]], now: datetime) -> None:
        body = "".join(
            json.dumps(
                {
                    "groundTruthData": {"data": f"{label:g}", "encoding": "CSV"},
                    "eventMetadata": {"eventId": inference_id},
                    "eventVersion": "0",
                }
            )
            + "\n"
            for inference_id, label in labelled
        )
        hour, name = now.strftime("%Y/%m/%d/%H"), f"labels-{now:%M%S}-{uuid.uuid4().hex[:12]}.jsonl"
        if self.folder is not None:
            folder = self.folder / hour
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{name}.tmp"
            tmp.write_text(body)
            tmp.replace(folder / name)  # whole files only: a reader never sees half of one
        else:
            key = "/".join(p for p in (self.prefix, hour, name) if p)
            assert self.s3 is not None
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body.encode())


@dataclass
class Traffic:
    """Requests at up to `rate` per second (0: as fast as `threads` allow), each row drawn at random
    from `rows`; its label from `labels` is written `label_delay` seconds later (flipped with
    probability `label_noise`, for binary targets). Counts what it sent, what failed and why."""

    runtime: Any
    endpoint: str
    rows: np.ndarray
    labels: np.ndarray
    writer: LabelWriter | None = None
    rate: float = 0.0
    label_delay: float = 1.0
    label_noise: float = 0.0
    threads: int = 2
    seed: int = 0
    sent: int = 0
    failed: int = 0
    labelled: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    first_errors: dict[str, str] = field(default_factory=dict)  # code: the first message, e.g. ModelError's
    stop: threading.Event = field(default_factory=threading.Event)
    _waiting: list[tuple[float, str, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pacer: Pacer | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._pacer = Pacer(self.rate) if self.rate > 0 else None

    def start(self) -> list[threading.Thread]:
        workers = [threading.Thread(target=self._send, args=(i,), daemon=True) for i in range(self.threads)]
        if self.writer is not None:
            workers.append(threading.Thread(target=self._label, daemon=True))
        for w in workers:
            w.start()
        return workers

    def run(self, duration: float, on_progress: Any = None) -> None:
        """Send for `duration` seconds (in the caller's thread, with workers), then flush labels."""
        workers = self.start()
        deadline = time.monotonic() + duration
        try:
            while not self.stop.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
                if on_progress is not None:
                    on_progress(self)
                if time.monotonic() >= deadline:
                    break
        finally:
            self.stop.set()
            for w in workers:
                w.join(timeout=10)
            self._flush(force=True)

    def _pace(self) -> None:
        if self._pacer is None:
            return
        slot = self._pacer.reserve()
        assert slot is not None
        delay = slot - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)

    def _send(self, worker: int) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        rng = random.Random(self.seed * 1000 + worker)
        while not self.stop.is_set():
            self._pace()
            if self.stop.is_set():
                return
            i = rng.randrange(len(self.rows))
            inference_id = uuid.uuid4().hex
            body = ",".join(f"{v:.6g}" for v in self.rows[i])
            label = float(self.labels[i])
            if self.label_noise and rng.random() < self.label_noise:
                label = 1.0 - label if label in (0.0, 1.0) else label
            try:
                self.runtime.invoke_endpoint(
                    EndpointName=self.endpoint, ContentType="text/csv", Body=body, InferenceId=inference_id
                )["Body"].read()
                with self._lock:
                    self.sent += 1
                    self._waiting.append((time.monotonic(), inference_id, label))
            except (ClientError, BotoCoreError) as exc:
                code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
                with self._lock:
                    self.failed += 1
                    self.errors[code] = self.errors.get(code, 0) + 1
                    self.first_errors.setdefault(code, _message(exc))

    def flush_labels(self) -> None:
        """Write every label still waiting, now (their delay is cut short)."""
        self._flush(force=True)

    def _label(self) -> None:
        while not self.stop.wait(0.5):
            self._flush()

    def _flush(self, force: bool = False) -> None:
        if self.writer is None:
            return
        cutoff = time.monotonic() - (0.0 if force else self.label_delay)
        with self._lock:
            due = [w for w in self._waiting if w[0] <= cutoff]
            self._waiting = [w for w in self._waiting if w[0] > cutoff]
        if due:
            self.writer.write([(inference_id, label) for _, inference_id, label in due], datetime.now(UTC))
            with self._lock:
                self.labelled += len(due)


def _message(exc: Exception) -> str:
    """A failed request's reason in one line: a ModelError carries the model's own message."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        text = str(exc.response.get("OriginalMessage") or exc.response["Error"].get("Message") or exc)
    else:
        text = str(exc)
    return " ".join(text.split())[:200]
