"""The Open Inference Protocol (KServe v2) over HTTP, as Triton's clients speak it: health,
server and model metadata, and synchronous inference on the same queues, priorities, limits,
keys and metrics as /v1 (one request of N pictures is one task).

Pictures go in as the BYTES input `image` (JSON: base64 strings; or Triton's binary tensor data
extension); out comes `probabilities` (FP32 [N, classes]) or, with Triton's classification
extension (`"parameters": {"classification": k}` on the output), the k best classes of each
picture as "score:index:label". Request parameters: `priority` (high|normal|low, or Triton's
level: 1 highest, 0 default) and `timeout` (µs the request may wait to start). Errors are
`{"error": "<code>: <message>", "code": ...}` (api/errors.py).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pybase64
from flask import Blueprint, Response, current_app, jsonify, request

from api import oip_tensors
from api.extensions import api_settings, redis_client, worker_directory
from api.service import failure_of, submit_and_wait, validate_item
from inference.core.errors import InvalidJson, InvalidRequest, NotFound, failed_with
from inference.core.registry import MODELS, ModelSpec

bp = Blueprint("v2", __name__, url_prefix="/v2")
MODEL_VERSION = "1"  # one version per model: its registry entry
EXTENSIONS = ["classification", "binary_tensor_data", "parameters"]
PLATFORM_OF_RUNTIME = {"torch": "pytorch_libtorch", "openvino": "openvino_ir"}


def server_version() -> str:
    """The project's version (pyproject.toml; the API runs from a checkout, not installed)."""
    with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as project:
        return tomllib.load(project)["project"]["version"]


def model_of(name: str, model_version: str | None) -> ModelSpec:
    spec = MODELS.get(name)
    if spec is None:
        raise NotFound(f"unknown model {name!r}; models: {', '.join(MODELS)}")
    if model_version not in (None, MODEL_VERSION):
        raise NotFound(f"model {name!r} has no version {model_version!r}; versions: {MODEL_VERSION}")
    return spec


@bp.get("")
def server_metadata():
    return jsonify({"name": "celery-inference", "version": server_version(), "extensions": EXTENSIONS})


@bp.get("/health/live")
def live():
    return jsonify({"live": True})


@bp.get("/health/ready")
def ready():
    """Ready when Redis answers and some model has a ready worker (as /health/ready)."""
    try:
        ok = bool(redis_client().ping()) and bool(worker_directory().live_models())
    except Exception:  # Redis down
        ok = False
    return jsonify({"ready": ok}), 200 if ok else 503


@bp.get("/models/<model_name>")
@bp.get("/models/<model_name>/versions/<model_version>")
def model_metadata(model_name: str, model_version: str | None = None):
    spec = model_of(model_name, model_version)
    runtimes = [p.get("runtime") for w in worker_directory().live_models().get(spec.name, []) for p in w.get("processes") or []]
    return jsonify({
        "name": spec.name,
        "versions": [MODEL_VERSION],
        "platform": next((PLATFORM_OF_RUNTIME[r] for r in runtimes if r in PLATFORM_OF_RUNTIME), "pytorch_libtorch"),
        "inputs": [{"name": oip_tensors.INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": oip_tensors.OUTPUT, "datatype": "FP32", "shape": [-1, spec.classes]}],
    })


@bp.get("/models/<model_name>/ready")
@bp.get("/models/<model_name>/versions/<model_version>/ready")
def model_ready(model_name: str, model_version: str | None = None):
    spec = model_of(model_name, model_version)
    ok = bool(worker_directory().live_models().get(spec.name))
    return jsonify({"name": spec.name, "ready": ok}), 200 if ok else 503


@bp.post("/models/<model_name>/infer")
@bp.post("/models/<model_name>/versions/<model_version>/infer")
def infer(model_name: str, model_version: str | None = None):
    spec = model_of(model_name, model_version)
    if request.headers.get("Content-Encoding", "identity") != "identity":
        raise InvalidRequest("compressed requests are not accepted; send the body as it is")
    head, binary = oip_tensors.split_body(request.get_data(), request.headers.get(oip_tensors.HEADER_LENGTH))
    try:
        header = current_app.json.loads(head)
    except ValueError as exc:  # the API's strict JSON (api/request.py)
        raise InvalidJson(f"the inference header is not valid JSON: {exc}") from None
    wanted = oip_tensors.parse_infer_request(header, binary, spec.classes, api_settings().max_items_per_request)
    encoded = [pybase64.b64encode(picture).decode() for picture in wanted.pictures]
    item = validate_item({
        **({"data": encoded[0]} if len(encoded) == 1 else {"images": encoded}),
        "model_type": spec.name, "priority": wanted.priority, "top_k": wanted.top_k,
        "timeout_ms": wanted.timeout_ms, "probabilities": wanted.probabilities,
    })
    submitted, status = submit_and_wait(item, api_settings().sync_timeout)
    failure = failure_of(status, api_settings().sync_timeout)
    if failure is not None:
        raise failure
    result = status["result"]
    pictures = result.get("results", [result])
    for n, picture in enumerate(pictures):
        if "error" in picture:  # a picture the API accepted that the worker could not decode
            raise failed_with(picture["error"]["code"], f"{oip_tensors.INPUT}[{n}]: {picture['error']['message']}")
    response_header = {
        "model_name": spec.name,
        "model_version": MODEL_VERSION,
        "id": wanted.id if wanted.id is not None else submitted.job["request_id"],
        "parameters": {key: result[key] for key in ("request_id", "worker_id", "weights", "weights_warning", "priority",
                                                    "processing_time", "queue_time") if isinstance(result.get(key), (str, int, float))},
    }
    body, header_length = oip_tensors.response_body(
        response_header, [oip_tensors.output_tensor(o, pictures, spec.classes) for o in wanted.outputs])
    response = Response(body, content_type="application/json" if header_length is None else "application/octet-stream")
    if header_length is not None:
        response.headers[oip_tensors.HEADER_LENGTH] = str(header_length)
    return response
