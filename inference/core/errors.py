"""Error types shared by workers, API and clients.

Each error carries a stable `code` and an HTTP status. Tasks raise them with a single message
argument so Celery can store them as JSON and rebuild them on the reading side.
"""

from __future__ import annotations

from functools import cache


class InferenceError(Exception):
    code = "inference_error"
    http_status = 500
    permanent = True  # permanent errors fail at once; transient ones are retried

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


class InvalidRequest(InferenceError):
    code = "invalid_request"
    http_status = 400


class InvalidBase64(InvalidRequest):
    code = "invalid_base64"


class InvalidImage(InvalidRequest):
    code = "invalid_image"


class ImageTooLarge(InvalidRequest):
    code = "image_too_large"
    http_status = 413


class ImageTooComplex(InvalidRequest):
    """Decoding it would cost far more than its pixels suggest (a JPEG of thousands of scans)."""

    code = "image_too_complex"


class TooManyPixels(InvalidRequest):
    """A request's pictures together are over MAX_REQUEST_PIXELS."""

    code = "too_many_pixels"
    http_status = 413


class ImageMissing(InvalidRequest):
    """An image sent by reference (`image_ref`, `image_refs`) is no longer in Redis."""

    code = "image_missing"
    http_status = 410


class UnknownModel(InvalidRequest):
    code = "unknown_model"


class WrongWorker(InferenceError):
    """A task reached a worker that serves another model (misrouted send_task)."""

    code = "wrong_worker"


class WeightsUnavailable(InferenceError):
    code = "weights_unavailable"
    http_status = 503


class Timeout(InferenceError):
    """The request ran past its time limit (WORKER_TIMEOUT) in the worker."""

    code = "timeout"
    http_status = 504


class WorkerCrashed(InferenceError):
    """The worker process running the request died (a crash, an out-of-memory kill)."""

    code = "worker_crashed"
    http_status = 502


class PoisonMessage(WorkerCrashed):
    """The request was delivered MAX_DELIVERIES times and its worker died each time: it is not run again."""

    code = "poison_message"
    http_status = 422


class TransientInferenceError(InferenceError):
    code = "transient_error"
    http_status = 503
    permanent = False


# Exceptions that are not ours, as a result records them (by class name): the code clients see.
# Anything else is `internal_error`: a client never sees a Python class name as a code.
CODE_OF_FOREIGN_ERROR = {
    "SoftTimeLimitExceeded": Timeout.code,
    "TimeLimitExceeded": Timeout.code,
    "TimeoutError": Timeout.code,
    "WorkerLostError": WorkerCrashed.code,
    "Terminated": WorkerCrashed.code,
}
INTERNAL_ERROR = "internal_error"


def code_of(exc: BaseException) -> str:
    """The vocabulary's code for an exception, ours or not (by its class name: Celery rebuilds
    an exception it cannot import under its name)."""
    if isinstance(exc, InferenceError):
        return exc.code
    return CODE_OF_FOREIGN_ERROR.get(type(exc).__name__, INTERNAL_ERROR)


@cache  # the classes are all defined above, once
def vocabulary() -> dict[str, int]:
    """Every code a worker's error may carry, with its HTTP status (docs/security.md lists them)."""
    codes = {cls.code: cls.http_status for cls in _all_subclasses(InferenceError)}
    codes[INTERNAL_ERROR] = 500
    return codes


def _all_subclasses(cls: type[InferenceError]) -> list[type[InferenceError]]:
    return [cls] + [s for sub in cls.__subclasses__() for s in _all_subclasses(sub)]


def http_status_of(code: str) -> int:
    """HTTP status for an error code read back from a result (unknown codes: the worker broke, 502)."""
    for cls in _all_subclasses(InferenceError):
        if cls.code == code:
            return cls.http_status if cls.http_status != 500 else 502
    return 502
