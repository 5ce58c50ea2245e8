"""What every dashboard handler shares: the registry, the operators and their sessions, the page
layout with who is signed in, and the error page (which keeps both, and a way back)."""

from __future__ import annotations

import html
from collections import OrderedDict
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from manager.db import Database
from manager.web import auth, pages


def error(request: Request, status: int, message: str) -> Response:
    """JSON for a script, else a page that says what went wrong, keeps "signed in as" and links back."""
    if wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    handlers = getattr(request.app.state, "dashboard", None)
    operator = handlers._operator(request) if isinstance(handlers, Base) else None
    signin = handlers.operators is not None if isinstance(handlers, Base) else None
    csrf = handlers._csrf(request) if isinstance(handlers, Base) else None
    back = (
        "<p><a href='javascript:history.back()' id='back'>back</a> · <a href='/'>endpoints</a>"
        " · <a href='/rollouts'>rollouts</a></p>"
    )
    body = f"<h1>{status}</h1><p class='error'>{html.escape(message)}</p>{back}"
    return HTMLResponse(pages.layout("error", body, operator, signin, (), csrf), status)


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "") or "authorization" in request.headers


class Base:
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
