"""`rollout report` as HTML: the sections (the same on `rollout report`'s self-contained page and the
dashboard's live rollout page), their tables and cells, and the data the charts are drawn from."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any

from manager.history.report import plain
from manager.web import asset


def table(rows: list[dict[str, Any]], columns: list[str], empty: str = "None.") -> str:
    """The rows as a table, or `empty` said in words (an empty table reads as a page still loading)."""
    if not rows:
        return f"<p class='none'>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def shown_time(value: datetime) -> str:
    """A time as people read it on a page: to the second, in UTC (the JSON keeps every digit)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, datetime):
        return shown_time(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return json.dumps(plain(value), sort_keys=True)
    return str(value)


def sections(report: dict[str, Any]) -> str:
    """The report's sections as HTML, charts left as empty elements that `charts.js` fills from the
    report's data (the same for `rollout report`'s page and the dashboard's live rollout page)."""
    r = report["rollout"]
    title = f"rollout {r['rollout']} on {r['endpoint']}: {r['state']}"
    decision = report["decision"]
    decided = (
        "<p>No promotion or rollback was decided.</p>"
        if decision is None
        else (
            f"<p class='decision'><b>{html.escape(decision['action'])}</b> "
            f"by {html.escape(decision['actor'])} "
            f"at {html.escape(cell(decision['at']))}: {html.escape(decision['reason'] or '')} "
            f"(seq {decision['seq']}, hash <code>{decision['hash']}</code>)</p>"
            f"<details><summary>The exact numbers behind it</summary><pre>"
            f"{html.escape(json.dumps(plain(decision['payload']), indent=2, sort_keys=True))}"
            "</pre></details>"
        )
    )
    metric_blocks = "".join(
        f"<section class='metric' id='metric-{i}'><h3>{html.escape(m['metric'])} "
        f"<small>({html.escape(m['role'])}, {html.escape(m['kind'])}, {html.escape(m['test'])}"
        f"{', dry run' if m['dry_run'] else ''})</small></h3>"
        f"<div class='chart' id='stat-{i}'></div><div class='chart' id='samples-{i}'></div>"
        f"{_why_empty(m)}</section>"
        for i, m in enumerate(report["metrics"])
    )
    return f"""<h1>{html.escape(title)}</h1>
<p>{html.escape(r["candidate"])} (variant {html.escape(r["candidate_variant"])})
against {html.escape(r["baseline"])} (variant {html.escape(r["baseline_variant"])});
started by {html.escape(str(r.get("started_by")))} at
{html.escape(cell(r["created_at"]))}; finished {html.escape(cell(r["finished_at"]))}.</p>
{_progress_html(report)}{_package_html(report.get("model_package"))}<p class="why">{
        html.escape(r.get("reason") or "")
    }</p>
<h2>Decision</h2>{decided}
<h2>Steps</h2>{table(report["steps"], ["step", "state", "what", "until", "weight", "reached_at", "left_at"])}
<h2>Weights over time</h2><div class="chart" id="weights"></div>
{table([_phase_row(p) for p in report["phases"]], ["phase", "started_at", "ended_at", "weights"])}
<h2>Metrics over time</h2>
<p>Each metric judged at the end of every observation window on what had been observed by then, as the
daemon judges it: the confidence sequence on the candidate's improvement against the margin, or the
error e-value against its threshold, and the samples per arm.</p>{metric_blocks}
<h2>Operator actions</h2>{
        table(
            report["operator_actions"],
            ["seq", "at", "actor", "action", "reason"],
            "None: no one paused, resumed, approved, aborted or promoted it by hand.",
        )
    }
<h2>Policy</h2><p>{html.escape(report["policy"]["name"])}, sha256 <code>{report["policy"]["hash"]}</code>:
{html.escape("; ".join(report["policy"]["check"]))}</p><pre>{html.escape(report["policy"]["text"])}</pre>
<h2>History</h2><p>{html.escape(report["chain"]["how_to_check"])}.</p>
{table(report["events"], ["seq", "at", "actor", "action", "subject", "reason", "hash"])}"""


def live_json(report: dict[str, Any]) -> str:
    """What a live page fetches: the sections' HTML and the data its charts are drawn from."""
    return '{"html": ' + json.dumps(sections(report)) + ', "report": ' + data_json(report) + "}"


def data_json(report: dict[str, Any]) -> str:
    """The report as JSON that is safe inside a <script> element (`safe_json`)."""
    return safe_json(json.dumps(plain(report), ensure_ascii=False, allow_nan=False))


def safe_json(text: str) -> str:
    """JSON made safe inside a <script> element: `<`, `>` and `&` as JSON escapes (`\\u003c`, ...), so
    no text in it (`</script>`, `<!--<script>`) can end or change the element."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# The page's own layout; the sections' styles are static/report.css, the dashboard's too.
PAGE_STYLE = "body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}"


def render_html(report: dict[str, Any]) -> str:
    """One self-contained page: uPlot and the data inlined, and no request allowed (CSP)."""
    r = report["rollout"]
    title = f"rollout {r['rollout']} on {r['endpoint']}: {r['state']}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<title>{html.escape(title)}</title>
<style>{asset("vendor", "uPlot.min.css")}{PAGE_STYLE}
{asset("static", "report.css")}</style></head><body>
{sections(report)}
<script id="report-data" type="application/json">{data_json(report)}</script>
<script>{asset("vendor", "uPlot.iife.min.js")}</script>
<script>{asset("static", "charts.js")}</script>
<script>window.drawReport(JSON.parse(document.getElementById("report-data").textContent));</script>
</body></html>
"""


def _package_html(package: dict[str, Any] | None) -> str:
    if not package:
        return ""
    return (
        f"<p>Model package {html.escape(package['version'])} (<code>{html.escape(package['arn'])}</code>); "
        f"outcome written back: {html.escape(package['writeback'])}.</p>"
    )


def _phase_row(phase: dict[str, Any]) -> dict[str, Any]:
    """A phase with its weights as shares people read (`eights-v2 90% · eights-v3 10%`)."""
    weights = phase.get("weights") or {}
    total = sum(float(w) for w in weights.values()) or 1.0
    shares = " · ".join(f"{name} {100.0 * float(w) / total:.4g}%" for name, w in weights.items())
    return {**phase, "weights": shares or None}


def _why_empty(metric: dict[str, Any]) -> str:
    """A note under a metric whose charts have nothing to draw, saying why."""
    points = metric["points"]
    if not points:
        return "<p class='none'>No observations yet: no window of this metric has been read.</p>"
    drawn = ("improvement_low", "improvement_estimate", "e_value")
    if any(p.get(k) is not None for p in points for k in drawn):
        return ""
    statuses = sorted({str(p.get("status")) for p in points})
    return (
        f"<p class='none'>Nothing to draw yet: each of the {len(points)} looks so far was "
        f"{html.escape(' or '.join(statuses))} (fewer than {metric['min_samples']} samples per arm, "
        "or no data reported for the window).</p>"
    )


def _progress_html(report: dict[str, Any]) -> str:
    """Argo's step counter, the weight in force, and (on the dashboard) whether a daemon works it."""
    r, steps = report["rollout"], report["steps"]
    at = f"step {min(r['step'] + 1, len(steps))}/{len(steps)}, candidate at {r['weight']:g}%"
    daemon = report.get("daemon")
    said = ""
    if daemon is not None:
        said = (
            f"; daemon: {html.escape(daemon['said'])}"
            if daemon["alive"]
            else f"</p><p class='error' id='daemon-down'>DOWN: {html.escape(daemon['said'])}"
        )
    return f"<p class='progress'>{html.escape(at)}{said}</p>"
