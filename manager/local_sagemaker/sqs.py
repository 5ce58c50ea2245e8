"""The least of Amazon SQS that reading SageMaker's events needs (JSON 1.0, `AmazonSQS.*`):
CreateQueue, GetQueueUrl, GetQueueAttributes (the message counts), SendMessage, ReceiveMessage (long
polling, visibility timeout, ApproximateReceiveCount), ChangeMessageVisibility, DeleteMessage.

On AWS an EventBridge rule with the pattern {"source": ["aws.sagemaker"], "detail-type": ["SageMaker
Model Package State Change"]} and an SQS target puts each event, as JSON, into the queue's message
body. The host has no EventBridge: it stands in for that one rule by delivering each Model Package
State Change event to every queue created on it. Standard queues deliver at least once, so readers
must expect duplicates, as on AWS. Visibility timeouts follow the host's clock (hold it in tests);
long polls wait in real time.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from manager.local_sagemaker.files import atomic_write
from manager.local_sagemaker.protocol import ACCOUNT, AwsError

TARGET_PREFIX = "AmazonSQS."
DEFAULT_VISIBILITY = 30
MAX_VISIBILITY = 43_200
MAX_WAIT = 20


def _invalid(parameter: str, value: Any, reason: str) -> AwsError:
    return AwsError(
        "InvalidParameterValue", f"Value {value} for parameter {parameter} is invalid. Reason: {reason}."
    )


def _bounded(req: dict[str, Any], name: str, low: int, high: int, default: int) -> int:
    value = req.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _invalid(name, value, f"Must be between {low} and {high}, if provided")
    return value


class Queues:
    def __init__(self, state_dir: Path, clock: Callable[[], float]) -> None:
        self._file = state_dir / "sqs.json"
        self._clock = clock
        self._lock = threading.Lock()
        self.queues: dict[str, dict[str, Any]] = {}
        if self._file.exists():
            self.queues = json.loads(self._file.read_text())

    def _save(self) -> None:
        atomic_write(self._file, json.dumps(self.queues))

    def _queue(self, url: Any) -> dict[str, Any]:
        name = str(url or "").rstrip("/").rsplit("/", 1)[-1]
        found = self.queues.get(name)
        if found is None:
            raise AwsError("QueueDoesNotExist", "The specified queue does not exist.")
        return found

    def handle(self, operation: str, req: dict[str, Any], base_url: str) -> dict[str, Any]:
        handler = getattr(self, f"op_{operation}", None)
        if handler is None:
            raise AwsError(
                "UnsupportedOperation", f"The local SageMaker's SQS does not implement {operation}"
            )
        with self._lock:
            result: dict[str, Any] = handler(req, base_url)
            return result

    def op_CreateQueue(self, req: dict[str, Any], base_url: str) -> dict[str, Any]:
        name = str(req.get("QueueName") or "")
        if not 1 <= len(name) <= 80 or not all(c.isalnum() or c in "-_" for c in name):
            raise _invalid(
                "QueueName",
                name,
                "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length",
            )
        attributes = {str(k): str(v) for k, v in (req.get("Attributes") or {}).items()}
        visibility = int(attributes.get("VisibilityTimeout", DEFAULT_VISIBILITY))
        if not 0 <= visibility <= MAX_VISIBILITY:
            raise AwsError("InvalidAttributeValue", "Invalid value for the parameter VisibilityTimeout.")
        if name not in self.queues:
            self.queues[name] = {"visibility": visibility, "messages": []}
            self._save()
        return {"QueueUrl": f"{base_url}/{ACCOUNT}/{name}"}

    def op_GetQueueUrl(self, req: dict[str, Any], base_url: str) -> dict[str, Any]:
        name = str(req.get("QueueName") or "")
        self._queue(name)
        return {"QueueUrl": f"{base_url}/{ACCOUNT}/{name}"}

    def op_GetQueueAttributes(self, req: dict[str, Any], base_url: str) -> dict[str, Any]:
        queue = self._queue(req.get("QueueUrl"))
        now = self._clock()
        visible = sum(1 for m in queue["messages"] if m["visible_at"] <= now)
        attributes = {
            "ApproximateNumberOfMessages": str(visible),
            "ApproximateNumberOfMessagesNotVisible": str(len(queue["messages"]) - visible),
            "VisibilityTimeout": str(queue["visibility"]),
        }
        wanted = set(req.get("AttributeNames") or [])
        if "All" not in wanted:
            attributes = {k: v for k, v in attributes.items() if k in wanted}
        return {"Attributes": attributes} if attributes else {}

    def op_SendMessage(self, req: dict[str, Any], base_url: str) -> dict[str, Any]:
        queue = self._queue(req.get("QueueUrl"))
        body = req.get("MessageBody")
        if not isinstance(body, str) or not body:
            raise AwsError("MissingParameter", "The request must contain the parameter MessageBody.")
        message = self._put(queue, body)
        self._save()
        return {"MessageId": message["MessageId"], "MD5OfMessageBody": message["MD5OfBody"]}

    def _put(self, queue: dict[str, Any], body: str) -> dict[str, Any]:
        message = {
            "MessageId": str(uuid.uuid4()),
            "Body": body,
            "MD5OfBody": hashlib.md5(body.encode()).hexdigest(),
            "visible_at": 0.0,
            "receipt": None,
            "ReceiveCount": 0,
            "SentTimestamp": int(self._clock() * 1000),
        }
        queue["messages"].append(message)
        return message

    def publish(self, event: dict[str, Any]) -> None:
        """What the EventBridge rule would do: the event, as JSON, into every queue."""
        body = json.dumps(event)
        with self._lock:
            for queue in self.queues.values():
                self._put(queue, body)
            if self.queues:
                self._save()

    def op_ReceiveMessage(self, req: dict[str, Any], base_url: str) -> dict[str, Any]:
        queue = self._queue(req.get("QueueUrl"))
        count = _bounded(req, "MaxNumberOfMessages", 1, 10, 1)
        visibility = _bounded(req, "VisibilityTimeout", 0, MAX_VISIBILITY, queue["visibility"])
        _bounded(req, "WaitTimeSeconds", 0, MAX_WAIT, 0)
        now = self._clock()
        wanted = {*(req.get("AttributeNames") or []), *(req.get("MessageSystemAttributeNames") or [])}
        out: list[dict[str, Any]] = []
        for message in queue["messages"]:
            if len(out) == count:
                break
            if message["visible_at"] > now:
                continue
            message["visible_at"] = now + visibility
            message["ReceiveCount"] += 1
            message["receipt"] = f"{message['MessageId']}#{uuid.uuid4().hex}"
            out.append(self._received(message, wanted))
        if out:
            self._save()
        return {"Messages": out} if out else {}

    @staticmethod
    def _received(message: dict[str, Any], wanted: set[str]) -> dict[str, Any]:
        attributes = {
            "ApproximateReceiveCount": str(message["ReceiveCount"]),
            "SentTimestamp": str(message["SentTimestamp"]),
        }
        if "All" not in wanted:
            attributes = {k: v for k, v in attributes.items() if k in wanted}
        received = {
            "MessageId": message["MessageId"],
            "ReceiptHandle": message["receipt"],
            "MD5OfBody": message["MD5OfBody"],
            "Body": message["Body"],
        }
        return {**received, "Attributes": attributes} if attributes else received

    def _by_receipt(self, queue: dict[str, Any], receipt: Any) -> dict[str, Any] | None:
        if not isinstance(receipt, str) or "#" not in receipt:
            raise AwsError(
                "ReceiptHandleIsInvalid",
                f'The input receipt handle "{receipt}" is not a valid receipt handle.',
            )
        message_id = receipt.split("#", 1)[0]
        return next((m for m in queue["messages"] if m["MessageId"] == message_id), None)

    def op_DeleteMessage(self, req: dict[str, Any], base_url: str) -> dict[str, Any]:
        queue = self._queue(req.get("QueueUrl"))
        message = self._by_receipt(queue, req.get("ReceiptHandle"))
        if message is not None:  # deleting what is already gone succeeds, as on a standard queue
            queue["messages"].remove(message)
            self._save()
        return {}

    def op_ChangeMessageVisibility(self, req: dict[str, Any], base_url: str) -> dict[str, Any]:
        queue = self._queue(req.get("QueueUrl"))
        message = self._by_receipt(queue, req.get("ReceiptHandle"))
        timeout = _bounded(req, "VisibilityTimeout", 0, MAX_VISIBILITY, 0)
        now = self._clock()
        if message is None or message["visible_at"] <= now or message["receipt"] != req["ReceiptHandle"]:
            raise AwsError("MessageNotInflight", "The message referred to isn't in flight.")
        message["visible_at"] = now + timeout
        self._save()
        return {}

    def waiting(self, url: Any) -> bool:
        """Whether a ReceiveMessage on `url` would return something now."""
        now = self._clock()
        with self._lock:
            queue = self.queues.get(str(url or "").rstrip("/").rsplit("/", 1)[-1])
            return queue is not None and any(m["visible_at"] <= now for m in queue["messages"])
