"""The dashboard: a Starlette app over the registry (`variantctl dashboard`, `variantctl daemon --http`).

Read-only unless it was given a token file (`auth`); then a signed-in operator can pause, resume,
approve a manual gate, abort or promote, each written as the CLI writes it (an intent in the
registry, recorded in the history with the operator's name and their reason) and carried out by the
daemon. It serves its scripts and styles itself (nothing from a CDN), under a Content-Security-Policy
that allows nothing else, and `/metrics` for Prometheus.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from manager.db import Database
from manager.errors import NotFound, UserError
from manager.web import asset, auth
from manager.web.base import error
from manager.web.dashboard import Dashboard
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
        Route("/endpoints/{name}", dashboard.endpoint),
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
    app.state.dashboard = dashboard  # the error page's "signed in as"
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
    return error(request, 404, str(exc))


async def _refused(request: Request, exc: Exception) -> Response:
    return error(request, 409, str(exc))
