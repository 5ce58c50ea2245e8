"""What `rollout status` and `rollout watch` draw: the header (with whether a daemon is working the
rollout), the steps and the metrics, from `manager.rollout.status`'s record."""

from __future__ import annotations

from typing import Any

from manager.cli.render import metric_cells


def watch_view(record: dict[str, Any]) -> Any:
    """The header, the step list, each metric against its minimum, why it waits, ingest health."""
    from rich.console import Group
    from rich.table import Table

    from manager.clock import utcnow

    now = utcnow()
    created = record["created_at"]
    ended = record.get("finished_at") or now
    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    head.add_row(
        f"rollout {record['rollout']}",
        f"{record['candidate']} beside {record['baseline']} on {record['endpoint']}"
        f", policy {record['policy']}",
    )
    weights = f"candidate at {record['weight']:g}%"
    if record.get("desired_weight") is not None and record["desired_weight"] != record["weight"]:
        weights += f", moving to {record['desired_weight']:g}%"
    head.add_row("state", f"{record['state']}, step {record.get('step_of', '?')}, {weights}")
    daemon = record.get("daemon")
    if daemon is not None:
        down = f"[bold red]DOWN[/bold red]: {daemon['said']}"
        head.add_row("daemon", daemon["said"] if daemon["alive"] else down)
    head.add_row(
        "started",
        f"{created:%Y-%m-%d %H:%M:%S} UTC, {_ago(ended - created)} ago"
        if not record.get("finished_at")
        else f"{created:%Y-%m-%d %H:%M:%S} UTC, ran {_ago(ended - created)}",
    )
    head.add_row("updated", f"{now:%H:%M:%S} UTC")
    if record.get("reason"):
        head.add_row("why", str(record["reason"]))
    if record.get("last_error"):
        head.add_row("error", f"{record['last_error']} ({record['failures']} failed ticks)")
    package = record.get("model_package")
    if package:
        head.add_row("package", f"{package['version']}; outcome written back: {package['writeback']}")
    ingest = record.get("ingest")
    if ingest is not None:
        head.add_row(
            "ingest",
            f"{ingest['records_read']} records, {ingest['malformed_skipped']} malformed, "
            f"{ingest['predictions_waiting_for_labels']} waiting for labels"
            + (
                f", last read {_ago(now - ingest['last_read_at'])} ago"
                if ingest.get("last_read_at")
                else ", not read yet"
            )
            + (f"; read errors: {'; '.join(ingest['read_errors'])}" if ingest["read_errors"] else ""),
        )
    paired = record.get("paired")
    if paired:
        for key, value in paired_cells(paired).items():
            head.add_row(key, str(value))
    steps = _steps_table(record["steps"])
    metrics = Table(title="metrics (current phase)")
    for column in ("metric", "status", "samples", "baseline", "candidate", "interval"):
        metrics.add_column(column)
    for name, v in record["metrics"].items():
        cells = metric_cells(v)
        samples = v.get("pairs") or min(
            float(v.get("baseline_n", v.get("baseline_requests", 0)) or 0),
            float(v.get("candidate_n", v.get("candidate_requests", 0)) or 0),
        )
        label = f"{name} (dry run)" if v.get("dry_run") else f"{name} ({v.get('role', '')})"
        metrics.add_row(
            label,
            cells["status"],
            f"{samples:,.0f} / {v['min_samples']:,}",
            cells["baseline"],
            cells["candidate"],
            cells["interval"],
        )
    return Group(head, steps, metrics)


def paired_cells(paired: dict[str, Any]) -> dict[str, Any]:
    """A replay's progress and what its pairs show without labels, as short lines."""
    out: dict[str, Any] = {}
    if "planned" in paired:
        out["replay"] = (
            f"{paired['done']} of {paired['planned']} sent, {paired['queued']} queued,"
            f" {paired['failed']} failed, {paired.get('candidate_errors', 0)} answered with an error"
        )
        skipped = paired.get("skipped") or {}
        if skipped:
            out["left out"] = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in skipped.items())
        if paired.get("refused"):
            out["refused"] = paired["refused"]
    if "agreement_rate" in paired:
        out["agreement"] = f"{paired['agreement_rate']:.1%} of {paired['compared']} predictions"
    shift = paired.get("prediction_shift")
    if shift:
        out["score shift"] = f"{shift['mean']:+.4f} [{shift['low']:+.4f}, {shift['high']:+.4f}]"
    if "candidate_latency_ms" in paired:
        out["candidate latency"] = f"{paired['candidate_latency_ms']:.1f} ms (replayed, mean)"
    return out


def _ago(delta: Any) -> str:
    seconds = int(delta.total_seconds())
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def _steps_table(rows: list[dict[str, Any]]) -> Any:
    """The plan's steps, each marked done, now or next; once a rollout ends, where it ended and what
    it never reached."""
    from rich.table import Table

    steps = Table(title="steps", show_header=False, box=None)
    marks = {
        "done": "[green]done[/green]",
        "current": "[bold yellow]now[/bold yellow]",
        "next": "[dim]next[/dim]",
    }
    for step in rows:
        state = step["state"]
        mark = marks.get(state) or (
            f"[red]{state}[/red]" if state.startswith("ended") else f"[dim]{state}[/dim]"
        )
        steps.add_row(mark, step["what"])
    return steps
