"""The one error hierarchy of workers, API and clients: every error a client can see.

Each class has a stable `code`, an HTTP status and, in its docstring, what it means (the table
of docs/security.md, checked by a test). Workers raise them with a single message argument so
Celery can store them as JSON and rebuild them on the reading side; the API answers any of them
in one handler (api/errors.py); the Python client raises the class of the code it was answered
with (`error_for`). Refusals a client should retry (`retryable`) carry Retry-After.
"""

from __future__ import annotations

from functools import cache


class InferenceError(Exception):
    """The worker failed in a way it has no better code for."""

    code = "inference_error"
    http_status = 500
    permanent = True  # permanent errors fail at once in the worker; transient ones are retried
    retryable = False  # a refusal that may pass later: answered with Retry-After
    headers: dict[str, str] = {}

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after  # seconds; None: the API's RETRY_AFTER
        self.body: dict = {}  # as a client read it: the answer or status it came in

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


# -- the request is wrong (4xx) --------------------------------------------------------------------

class InvalidRequest(InferenceError):
    """The request is not what the endpoint takes."""

    code = "invalid_request"
    http_status = 400


class InvalidJson(InvalidRequest):
    """The body is not a JSON object (malformed, nested too deeply, duplicate keys, NaN...), or not what its Content-Type says."""

    code = "invalid_json"


class MissingData(InvalidRequest):
    """Neither `data` nor `images`."""

    code = "missing_data"


class MissingImage(InvalidRequest):
    """A multipart request without an `image` file."""

    code = "missing_image"


class UnknownModel(InvalidRequest):
    """`model_type` names no model."""

    code = "unknown_model"


class InvalidPriority(InvalidRequest):
    """`priority` is not high, normal or low."""

    code = "invalid_priority"


class InvalidRequestId(InvalidRequest):
    """`request_id` is not 1-128 of A-Z a-z 0-9 . _ : -"""

    code = "invalid_request_id"


class InvalidTopK(InvalidRequest):
    """`top_k` is not between 1 and MAX_TOP_K."""

    code = "invalid_top_k"


class CallbackNotAllowed(InvalidRequest):
    """`callback_url` is no http(s) URL, or its host is not on CALLBACK_ALLOWED_HOSTS."""

    code = "callback_not_allowed"


class InvalidTimeout(InvalidRequest):
    """`timeout_ms` is not a positive integer."""

    code = "invalid_timeout"


class InvalidWait(InvalidRequest):
    """`?wait` is not a non-negative number."""

    code = "invalid_wait"


class EmptyBatch(InvalidRequest):
    """A batch of no requests."""

    code = "empty_batch"


class InvalidBase64(InvalidRequest):
    """A picture is not base64."""

    code = "invalid_base64"


class InvalidImage(InvalidRequest):
    """Not a picture of an allowed format, or its pixel data is broken."""

    code = "invalid_image"


class ImageTooComplex(InvalidRequest):
    """A JPEG of more than MAX_JPEG_SCANS scans: decoding it would cost far more than its pixels suggest."""

    code = "image_too_complex"


class ImageTooLarge(InvalidRequest):
    """A picture over MAX_IMAGE_PIXELS."""

    code = "image_too_large"
    http_status = 413


class TooManyPixels(InvalidRequest):
    """A request's pictures over MAX_REQUEST_PIXELS together."""

    code = "too_many_pixels"
    http_status = 413


class BatchTooLarge(InvalidRequest):
    """More than MAX_ITEMS_PER_REQUEST requests or images."""

    code = "batch_too_large"
    http_status = 413


class BodyTooLarge(InvalidRequest):
    """A body over MAX_CONTENT_LENGTH."""

    code = "body_too_large"
    http_status = 413


class ImageMissing(InvalidRequest):
    """A picture sent by reference (`image_ref`, `image_refs`) is no longer in Redis."""

    code = "image_missing"
    http_status = 410


class Unauthorized(InferenceError):
    """No valid API key."""

    code = "unauthorized"
    http_status = 401
    headers = {"WWW-Authenticate": 'Bearer realm="inference"'}


class NotFound(InferenceError):
    """No such request, batch or route (or another key's)."""

    code = "not_found"
    http_status = 404


class NoSuchWorker(NotFound):
    """POST /simulate/crash names no live worker."""

    code = "no_such_worker"


class MethodNotAllowed(InferenceError):
    """The route does not take this method."""

    code = "method_not_allowed"
    http_status = 405


class AlreadyStarted(InferenceError):
    """DELETE of a request that has started."""

    code = "already_started"
    http_status = 409


class HttpError(InferenceError):
    """Any other HTTP error (its status says which)."""

    code = "http_error"

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.http_status = status


# -- refusals: the system is busy, try again later (Retry-After) ----------------------------------

class Refused(InferenceError):
    """A refusal that may pass later."""

    code = "refused"
    http_status = 429
    retryable = True


class RateLimited(Refused):
    """Over RATE_LIMIT_PER_MINUTE."""

    code = "rate_limited"


class TooManyAuthFailures(Refused):
    """Over AUTH_FAILURES_PER_MINUTE failed authentications from this address."""

    code = "too_many_auth_failures"


class TooManyInFlight(Refused):
    """The key has MAX_IN_FLIGHT_PER_KEY requests queued or running."""

    code = "too_many_in_flight"

    @classmethod
    def at(cls, in_flight: int, limit: int) -> TooManyInFlight:
        return cls(f"this key has {in_flight} requests queued or running (MAX_IN_FLIGHT_PER_KEY {limit}); "
                   "retry when some have finished")


class QueueFull(Refused):
    """The model's queues hold QUEUE_LIMIT requests."""

    code = "queue_full"

    @classmethod
    def at(cls, model: str, queued: int, limit: int) -> QueueFull:
        return cls(f"{model} has {queued} requests queued (QUEUE_LIMIT {limit}); retry later")


class MemoryFull(Refused):
    """Redis is near its maxmemory (REDIS_MEMORY_HIGH_WATER)."""

    code = "memory_full"
    http_status = 503

    @classmethod
    def at(cls, used: int, limit: int) -> MemoryFull:
        return cls(f"Redis uses {used} bytes; new pictures are admitted while it uses at most {limit} "
                   "(REDIS_MEMORY_HIGH_WATER of its maxmemory); retry later")


class NotReplicated(Refused):
    """Fewer than REDIS_WAIT_REPLICAS replicas held the submission within REDIS_WAIT_TIMEOUT_MS: it was cancelled (unless a worker had started it)."""

    code = "not_replicated"
    http_status = 503

    @classmethod
    def at(cls, replicas: int, wanted: int) -> NotReplicated:
        return cls(f"the request reached {replicas} of the {wanted} Redis replicas it must be on before it is accepted "
                   "(REDIS_WAIT_REPLICAS); it was cancelled unless a worker had started it already: retry later")


class NoWorker(Refused):
    """No live worker serves the model (NO_WORKER_POLICY=reject)."""

    code = "no_worker"
    http_status = 503


class BrokerUnavailable(Refused):
    """Redis does not answer."""

    code = "broker_unavailable"
    http_status = 503


# -- the request ran and failed, or did not run ---------------------------------------------------

class WrongWorker(InferenceError):
    """A `send_task` message reached another model's queue."""

    code = "wrong_worker"


class WeightsUnavailable(InferenceError):
    """MODEL_WEIGHTS=pretrained without the weights."""

    code = "weights_unavailable"
    http_status = 503


class TransientInferenceError(InferenceError):
    """A transient failure, retried MAX_RETRIES times."""

    code = "transient_error"
    http_status = 503
    permanent = False


class Timeout(InferenceError):
    """The request ran past WORKER_TIMEOUT in the worker; from the synchronous endpoints also: no result within SYNC_TIMEOUT."""

    code = "timeout"
    http_status = 504

    @classmethod
    def at_worker_limit(cls, seconds: int) -> Timeout:
        return cls(f"the request ran past the worker's time limit (WORKER_TIMEOUT {seconds} s)")


class Expired(InferenceError):
    """The synchronous endpoints: the request was not started before its deadline (`timeout_ms`)."""

    code = "expired"
    http_status = 504


class Cancelled(InferenceError):
    """The synchronous endpoints: the request was cancelled."""

    code = "cancelled"
    http_status = 409


class WorkerCrashed(InferenceError):
    """The worker process died while running the request (a crash, an out-of-memory kill)."""

    code = "worker_crashed"
    http_status = 502


class PoisonMessage(WorkerCrashed):
    """The request's worker died each of the MAX_DELIVERIES times it ran: it is not run again."""

    code = "poison_message"
    http_status = 422


class InternalError(InferenceError):
    """A bug: see the log."""

    code = "internal_error"


# Exceptions that are not ours, as a result records them (by class name): the code clients see.
# Anything else is `internal_error`: a client never sees a Python class name as a code.
CODE_OF_FOREIGN_ERROR = {
    "SoftTimeLimitExceeded": Timeout.code,
    "TimeLimitExceeded": Timeout.code,
    "TimeoutError": Timeout.code,
    "WorkerLostError": WorkerCrashed.code,
    "Terminated": WorkerCrashed.code,
}


def code_of(exc: BaseException) -> str:
    """The vocabulary's code for an exception, ours or not (by its class name: Celery rebuilds
    an exception it cannot import under its name)."""
    if isinstance(exc, InferenceError):
        return exc.code
    return CODE_OF_FOREIGN_ERROR.get(type(exc).__name__, InternalError.code)


def _all_subclasses(cls: type[InferenceError]) -> list[type[InferenceError]]:
    return [cls] + [s for sub in cls.__subclasses__() for s in _all_subclasses(sub)]


@cache  # the classes are all defined above, once
def error_classes() -> dict[str, type[InferenceError]]:
    """code -> its class, for every error a client can see."""
    return {cls.code: cls for cls in _all_subclasses(InferenceError) if cls is not Refused}


def vocabulary() -> dict[str, str]:
    """Every error code a client can see, with what it means (docs/security.md lists them)."""
    return {code: " ".join((cls.__doc__ or "").split()) for code, cls in error_classes().items()}


def error_for(code: str, message: str) -> InferenceError:
    """The error a code names, as a client reads it back (an unknown code: a plain InferenceError with it)."""
    cls = error_classes().get(code)
    if cls is None or cls is HttpError:
        error = InferenceError(message)
        error.code = code
        return error
    return cls(message)


def failed_with(code: str, message: str) -> InferenceError:
    """A failed request's error read back from its result, with the status the API answers it with."""
    error = error_for(code, message)
    error.http_status = http_status_of(code)
    return error


def http_status_of(code: str) -> int:
    """HTTP status for a failed request's error code, read back from its result: a failure in
    the worker with no better code (500) is the worker's, 502."""
    cls = error_classes().get(code)
    return cls.http_status if cls is not None and cls.http_status != 500 else 502
