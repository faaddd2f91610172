"""Every error leaves the API as `{"error": {"code", "message"}}` with a 4xx/5xx status."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis
from flask import Flask, current_app, jsonify, request
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from inference.core import metrics
from inference.core.errors import InferenceError
from inference.core.errors import vocabulary as worker_vocabulary
from inference.core.queues import PRIORITIES
from inference.core.registry import ANY_MODEL, model_names

log = logging.getLogger(__name__)

# Every code the API itself answers with (the worker's, for failed requests, are in
# inference/core/errors.py); `vocabulary()` is both, and docs/security.md lists them all.
API_CODES = {
    "invalid_request": "the request is not what the endpoint takes",
    "invalid_json": "the body is not a JSON object (malformed, nested too deeply, duplicate keys, NaN...), or not what its Content-Type says",
    "missing_data": "neither `data` nor `images`",
    "missing_image": "a multipart request without an `image` file",
    "unknown_model": "`model_type` names no model",
    "invalid_priority": "`priority` is not high, normal or low",
    "invalid_request_id": "`request_id` is not 1-128 of A-Z a-z 0-9 . _ : -",
    "invalid_top_k": "`top_k` is not between 1 and MAX_TOP_K",
    "invalid_timeout": "`timeout_ms` is not a positive integer",
    "invalid_wait": "`?wait` is not a non-negative number",
    "empty_batch": "a batch of no requests",
    "batch_too_large": "more than BATCH_SIZE requests or images",
    "body_too_large": "a body over MAX_CONTENT_LENGTH",
    "unauthorized": "no valid API key",
    "not_found": "no such request, batch or route (or another key's)",
    "method_not_allowed": "the route does not take this method",
    "already_started": "DELETE of a request that has started",
    "rate_limited": "over RATE_LIMIT_PER_MINUTE",
    "too_many_auth_failures": "over AUTH_FAILURES_PER_MINUTE failed authentications from this address",
    "too_many_in_flight": "the key has MAX_IN_FLIGHT_PER_KEY requests queued or running",
    "queue_full": "the model's queues hold QUEUE_SIZE requests",
    "memory_full": "Redis is near its maxmemory (REDIS_MEMORY_HIGH_WATER)",
    "no_worker": "no live worker serves the model (NO_WORKER_POLICY=reject)",
    "no_such_worker": "POST /simulate/crash names no live worker",
    "broker_unavailable": "Redis does not answer",
    "timeout": "the synchronous endpoints: no result within SYNC_TIMEOUT",
    "expired": "the synchronous endpoints: the request was not started before its deadline",
    "cancelled": "the synchronous endpoints: the request was cancelled",
    "http_error": "any other HTTP error (its status says which)",
    "internal_error": "a bug: see the API's log",
}
CODE_OF_HTTP_STATUS = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def vocabulary() -> dict[str, str]:
    """Every error code a client can see: the API's own and a failed request's."""
    return {**API_CODES, **{code: f"a failed request (HTTP {status} from the synchronous endpoints)"
                            for code, status in worker_vocabulary().items() if code not in API_CODES}}


# pydantic field -> error code, so clients can tell a bad model from a bad priority
CODE_OF_FIELD = {"model_type": "unknown_model", "priority": "invalid_priority", "data": "missing_data",
                 "request_id": "invalid_request_id", "top_k": "invalid_top_k",
                 "timeout_ms": "invalid_timeout"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(status: int, code: str, message: str, headers: dict | None = None, **extra):
    response = jsonify({"error": {"code": code, "message": message, **extra}})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def validation_error(exc: ValidationError, prefix: str = "") -> ApiError:
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    message = first["msg"].removeprefix("Value error, ")
    return ApiError(400, CODE_OF_FIELD.get(field, "invalid_request"), f"{prefix}{field}: {message}" if field else prefix + message)


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


SUBMIT_ENDPOINTS = {"v1.post_inference", "v1.post_batch", "legacy.sync_inference", "legacy.sync_batch_inference"}


def count_rejection() -> None:
    """A refused submission counts as outcome `rejected` (never fails the answer itself)."""
    if request.endpoint not in SUBMIT_ENDPOINTS:
        return
    try:
        body = request.form if request.mimetype == "multipart/form-data" else request.get_json(silent=True)
        fields: Mapping = body if isinstance(body, Mapping) else {}
        model = fields.get("model_type", ANY_MODEL)
        priority = fields.get("priority")
        metrics.record(current_app.extensions["redis"], model if model in (*model_names(), ANY_MODEL) else "unknown",
                       priority if priority in PRIORITIES else "normal", "rejected")
    except Exception as exc:  # Redis down, body unreadable: the error answer matters more
        log.debug("rejection not counted: %s", exc)


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, redis.ResponseError) and str(exc).startswith("OOM")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        count_rejection()
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError):
        count_rejection()
        err = validation_error(exc)
        return error_response(err.status, err.code, err.message)

    @app.errorhandler(InferenceError)
    def _inference(exc: InferenceError):
        count_rejection()
        status = exc.http_status if 400 <= exc.http_status < 600 else 500
        return error_response(status, exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        count_rejection()
        if exc.code == 413:
            discard_body()
        return error_response(exc.code or 500, CODE_OF_HTTP_STATUS.get(exc.code or 500, "http_error"), exc.description or exc.name)

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(OperationalError)
    def _broker_down(exc):
        if is_out_of_memory(exc):  # maxmemory reached: api/memory.py admits less before that
            log.warning("Redis is full: %s", exc)
            return error_response(503, "memory_full", "Redis is full (maxmemory); retry later", {"Retry-After": "2"})
        log.warning("Redis unavailable: %s", exc)
        return error_response(503, "broker_unavailable", "the queue (Redis) is unavailable; retry later", {"Retry-After": "2"})

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; see the API log")
