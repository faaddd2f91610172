"""Request and response schemas of the HTTP API (pydantic)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from inference.core.queues import DEFAULT_PRIORITY, PRIORITIES
from inference.core.registry import ANY_MODEL, model_names

REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class InferenceRequest(BaseModel):
    """One request: an image (`data`, base64 in JSON, or the `image` file of a multipart form) or
    several (`images`, or several `image` files) classified together in one task."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    images: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, min_length=1, description="Several images, base64-encoded, in place of `data` (at most MAX_ITEMS_PER_REQUEST): one task, one "
        "result whose `results` hold each image's predictions in order; a picture that does not decode fails alone.")
    data: str | None = Field(None, min_length=1, validate_default=True,
                             description="The image, base64-encoded (JPEG, PNG, GIF, BMP, TIFF, WEBP). Give `data` or `images`.")
    model_type: str = Field(ANY_MODEL, description=f"One of: {ANY_MODEL}, {', '.join(model_names())}.")
    priority: str = Field(DEFAULT_PRIORITY, description=f"One of: {', '.join(PRIORITIES)}.")
    request_id: str | None = Field(None, pattern=REQUEST_ID_PATTERN, description="Client-chosen id; submitting it again returns the first request.")
    top_k: int | None = Field(None, ge=1, description="How many predictions to return (default DEFAULT_TOP_K).")
    timeout_ms: int | None = Field(None, ge=1, description="Deadline to *start*, in ms (capped by WORKER_TIMEOUT); a request not started by then is dropped as `expired`.")
    probabilities: bool = Field(False, strict=True, description="Also return every class's probability, in class order (`probabilities`: 1,000 numbers per picture).")
    callback_url: str | None = Field(None, description="Where to POST the request's final status, signed (docs/api.md#completion-callbacks); its host must be on CALLBACK_ALLOWED_HOSTS.")
    _raw_images: list[bytes] = PrivateAttr(default_factory=list)  # the pictures, decoded once while checked

    @field_validator("data")
    @classmethod
    def data_or_images(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and "images" in info.data and info.data["images"] is None:
            raise ValueError("Field required: give `data` (one image) or `images` (a list of them)")
        return value

    @model_validator(mode="after")
    def not_both(self) -> InferenceRequest:
        if self.data is not None and self.images is not None:
            raise ValueError("give `data` (one image) or `images` (a list of them), not both")
        return self

    @field_validator("model_type")
    @classmethod
    def known_model(cls, value: str) -> str:
        if value not in (ANY_MODEL, *model_names()):
            raise ValueError(f"unknown model {value!r}; expected one of {ANY_MODEL}, {', '.join(model_names())}")
        return value

    @field_validator("priority")
    @classmethod
    def known_priority(cls, value: str) -> str:
        if value not in PRIORITIES:
            raise ValueError(f"unknown priority {value!r}; expected one of {', '.join(PRIORITIES)}")
        return value


class BatchRequest(BaseModel):
    """Several requests at once: `requests` (each its own model and priority) or `images` sharing them."""

    model_config = ConfigDict(extra="ignore")

    requests: list[dict] | None = None
    images: list[str] | None = None
    model_type: str = ANY_MODEL
    priority: str = DEFAULT_PRIORITY
    top_k: int | None = None
    timeout_ms: int | None = None
    probabilities: bool = False
    callback_url: str | None = None

    def items(self) -> list[dict]:
        if self.requests is not None:
            return self.requests
        shared = {"model_type": self.model_type, "priority": self.priority, "top_k": self.top_k, "timeout_ms": self.timeout_ms,
                  "probabilities": self.probabilities, "callback_url": self.callback_url}
        return [{"data": image, **shared} for image in self.images or []]
