"""Turning HTTP requests into submissions: parse, validate, pick the model, enqueue."""

from __future__ import annotations

import base64

import redis
from flask import Request, current_app
from pydantic import ValidationError

from api.errors import ApiError, validation_error
from api.schemas import InferenceRequest
from inference import jobs
from inference.errors import InvalidRequest
from inference.imaging import decode_base64, probe_image
from inference.queues import PRIORITIES
from inference.registry import ANY_MODEL
from inference.settings import get_settings


def redis_client() -> redis.Redis:
    return current_app.extensions["redis"]


def worker_directory():
    return current_app.extensions["workers"]


def parse_single(req: Request) -> InferenceRequest:
    """A request from a JSON body or a multipart form with an `image` file."""
    if req.mimetype == "multipart/form-data":
        upload = req.files.get("image")
        if upload is None:
            raise ApiError(400, "missing_image", "multipart requests carry the image in the `image` file field")
        raw = upload.read()
        if not raw:
            raise ApiError(400, "invalid_image", "the uploaded image is empty")
        fields = {k: v for k, v in req.form.items() if v != ""}
        fields["data"] = base64.b64encode(raw).decode()
        return validate_item(fields)
    body = req.get_json(silent=True)
    if body is None:
        raise ApiError(400, "invalid_json", "send a JSON object (Content-Type: application/json) or a multipart form")
    return validate_item(body)


def validate_item(fields, prefix: str = "") -> InferenceRequest:
    if not isinstance(fields, dict):
        raise ApiError(400, "invalid_request", f"{prefix}the request must be a JSON object")
    try:
        item = InferenceRequest.model_validate(fields)
    except ValidationError as exc:
        raise validation_error(exc, prefix) from None
    settings = get_settings()
    if item.top_k is not None and item.top_k > settings.max_top_k:
        raise ApiError(400, "invalid_top_k", f"{prefix}top_k must be at most {settings.max_top_k}")
    try:
        probe_image(decode_base64(item.data), settings.max_image_pixels)
    except InvalidRequest as exc:
        raise ApiError(exc.http_status, exc.code, prefix + exc.message) from None
    return item


def resolve_model(model_type: str) -> str:
    """`any` goes to the live model with the fewest queued requests per ready process."""
    if model_type != ANY_MODEL:
        return model_type
    live = {m: ws for m, ws in worker_directory().ready_workers_by_model().items() if ws}
    if not live:
        return get_settings().default_model
    depths = jobs.queue_depths(redis_client(), list(live), PRIORITIES)

    def load(model: str) -> float:
        processes = sum(w.get("ready_processes") or 0 for w in live[model]) or 1
        return sum(depths[model].values()) / processes

    return min(sorted(live), key=load)


def submit(item: InferenceRequest) -> jobs.Submitted:
    return jobs.submit(
        redis_client(),
        image_b64=item.data,
        model=resolve_model(item.model_type),
        priority=item.priority,
        top_k=item.top_k,
        request_id=item.request_id,
    )


def wait_seconds(req: Request) -> float:
    raw = req.args.get("wait")
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        raise ApiError(400, "invalid_wait", "wait must be a number of seconds") from None
    if wait < 0:
        raise ApiError(400, "invalid_wait", "wait must not be negative")
    return min(wait, get_settings().max_wait_seconds)


