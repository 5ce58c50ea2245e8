"""Operators on the dashboard: signing in and out (sessions, CSRF, throttled failures) and acting on a
rollout (an intent written as the CLI writes it, with the operator's name and reason)."""

from __future__ import annotations

from typing import cast
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response

from manager.views import intents
from manager.web import auth, pages
from manager.web.base import Base, error, wants_json


class Signin(Base):
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
            return error(
                request, 403, "this dashboard is read-only: start it with --token-file to act from it"
            )
        if not auth.same_origin(dict(request.headers), request.url.scheme, request.headers.get("host", "")):
            return error(request, 403, "refused: the request did not come from this dashboard's pages")
        form = await request.form()
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            address = request.client.host if request.client else "unknown"
            wait = self.operators.throttled(address)
            if wait:
                return error(
                    request, 429, f"too many failed tokens from {address}; try again in {wait:.0f} s"
                )
            actor = self.operators.by_token(bearer[7:].strip())
            if actor is None:
                self._failed(address, "bearer")
                return error(request, 401, "that token is not in the dashboard's token file")
        else:
            cookie = self._session(request)
            actor = self.operators.operator(cookie)
            if actor is None:
                return error(request, 401, "sign in first: no operator session")
            if not self.operators.csrf_ok(cookie, str(form.get("csrf") or "")):
                return error(request, 403, "refused: the form's CSRF token is missing or wrong")
        intent = str(form.get("intent") or "")
        reason = str(form.get("reason") or "").strip()
        if intent not in intents.INTENTS:
            return error(request, 400, f"intent {intent!r}: one of {', '.join(intents.INTENTS)}")
        if len(reason) < 3:
            return error(request, 400, "give a reason (at least 3 characters): it is recorded in the history")
        await run_in_threadpool(self._write_intent, rollout_id, intent, reason, actor)
        if wants_json(request):
            return JSONResponse({"rollout": rollout_id, "intent": intent, "actor": actor, "reason": reason})
        return RedirectResponse(
            f"/rollouts/{rollout_id}?" + urlencode({"requested": intent}), status_code=303
        )

    def _write_intent(self, rollout_id: int, intent: str, reason: str, actor: str) -> None:
        with self.database.write() as session:
            intents.request(session, rollout_id, cast(intents.OperatorIntent, intent), reason, actor)
