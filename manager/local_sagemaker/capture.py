"""Data capture in SageMaker Model Monitor's JSON Lines format.

Files go under `<destination>/<endpoint>/<variant>/yyyy/mm/dd/hh/`, one file per
variant and hour, each line a complete record written in one call, so a reader
that stops at the last newline never sees half a record.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from manager.local_sagemaker.runtime import resolve_uri

DEFAULT_CSV_TYPES = ("text/csv",)
DEFAULT_JSON_TYPES = ("application/json",)


@dataclass(frozen=True)
class CapturePolicy:
    """What an endpoint config's DataCaptureConfig asks for."""

    destination: str
    sampling_percentage: float
    capture_input: bool
    capture_output: bool
    csv_types: tuple[str, ...]
    json_types: tuple[str, ...]

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> CapturePolicy | None:
        if not config or not config.get("EnableCapture", True):
            return None
        modes = {o.get("CaptureMode") for o in config.get("CaptureOptions", [])}
        header = config.get("CaptureContentTypeHeader") or {}
        return cls(
            destination=config["DestinationS3Uri"],
            sampling_percentage=float(config.get("InitialSamplingPercentage", 100)),
            capture_input=bool(modes & {"Input", "InputAndOutput"}),
            capture_output=bool(modes & {"Output", "InputAndOutput"}),
            csv_types=tuple(header.get("CsvContentTypes") or DEFAULT_CSV_TYPES),
            json_types=tuple(header.get("JsonContentTypes") or DEFAULT_JSON_TYPES),
        )

    def sampled(self, rng: random.Random) -> bool:
        return rng.random() * 100 < self.sampling_percentage

    def record(self, mode: str, data: bytes, content_type: str) -> dict[str, str]:
        """One side of an invocation as Model Monitor writes it."""
        encoding, text = self.encode(data, content_type)
        return {"observedContentType": content_type, "mode": mode, "data": text, "encoding": encoding}

    def encode(self, data: bytes, content_type: str) -> tuple[str, str]:
        kind = content_type.split(";", 1)[0].strip().lower()
        try:
            if kind in self.csv_types:
                return "CSV", data.decode()
            if kind in self.json_types:
                return "JSON", data.decode()
        except UnicodeDecodeError:
            pass
        return "BASE64", base64.b64encode(data).decode()


class CaptureWriter:
    def __init__(self, s3_root: Path, rng: random.Random | None = None) -> None:
        self.s3_root = s3_root
        self.rng = rng or random.Random()
        self._files: dict[tuple[str, str, str], tuple[str, IO[str]]] = {}
        self._lock = threading.Lock()

    def write(
        self,
        policy: CapturePolicy,
        endpoint: str,
        variant: str,
        at: datetime,
        inference_id: str | None,
        request: bytes,
        request_type: str,
        response: bytes,
        response_type: str,
    ) -> None:
        data: dict[str, Any] = {}
        if policy.capture_input:
            data["endpointInput"] = policy.record("INPUT", request, request_type)
        if policy.capture_output:
            data["endpointOutput"] = policy.record("OUTPUT", response, response_type)
        metadata = {
            "eventId": str(uuid.uuid4()),
            "inferenceTime": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
        }
        if inference_id:
            metadata["inferenceId"] = inference_id
        line = (
            json.dumps(
                {"captureData": data, "eventMetadata": metadata, "eventVersion": "0"}, separators=(",", ":")
            )
            + "\n"
        )
        with self._lock:
            handle = self._handle(policy.destination, endpoint, variant, at)
            handle.write(line)
            handle.flush()

    def _handle(self, destination: str, endpoint: str, variant: str, at: datetime) -> IO[str]:
        hour = at.strftime("%Y/%m/%d/%H")
        key = (destination, endpoint, variant)
        current = self._files.get(key)
        if current and current[0] == hour:
            return current[1]
        if current:
            current[1].close()
        folder = resolve_uri(destination.rstrip("/"), self.s3_root) / endpoint / variant / hour
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{at:%M-%S}-{at.microsecond // 1000:03d}-{uuid.uuid4()}.jsonl"
        handle = open(folder / name, "a", encoding="utf-8")  # noqa: SIM115 - kept open across writes
        self._files[key] = (hour, handle)
        return handle

    def release(self, endpoint: str) -> None:
        """Close the files of a deleted endpoint."""
        with self._lock:
            for key in [k for k in self._files if k[1] == endpoint]:
                self._files.pop(key)[1].close()

    def close(self) -> None:
        with self._lock:
            for _, handle in self._files.values():
                handle.close()
            self._files.clear()
