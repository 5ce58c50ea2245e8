"""CloudWatch Logs, as far as a job's log lines need it: the host writes them, the SDK reads them.

Log groups hold streams of events (timestamp in ms, message). Streams are appended to files under
`<state_dir>/logs/` and reloaded on restart. The calls are the ones the SageMaker SDK makes while it
waits for a job (`DescribeLogStreams`, `GetLogEvents`) and a few a user makes by hand
(`DescribeLogGroups`, `FilterLogEvents`, `CreateLogGroup`, `CreateLogStream`, `PutLogEvents`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from manager.local_sagemaker.protocol import ACCOUNT, AwsError

PAGE = 10000


def _missing(what: str) -> AwsError:
    return AwsError("ResourceNotFoundException", f"The specified {what} does not exist.")


class LogStore:
    def __init__(self, directory: Path, region: str, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.directory = directory
        self.region = region
        self.groups: dict[str, dict[str, list[tuple[int, str, int]]]] = {}
        self.created: dict[str, int] = {}
        self.lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        for group_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
            group = unquote(group_dir.name)
            self.groups[group] = {}
            self.created[group] = int(group_dir.stat().st_ctime * 1000)
            for stream_file in sorted(group_dir.glob("*.jsonl")):
                events = []
                for line in stream_file.read_text().splitlines():
                    try:
                        t, message, ingested = json.loads(line)
                        events.append((int(t), str(message), int(ingested)))
                    except (ValueError, TypeError):
                        continue  # a line torn by a crash
                self.groups[group][unquote(stream_file.name[: -len(".jsonl")])] = events

    # ---- writing (the host) ---------------------------------------------------------------------

    def write(self, group: str, stream: str, messages: list[str], at_ms: int | None = None) -> None:
        now = int(self.clock() * 1000)
        events = [(at_ms or now, m, now) for m in messages]
        with self.lock:
            self.created.setdefault(group, now)
            self.groups.setdefault(group, {}).setdefault(stream, []).extend(events)
            folder = self.directory / quote(group, safe="")
            folder.mkdir(exist_ok=True)
            with (folder / f"{quote(stream, safe='')}.jsonl").open("a") as f:
                f.writelines(json.dumps(e) + "\n" for e in events)

    # ---- the API --------------------------------------------------------------------------------

    def handle(self, operation: str, req: dict[str, Any]) -> dict[str, Any]:
        handler = getattr(self, f"op_{operation}", None)
        if handler is None:
            raise AwsError(
                "UnknownOperationException", f"The local CloudWatch Logs does not implement {operation}"
            )
        result: dict[str, Any] = handler(req)
        return result

    def _stream(self, req: dict[str, Any]) -> list[tuple[int, str, int]]:
        group = self.groups.get(str(req.get("logGroupName")))
        if group is None:
            raise _missing("log group")
        stream = group.get(str(req.get("logStreamName")))
        if stream is None:
            raise _missing("log stream")
        return stream

    def op_CreateLogGroup(self, req: dict[str, Any]) -> dict[str, Any]:
        name = str(req.get("logGroupName", ""))
        if name in self.groups:
            raise AwsError("ResourceAlreadyExistsException", "The specified log group already exists")
        with self.lock:
            self.groups[name] = {}
            self.created[name] = int(self.clock() * 1000)
            (self.directory / quote(name, safe="")).mkdir(exist_ok=True)
        return {}

    def op_CreateLogStream(self, req: dict[str, Any]) -> dict[str, Any]:
        group = self.groups.get(str(req.get("logGroupName")))
        if group is None:
            raise _missing("log group")
        name = str(req.get("logStreamName", ""))
        if name in group:
            raise AwsError("ResourceAlreadyExistsException", "The specified log stream already exists")
        self.write(str(req["logGroupName"]), name, [])
        return {}

    def op_PutLogEvents(self, req: dict[str, Any]) -> dict[str, Any]:
        self._stream(req)
        for event in req.get("logEvents", []):
            self.write(
                str(req["logGroupName"]),
                str(req["logStreamName"]),
                [str(event["message"])],
                int(event["timestamp"]),
            )
        return {"nextSequenceToken": "0"}

    def op_DescribeLogGroups(self, req: dict[str, Any]) -> dict[str, Any]:
        prefix = str(req.get("logGroupNamePrefix", ""))
        names = sorted(g for g in self.groups if g.startswith(prefix))
        return {
            "logGroups": [
                {
                    "logGroupName": g,
                    "creationTime": self.created.get(g, 0),
                    "arn": f"arn:aws:logs:{self.region}:{ACCOUNT}:log-group:{g}:*",
                    "storedBytes": sum(len(m) for s in self.groups[g].values() for _, m, _ in s),
                }
                for g in names
            ]
        }

    def op_DescribeLogStreams(self, req: dict[str, Any]) -> dict[str, Any]:
        group_name = str(req.get("logGroupName"))
        group = self.groups.get(group_name)
        if group is None:
            raise _missing("log group")
        prefix = str(req.get("logStreamNamePrefix", ""))
        if prefix and req.get("orderBy") == "LastEventTime":
            raise AwsError(
                "InvalidParameterException", "Cannot order by LastEventTime with a logStreamNamePrefix."
            )
        with self.lock:
            rows = [
                {
                    "logStreamName": name,
                    "creationTime": events[0][2] if events else 0,
                    "firstEventTimestamp": events[0][0] if events else None,
                    "lastEventTimestamp": events[-1][0] if events else None,
                    "lastIngestionTime": events[-1][2] if events else None,
                    "arn": f"arn:aws:logs:{self.region}:{ACCOUNT}:log-group:{group_name}:log-stream:{name}",
                }
                for name, events in group.items()
                if name.startswith(prefix)
            ]
        if req.get("orderBy") == "LastEventTime":
            rows.sort(key=lambda r: int(r["lastEventTimestamp"] or 0))
        else:
            rows.sort(key=lambda r: str(r["logStreamName"]))
        if req.get("descending"):
            rows.reverse()
        start = int(req.get("nextToken") or 0)
        limit = int(req.get("limit") or 50)
        page = [{k: v for k, v in r.items() if v is not None} for r in rows[start : start + limit]]
        out: dict[str, Any] = {"logStreams": page}
        if start + limit < len(rows):
            out["nextToken"] = str(start + limit)
        return out

    def op_GetLogEvents(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            events = list(self._stream(req))
        start_time, end_time = req.get("startTime"), req.get("endTime")
        indexed = [
            (i, e)
            for i, e in enumerate(events)
            if (start_time is None or e[0] >= int(start_time)) and (end_time is None or e[0] < int(end_time))
        ]
        limit = min(int(req.get("limit") or PAGE), PAGE)
        token = req.get("nextToken")
        if token:
            direction, _, position = str(token).partition("/")
            if direction not in ("f", "b") or not position.isdigit():
                raise AwsError("InvalidParameterException", "The specified nextToken is invalid.")
            at = int(position)
            chosen = (
                [(i, e) for i, e in indexed if i >= at][:limit]
                if direction == "f"
                else [(i, e) for i, e in indexed if i < at][-limit:]
            )
        elif req.get("startFromHead"):
            chosen = indexed[:limit]
        else:
            chosen = indexed[-limit:]
        first = chosen[0][0] if chosen else (int(str(token).partition("/")[2]) if token else len(events))
        after = chosen[-1][0] + 1 if chosen else first
        return {
            "events": [{"timestamp": t, "message": m, "ingestionTime": ing} for _, (t, m, ing) in chosen],
            "nextForwardToken": f"f/{after}",
            "nextBackwardToken": f"b/{first}",
        }

    def op_FilterLogEvents(self, req: dict[str, Any]) -> dict[str, Any]:
        group = self.groups.get(str(req.get("logGroupName")))
        if group is None:
            raise _missing("log group")
        names = req.get("logStreamNames") or [
            n for n in group if n.startswith(str(req.get("logStreamNamePrefix", "")))
        ]
        pattern = str(req.get("filterPattern") or "").strip('"')
        start_time, end_time = req.get("startTime"), req.get("endTime")
        with self.lock:
            found = [
                {
                    "logStreamName": n,
                    "timestamp": t,
                    "message": m,
                    "ingestionTime": ing,
                    "eventId": f"{n}/{i}",
                }
                for n in names
                for i, (t, m, ing) in enumerate(group.get(n, []))
                if pattern in m
                and (start_time is None or t >= int(start_time))
                and (end_time is None or t <= int(end_time))
            ]
        found.sort(key=lambda e: e["timestamp"])
        start = int(req.get("nextToken") or 0)
        limit = int(req.get("limit") or PAGE)
        out: dict[str, Any] = {"events": found[start : start + limit], "searchedLogStreams": []}
        if start + limit < len(found):
            out["nextToken"] = str(start + limit)
        return out
