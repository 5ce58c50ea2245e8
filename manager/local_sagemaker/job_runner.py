"""The life every job shares: kept in `<state_dir>/jobs.json` (a job that was running when the host
stopped is `Failed` on restart, with that reason), run in a worker process (`worker.py`) once a core
is free, its log lines to CloudWatch Logs, and its thread, which always ends the job."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from manager.local_sagemaker.files import atomic_write
from manager.local_sagemaker.listing import page, sorted_by
from manager.local_sagemaker.logs import LogStore
from manager.local_sagemaker.protocol import (
    sagemaker_arn,
    validation,
)
from manager.local_sagemaker.runtime import resolve_uri, s3_problem
from manager.local_sagemaker.xgboost_algorithm import channel_files

TRAINING_LOGS = "/aws/sagemaker/TrainingJobs"
TRANSFORM_LOGS = "/aws/sagemaker/TransformJobs"
FINAL = ("Completed", "Failed", "Stopped")
STATUS_KEY = {
    "training": "TrainingJobStatus",
    "transform": "TransformJobStatus",
    "tuning": "HyperParameterTuningJobStatus",
}
NAME_KEY = {
    "training": "TrainingJobName",
    "transform": "TransformJobName",
    "tuning": "HyperParameterTuningJobName",
}
SUMMARIES = {
    "training": "TrainingJobSummaries",
    "transform": "TransformJobSummaries",
    "tuning": "HyperParameterTuningJobSummaries",
}
log = logging.getLogger("local_sagemaker")
TRAINING_COUNTERS = ("Completed", "InProgress", "RetryableError", "NonRetryableError", "Stopped")
TUNING_NAME_LIMIT = 32


class Launcher:
    """The job launcher process (`worker.py`): started on the first job, restarted if it dies.
    Forking the threaded server itself would be unsafe, and a fresh interpreter per job would
    spend 1.5 s importing xgboost."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None
        self.lock = threading.Lock()

    def warm(self) -> None:
        with self.lock:
            if self.process is None or self.process.poll() is not None:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "manager.local_sagemaker.worker"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )

    def spawn(self, kind: str, spec: dict[str, Any], events: Path) -> int:
        self.warm()
        with self.lock:
            assert self.process is not None and self.process.stdin and self.process.stdout
            self.process.stdin.write(json.dumps({"kind": kind, "spec": spec, "events": str(events)}) + "\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError("the job launcher exited")
        return int(json.loads(answer)["pid"])

    def close(self) -> None:
        with self.lock:
            if self.process is not None:
                if self.process.stdin:
                    self.process.stdin.close()
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                self.process = None


def _terminate(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def checked_s3_uri(field: str, value: Any) -> str:
    uri = str(value or "")
    problem = s3_problem(uri) if uri.startswith("s3://") else "must be an s3:// URI"
    if problem is not None:
        raise validation(f"{field} {value!r}: {problem}")
    return uri


class JobRunner:
    """What every kind of job shares: the tables, their file, the worker processes and the cores they
    wait for, and a job's thread."""

    def __init__(
        self,
        region: str,
        state_dir: Path,
        s3_root: Path,
        logs: LogStore,
        model_lookup: Callable[[str], dict[str, Any]],
        tag: Callable[[str, list[dict[str, str]]], None],
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock  # the host's: timestamps and MaxRuntimeInSeconds follow it
        self.region = region
        self.state_dir = state_dir
        self.s3_root = s3_root
        self.logs = logs
        self.model_lookup = model_lookup
        self.tag = tag
        self.rng = random.Random(seed)
        self.training: dict[str, dict[str, Any]] = {}
        self.transform: dict[str, dict[str, Any]] = {}
        self.tuning: dict[str, dict[str, Any]] = {}
        self.lock = threading.RLock()
        self.slots = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
        self.stopping: set[str] = set()
        self.closed = threading.Event()
        self.threads: list[threading.Thread] = []
        self.launcher = Launcher()
        self._restore()

    def arn(self, kind: str, name: str) -> str:
        return sagemaker_arn(self.region, kind, name)

    # ---- persistence ------------------------------------------------------------------------------

    def _file(self) -> Path:
        return self.state_dir / "jobs.json"

    def save(self) -> None:
        """From every job's thread: the snapshot and its write under one lock, so an older snapshot
        never lands after a newer one."""
        with self.lock:
            text = json.dumps(
                {"training": self.training, "transform": self.transform, "tuning": self.tuning}, default=str
            )
            atomic_write(self._file(), text)

    def _restore(self) -> None:
        try:
            data = json.loads(self._file().read_text())
        except (OSError, ValueError):
            return
        now = self.clock()
        for kind, status_key in STATUS_KEY.items():
            table = getattr(self, kind)
            for name, job in data.get(kind, {}).items():
                if job[status_key] not in FINAL:
                    job[status_key] = "Failed"
                    job["FailureReason"] = "The local SageMaker stopped while this job ran"
                    job["LastModifiedTime"] = now
                    if kind == "training":
                        self._secondary(job, "Failed", job["FailureReason"], now)
                table[name] = job

    # ---- shared --------------------------------------------------------------------------------------

    def _s3_files(self, uri: str) -> list[Path]:
        """The objects under an S3 prefix that Create* already checked."""
        path = resolve_uri(uri, self.s3_root)
        files = channel_files(path)
        bucket = uri[5:].split("/", 1)[0]
        if not files:
            raise JobInputError(
                f'ClientError: No S3 objects found under S3 URL "{uri}" given in input data source. Please '
                f"ensure that the bucket exists in the selected region ({self.region}), that objects exist "
                'under that S3 prefix, and that the role has "s3:ListBucket" permissions on bucket '
                f'"{bucket}".'
            )
        return files

    @staticmethod
    def _secondary(job: dict[str, Any], status: str, message: str, now: float) -> None:
        transitions = job.setdefault("SecondaryStatusTransitions", [])
        if transitions and "EndTime" not in transitions[-1]:
            transitions[-1]["EndTime"] = now
        transitions.append({"Status": status, "StartTime": now, "StatusMessage": message})
        if status in ("Completed", "Failed", "Stopped", "MaxRuntimeExceeded"):
            transitions[-1]["EndTime"] = now
        job["SecondaryStatus"] = status
        job["LastModifiedTime"] = now

    def _run(
        self,
        kind: str,
        name: str,
        spec: dict[str, Any],
        stream: tuple[str, str],
        on_status: Callable[[str, str], None],
        deadline_seconds: float | None,
    ) -> tuple[str, Any]:
        """Run one worker to its end: ("done", result), ("failed", reason) or ("stopped", why)."""
        while not self.slots.acquire(timeout=0.1):
            if name in self.stopping or self.closed.is_set():
                return "stopped", "Stopped"
        try:
            if name in self.stopping or self.closed.is_set():
                return "stopped", "Stopped"
            events = self.state_dir / "job-events" / f"{kind}-{name}-{time.time_ns()}.jsonl"
            events.parent.mkdir(parents=True, exist_ok=True)
            events.touch()
            try:
                pid = self.launcher.spawn(kind, spec, events)
            except (OSError, RuntimeError, ValueError) as exc:
                return "failed", f"InternalServerError: cannot start the job's worker: {exc}"
            started = self.clock()
            group, stream_name = stream
            outcome: tuple[str, Any] | None = None
            with events.open() as feed:
                buffer = ""
                while True:
                    alive = _alive(pid)
                    chunk = feed.read()
                    buffer += chunk
                    *lines, buffer = buffer.split("\n")
                    for line in lines:
                        message = json.loads(line)
                        if message[0] == "log":
                            self.logs.write(group, stream_name, [message[1]])
                        elif message[0] == "status":
                            with self.lock:
                                on_status(message[1], message[2])
                            self.save()
                        else:
                            outcome = (message[0], message[1])
                            if message[0] == "failed":
                                self.logs.write(group, stream_name, [message[1]])
                    if outcome is not None or (not alive and not chunk):
                        break
                    if not alive:
                        continue  # read what it wrote before it ended
                    if name in self.stopping or self.closed.is_set():
                        _terminate(pid)
                        outcome = ("stopped", "Stopped")
                        break
                    if deadline_seconds is not None and self.clock() - started > deadline_seconds:
                        _terminate(pid)
                        outcome = ("stopped", "MaxRuntimeExceeded")
                        break
                    if not chunk:
                        time.sleep(0.01)
            events.unlink(missing_ok=True)
            return outcome or ("failed", "AlgorithmError: the worker ended without a result")
        finally:
            self.slots.release()

    def _thread(self, work: Callable[[], None], kind: str, job: dict[str, Any]) -> None:
        """Run a job's life in its own thread. A bug there fails the job, with the reason, rather
        than leaving it InProgress for ever."""
        status_key = STATUS_KEY[kind]

        def guarded() -> None:
            try:
                work()
            except Exception as exc:  # any bug: the job must still end, and say why
                log.exception("%s job failed inside the host", kind)
                reason = f"InternalServerError: {type(exc).__name__}: {exc}"
                with self.lock:
                    if job[status_key] not in FINAL:
                        job[status_key] = "Failed"
                        job["FailureReason"] = reason
                        if kind == "training":
                            self._secondary(job, "Failed", reason, self.clock())
                with contextlib.suppress(Exception):
                    self.save()

        name = job.get("TrainingJobName") or job.get("TransformJobName") or job["HyperParameterTuningJobName"]
        thread = threading.Thread(target=guarded, name=f"{kind}-{name}", daemon=True)
        self.threads.append(thread)
        thread.start()

    # ---- what every kind of job answers the same way ------------------------------------------------

    def _described(self, job: dict[str, Any], *drop: str) -> dict[str, Any]:
        """Describe*: a copy of the job as it is now, without the host's own (`_`) fields."""
        with self.lock:
            out: dict[str, Any] = json.loads(
                json.dumps({k: v for k, v in job.items() if not k.startswith("_")})
            )
        for key in drop:
            out.pop(key, None)
        return out

    def _listing(
        self, req: dict[str, Any], kind: str, summary: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """List*Jobs: each job's summary, filtered, sorted and paged as AWS does."""
        rows = [summary(j) for j in list(getattr(self, kind).values())]
        sorts = sorted_by(NAME_KEY[kind], STATUS_KEY[kind])
        return page(req, rows, SUMMARIES[kind], sorts, status_key=STATUS_KEY[kind])

    def _ask_to_stop(self, job: dict[str, Any], kind: str) -> bool:
        """Stop* on a running job: `Stopping` until its thread ends it. False when it is not running."""
        with self.lock:
            if job[STATUS_KEY[kind]] != "InProgress":
                return False
            self.stopping.add(job[NAME_KEY[kind]])
            job[STATUS_KEY[kind]] = "Stopping"
            if kind == "training":
                self._secondary(job, "Stopping", "Stopping the training job", self.clock())
        self.save()
        return True

    def close(self) -> None:
        self.closed.set()
        for thread in self.threads:
            thread.join(timeout=10)
        self.launcher.close()


class JobInputError(Exception):
    """A job cannot read its input: the message is the whole FailureReason."""
