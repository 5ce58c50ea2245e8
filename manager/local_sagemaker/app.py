"""The HTTP surface: one starlette app for the control plane, the runtime and CloudWatch."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from manager.local_sagemaker import metrics, protocol
from manager.local_sagemaker.capture import CaptureWriter
from manager.local_sagemaker.clock import ClockError, HostClock
from manager.local_sagemaker.control import ControlPlane
from manager.local_sagemaker.control import Route as VariantRoute
from manager.local_sagemaker.guard import Guard
from manager.local_sagemaker.protocol import ACCOUNT, AwsError
from manager.local_sagemaker.runtime import (
    MAX_PAYLOAD_BYTES,
    LoadedModel,
    PayloadError,
    format_predictions,
    parse_rows,
)
from manager.local_sagemaker.s3 import S3App
from manager.local_sagemaker.s3_store import is_s3_request
from manager.local_sagemaker.sqs import MAX_WAIT, Queues
from manager.local_sagemaker.sqs import TARGET_PREFIX as SQS_PREFIX

log = logging.getLogger("local_sagemaker")
SAGEMAKER_PREFIX = "SageMaker."
CLOUDWATCH_PREFIX = "GraniteServiceVersion20100801."
LOGS_PREFIX = "Logs_20140328."
AUTOSCALING_PREFIX = "AnyScaleFrontendService."
INFERENCE_ID_MAX = 64


class Host:
    """The host's parts, shared by the route handlers."""

    def __init__(
        self,
        control: ControlPlane,
        store: metrics.MetricStore,
        alarms: metrics.AlarmBook,
        capture: CaptureWriter,
        clock: HostClock,
    ) -> None:
        self.clock = clock
        # Captures and shadow copies scheduled but not yet done (they run after the answer is sent):
        # counted when scheduled, so a caller holding its answer can wait for this to reach 0.
        self.in_flight = 0
        self.control = control
        self.store = store
        self.alarms = alarms
        self.capture = capture
        self.sqs = Queues(control.state_dir, control.clock)
        control.packages.on_event = self.sqs.publish
        self._cloudwatch: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "GetMetricData": functools.partial(metrics.get_metric_data, store),
            "GetMetricStatistics": functools.partial(metrics.get_metric_statistics, store),
            "PutMetricData": functools.partial(metrics.put_metric_data, store),
            "PutMetricAlarm": alarms.put,
            "SetAlarmState": alarms.set_state,
            "DescribeAlarms": alarms.describe,
            "DeleteAlarms": alarms.delete,
        }

    def cloudwatch(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        handler = self._cloudwatch.get(operation)
        if handler is None:
            raise AwsError(
                "UnknownOperationException",
                f"The local SageMaker's CloudWatch does not implement {operation}",
            )
        try:
            return handler(request)
        except (TypeError, AttributeError, ValueError, KeyError) as exc:
            # A member of the wrong type or shape (a string for a structure, a word for a number): a
            # client error, as AWS answers it, never a 500.
            raise AwsError(
                "ValidationError", f"malformed {operation} request: {type(exc).__name__}: {exc}"
            ) from None

    # ---- AWS JSON 1.1 (SageMaker) and 1.0 (CloudWatch) on POST / -----------------------------

    async def json_rpc(self, request: Request) -> Response:
        target = request.headers.get("x-amz-target", "")
        if target.startswith(SQS_PREFIX):
            return await self.sqs_rpc(request, target[len(SQS_PREFIX) :])
        content_type = protocol.JSON_10 if target.startswith(CLOUDWATCH_PREFIX) else protocol.JSON_11
        try:
            body = protocol.parse_json(await request.body())
            if target.startswith(SAGEMAKER_PREFIX):
                result = self.control.handle(target[len(SAGEMAKER_PREFIX) :], body)
            elif target.startswith(CLOUDWATCH_PREFIX):
                result = self.cloudwatch(target[len(CLOUDWATCH_PREFIX) :], body)
            elif target.startswith(LOGS_PREFIX):
                result = self.control.logs.handle(target[len(LOGS_PREFIX) :], body)
            elif target.startswith(AUTOSCALING_PREFIX):
                self.control.endpoints.advance()
                result = self.control.scaling.handle(target[len(AUTOSCALING_PREFIX) :], body)
            else:
                raise AwsError("UnknownOperationException", f"unknown X-Amz-Target {target!r}")
        except AwsError as error:
            return protocol.json_error(error, content_type)
        except Exception as exc:  # a bug in the host: AWS's shape, and a log line, never a dead server
            log.exception("%s failed", target)
            return protocol.json_error(
                AwsError("InternalFailure", f"{type(exc).__name__}: {exc}", 500), content_type
            )
        return protocol.json_response(result, content_type)

    async def sqs_rpc(self, request: Request, operation: str) -> Response:
        """SQS's JSON 1.0. A ReceiveMessage with WaitTimeSeconds waits (in real time) until a message
        is visible or the wait is over, as a long poll does. Errors carry the query-protocol code in
        `x-amzn-query-error`, which botocore reports for SQS (`awsQueryCompatible`), as AWS sends it."""
        base = f"{request.url.scheme}://{request.url.netloc}"
        try:
            body = protocol.parse_json(await request.body())
            wait = body.get("WaitTimeSeconds") if operation == "ReceiveMessage" else None
            if isinstance(wait, int) and 0 < wait <= MAX_WAIT:
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and not self.sqs.waiting(body.get("QueueUrl")):
                    await asyncio.sleep(0.02)
            result = self.sqs.handle(operation, body, base)
        except AwsError as error:
            response = protocol.json_error(error, protocol.JSON_10)
            legacy = (
                "AWS.SimpleQueueService.NonExistentQueue" if error.code == "QueueDoesNotExist" else error.code
            )
            response.headers["x-amzn-query-error"] = f"{legacy};Sender"
            return response
        return protocol.json_response(result, protocol.JSON_10)

    # ---- Smithy RPC v2 CBOR (CloudWatch, as newer botocore sends it) --------------------------

    async def cbor_rpc(self, request: Request) -> Response:
        try:
            service = request.path_params["service"]
            if service != CLOUDWATCH_PREFIX.rstrip("."):
                raise AwsError("UnknownOperationException", f"unknown service {service!r}")
            body = protocol.parse_cbor(await request.body())
            result = self.cloudwatch(request.path_params["operation"], body)
        except AwsError as error:
            return protocol.cbor_error(error)
        except Exception as exc:  # a bug in the host: AWS's shape, and a log line, never a dead server
            log.exception("CBOR %s failed", request.url.path)
            return protocol.cbor_error(AwsError("InternalFailure", f"{type(exc).__name__}: {exc}", 500))
        return protocol.cbor_response(result)

    # ---- runtime: POST /endpoints/{name}/invocations -----------------------------------------

    async def invoke(self, request: Request) -> Response:
        started = time.perf_counter()
        name = request.path_params["name"]
        headers = request.headers
        try:
            route = self.control.route(name, headers.get("x-amzn-sagemaker-target-variant"))
            inference_id = headers.get("x-amzn-sagemaker-inference-id")
            if inference_id is not None and not 1 <= len(inference_id) <= INFERENCE_ID_MAX:
                raise AwsError("ValidationError", f"InferenceId must be 1-{INFERENCE_ID_MAX} characters")
            body = await self._body(request)
        except AwsError as error:
            return self._runtime_error(error)
        content_type = headers.get("content-type", "text/csv")
        accept = headers.get("accept")
        status, payload, out_type, model_us = await self._score(route.model, body, content_type, accept)
        response = self._answer(route, status, payload, out_type)
        self.store.record_invocation(
            route.endpoint,
            route.variant,
            status,
            model_us,
            (time.perf_counter() - started) * 1e6 - (model_us or 0),
        )
        sampled = route.capture is not None and route.capture.sampled(self.capture.rng)
        if sampled or route.shadows:
            self.in_flight += 1
            response.background = BackgroundTask(
                self._after,
                route,
                sampled,
                body,
                content_type,
                accept,
                payload,
                out_type,
                inference_id,
                status,
            )
        return response

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_PAYLOAD_BYTES:
            raise AwsError(
                "ValidationError", f"Request payload exceeds {MAX_PAYLOAD_BYTES} bytes.", status=413
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_PAYLOAD_BYTES:
                raise AwsError(
                    "ValidationError", f"Request payload exceeds {MAX_PAYLOAD_BYTES} bytes.", status=413
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def _score(
        self, model: LoadedModel, body: bytes, content_type: str, accept: str | None
    ) -> tuple[int, bytes, str, float | None]:
        """Run the model as its container would: (status, body, content type, model latency µs)."""
        t0 = time.perf_counter()
        fault = model.fault
        if fault.extra_latency_ms:
            await asyncio.sleep(fault.extra_latency_ms / 1000)
        if fault.rate_5xx and self.control.rng.random() < fault.rate_5xx:
            elapsed_us = (time.perf_counter() - t0) * 1e6
            return 500, b"injected fault: internal server error", "text/plain", elapsed_us
        try:
            predictions = model.predict(parse_rows(body, content_type))
        except PayloadError as exc:
            return 400, str(exc).encode(), "text/plain", (time.perf_counter() - t0) * 1e6
        except Exception as exc:  # the model itself failed: a 5xx from the container
            message = f"model raised {type(exc).__name__}: {exc}".encode()
            return 500, message, "text/plain", (time.perf_counter() - t0) * 1e6
        payload, out_type = format_predictions(predictions, accept, content_type, model.container)
        return 200, payload, out_type, (time.perf_counter() - t0) * 1e6

    def _answer(self, route: VariantRoute, status: int, payload: bytes, out_type: str) -> Response:
        variant_header = {"x-Amzn-Invoked-Production-Variant": route.variant}
        if status == 200:
            return Response(payload, media_type=out_type, headers=variant_header)
        kind = "client" if status < 500 else "server"
        original = payload.decode(errors="replace")
        error = AwsError(
            "ModelError",
            f'Received {kind} error ({status}) from primary with message "{original}". See '
            f"/aws/sagemaker/Endpoints/{route.endpoint} in account {ACCOUNT} for more information.",
            status=424,
            OriginalStatusCode=status,
            OriginalMessage=original,
            LogStreamArn=f"arn:aws:logs:{self.control.region}:{ACCOUNT}:log-group:"
            f"/aws/sagemaker/Endpoints/{route.endpoint}",
        )
        # AWS's ModelError body names the kind of failure in ErrorCode (CLIENT_ERROR_FROM_MODEL for
        # a 4xx from the container; the 5xx spelling follows it) and the type in x-amzn-errortype.
        body = {
            "ErrorCode": f"{kind.upper()}_ERROR_FROM_MODEL",
            "Message": error.message,
            **error.fields,
        }
        return JSONResponse(
            body, status_code=error.status, headers={"x-amzn-errortype": error.code, **variant_header}
        )

    @staticmethod
    def _runtime_error(error: AwsError) -> Response:
        body = {"ErrorCode": error.code, "Message": error.message, "message": error.message, **error.fields}
        return JSONResponse(body, status_code=error.status, headers={"x-amzn-errortype": error.code})

    async def _after(
        self,
        route: VariantRoute,
        sampled: bool,
        body: bytes,
        content_type: str,
        accept: str | None,
        payload: bytes,
        out_type: str,
        inference_id: str | None,
        status: int,
    ) -> None:
        """After the caller has its answer: capture it (if sampled), and feed the shadow variants a
        copy (captured with it, if sampled)."""
        try:
            await self._capture_and_shadow(
                route, sampled, body, content_type, accept, payload, out_type, inference_id, status
            )
        finally:
            self.in_flight -= 1

    async def _capture_and_shadow(
        self,
        route: VariantRoute,
        sampled: bool,
        body: bytes,
        content_type: str,
        accept: str | None,
        payload: bytes,
        out_type: str,
        inference_id: str | None,
        status: int,
    ) -> None:
        at = datetime.fromtimestamp(self.control.clock(), UTC)
        if route.capture and sampled and status == 200:
            self.capture.write(
                route.capture,
                route.endpoint,
                route.variant,
                at,
                inference_id,
                body,
                content_type,
                payload,
                out_type,
            )
        for shadow_name, shadow_model in route.shadows:
            started = time.perf_counter()
            scored = await self._score(shadow_model, body, content_type, accept)
            s_status, s_payload, s_type, model_us = scored
            self.store.record_invocation(
                route.endpoint,
                shadow_name,
                s_status,
                model_us,
                (time.perf_counter() - started) * 1e6 - (model_us or 0),
            )
            if route.capture and sampled and s_status == 200:
                self.capture.write(
                    route.capture,
                    route.endpoint,
                    shadow_name,
                    at,
                    inference_id,
                    body,
                    content_type,
                    s_payload,
                    s_type,
                )

    async def health(self, request: Request) -> Response:
        self.control.advance()
        return JSONResponse(
            {
                "status": "ok",
                "endpoints": {n: e.status for n, e in self.control.endpoints.table.items()},
                "models_loaded": sorted({m.name for m in self.control.loaded.values()}),
                "background_tasks": self.in_flight,
            }
        )

    async def clock_admin(self, request: Request) -> Response:
        """GET: the host's clock. POST {"hold": true} | {"advance": seconds} | {"release": true}.
        The POST takes JSON only, so a page on another origin cannot send it without a CORS
        preflight, which this host never grants."""
        if request.method == "POST":
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                return protocol.json_error(
                    AwsError("UnsupportedMediaType", "send the clock request as application/json", 415)
                )
            try:
                state = self.clock.apply(protocol.parse_json(await request.body()))
            except AwsError as error:
                return protocol.json_error(error)
            except ClockError as exc:
                return protocol.json_error(AwsError("ValidationException", str(exc)))
            self.control.advance()  # transitions now due happen now, not at the next request
            return JSONResponse(state)
        return JSONResponse(self.clock.state())

    async def fallback(self, request: Request) -> Response:
        error = AwsError(
            "UnknownOperationException", f"no such route: {request.method} {request.url.path}", status=404
        )
        return protocol.json_error(error)


class RequestIds:
    """Every response carries `x-amzn-RequestId`, as AWS's do: boto3 puts it in
    `ResponseMetadata["RequestId"]`, and code that logs it must not meet a KeyError here. A pure ASGI
    middleware: it only adds one header to the response's start message."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = str(uuid.uuid4()).encode()

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-amzn-requestid", request_id)],
                }
            await send(message)

        await self.app(scope, receive, send_with_id)


class Services:
    """Sends S3's REST requests (SigV4 scope `s3`) to the S3 app, everything else to the host's."""

    def __init__(self, app: Any, s3_app: Any) -> None:
        self.app = app
        self.s3_app = s3_app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and is_s3_request(scope):
            await self.s3_app(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def build_app(host: Host, allowed_hosts: Iterable[str] = ()) -> Guard:
    """Every route behind the guard: only the Host names it serves, and nothing a web page sends."""
    return Guard(Services(_starlette(host), S3App(host.control.s3_root, host.control.region)), allowed_hosts)


def _starlette(host: Host) -> Starlette:
    return Starlette(
        middleware=[Middleware(RequestIds)],
        routes=[
            Route("/endpoints/{name}/invocations", host.invoke, methods=["POST"]),
            Route("/", host.json_rpc, methods=["POST"]),
            Route("/service/{service}/operation/{operation}", host.cbor_rpc, methods=["POST"]),
            Route("/_local/health", host.health, methods=["GET"]),
            Route("/_local/clock", host.clock_admin, methods=["GET", "POST"]),
            Route("/{path:path}", host.fallback, methods=["GET", "POST", "PUT", "DELETE"]),
        ],
    )
