"""The dashboard's pages, as HTML strings: one layout, and a function per page. Each page's data comes
from the functions the CLI calls (`endpoints list`, `rollout list`, `models list`, `history`); the
rollout page is `rollout report`'s sections and charts, kept live by `dashboard.js`."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import urlencode

from manager.history import report_html as report
from manager.views import intents


def layout(
    title: str,
    body: str,
    operator: str | None,
    signin: bool | None,
    scripts: tuple[str, ...] = (),
    csrf: str | None = None,
) -> str:
    """`signin`: whether operators may sign in (None: not said, on an error page)."""
    who = (
        f"signed in as <b>{html.escape(operator)}</b>"
        " <form class='inline' method='post' action='/logout'>"
        f"<input type='hidden' name='csrf' value='{html.escape(csrf or '')}'><button>sign out</button></form>"
        if operator
        else "<a href='/login'>sign in to act</a>"
        if signin
        else "read-only (started without --token-file)"
        if signin is False
        else ""
    )
    tags = "".join(f"<script src='/static/{html.escape(s)}'></script>" for s in scripts)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} · variantctl</title>
<link rel="stylesheet" href="/static/uPlot.min.css"><link rel="stylesheet" href="/static/report.css">
<link rel="stylesheet" href="/static/dashboard.css">
</head><body>
<nav><b>variantctl</b> <a href="/">endpoints</a> <a href="/rollouts">rollouts</a> <a href="/models">models</a>
<a href="/history">history</a> <span class="who">{who}</span></nav>
<main>{body}</main>{tags}</body></html>
"""


def link(href: str, text: Any) -> str:
    return f"<a href='{html.escape(href)}'>{html.escape(str(text))}</a>"


def linked_table(rows: list[dict[str, Any]], columns: list[str], links: dict[str, str]) -> str:
    """A table whose `links` columns link to `links[column].format(**row)`."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            text = report.cell(row.get(c))
            cells.append(
                f"<td>{link(links[c].format(**row), text)}</td>"
                if c in links and row.get(c) is not None
                else f"<td>{html.escape(text)}</td>"
            )
        body.append(f"<tr data-row='{html.escape(str(row.get(columns[0])))}'>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def live(body: str) -> str:
    """A list that `dashboard.js` keeps up to date: it fetches the page again every few seconds and
    swaps this element's content (Argo's list pages are live; ours were not: issue 31)."""
    return f"<div id='list' data-live='1'>{body}</div>"


def endpoints(
    rows: list[dict[str, Any]], active: dict[str, dict[str, Any]], last: dict[str, dict[str, Any]]
) -> str:
    """`last`: each endpoint's newest finished rollout, so the page keeps a trace of past rollouts."""
    for row in rows:
        running = active.get(row["endpoint"])
        ended = last.get(row["endpoint"])
        row["last_rollout"] = (
            None
            if ended is None
            else f"{ended['rollout']}: {ended['state']} ({ended['candidate']}), {ended['age']} ago"
        )
        row["last_rollout_id"] = None if ended is None else ended["rollout"]
        row["variants"] = "; ".join(
            f"{v['variant']}: {v['model']} ("
            + ("shadow" if v["shadow"] else f"{v['share']:.4g}%, weight {v['weight']:g}")
            + ")"
            for v in row["variant_details"]
        )
        row["rollout"] = None if running is None else running["rollout"]
        row["rollout_state"] = (
            None if running is None else f"{running['state']}, candidate at {running['weight']:g}%"
        )
    columns = ["endpoint", "status", "variants", "rollout", "rollout_state", "last_rollout", "observed_at"]
    empty = "<p>No endpoints yet (`variantctl endpoints create`).</p>"
    links = {
        "endpoint": "/endpoints/{endpoint}",
        "rollout": "/rollouts/{rollout}",
        "last_rollout": "/rollouts/{last_rollout_id}",
    }
    return (
        "<h1>Endpoints</h1><p>As SageMaker last reported each, the rollout on it and the last one.</p>"
        + live(linked_table(rows, columns, links) if rows else empty)
    )


def rollouts(rows: list[dict[str, Any]]) -> str:
    from manager.views.rows import ROLLOUT_COLUMNS as COLUMNS

    columns = [*COLUMNS, "created_at"]
    links = {"rollout": "/rollouts/{rollout}", "endpoint": "/endpoints/{endpoint}"}
    return "<h1>Rollouts</h1>" + live(
        linked_table(rows, columns, links) if rows else "<p>No rollouts yet.</p>"
    )


def models(rows: list[dict[str, Any]]) -> str:
    columns = [
        "model",
        "status",
        "replaces",
        "training_run_id",
        "dataset_fingerprint",
        "metrics",
        "framework",
        "artifact_uri",
        "created_at",
    ]
    from manager.views.rows import metrics_text

    shown = [{**r, "metrics": metrics_text(r.get("metrics") or {})} for r in rows]
    return (
        "<h1>Models</h1><p>Each version with what it replaces, the training run that made it and its data's"
        " fingerprint.</p>"
        + live(linked_table(shown, columns, {}) if rows else "<p>No models registered.</p>")
    )


def history(rows: list[dict[str, Any]], filters: dict[str, str], shown: int, total: int) -> str:
    fields = "".join(
        f"<label>{name} <input name='{name}' value='{html.escape(filters.get(name, ''))}'></label> "
        for name in ("endpoint", "rollout", "model", "action", "actor", "since", "until", "limit")
    )
    csv_link = "/history.csv?" + urlencode({k: v for k, v in filters.items() if k != "limit" and v})
    columns = ["seq", "at", "actor", "action", "subject", "reason", "hash"]
    more = f"<p>Showing the newest {shown} of {total} matching events.</p>" if total > shown else ""
    return (
        "<h1>History</h1><form method='get' class='filters'>"
        f"{fields}<button>filter</button></form>"
        f"<p><a id='csv' href='{html.escape(csv_link)}'>download every matching event as CSV</a>"
        " (the columns of `variantctl audit export --format csv`)</p>"
        + more
        + (linked_table(rows, columns, {}) if rows else "<p>No events match.</p>")
    )


def rollout_page(
    data: dict[str, Any], operator: str | None, csrf: str | None, signin: bool, poll: float, notice: str = ""
) -> str:
    r = data["rollout"]
    actions = ""
    if operator and csrf:
        state = r["state"]
        buttons = "".join(
            f"<button name='intent' value='{i}' title='{html.escape(intents.INTENT_HELP[i])}'"
            f" data-states='{' '.join(intents.applies(i))}'"
            + ("" if state in intents.applies(i) else " disabled")
            + f">{i}</button>"
            for i in intents.INTENTS
        )
        actions = (
            f"<form id='actions' method='post' action='/rollouts/{r['rollout']}/actions'>"
            f"<input type='hidden' name='csrf' value='{html.escape(csrf)}'>"
            "<label>reason (recorded in the history)"
            " <input name='reason' required minlength='3' size='50'></label> "
            f"{buttons}</form>"
        )
    elif signin:
        actions = "<p><a href='/login'>Sign in</a> to pause, resume, approve, abort or promote.</p>"
    flash = f"<p class='notice'>{html.escape(notice)}</p>" if notice else ""
    return (
        f"{flash}{actions}<div id='live' data-rollout='{r['rollout']}' data-poll='{poll:g}'>"
        f"{report.sections(data)}</div>"
        f"<script id='report-data' type='application/json'>{report.data_json(data)}</script>"
    )


def login(error: str = "") -> str:
    shown = f"<p class='error'>{html.escape(error)}</p>" if error else ""
    return (
        f"<h1>Sign in</h1>{shown}<form method='post' action='/login'>"
        "<label>operator token <input type='password' name='token' autocomplete='off' required></label>"
        " <button>sign in</button></form><p>The token is your line of the dashboard's --token-file.</p>"
    )


def endpoint(page: Any, data_json: str) -> str:
    """An endpoint's page (`views.endpoint_page`): variants, hosting, scaling, traffic, rollouts."""
    from manager.views.endpoint_page import WINDOWS

    row = page.row
    name = html.escape(row["endpoint"])
    windows = " · ".join(
        f"<b>{w}</b>" if w == page.window else link(f"/endpoints/{row['endpoint']}?window={w}", w)
        for w in WINDOWS
    )
    problems = "".join(f"<p class='error'>{html.escape(p)}</p>" for p in page.problems)
    variants = []
    for v in row["variant_details"]:
        live_v = page.live.get(v["variant"], {})
        scaling = page.scaling.get(v["variant"])
        variants.append(
            {
                "variant": v["variant"],
                "model": v["model"],
                "share": None if v["share"] is None else f"{v['share']:.4g}%",
                "share_on_sagemaker": None
                if live_v.get("share") is None
                else f"{100 * live_v['share']:.4g}%",
                "instance_type": v["instance_type"],
                "instances": (
                    f"{live_v['current_instances']} (desired {live_v['desired_instances']})"
                    if live_v
                    else v["instance_count"]
                ),
                "autoscaling": _scaling_text(scaling),
            }
        )
    columns = ["variant", "model", "share", "share_on_sagemaker", "instance_type", "instances", "autoscaling"]
    charts = "".join(
        f"<div class='chart' id='ep-{m}'></div>" for m in ("invocations", "errors", "model_latency_ms")
    )
    rollouts_table = (
        linked_table(
            page.rollouts,
            ["rollout", "candidate", "baseline", "state", "age", "duration", "reason"],
            {"rollout": "/rollouts/{rollout}"},
        )
        if page.rollouts
        else "<p class='none'>None: no rollout has run on this endpoint.</p>"
    )
    body = (
        f"<p>{html.escape(str(row.get('live_status') or row['status']))}, config "
        f"{html.escape(str(row['config']))}; reported {html.escape(report.cell(row['observed_at']))}.</p>"
        f"{problems}<h2>Variants</h2>{linked_table(variants, columns, {})}"
        f"<h2>Traffic per variant, last {html.escape(page.window)}</h2><p>window: {windows}; "
        f"one point per {page.period} s, from CloudWatch (AWS/SageMaker), which is 2-5 minutes late.</p>"
        f"{charts}<h2>Rollouts</h2>{rollouts_table}"
        f"<script id='endpoint-data' type='application/json'>{data_json}</script>"
    )
    return f"<h1>Endpoint {name}</h1>" + live(body)


def _scaling_text(scaling: dict[str, Any] | None) -> str:
    if not scaling:
        return "not registered (a fixed instance count)"
    policies = "; ".join(
        f"{p['kind']} {p['name']}"
        + (
            f" (target {p['config'].get('TargetValue')})"
            if isinstance(p.get("config"), dict) and "TargetValue" in p["config"]
            else ""
        )
        for p in scaling.get("policies", [])
    )
    return f"{scaling['min']}-{scaling['max']} instances" + (f"; {policies}" if policies else "; no policy")
