"""Output: a rich table for people, JSON or CSV (through pandas) for programs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from manager.clock import format_instant
from manager.stats.logspace import readable

OUTPUTS = ("table", "json", "csv")
F = TypeVar("F", bound=Callable[..., Any])


def output_option(func: F) -> F:
    return click.option(
        "--output",
        "-o",
        type=click.Choice(OUTPUTS),
        default="table",
        show_default=True,
        help="table for people; json or csv for programs",
    )(func)


def _plain(value: Any) -> Any:
    """One form for programs: instants as ISO 8601 UTC (microseconds), containers walked, the rest as is."""
    if isinstance(value, datetime):
        return format_instant(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _json(value: Any) -> str:
    """Numbers as numbers, text as written (no escaped slashes, UTF-8 kept), NaN as null."""
    import json
    import math

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        if hasattr(v, "item") and callable(v.item):  # numpy scalars
            return clean(v.item())
        return v

    return json.dumps(clean(value), indent=2, ensure_ascii=False, default=str)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def emit(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    output: str,
    title: str | None = None,
    empty: str = "nothing to show",
) -> None:
    """Write `rows` (restricted to `columns`) to stdout in the chosen format."""
    if output == "table":
        _table(rows, columns, title, empty)
        return
    import json

    if output == "json":
        records = [{c: _plain(row.get(c)) for c in columns} for row in rows]
        sys.stdout.write(_json(records) + "\n")
        return
    import pandas as pd

    frame = pd.DataFrame([{c: _plain(row.get(c)) for c in columns} for row in rows], columns=list(columns))
    if output == "csv":
        from manager.history.exports import spreadsheet_cell

        for column in columns:
            frame[column] = frame[column].map(
                lambda v: json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else spreadsheet_cell(v)
            )
        sys.stdout.write(frame.to_csv(index=False))


def emit_record(record: Mapping[str, Any], output: str, title: str | None = None) -> None:
    """One object: a two-column table for people, a single JSON object or CSV row for programs."""
    if output == "json":
        sys.stdout.write(_json({k: _plain(v) for k, v in record.items()}) + "\n")
        return
    if output == "csv":
        emit([record], list(record), output)
        return
    if not sys.stdout.isatty():
        width = max((len(k) for k in record), default=0)
        for key, value in record.items():
            sys.stdout.write(f"{key.ljust(width)}  {' '.join(_cell(value).split()) or '-'}\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in record.items():
        table.add_row(key, _cell(value))
    Console().print(table)


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str | None, empty: str) -> None:
    """On a terminal: a table that fits it, cells wrapped at spaces (never mid-word) or cut with an
    ellipsis. Piped: one row per line, columns aligned, nothing wrapped or cut, so `grep` finds rows."""
    if not sys.stdout.isatty():
        _plain_table(rows, columns, empty)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not rows:
        console.print(f"[dim]{title + ': ' if title else ''}{empty}[/dim]")
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="ellipsis")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    console.print(table)


def _plain_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], empty: str) -> None:
    if not rows:
        sys.stdout.write(f"{empty}\n")
        return
    cells = [[" ".join(_cell(row.get(c)).split()) or "-" for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    sys.stdout.write("\n".join(lines) + "\n")


def _evalue(v: dict[str, Any]) -> str:
    """Records before log e-values were kept carry only the (finite) e-value."""
    return readable(v["log_e_value"]) if "log_e_value" in v else f"{v['e_value']:.3g}"


def metric_cells(v: dict[str, Any]) -> dict[str, str]:
    """A metric's verdict as four short cells: status, each arm, and its interval or e-value."""
    if "e_value" in v:
        return {
            "status": v["status"],
            "baseline": f"{v['baseline_errors']:g}/{v['baseline_requests']:g}",
            "candidate": f"{v['candidate_errors']:g}/{v['candidate_requests']:g}",
            "interval": f"e-value {_evalue(v)} (reject at {v['threshold']:g})"
            + (f"; {v['counts']}" if "counts" in v else ""),
        }
    if "baseline_mean" not in v:
        return {"status": v["status"], "baseline": "-", "candidate": "-", "interval": "-"}
    interval = (
        f"[{v['improvement_low']:+.4f}, {v['improvement_high']:+.4f}] vs -{v['margin']:g}"
        if "improvement_low" in v
        else ""
    )
    if "variance_explained" in v:  # adjusted by the pre-period model's covariate
        interval += (
            f" adjusted: the covariate explains {v['variance_explained']:.0%} of the variance"
            f" (unadjusted [{v['unadjusted_improvement_low']:+.4f}, {v['unadjusted_improvement_high']:+.4f}])"
        )
    if "pairs" in v:  # judged on pairs: both models on the same requests
        if "baseline_only" in v:
            interval += (
                f"; discordant {v['baseline_only']:g} for the baseline,"
                f" {v['candidate_only']:g} for the candidate"
            )
        counts = {"baseline": f"({v['pairs']:g} pairs)", "candidate": f"({v['pairs']:g} pairs)"}
    else:
        counts = {"baseline": f"(n={v['baseline_n']:g})", "candidate": f"(n={v['candidate_n']:g})"}
    return {
        "status": v["status"],
        "baseline": f"{v['baseline_mean']:.4g} {counts['baseline']}",
        "candidate": f"{v['candidate_mean']:.4g} {counts['candidate']}",
        "interval": interval,
    }


@contextmanager
def atomic_output(target: Path) -> Iterator[IO[str]]:
    """Standard output for `-`; otherwise a file that appears whole or not at all (written beside it,
    then renamed), so an interrupted export or report never leaves half a file under its name."""
    if str(target) == "-":
        yield sys.stdout
        return
    partial = target.with_name(f".{target.name}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as out:
            yield out
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
