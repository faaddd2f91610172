"""The task `inference.classify`: a public contract, called by name with JSON keyword arguments.

    send_task("inference.classify", queue="resnet18.normal", kwargs={
        "image": "<base64 JPEG/PNG/...>",   # required
        "model": "resnet18",                # required; must match the queue's model
        "top_k": 5,                         # optional, default DEFAULT_TOP_K
        "request_id": "...",                # optional, echoed back
        "priority": "normal",               # optional, echoed back (the queue decides priority)
        "submitted_at": 1700000000.0,       # optional, epoch seconds, for queue time
        "deadline": 1700000002.0,           # optional, epoch seconds: not started by then = expired
        "probabilities": False,             # optional: also every class's probability, in class order
        "callback_url": "https://...",      # optional: the final status POSTed there, signed (a host
    })                                      #   on CALLBACK_ALLOWED_HOSTS; inference/callbacks/)

In place of `image`, `images` (a list of up to MAX_ITEMS_PER_REQUEST base64 pictures) classifies several
in one task, the cheapest way to send many: the result then holds `results`, one entry per
image in order, each `{"predictions": [...]}` or, for a picture that does not decode,
`{"error": {"code", "message"}}` (the others still succeed). `image_ref` and `image_refs` are
`image` and `images` stored in Redis by `inference.submit.submission.submit(image=...)` / `(images=...)`
(what the API sends): the message stays small, and the worker deletes them once the result
is stored.

Returns a JSON object (see `build_result`). Bad input fails at once with an error whose
`code` names the problem; transient failures retry with exponential backoff and jitter.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from dataclasses import dataclass

import redis as redis_lib
from celery import states
from celery.exceptions import Ignore
from celery.signals import task_failure, task_retry, task_success, worker_process_shutdown
from celery.utils.log import get_task_logger
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from inference.callbacks.targets import allowed_hosts, check_url
from inference.core import keys, metrics, redis_connection, tracing
from inference.core.celery_app import app
from inference.core.errors import ImageMissing, InvalidRequest, PoisonMessage, Timeout, TransientInferenceError, WrongWorker
from inference.core.imaging import check_request_pixels, decode_base64, probe_image
from inference.core.queues import TASK_NAME, priority_rank
from inference.core.settings import get_settings
from inference.submit.submission import delivery_message
from inference.worker import chaos
from inference.worker.batching import BatchOutcome
from inference.worker.claim import claim_and_read

log = get_task_logger(__name__)  # its lines carry the request (task) id
_settings = get_settings()
_redis: redis_lib.Redis | None = None


def redis_client() -> redis_lib.Redis:
    global _redis  # one connection pool per pool process, made after the fork
    if _redis is None:
        # Ride out a short Redis restart (backoff up to 1 s, ~15 s in all) instead of failing
        # the request; the task's soft time limit still bounds the wait.
        _redis = redis_connection.connect(
            get_settings(),
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 20),
            retry_on_error=[redis_lib.ConnectionError, redis_lib.TimeoutError],
        )
    return _redis


metrics_recorder = metrics.Recorder(redis_client)  # its thread starts with the first request
atexit.register(metrics_recorder.flush, 2.0)


@worker_process_shutdown.connect
def send_the_last_metrics(**_):
    metrics_recorder.flush(2.0)  # a prefork pool process ends without running atexit


@task_success.connect
def count_success(sender=None, result=None, **_):
    # After the result is stored and published, in the task's context (its log line carries its id).
    if getattr(sender, "name", None) == TASK_NAME and isinstance(result, dict):
        log.info("request %s (%d image(s)) classified by %s in %.1f ms", result["request_id"], result.get("images", 1),
                 result["model"], 1000 * result["processing_time"])
        metrics_recorder.add(metrics.record_success, result, result.get("batch_size", 1))


@task_retry.connect
def count_retry(sender=None, request=None, reason=None, **_):
    if getattr(sender, "name", None) == TASK_NAME:
        model = (getattr(request, "kwargs", None) or {}).get("model", "unknown")
        log.info("request %s will be retried: %s", getattr(request, "id", None), reason)  # Celery's own line is DEBUG's (bootstep.py)
        metrics_recorder.add(lambda pipe: pipe.hincrby(metrics.RETRIES_KEY, model, 1))


@task_failure.connect
def count_failure(sender=None, task_id=None, kwargs=None, **_):
    if getattr(sender, "name", None) != TASK_NAME:
        return
    kwargs = kwargs or {}
    metrics_recorder.add(metrics.record_outcome, kwargs.get("model", "unknown"), kwargs.get("priority"), "failed")
    metrics_recorder.add(lambda pipe: pipe.hincrby(metrics.WORKER_FAILURES_KEY, sender.request.hostname or "unknown", 1))


def skip_unless_runnable(task, request_id: str, deadline: float | None, model: str | None, priority: str | None,
                         pictures: list[str]) -> tuple[list, int]:
    """Drop a request whose deadline passed or that was cancelled, without running it. Returns
    its stored `pictures`, read in the claim's round trip (missing ones as ImageMissing), and
    how many of its earlier runs ended with their process's death."""
    if deadline is not None and time.time() > deadline:
        task.update_state(state=keys.EXPIRED, meta={"reason": "not started before its deadline", "deadline": deadline})
        metrics_recorder.add(metrics.record_outcome, model, priority, "expired")
        log.info("request %s expired before it started; dropped", request_id)
        raise Ignore()
    claim = claim_and_read(redis_client(), request_id, pictures)
    if claim.outcome == keys.CANCELLED_CLAIM:
        task.update_state(state=keys.CANCELLED, meta={"reason": "cancelled by the client"})  # counted by DELETE
        log.info("request %s was cancelled; dropped", request_id)
        raise Ignore()
    # Starts that did not end in a retry: its worker process died running it each time (a
    # crash, an out-of-memory kill). A message that kills every process it reaches would
    # otherwise come back for ever and take the model's workers down with it.
    crashed_runs = claim.starts - 1 - task.request.retries
    if crashed_runs >= get_settings().max_deliveries:
        log.error("request %s: its worker died in each of its %d runs; failed as a poison message", request_id, crashed_runs)
        raise PoisonMessage(f"the request's worker died each of the {crashed_runs} times it ran (MAX_DELIVERIES); it is not run again")
    if claim.outcome == keys.REDELIVERED and not task.request.retries:
        # Its worker died mid-run (or before acking): running again is harmless, but counted.
        metrics_recorder.add(lambda pipe: pipe.incr(keys.DUPLICATES_KEY))
        log.warning("request %s delivered again (redelivered=%s); running it again",
                    request_id, (task.request.delivery_info or {}).get("redelivered"))
    return [raw if raw is not None else ImageMissing(f"{ref} is no longer stored (expired, or its request already ran)")
            for ref, raw in zip(pictures, claim.pictures)], crashed_runs


def build_result(*, info, request_id, worker_id, submitted_at, started_at, finished_at,
                 compute_seconds, priority, batch_size=1) -> dict:
    return {
        "request_id": request_id,
        "status": "success",
        "model": info["model"],
        "weights": info["weights"],
        "weights_warning": info["weights_warning"],
        "device": info["device"],
        "runtime": info["runtime"],
        "precision": info["precision"],
        "priority": priority,
        "worker_id": worker_id,
        "queue_time": round(started_at - submitted_at, 6) if submitted_at else None,
        "processing_time": round(finished_at - started_at, 6),
        "compute_time": round(compute_seconds, 6),
        "batch_size": batch_size,
        "submitted_at": submitted_at,
        "started_at": started_at,
        "finished_at": finished_at,
        "timestamp": finished_at,
    }


@app.task(
    name=TASK_NAME,
    bind=True,
    autoretry_for=(TransientInferenceError,),
    max_retries=_settings.max_retries,
    retry_backoff=_settings.retry_delay,
    retry_backoff_max=_settings.retry_backoff_max,
    retry_jitter=True,
    # Celery reprs each result for its success line (shown at DEBUG only: bootstep.py) whether or
    # not it logs it: 113 us of the consumer's time per request for ours, 39 us cut at 200
    # characters; on a slow Xeon 116 us at 200, 25 us at 1, where the line is not shown at all.
    resultrepr_maxsize=200 if _settings.log_level.upper() == "DEBUG" else 1,
)
def classify(self, image: str | None = None, model: str | None = None, top_k: int | None = None, request_id: str | None = None,
             priority: str | None = None, submitted_at: float | None = None, deadline: float | None = None,
             images: list[str] | None = None, image_refs: list[str] | None = None, image_ref: str | None = None,
             probabilities: bool = False, callback_url: str | None = None) -> dict:
    from inference.worker.process import batcher, loaded_model

    time_limit_at = time.monotonic() + get_settings().worker_timeout
    several = images if images is not None else image_refs
    count = len(several) if isinstance(several, list) else 1
    gatherer = batcher()
    gatherer.expect(count)  # a batch being gathered waits for them
    try:
        if callback_url is not None:  # first: whatever ends this request, its callback goes
            register_callback(self.request.id, callback_url)
        loaded = loaded_model()
        admitted = admitted_pictures(self, loaded.spec.name, model, top_k, priority, deadline, image, images, image_refs, image_ref,
                                     probabilities)
        chaos.before_inference()
        time_left = within_time_limit(time_limit_at)
    except BaseException:
        gatherer.forget(count)
        raise  # its pictures go with its final state (inference/core/result_backend.py)
    started_at = admitted.started_at
    outcomes = run_pictures(gatherer, admitted, several is not None, time_left)
    done = [o for o in outcomes if isinstance(o, BatchOutcome)]
    result = build_result(
        info=loaded.info,
        request_id=request_id or self.request.id,
        worker_id=f"{self.request.hostname}:{os.getpid()}",
        submitted_at=submitted_at,
        started_at=started_at,
        finished_at=time.time(),
        # The forward passes this request took part in (its images may span several).
        compute_seconds=sum({o.batch_number: o.compute_seconds for o in done}.values()),
        priority=priority,
        batch_size=max((o.batch_size for o in done), default=0),
    )
    if several is None:
        result.update(picture_result(outcomes[0].output, admitted))
    else:
        result["results"] = [picture_result(o.output, admitted) if isinstance(o, BatchOutcome) else {"error": o.to_dict()}
                             for o in outcomes]
        result["images"], result["failed_images"] = len(outcomes), len(outcomes) - len(done)
    tracing.record_request(result, outcomes)
    return result  # its log line once stored and published (count_success): not on the client's way


@dataclass
class Admitted:
    """A request checked and claimed, ready for the batcher."""

    top_k: int
    encoded: list  # its pictures, each bytes or the InvalidRequest it fails with
    started_at: float
    suspect: bool  # its worker died while running it before: it runs alone (see the batcher)
    rank: int  # its priority in the batcher's queue (0 high, 1 normal, 2 low)
    probabilities: bool = False  # every class's probability wanted, not only the top_k

    @property
    def classes_wanted(self) -> int:
        """How many of the best classes to ask the model for (all of them for `probabilities`)."""
        return sys.maxsize if self.probabilities else self.top_k


def picture_result(ranked: list[dict], admitted: Admitted) -> dict:
    """A picture's answer: its top_k predictions, and with `probabilities` every class's, in class order."""
    answer: dict = {"predictions": ranked[:admitted.top_k]}
    if admitted.probabilities:
        dense = [0.0] * len(ranked)
        for prediction in ranked:
            dense[prediction["class_id"]] = prediction["confidence"]
        answer["probabilities"] = dense
    return answer


def admitted_pictures(task, served: str, model, top_k, priority, deadline, image, images, image_refs,
                      image_ref, probabilities=False) -> Admitted:
    """A message checked, its request claimed and its pictures read. A message that cannot run
    fails before it claims the request or reads a key. Of several pictures a broken or missing
    one is an error in the list (it fails alone); a single one fails the request."""
    if model != served:
        raise WrongWorker(f"task for model {model!r} reached a {served!r} worker; send it to queue {model}.<priority>")
    settings = get_settings()
    top_k = settings.default_top_k if top_k is None else top_k
    if not isinstance(top_k, int) or not 1 <= top_k <= settings.max_top_k:
        raise InvalidRequest(f"top_k must be an integer between 1 and {settings.max_top_k}")
    if not isinstance(probabilities, bool):
        raise InvalidRequest("probabilities must be true or false")
    check_pictures(image, images, image_refs, image_ref, settings.max_items_per_request)
    fetched, crashed_runs = skip_unless_runnable(task, task.request.id, deadline, model, priority, keys.named_pictures(image_ref, image_refs))
    started_at = time.time()
    if image_refs is not None or image_ref is not None:
        encoded = fetched
        if all(isinstance(raw, ImageMissing) for raw in encoded) and already_succeeded(task):
            raise Ignore()  # redelivered after its first run stored a result: that result stands
        if image_refs is None and isinstance(encoded[0], ImageMissing):
            raise encoded[0]
    else:
        encoded = [decode_base64(image)] if images is None else [_or_error(decode_base64, p) for p in images]
    check_request_pixels(picture_sizes(encoded), settings.max_request_pixels)
    rank = priority_rank((task.request.delivery_info or {}).get("routing_key"), priority)
    return Admitted(top_k, encoded, started_at, suspect=crashed_runs > 0, rank=rank, probabilities=probabilities)


def register_callback(task_id: str, callback_url: object) -> None:
    """A callback asked for in the message (send_task): kept for the request's final state to
    queue, as the API keeps those it is given (kept once: a redelivery changes nothing)."""
    settings = get_settings()
    check_url(callback_url, allowed_hosts(settings.callback_allowed_hosts))
    redis_client().set(keys.callback_key(task_id), delivery_message(task_id, str(callback_url)), nx=True, ex=settings.result_expires)


def within_time_limit(time_limit_at: float) -> float:
    """Seconds left before WORKER_TIMEOUT, or Timeout. Prefork's pool enforces the limit itself
    (a second earlier, as a soft limit); the threads and solo pools cannot stop a task, so a
    task stops waiting for its batch at the limit, and fails as prefork's would."""
    left = time_limit_at - time.monotonic()
    if left <= 0:
        raise Timeout.at_worker_limit(get_settings().worker_timeout)
    return left


def run_pictures(gatherer, admitted: Admitted, several: bool, timeout: float) -> list:
    """Each picture through the batcher, which decodes it (a corrupt one fails alone) and
    classifies it: its BatchOutcome, or the error of a picture that did not decode."""
    encoded, top_k, alone, rank = admitted.encoded, admitted.classes_wanted, admitted.suspect, admitted.rank
    if not several:
        return [gatherer.run((encoded[0], top_k), timeout=timeout, expected=True, alone=alone, rank=rank)]
    gatherer.forget(sum(isinstance(raw, InvalidRequest) for raw in encoded))
    submitted = gatherer.submit_many([(raw, top_k) for raw in encoded if not isinstance(raw, InvalidRequest)],
                                     expected=True, alone=alone, rank=rank)
    ran = iter(submitted.outcomes(timeout, abandon=True))
    outcomes = [raw if isinstance(raw, InvalidRequest) else next(ran) for raw in encoded]
    # A picture that did not decode fails alone; anything else fails the request.
    failed = next((o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, InvalidRequest)), None)
    if failed is not None:
        raise failed
    return outcomes


def check_pictures(image, images, image_refs, image_ref, most: int) -> None:
    given = [value for value in (image, images, image_refs, image_ref) if value is not None]
    if len(given) != 1:
        raise InvalidRequest("give one of `image` (one base64 picture), `images` (a list of them), "
                             "`image_ref` or `image_refs` (Redis keys)")
    if (images is not None or image_refs is not None) and (not isinstance(given[0], list) or not 1 <= len(given[0]) <= most):
        raise InvalidRequest(f"`images` and `image_refs` must be lists of 1 to {most} pictures (MAX_ITEMS_PER_REQUEST)")
    if not all(map(keys.is_stored_image, keys.named_pictures(image_ref, image_refs))):
        raise InvalidRequest(f"`image_ref` and `image_refs` must be keys that submission.submit wrote (starting with {keys.IMAGE_PREFIX})")


def already_succeeded(task) -> bool:
    return task.backend.get_task_meta(task.request.id).get("status") == states.SUCCESS


def picture_sizes(encoded: list) -> list[tuple[int, int]]:
    """(width, height) of each picture whose headers read (the others fail alone later)."""
    sizes = []
    for raw in encoded:
        if isinstance(raw, bytes):
            try:
                probed = probe_image(raw, get_settings().max_image_pixels)
            except InvalidRequest:
                continue
            sizes.append((probed["width"], probed["height"]))
    return sizes


def _or_error(fn, arg):
    """fn(arg), or the InvalidRequest it raised: that image fails, its request goes on."""
    try:
        return fn(arg)
    except InvalidRequest as exc:
        return exc
