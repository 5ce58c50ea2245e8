"""The daemon's logs: text (one line per event) or JSON lines, each job's fields attached."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any


class JsonLines(logging.Formatter):
    """One JSON object per line; an exception comes with its type, message and traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            line.setdefault("error_type", type(error).__name__)
            line.setdefault("error", str(error))
            line.setdefault("traceback", self.formatException(record.exc_info))
        return json.dumps(line, default=str)


class OneLine(logging.Formatter):
    """Text logs: one line per event; an exception adds its type and message, and its traceback
    only with VARIANTCTL_DEBUG=1 (the JSON format always carries it, in a field)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        exc_info, record.exc_info, record.exc_text = record.exc_info, None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info = exc_info
        if exc_info and exc_info[1] is not None:
            error = exc_info[1]
            detail = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            if detail not in line:
                line += f" [{detail}]"
            if os.environ.get("VARIANTCTL_DEBUG"):
                line += "\n" + self.formatException(exc_info)
        return line


def configure_logging(fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if fmt == "json" else OneLine())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # A job's exception is logged by `_on_job_event`, with the job and the error as fields.
    logging.getLogger("apscheduler.executors").setLevel(logging.CRITICAL)
    # Alembic says which context and DDL mode it uses each time the schema is checked: noise here.
    logging.getLogger("alembic").setLevel(logging.WARNING)
