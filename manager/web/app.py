"""The dashboard: a Starlette app over the registry (`variantctl dashboard`, `variantctl daemon --http`).

Read-only unless it was given a token file (`auth`); then a signed-in operator can pause, resume,
approve a manual gate, abort or promote, each written as the CLI writes it (an intent in the
registry, recorded in the history with the operator's name and their reason) and carried out by the
daemon. It serves its scripts and styles itself (nothing from a CDN), under a Content-Security-Policy
that allows nothing else, and `/metrics` for Prometheus.
"""

from __future__ import annotations

import html
from collections import OrderedDict
from typing import Any, cast
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from manager.db import Database
from manager.errors import NotFound, UserError
from manager.views import intents
from manager.web import asset, auth, pages
from manager.web.metrics import Exposition

STATIC = {
    "uPlot.min.css": ("vendor", "text/css"),
    "report.css": ("static", "text/css"),
    "uPlot.iife.min.js": ("vendor", "text/javascript"),
    "charts.js": ("static", "text/javascript"),
    "dashboard.js": ("static", "text/javascript"),
    "dashboard.css": ("static", "text/css"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
        " frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
HISTORY_LIMIT = 200
MAX_ID = 2**63 - 1  # the largest id (or limit) a database column holds
REPORTS_KEPT = 32  # rollout reports kept built, the most recently viewed


def create_app(
    url: str,
    operators: auth.Operators | None = None,
    poll: float = 2.0,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Starlette:
    """`operators`: the token file's (`auth.Operators.from_file`), None for a read-only dashboard;
    `poll`: seconds between the live rollout page's updates; `host` and `port`: where it is served
    (the Host names it answers, its cookie's name, and whether that cookie is Secure)."""
    database = Database(url)
    exposition = Exposition(database)
    secure = host not in auth.LOOPBACK
    dashboard = Dashboard(database, operators, poll, auth.cookie_name(port, secure), secure)

    def metrics(_request: Request) -> Response:
        body, content_type = exposition()
        return Response(body, media_type=content_type)

    routes = [
        Route("/", dashboard.endpoints),
        Route("/rollouts", dashboard.rollouts),
        Route("/rollouts/{rollout_id:int}", dashboard.rollout),
        Route("/rollouts/{rollout_id:int}/live", dashboard.live),
        Route("/rollouts/{rollout_id:int}/report.json", dashboard.report_json),
        Route("/rollouts/{rollout_id:int}/actions", dashboard.act, methods=["POST"]),
        Route("/models", dashboard.models),
        Route("/history", dashboard.history),
        Route("/history.csv", dashboard.history_csv),
        Route("/login", dashboard.login, methods=["GET", "POST"]),
        Route("/logout", dashboard.logout, methods=["POST"]),
        Route("/static/{name}", static),
        Route("/metrics", metrics),
        Route("/healthz", lambda _r: PlainTextResponse("ok\n")),
    ]
    app = Starlette(routes=routes, exception_handlers={NotFound: _not_found, UserError: _refused})
    app.add_middleware(_SecurityHeaders)
    app.add_middleware(_KnownHosts, allowed=_allowed_hosts(host))
    app.state.database = database
    return app


def _allowed_hosts(host: str) -> set[str]:
    """The Host names the dashboard answers: loopback's, the address it is bound to, and those
    VARIANTCTL_DASHBOARD_HOSTS names (comma-separated), so a rebound DNS name cannot reach it."""
    import os

    named = (os.environ.get("VARIANTCTL_DASHBOARD_HOSTS") or "").split(",")
    bound = () if host in ("0.0.0.0", "::") else (host,)
    return {h.strip().lower().strip("[]") for h in (*auth.LOOPBACK, *bound, *named) if h.strip()}


class _KnownHosts:
    """Refuses a request whose Host is not one the dashboard serves (DNS rebinding)."""

    def __init__(self, app: Any, allowed: set[str]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raw = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1").strip().lower()
            name = raw[1 : raw.find("]")] if raw.startswith("[") else raw.rsplit(":", 1)[0]
            if name not in self.allowed:
                response = PlainTextResponse(
                    f"refused: Host {raw!r} is not one this dashboard serves (VARIANTCTL_DASHBOARD_HOSTS)\n",
                    status_code=403,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _SecurityHeaders:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                present = {k.lower() for k, _v in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode(), value.encode()))
            await send(message)

        await self.app(scope, receive, with_headers)


def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC:
        return PlainTextResponse("not found\n", status_code=404)
    folder, media = STATIC[name]
    return Response(asset(folder, name), media_type=media, headers={"Cache-Control": "max-age=3600"})


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(request, 404, str(exc))


async def _refused(request: Request, exc: Exception) -> Response:
    return _error(request, 409, str(exc))


def _error(request: Request, status: int, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    return HTMLResponse(
        pages.layout("error", f"<p class='error'>{html.escape(message)}</p>", None, None), status
    )


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "") or "authorization" in request.headers


class Dashboard:
    def __init__(
        self, database: Database, operators: auth.Operators | None, poll: float, cookie: str, secure: bool
    ) -> None:
        self.database, self.operators, self.poll = database, operators, poll
        self.cookie, self.secure = cookie, secure
        self._reports: OrderedDict[int, tuple[tuple[Any, ...], dict[str, Any]]] = OrderedDict()

    def _session(self, request: Request) -> str | None:
        return request.cookies.get(self.cookie)

    def _operator(self, request: Request) -> str | None:
        if self.operators is None:
            return None
        return self.operators.operator(self._session(request))

    def _csrf(self, request: Request) -> str | None:
        session = self._session(request)
        return (
            self.operators.csrf(session) if self.operators and session and self._operator(request) else None
        )

    def _page(self, request: Request, title: str, body: str, scripts: tuple[str, ...] = ()) -> HTMLResponse:
        signin = self.operators is not None
        page = pages.layout(title, body, self._operator(request), signin, scripts, self._csrf(request))
        return HTMLResponse(page)

    def endpoints(self, request: Request) -> Response:
        from manager.registry import endpoints, rollouts
        from manager.views.rows import endpoint_row

        with self.database.read() as session:
            views = {v.endpoint: v for v in rollouts.views(session)}
            rows = [endpoint_row(r, views.get(r.name)) for r in endpoints.list_endpoints(session)]
            active = {name: v.record() for name, v in views.items()}
        return self._page(request, "endpoints", pages.endpoints(rows, active))

    def rollouts(self, request: Request) -> Response:
        from manager.registry import rollouts

        with self.database.read() as session:
            rows = [v.record() for v in rollouts.views(session, everything=True)]
        return self._page(request, "rollouts", pages.rollouts(rows))

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

    def rollout(self, request: Request) -> Response:
        rollout_id = request.path_params["rollout_id"]
        data = self._report(rollout_id)
        operator = self._operator(request)
        csrf = self._csrf(request)
        # Only a notice this dashboard words itself: a link cannot make the page say anything else.
        asked = request.query_params.get("requested", "")
        notice = f"{asked} requested; the daemon acts within one tick" if asked in intents.INTENTS else ""
        body = pages.rollout_page(data, operator, csrf, self.operators is not None, self.poll, notice)
        title = f"rollout {rollout_id}"
        return self._page(request, title, body, ("uPlot.iife.min.js", "charts.js", "dashboard.js"))

    def live(self, request: Request) -> Response:
        from manager.history import report

        data = self._report(request.path_params["rollout_id"])
        return Response(report.live_json(data), media_type="application/json")

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
        return self._page(request, "models", pages.models(rows))

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

    async def login(self, request: Request) -> Response:
        if self.operators is None:
            return self._page(
                request, "sign in", "<p>This dashboard is read-only: it was started without --token-file.</p>"
            )
        if request.method == "GET":
            return self._page(request, "sign in", pages.login())
        if not auth.same_origin(dict(request.headers), request.url.scheme, request.headers.get("host", "")):
            return PlainTextResponse("refused: a sign-in from another site\n", status_code=403)
        address = request.client.host if request.client else "unknown"
        wait = self.operators.throttled(address)
        if wait:
            return PlainTextResponse(
                f"refused: too many failed sign-ins from {address}; try again in {wait:.0f} s\n",
                status_code=429,
            )
        form = await request.form()
        name = self.operators.by_token(str(form.get("token") or ""))
        if name is None:
            self._failed(address, "sign-in")
            page = pages.layout(
                "sign in", pages.login("That token is not in the dashboard's token file."), None, True
            )
            return HTMLResponse(page, status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            self.cookie,
            self.operators.session(name),
            max_age=int(self.operators.max_age),
            httponly=True,
            samesite="strict",
            secure=self.secure,
            path="/",
        )
        return response

    def _failed(self, address: str, how: str) -> None:
        from manager import telemetry

        assert self.operators is not None
        self.operators.failed(address)
        telemetry.SIGNIN_FAILURES.labels(how).inc()
        auth.log.warning("failed %s from %s: the token is not in the token file", how, address)

    async def logout(self, request: Request) -> Response:
        """Ends the session here, not only in the browser; only from the dashboard's own pages."""
        if not auth.same_origin(dict(request.headers), request.url.scheme, request.headers.get("host", "")):
            return PlainTextResponse("refused: a sign-out from another site\n", status_code=403)
        form = await request.form()
        session = self._session(request)
        if self.operators is not None and session is not None:
            if not self.operators.csrf_ok(session, str(form.get("csrf") or "")):
                return PlainTextResponse(
                    "refused: the form's CSRF token is missing or wrong\n", status_code=403
                )
            self.operators.end(session)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(self.cookie, path="/", secure=self.secure, httponly=True, samesite="strict")
        return response

    async def act(self, request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        rollout_id = request.path_params["rollout_id"]
        if self.operators is None:
            return _error(
                request, 403, "this dashboard is read-only: start it with --token-file to act from it"
            )
        if not auth.same_origin(dict(request.headers), request.url.scheme, request.headers.get("host", "")):
            return _error(request, 403, "refused: the request did not come from this dashboard's pages")
        form = await request.form()
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            address = request.client.host if request.client else "unknown"
            wait = self.operators.throttled(address)
            if wait:
                return _error(
                    request, 429, f"too many failed tokens from {address}; try again in {wait:.0f} s"
                )
            actor = self.operators.by_token(bearer[7:].strip())
            if actor is None:
                self._failed(address, "bearer")
                return _error(request, 401, "that token is not in the dashboard's token file")
        else:
            cookie = self._session(request)
            actor = self.operators.operator(cookie)
            if actor is None:
                return _error(request, 401, "sign in first: no operator session")
            if not self.operators.csrf_ok(cookie, str(form.get("csrf") or "")):
                return _error(request, 403, "refused: the form's CSRF token is missing or wrong")
        intent = str(form.get("intent") or "")
        reason = str(form.get("reason") or "").strip()
        if intent not in intents.INTENTS:
            return _error(request, 400, f"intent {intent!r}: one of {', '.join(intents.INTENTS)}")
        if len(reason) < 3:
            return _error(
                request, 400, "give a reason (at least 3 characters): it is recorded in the history"
            )
        await run_in_threadpool(self._write_intent, rollout_id, intent, reason, actor)
        if _wants_json(request):
            return JSONResponse({"rollout": rollout_id, "intent": intent, "actor": actor, "reason": reason})
        return RedirectResponse(
            f"/rollouts/{rollout_id}?" + urlencode({"requested": intent}), status_code=303
        )

    def _write_intent(self, rollout_id: int, intent: str, reason: str, actor: str) -> None:
        with self.database.write() as session:
            intents.request(session, rollout_id, cast(intents.OperatorIntent, intent), reason, actor)
