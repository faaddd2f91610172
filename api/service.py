"""Turning HTTP requests into submissions: parse, validate, pick the model, admit, enqueue."""

from __future__ import annotations

from collections import Counter

import pybase64
from flask import Request, current_app, request
from pydantic import ValidationError

from api.auth import tenant
from api.errors import validation_error
from api.extensions import api_settings, redis_client, worker_directory
from api.routing import choose_model
from api.schemas import BatchRequest, InferenceRequest
from inference.callbacks import targets
from inference.core import keys, tracing
from inference.core.errors import (
    BatchTooLarge,
    Cancelled,
    EmptyBatch,
    Expired,
    InferenceError,
    InvalidImage,
    InvalidJson,
    InvalidRequest,
    InvalidTopK,
    InvalidWait,
    MissingImage,
    NoWorker,
    QueueFull,
    Timeout,
    TooManyInFlight,
    failed_with,
)
from inference.core.imaging import check_request_pixels, decode_base64, probe_image
from inference.core.queues import PRIORITIES
from inference.core.registry import ANY_MODEL
from inference.submit import submission, tracking, waiting


def parse_single(req: Request) -> InferenceRequest:
    """A request from a JSON body or a multipart form with an `image` file."""
    if req.mimetype == "multipart/form-data":
        uploads = [upload.read() for upload in req.files.getlist("image")]
        if not uploads:
            raise MissingImage("multipart requests carry the image in the `image` file field")
        if not all(uploads):
            raise InvalidImage("an uploaded image is empty")
        fields: dict = {k: v for k, v in req.form.items() if v != ""}
        encoded = [pybase64.b64encode(raw).decode() for raw in uploads]
        # Several `image` files: one request for all of them, as with `images` in JSON.
        fields.update({"data": encoded[0]} if len(encoded) == 1 else {"images": encoded})
        return validate_item(fields)
    return validate_item(json_body(req))


def json_body(req: Request) -> dict:
    body = req.get_json()  # malformed: 400 invalid_json (api/request.py)
    if not isinstance(body, dict):
        raise InvalidJson("send a JSON object (Content-Type: application/json) or a multipart form")
    return body


def parse_batch(req: Request) -> list[InferenceRequest]:
    """Every item validated before any is queued: a rejected batch leaves nothing behind."""
    try:
        items = BatchRequest.model_validate(json_body(req)).items()
    except ValidationError as exc:
        raise validation_error(exc) from None
    limit = api_settings().max_items_per_request
    if not items:
        raise EmptyBatch("the batch holds no requests")
    if len(items) > limit:
        raise BatchTooLarge(f"a batch holds at most {limit} requests (MAX_ITEMS_PER_REQUEST)")
    return [validate_item(item, prefix=f"requests[{i}]: ") for i, item in enumerate(items)]


def validate_item(fields, prefix: str = "") -> InferenceRequest:
    if not isinstance(fields, dict):
        raise InvalidRequest(f"{prefix}the request must be a JSON object")
    try:
        item = InferenceRequest.model_validate(fields)
    except ValidationError as exc:
        raise validation_error(exc, prefix) from None
    settings = api_settings()
    if item.top_k is not None and item.top_k > settings.max_top_k:
        raise InvalidTopK(f"{prefix}top_k must be at most {settings.max_top_k}")
    if item.callback_url is not None:
        try:
            targets.check_url(item.callback_url, targets.allowed_hosts(settings.callback_allowed_hosts))
        except InvalidRequest as exc:
            raise type(exc)(prefix + exc.message) from None
    if item.images is not None and len(item.images) > settings.max_items_per_request:
        raise BatchTooLarge(f"{prefix}a request holds at most {settings.max_items_per_request} images (MAX_ITEMS_PER_REQUEST)")
    # Every picture is checked here, so a request the API accepts has no broken image in it.
    raws, sizes = [], []
    for n, data in enumerate([item.data] if item.images is None else item.images):
        where = prefix if item.images is None else f"{prefix}images[{n}]: "
        try:
            raws.append(decode_base64(data))
            probed = probe_image(raws[-1], settings.max_image_pixels, settings.max_jpeg_scans)
        except InvalidRequest as exc:
            raise type(exc)(where + exc.message) from None
        sizes.append((probed["width"], probed["height"]))
    try:
        check_request_pixels(sizes, settings.max_request_pixels)
    except InvalidRequest as exc:
        raise type(exc)(prefix + exc.message) from None
    item._raw_images = raws  # sent to the worker by reference (submission.submit)
    return item


def resolve_model(model_type: str) -> str:
    """The model that serves a request; 503 when the named model has no live worker."""
    settings = api_settings()
    directory = worker_directory()
    live = directory.live_models()
    if model_type not in live and model_type != ANY_MODEL and settings.no_worker_policy == "reject":
        # Before refusing, make sure the view is fresh: a worker may have joined a moment ago.
        directory.refresh(max_age=0.5)
        live = directory.live_models()
    if model_type == ANY_MODEL:
        if live:
            return choose_model(settings.load_balance_strategy, live, redis_client())
        model_type = settings.default_model
    if model_type not in live and settings.no_worker_policy == "reject":
        raise NoWorker(f"no live worker serves {model_type!r}; retry later")
    return model_type


def admit(models: list[str]) -> None:
    """Back-pressure for a batch, whole: 429 when its requests would push a model's queues past
    QUEUE_LIMIT, or its tenant past MAX_IN_FLIGHT_PER_KEY. (A single request is admitted in its
    own submission's round trip.)"""
    wanted = Counter(models)
    depths = tracking.queue_depths(redis_client(), list(wanted), PRIORITIES)
    for model, count in wanted.items():
        queued = sum(depths[model].values())
        if queued + count > api_settings().queue_limit:
            raise QueueFull.at(model, queued, api_settings().queue_limit)
    most = in_flight_limit()
    in_flight = submission.in_flight(redis_client(), tenant()) if most else 0
    if most and in_flight + len(models) > most:
        raise TooManyInFlight.at(in_flight, most)


def in_flight_limit() -> int:
    return api_settings().max_in_flight_per_key if tenant() else 0


def submit_all(items: list[InferenceRequest]) -> list[submission.Submitted]:
    models = [resolve_model(item.model_type) for item in items]
    memory = current_app.extensions["memory"]
    if len(items) > 1:
        admit(models)  # all or nothing
        memory.admit_batch(sum(len(raw) for item in items for raw in item._raw_images))
    return [submitted(item, model, len(items), memory) for item, model in zip(items, models)]


def submitted(item: InferenceRequest, model: str, of: int, memory) -> submission.Submitted:
    """One item of a submission of `of`, enqueued (its span, with traces on, is the parent of
    everything its worker does)."""
    settings = api_settings()
    with tracing.span("submit", model=model, priority=item.priority, pictures=len(item._raw_images)):
        return submission.submit(
            redis_client(),
            image=item._raw_images[0] if item.images is None else None,
            images=item._raw_images if item.images is not None else None,
            model=model,
            priority=item.priority,
            top_k=item.top_k,
            request_id=item.request_id,
            timeout_ms=min(item.timeout_ms, settings.worker_timeout * 1000) if item.timeout_ms else None,
            queue_limit=settings.queue_limit if of == 1 else None,
            tenant=tenant(),
            in_flight_limit=in_flight_limit() if of == 1 else 0,
            memory_limit=memory.limit() if of == 1 else 0,
            probabilities=item.probabilities,
            callback_url=item.callback_url,
        )


def submit(item: InferenceRequest) -> submission.Submitted:
    return submit_all([item])[0]


def submit_and_wait(item: InferenceRequest, wait: float) -> tuple[submission.Submitted, dict]:
    """Submit one request and wait up to `wait` s for its status. Listening starts before the
    task is queued, so its result cannot be published unheard and the status of a request just
    submitted needs no read."""
    item.request_id = item.request_id or submission.new_request_id()
    with waiting.ResultListener(redis_client(), scoped(item.request_id)) as listener:
        submitted = submit(item)
        status = listener.wait(wait, known=tracking.queued_status(submitted.job) if submitted.created else None)
    return submitted, status or tracking.queued_status(submitted.job)  # None: its record expired meanwhile


def failure_of(status: dict, waited: float) -> InferenceError | None:
    """What a caller who waited for a request gets when it did not succeed: the worker's error,
    its end (expired, cancelled), or Timeout while it is still queued or running. None: success."""
    request_id = status["request_id"]
    if status["status"] == "success":
        return None
    if status["status"] == "failed":
        return failed_with(status["error"]["code"], status["error"]["message"])
    if status["status"] in ("expired", "cancelled"):
        ended = Expired if status["status"] == "expired" else Cancelled
        return ended(status.get("reason") or status["status"])
    return Timeout(f"no result within {waited:g} s; poll /v1/inference/{request_id}")


def scoped(request_id: str) -> str:
    """The task id of the caller's request (or batch) id: each API key's ids are its own."""
    return keys.scoped_id(tenant(), request_id)


def wait_seconds(req: Request = request) -> float:
    raw = req.args.get("wait")
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        raise InvalidWait("wait must be a number of seconds") from None
    if not wait >= 0:
        raise InvalidWait("wait must not be negative")
    return min(wait, api_settings().max_wait_seconds)
