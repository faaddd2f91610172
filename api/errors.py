"""Every error leaves the API as `{"error": {"code", "message"}}` with a 4xx/5xx status.

The errors are inference/core/errors.py's, whoever raises them (a route, the submission, a
worker's failure read back); one handler turns each into its answer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis
from flask import Flask, jsonify, request
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from api.extensions import api_settings, redis_client
from inference.core import metrics
from inference.core.errors import (
    BodyTooLarge,
    BrokerUnavailable,
    CallbackNotAllowed,
    HttpError,
    InferenceError,
    InternalError,
    InvalidPriority,
    InvalidRequest,
    InvalidRequestId,
    InvalidTimeout,
    InvalidTopK,
    MemoryFull,
    MethodNotAllowed,
    MissingData,
    NotFound,
    UnknownModel,
)
from inference.core.queues import PRIORITIES
from inference.core.registry import ANY_MODEL, model_names

log = logging.getLogger(__name__)

# pydantic field -> the error, so clients can tell a bad model from a bad priority
ERROR_OF_FIELD: dict[str, type[InferenceError]] = {
    "model_type": UnknownModel, "priority": InvalidPriority, "data": MissingData, "request_id": InvalidRequestId,
    "top_k": InvalidTopK, "timeout_ms": InvalidTimeout, "callback_url": CallbackNotAllowed,
}
ERROR_OF_HTTP_STATUS: dict[int, type[InferenceError]] = {400: InvalidRequest, 404: NotFound, 405: MethodNotAllowed, 413: BodyTooLarge}


def error_response(exc: InferenceError, **extra):
    """The answer to any error: its status, `{"error": {"code", "message"}}`, and Retry-After
    for a refusal a client should retry. Under /v2 the Open Inference Protocol's shape:
    `{"error": "<code>: <message>", "code": <code>}` (its clients read only the string)."""
    if request.path == "/v2" or request.path.startswith("/v2/"):
        response = jsonify({"error": f"{exc.code}: {exc.message}", "code": exc.code, **extra})
    else:
        response = jsonify({"error": {"code": exc.code, "message": exc.message, **extra}})
    response.status_code = exc.http_status if 400 <= exc.http_status < 600 else 500
    response.headers.update(exc.headers)
    if exc.retryable:
        response.headers["Retry-After"] = str(exc.retry_after or api_settings().retry_after)
    # Without the access log (API_ACCESS_LOG) an answer that is not a success still leaves a line.
    log.info("%s %s answered %d %s", request.method, request.path, response.status_code, exc.code)
    return response


def validation_error(exc: ValidationError, prefix: str = "") -> InferenceError:
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    message = first["msg"].removeprefix("Value error, ")
    return ERROR_OF_FIELD.get(field, InvalidRequest)(f"{prefix}{field}: {message}" if field else prefix + message)


def discard_body(most: int = 64 * 1024 * 1024) -> None:
    """Read what is left of a refused body (up to `most` bytes) before answering: closing a
    socket with unread data makes the kernel reset the connection, and a client still sending
    would see it dropped without the 413 (the suite saw this once in ~10 runs)."""
    stream = request.environ.get("wsgi.input")
    left = min(request.content_length or 0, most)
    try:
        while left > 0 and stream is not None:
            chunk = stream.read(min(left, 1 << 20))
            if not chunk:
                return
            left -= len(chunk)
    except OSError:
        pass  # the client went away: nothing to answer


SUBMIT_ENDPOINTS = {"v1.post_inference", "v1.post_batch", "legacy.sync_inference", "legacy.sync_batch_inference", "v2.infer"}


def count_rejection() -> None:
    """A refused submission counts as outcome `rejected` (never fails the answer itself)."""
    if request.endpoint not in SUBMIT_ENDPOINTS:
        return
    try:
        body = request.form if request.mimetype == "multipart/form-data" else request.get_json(silent=True)
        fields: Mapping = body if isinstance(body, Mapping) else {}
        model = (request.view_args or {}).get("model_name") or fields.get("model_type", ANY_MODEL)
        priority = fields.get("priority")
        metrics.record(redis_client(), model if model in (*model_names(), ANY_MODEL) else "unknown",
                       priority if priority in PRIORITIES else "normal", "rejected")
    except Exception as exc:  # Redis down, body unreadable: the error answer matters more
        log.debug("rejection not counted: %s", exc)


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, redis.ResponseError) and str(exc).startswith("OOM")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(InferenceError)
    def _ours(exc: InferenceError):
        count_rejection()
        return error_response(exc)

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError):
        count_rejection()
        return error_response(validation_error(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        count_rejection()
        if exc.code == 413:
            discard_body()
        status = exc.code or 500
        message = exc.description or exc.name
        return error_response(ERROR_OF_HTTP_STATUS[status](message) if status in ERROR_OF_HTTP_STATUS else HttpError(message, status))

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(OperationalError)
    def _broker_down(exc):
        if is_out_of_memory(exc):  # maxmemory reached: api/memory.py admits less before that
            log.warning("Redis is full: %s", exc)
            return error_response(MemoryFull("Redis is full (maxmemory); retry later"))
        log.warning("Redis unavailable: %s", exc)
        return error_response(BrokerUnavailable("the queue (Redis) is unavailable; retry later"))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(InternalError("internal error; see the API log"))
