"""Error types shared by workers, API and clients.

Each error carries a stable `code` and an HTTP status. Tasks raise them with a single message
argument so Celery can store them as JSON and rebuild them on the reading side.
"""

from __future__ import annotations


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


class TransientInferenceError(InferenceError):
    code = "transient_error"
    http_status = 503
    permanent = False


def _all_subclasses(cls: type[InferenceError]) -> list[type[InferenceError]]:
    return [cls] + [s for sub in cls.__subclasses__() for s in _all_subclasses(sub)]


def http_status_of(code: str) -> int:
    """HTTP status for an error code read back from a result (unknown codes: the worker broke, 502)."""
    for cls in _all_subclasses(InferenceError):
        if cls.code == code:
            return cls.http_status if cls.http_status != 500 else 502
    return 502
