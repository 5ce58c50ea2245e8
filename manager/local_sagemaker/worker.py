"""What runs inside a job's worker process: an XGBoost training job, or a batch transform.

`python -m manager.local_sagemaker.worker` is the host's job launcher: a single-threaded process
that imports xgboost once (about 1.5 s) and then forks one child per job, so a job starts in
milliseconds and a stop is a SIGTERM to that child. The host writes one JSON line per job to its
stdin (`{"kind", "spec", "events"}`) and reads back `{"pid": ...}`. The child appends its reports
to the `events` file, one JSON array per line: `["status", secondary status, message]`,
`["log", line]`, and finally `["done", result]` or `["failed", FailureReason]`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from manager.local_sagemaker import xgboost_algorithm as algorithm
from manager.local_sagemaker.files import atomic_write
from manager.local_sagemaker.runtime import PayloadError, format_predictions, load_model, parse_rows

# Imported once by the launcher, so that a forked job does not pay for it; without the `sagemaker`
# extra, jobs fail with a clear reason instead.
with contextlib.suppress(ImportError):
    import xgboost  # noqa: F401


class Events:
    """The child's side: appends one JSON line per report, flushed, so the host can tail it."""

    def __init__(self, path: str) -> None:
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 - closed in close()

    def send(self, message: tuple[Any, ...]) -> None:
        self.file.write(json.dumps(list(message)) + "\n")

    def close(self) -> None:
        self.file.close()


def serve() -> None:
    """The launcher's loop: one fork per job request on stdin, until stdin closes."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = 0
            try:
                run(request["kind"], request["spec"], Events(request["events"]))
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        sys.stdout.write(json.dumps({"pid": pid}) + "\n")
        sys.stdout.flush()


def run(kind: str, spec: dict[str, Any], conn: Any) -> None:
    try:
        result = _training(spec, conn) if kind == "training" else _transform(spec, conn)
        conn.send(("done", result))
    except algorithm.ClientError as exc:
        conn.send(("log", f"ClientError: {exc}"))
        conn.send(("failed", f"ClientError: {exc}"))
    except ImportError as exc:
        reason = (
            f"ClientError: the local SageMaker needs xgboost for this job ({exc}): "
            "pip install 'variantctl[sagemaker]'"
        )
        conn.send(("failed", reason))
    except Exception as exc:  # the algorithm failed: AlgorithmError, with its traceback in the log
        for line in traceback.format_exc().splitlines():
            conn.send(("log", line))
        conn.send(("failed", f"AlgorithmError: {type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _training(spec: dict[str, Any], conn: Any) -> dict[str, Any]:
    def log(line: str) -> None:
        conn.send(("log", line))

    conn.send(("status", "Downloading", "Downloading input data"))
    channels = {
        name: ([Path(p) for p in files], content_type)
        for name, (files, content_type) in spec["channels"].items()
    }
    for name, (files, _) in channels.items():
        log(f"Channel {name}: {len(files)} file(s), {sum(f.stat().st_size for f in files)} bytes")
    conn.send(("status", "Training", "Training image download completed. Training in progress."))
    log(f"Hyperparameters: {json.dumps(spec['hyperparameters'], sort_keys=True)}")
    trained = algorithm.train(spec["hyperparameters"], channels, log, spec.get("nthread"))
    conn.send(("status", "Uploading", "Uploading generated training model"))
    atomic_write(Path(spec["artifact_path"]), algorithm.archive(trained.booster))
    for metric, value in sorted(trained.final_metrics.items()):
        log(f"#metrics {metric} = {value:.6f}")
    return {"metrics": trained.final_metrics}


def _transform(spec: dict[str, Any], conn: Any) -> dict[str, Any]:
    def log(line: str) -> None:
        conn.send(("log", line))

    model = load_model(
        spec["model_name"],
        spec["model_data_url"],
        spec.get("environment") or {},
        Path(spec["s3_root"]),
        Path(spec["cache"]),
        image=spec.get("image"),
    )
    content_type, accept = spec["content_type"], spec["accept"]
    max_bytes = int(spec["max_payload_mb"]) * 1024 * 1024
    records = 0
    for source, target in spec["files"]:
        body = Path(source).read_bytes()
        if spec["split_type"] == "Line":
            lines = [line for line in body.splitlines() if line.strip()]
            batches = _batches(lines, max_bytes if spec["batch_strategy"] == "MultiRecord" else 0)
        else:
            batches = [[body]]
        out = io.BytesIO()
        for batch in batches:
            payload = b"\n".join(batch)
            if len(payload) > max_bytes:
                raise algorithm.ClientError(
                    f"a record of {len(payload)} bytes is larger than MaxPayloadInMB "
                    f"({spec['max_payload_mb']})"
                )
            try:
                predictions = model.predict(parse_rows(payload, content_type))
            except PayloadError as exc:
                log(f"Bad HTTP status received from algorithm: 400 ({exc})")
                raise algorithm.ClientError(
                    f"See job logs for more information: {Path(source).name}: {exc}"
                ) from None
            answer, _ = format_predictions(predictions, accept, content_type, model.container, batch=True)
            out.write(answer if answer.endswith(b"\n") or spec["assemble_with"] != "Line" else answer + b"\n")
            records += len(batch)
        atomic_write(Path(target), out.getvalue())
        log(f"{Path(source).name}: {len(body)} bytes in, {out.tell()} bytes out")
    return {"records": records, "files": len(spec["files"])}


def _batches(lines: list[bytes], max_bytes: int) -> list[list[bytes]]:
    """MultiRecord: as many lines as fit in MaxPayloadInMB; SingleRecord (max_bytes 0): one each."""
    if not max_bytes:
        return [[line] for line in lines]
    batches: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and size + len(line) + 1 > max_bytes:
            batches.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        batches.append(current)
    return batches


if __name__ == "__main__":
    serve()
