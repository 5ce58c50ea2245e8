"""The dashboard's pages: endpoints, rollouts (each live), models and the history, from the functions
the CLI calls; operators' actions are `signin`'s."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from manager.errors import NotFound, UserError
from manager.views import intents
from manager.web import pages
from manager.web.signin import Signin

HISTORY_LIMIT = 200
MAX_ID = 2**63 - 1  # the largest id (or limit) a database column holds
REPORTS_KEPT = 32  # rollout reports kept built, the most recently viewed
LIVE = ("dashboard.js",)  # a list page's script: it keeps the list up to date


class Dashboard(Signin):
    def endpoints(self, request: Request) -> Response:
        from manager.registry import endpoints, rollouts
        from manager.views.rows import endpoint_row

        with self.database.read() as session:
            views = {v.endpoint: v for v in rollouts.views(session)}
            rows = [endpoint_row(r, views.get(r.name)) for r in endpoints.list_endpoints(session)]
            active = {name: v.record() for name, v in views.items()}
            last = {name: v.record() for name, v in rollouts.last_finished(session).items()}
        return self._page(request, "endpoints", pages.endpoints(rows, active, last), LIVE)

    def endpoint(self, request: Request) -> Response:
        """One endpoint: SageMaker and CloudWatch are asked in this handler's thread (Starlette runs a
        plain handler in its thread pool), so a slow answer holds this page alone."""
        import json

        from manager.history.report_html import safe_json
        from manager.views import endpoint_page

        name = request.path_params["name"]
        page = endpoint_page.build(self.database, name, request.query_params.get("window", "1h"))
        data = safe_json(json.dumps(page.series))
        scripts = ("uPlot.iife.min.js", "charts.js", "dashboard.js")
        return self._page(request, f"endpoint {name}", pages.endpoint(page, data), scripts)

    def rollouts(self, request: Request) -> Response:
        from manager.registry import rollouts

        with self.database.read() as session:
            rows = [v.record() for v in rollouts.views(session, everything=True)]
        return self._page(request, "rollouts", pages.rollouts(rows), LIVE)

    def _report(self, rollout_id: int) -> dict[str, Any]:
        """The rollout's report, rebuilt only when something it shows changed (its row, its
        observations, its events): a live page polls every few seconds, windows arrive every minute."""
        from manager.history import report

        if not 0 < rollout_id <= MAX_ID:
            raise NotFound(f"no rollout {rollout_id}")
        with self.database.read() as session:
            version = report.version(session, rollout_id)
            cached = self._reports.get(rollout_id)
            if cached is not None and cached[0] == version:
                self._reports.move_to_end(rollout_id)
                return cached[1]
            data = report.build(session, rollout_id)
        self._reports[rollout_id] = (version, data)
        while len(self._reports) > REPORTS_KEPT:
            self._reports.popitem(last=False)
        return data

    def _with_daemon(self, data: dict[str, Any]) -> dict[str, Any]:
        """The report with whether a daemon works the rollout now (asked at each request, not cached)."""
        from dataclasses import asdict

        from manager.registry import liveness
        from manager.registry.vocabulary import is_final

        rollout = data["rollout"]
        if is_final(rollout["state"]):
            return data
        with self.database.read() as session:
            return {**data, "daemon": asdict(liveness.check(session, rollout["endpoint"]))}

    def rollout(self, request: Request) -> Response:
        rollout_id = request.path_params["rollout_id"]
        data = self._with_daemon(self._report(rollout_id))
        operator = self._operator(request)
        csrf = self._csrf(request)
        # Only a notice this dashboard words itself: a link cannot make the page say anything else.
        asked = request.query_params.get("requested", "")
        notice = f"{asked} requested; the daemon acts within one tick" if asked in intents.INTENTS else ""
        body = pages.rollout_page(data, operator, csrf, self.operators is not None, self.poll, notice)
        title = f"rollout {rollout_id}"
        return self._page(request, title, body, ("uPlot.iife.min.js", "charts.js", "dashboard.js"))

    def live(self, request: Request) -> Response:
        from manager.history import report_html

        data = self._with_daemon(self._report(request.path_params["rollout_id"]))
        return Response(report_html.live_json(data), media_type="application/json")

    def report_json(self, request: Request) -> Response:
        from manager.history import report

        return Response(
            report.to_json(self._report(request.path_params["rollout_id"])), media_type="application/json"
        )

    def models(self, request: Request) -> Response:
        from manager.registry import models
        from manager.views.rows import headline, model_row

        with self.database.read() as session:
            rows = [model_row(r) for r in models.list_versions(session, None, None)]
        for row in rows:
            row["metrics"] = headline(row["metrics"])
        return self._page(request, "models", pages.models(rows), LIVE)

    def _filter(self, request: Request, limit: int | None) -> tuple[Any, dict[str, str]]:
        from manager.clock import instant_range
        from manager.history import audit

        q = request.query_params
        filters = {
            k: q.get(k, "").strip()
            for k in ("endpoint", "rollout", "model", "action", "actor", "since", "until", "limit")
        }
        for name in ("rollout", "limit"):
            if filters[name] and not (filters[name].isdigit() and 0 < int(filters[name]) <= MAX_ID):
                raise UserError(f"{name} {filters[name]!r}: give a whole number from 1 to {MAX_ID}")
        start, end = instant_range(filters["since"] or None, filters["until"] or None)
        flt = audit.HistoryFilter(
            endpoint=filters["endpoint"] or None,
            rollout=int(filters["rollout"]) if filters["rollout"] else None,
            model=filters["model"] or None,
            action=filters["action"] or None,
            actor=filters["actor"] or None,
            since=start,
            until=end,
            limit=limit if limit is None else int(filters["limit"] or limit),
        )
        return flt, filters

    def history(self, request: Request) -> Response:
        from manager.history import audit
        from manager.views.rows import event_row

        flt, filters = self._filter(request, HISTORY_LIMIT)
        rows = [event_row(r) for r in audit.history(self.database, flt)]
        total = (
            audit.history_count(self.database, flt)
            if flt.limit is not None and len(rows) == flt.limit
            else len(rows)
        )
        return self._page(request, "history", pages.history(rows, filters, len(rows), total))

    def history_csv(self, request: Request) -> Response:
        import io

        from manager.history import audit, exports

        flt, _filters = self._filter(request, None)
        out = io.StringIO()
        events = sorted(audit.history(self.database, flt), key=lambda r: r.seq)
        exports.write(events, "csv", out, spreadsheet=True)
        headers = {"Content-Disposition": "attachment; filename=variantctl-history.csv"}
        return Response(out.getvalue(), media_type="text/csv", headers=headers)
