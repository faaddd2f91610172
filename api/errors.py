"""Every error leaves the API as `{"error": {"code", "message"}}` with a 4xx/5xx status."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis
from flask import Flask, current_app, jsonify, request
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from inference import metrics
from inference.errors import InferenceError
from inference.queues import PRIORITIES
from inference.registry import ANY_MODEL, model_names

log = logging.getLogger(__name__)

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
        code = "body_too_large" if exc.code == 413 else (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(OperationalError)
    def _broker_down(exc):
        log.warning("Redis unavailable: %s", exc)
        return error_response(503, "broker_unavailable", "the queue (Redis) is unavailable; retry later", {"Retry-After": "2"})

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; see the API log")
