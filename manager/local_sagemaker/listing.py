"""Every List* call's filters and pages, for the control plane and the jobs alike.

`NameContains` (on the row's first field, its name), `StatusEquals`, `CreationTime` and
`LastModifiedTime` bounds, `SortBy` (one of the operation's own values) and `SortOrder`,
`MaxResults` (1-100) and `NextToken` (an offset this host issued). Rows hold epoch times, sent as
timestamps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from manager.local_sagemaker.protocol import validation, wire_times

Row = dict[str, Any]
BOUNDS: tuple[tuple[str, str, Callable[[float, float], bool]], ...] = (
    ("CreationTimeAfter", "CreationTime", lambda value, bound: value > bound),
    ("CreationTimeBefore", "CreationTime", lambda value, bound: value < bound),
    ("LastModifiedTimeAfter", "LastModifiedTime", lambda value, bound: value > bound),
    ("LastModifiedTimeBefore", "LastModifiedTime", lambda value, bound: value < bound),
)


def sorted_by(name_key: str, status_key: str | None = None) -> dict[str, Callable[[Row], Any]]:
    """The usual SortBy values: Name, CreationTime, and Status where the rows have one."""
    sorts: dict[str, Callable[[Row], Any]] = {
        "Name": lambda r: r[name_key],
        "CreationTime": lambda r: r["CreationTime"],
    }
    if status_key:
        sorts["Status"] = lambda r: r[status_key]
    return sorts


def page(
    req: dict[str, Any],
    rows: list[Row],
    key: str,
    sorts: dict[str, Callable[[Row], Any]],
    *,
    status_key: str | None = None,
    default_sort: str = "CreationTime",
    default_max: int = 10,
) -> dict[str, Any]:
    limit = req.get("MaxResults")
    if limit is None:
        limit = default_max
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100:
        raise validation(
            f"1 validation error detected: Value '{limit}' at 'maxResults' failed to satisfy "
            "constraint: Member must have value between 1 and 100"
        )
    token = req.get("NextToken") or "0"
    if not (isinstance(token, str) and token.isdigit()):
        raise validation(f"NextToken {token!r} is not a token this service issued")
    sort_by = req.get("SortBy") or default_sort
    if sort_by not in sorts:
        raise validation(f"SortBy {sort_by!r} must be one of [{', '.join(sorts)}]")
    contains = str(req.get("NameContains") or "").lower()
    if contains and rows:
        name_key = next(iter(rows[0]))
        rows = [r for r in rows if contains in str(r.get(name_key, "")).lower()]
    if status_key and req.get("StatusEquals"):
        rows = [r for r in rows if r.get(status_key) == req["StatusEquals"]]
    for field, column, keep in BOUNDS:
        if req.get(field) is not None:
            bound = float(req[field])
            # Times go out in milliseconds (as AWS's do) and come back as bounds in milliseconds, so
            # they are compared at that precision: a bound equal to a time read back excludes it.
            rows = [r for r in rows if column in r and keep(round(r[column], 3), round(bound, 3))]
    rows = sorted(rows, key=sorts[sort_by], reverse=req.get("SortOrder", "Descending") == "Descending")
    start = int(token)
    out: dict[str, Any] = {key: wire_times(rows[start : start + limit])}
    if start + limit < len(rows):
        out["NextToken"] = str(start + limit)
    return out
