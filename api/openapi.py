"""GET /openapi.json (OpenAPI 3.1, built from the pydantic schemas) and GET /docs (Swagger UI 5,
whose files the flask-swagger-ui package ships: no CDN. Swagger UI 4 could not render 3.1)."""

from __future__ import annotations

from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, jsonify, send_from_directory

from api.schemas import BatchRequest, InferenceRequest
from inference.core.errors import vocabulary

bp = Blueprint("openapi", __name__)
SWAGGER_UI = Path(flask_swagger_ui.__file__).parent / "dist"

ERROR = {"$ref": "#/components/schemas/Error"}
STATUS = {"$ref": "#/components/schemas/RequestStatus"}
OBJECT = {"type": "object"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    text = {400: "invalid input", 401: "missing or wrong API key", 404: "unknown id", 409: "conflict",
            413: "body, image, pixels or batch too large", 429: "queue full, too many requests in flight for the key, or rate limited (see Retry-After)",
            503: "Redis down or full, or no live worker (see Retry-After)", 504: "no result in time"}
    return {str(code): _json(ERROR, text[code]) for code in codes}


WAIT = {"name": "wait", "in": "query", "required": False, "description": "seconds to wait for the result (bounded by MAX_WAIT_SECONDS)",
        "schema": {"type": "number", "minimum": 0}}
FORMAT = {"name": "format", "in": "query", "required": False, "description": "prometheus or json, whatever Accept says",
          "schema": {"type": "string", "enum": ["prometheus", "json"]}}
OIP_ERROR = {"$ref": "#/components/schemas/OipError"}
REQUEST_ID = {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}


def build_spec() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Image classification inference", "version": "1.0.0",
                 "description": "Submit-then-poll image classification on Celery workers (see the README and docs/api.md; error codes in docs/security.md)."},
        "paths": paths(),
        "components": {"schemas": schemas(), "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
        "security": [{"bearer": []}, {"apiKey": []}],  # enforced only when API_KEYS is set
    }


def paths() -> dict:
    submit_body = {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary"}, "model_type": {"type": "string"},
            "priority": {"type": "string"}, "top_k": {"type": "integer"}, "request_id": {"type": "string"}}}},
    }}
    batch_body = {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchRequest"}}}}
    return {
        "/v1/inference": {"post": {"summary": "Submit an image", "parameters": [WAIT], "requestBody": submit_body,
                                   "responses": {"202": _json(STATUS, "accepted"), "200": _json(STATUS, "finished within ?wait"),
                                                 **_errors(400, 401, 413, 429, 503)}}},
        "/v1/inference/{request_id}": {
            "get": {"summary": "Status and result", "parameters": [REQUEST_ID, WAIT],
                    "responses": {"200": _json(STATUS, "finished"), "202": _json(STATUS, "queued or running"), **_errors(400, 401, 404)}},
            "delete": {"summary": "Cancel before it starts", "parameters": [REQUEST_ID],
                       "responses": {"200": _json(STATUS, "cancelled"), **_errors(401, 404, 409)}}},
        "/v1/batch_inference": {"post": {"summary": "Submit several images", "requestBody": batch_body,
                                         "responses": {"202": _json(OBJECT, "accepted"), **_errors(400, 401, 413, 429, 503)}}},
        "/v1/batch/{batch_id}": {"get": {"summary": "Batch status", "parameters": [
            {"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}, WAIT],
            "responses": {"200": _json(OBJECT, "all finished"), "202": _json(OBJECT, "some pending"), **_errors(400, 401, 404)}}},
        "/inference": {"post": {"summary": "Classify synchronously (the seed's shape)", "requestBody": submit_body,
                                "responses": {"200": _json(OBJECT, "result"), **_errors(400, 401, 409, 413, 429, 503, 504)}}},
        "/batch_inference": {"post": {"summary": "Classify several synchronously", "requestBody": batch_body,
                                      "responses": {"200": _json(OBJECT, "results"), **_errors(400, 401, 413, 429, 503)}}},
        "/health": {"get": {"summary": "healthy, degraded or unhealthy", "responses": {"200": _json(OBJECT, "healthy or degraded"),
                                                                                        "503": _json(OBJECT, "unhealthy"), **_errors(401)}}},
        "/health/live": {"get": {"summary": "Liveness (no key needed)", "security": [], "responses": {"200": _json(OBJECT, "alive")}}},
        "/health/ready": {"get": {"summary": "Readiness", "responses": {"200": _json(OBJECT, "ready"), "503": _json(OBJECT, "not ready"),
                                                                       **_errors(401)}}},
        "/workers/status": {"get": {"summary": "Live workers", "responses": {"200": _json(OBJECT, "workers"), **_errors(401)}}},
        "/queue/status": {"get": {"summary": "Queue depths", "responses": {"200": _json(OBJECT, "depths"), **_errors(401)}}},
        "/v1/models": {"get": {"summary": "Models and their workers", "responses": {"200": _json(OBJECT, "models"), **_errors(401)}}},
        "/v1/callbacks/secret": {"get": {"summary": "The caller's callback secret (its API key's own)", "responses": {
            "200": _json(OBJECT, "secret, header, scheme"), **_errors(401)}}},
        "/v1/stats": {"get": {"summary": "The seed's JSON metrics", "responses": {"200": _json(OBJECT, "stats"), **_errors(401)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics to Prometheus (Accept naming text/plain or OpenMetrics), the seed's JSON "
                                        "metrics to anyone else", "parameters": [FORMAT], "responses": {
            "200": {"description": "Prometheus' text (or OpenMetrics) format, or JSON as /v1/stats", "content": {
                "text/plain": {"schema": {"type": "string"}}, "application/json": {"schema": OBJECT}}}, **_errors(400, 401)}}},
        **oip_paths(),
    }


def oip_paths() -> dict:
    """The Open Inference Protocol's endpoints (docs/api.md; its own spec: kserve/open-inference-protocol)."""
    model = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
    version = {"name": "model_version", "in": "path", "required": True, "schema": {"type": "string"}}
    error = _json(OIP_ERROR, "error")
    infer = {"summary": "Classify N pictures (a BYTES tensor `image`; JSON, or Triton's binary tensor data extension)",
             "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {
                 "id": {"type": "string"}, "parameters": OBJECT, "outputs": {"type": "array", "items": OBJECT},
                 "inputs": {"type": "array", "items": {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
                     "name": {"type": "string"}, "datatype": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                     "data": {"type": "array"}, "parameters": OBJECT}}}}}}}},
             "responses": {"200": _json(OBJECT, "inference response"), **{str(c): error for c in (400, 401, 404, 413, 429, 503, 504)}}}
    metadata = {"summary": "Model metadata", "responses": {"200": _json(OBJECT, "inputs, outputs, platform"), "404": error}}
    ready = {"summary": "Model readiness", "responses": {"200": _json(OBJECT, "ready"), "503": _json(OBJECT, "not ready"), "404": error}}
    return {
        "/v2": {"get": {"summary": "Server metadata (Open Inference Protocol)", "responses": {"200": _json(OBJECT, "name, version, extensions")}}},
        "/v2/health/live": {"get": {"summary": "Liveness (no key needed)", "security": [], "responses": {"200": _json(OBJECT, "live")}}},
        "/v2/health/ready": {"get": {"summary": "Readiness", "responses": {"200": _json(OBJECT, "ready"), "503": _json(OBJECT, "not ready")}}},
        "/v2/models/{model_name}": {"get": {**metadata, "parameters": [model]}},
        "/v2/models/{model_name}/versions/{model_version}": {"get": {**metadata, "parameters": [model, version]}},
        "/v2/models/{model_name}/ready": {"get": {**ready, "parameters": [model]}},
        "/v2/models/{model_name}/versions/{model_version}/ready": {"get": {**ready, "parameters": [model, version]}},
        "/v2/models/{model_name}/infer": {"post": {**infer, "parameters": [model]}},
        "/v2/models/{model_name}/versions/{model_version}/infer": {"post": {**infer, "parameters": [model, version]}},
    }


def schemas() -> dict:
    return {
        "InferenceRequest": InferenceRequest.model_json_schema(ref_template="#/components/schemas/{model}"),
        "BatchRequest": BatchRequest.model_json_schema(ref_template="#/components/schemas/{model}"),
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string", "enum": sorted(vocabulary())}, "message": {"type": "string"}}}}},
        "OipError": {"type": "object", "required": ["error"], "properties": {
            "error": {"type": "string"}, "code": {"type": "string", "enum": sorted(vocabulary())}}},
        "RequestStatus": {"type": "object", "required": ["request_id", "status"], "properties": {
            "request_id": {"type": "string"},
            "status": {"type": "string", "enum": ["queued", "running", "success", "failed", "expired", "cancelled"]},
            "model": {"type": "string"}, "priority": {"type": "string"},
            "result": {"type": "object"}, "error": {"$ref": "#/components/schemas/Error/properties/error"}}},
    }


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(build_spec())


# With API_KEYS set, /openapi.json wants a key too: the page asks once and keeps it where the
# dashboard does, and Swagger UI sends it with the spec and with every "Try it out".
DOCS_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>API docs</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head><body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>
const withKey = (req) => { const key = localStorage.getItem("apiKey"); if (key) req.headers["X-API-Key"] = key; return req; };
const askKey = (res) => {
  if (res.status === 401 && res.url.endsWith("/openapi.json")) {
    const key = prompt("API key");
    if (key) { localStorage.setItem("apiKey", key); location.reload(); }
  }
  return res;
};
window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", requestInterceptor: withKey, responseInterceptor: askKey});
</script></body></html>"""


@bp.get("/docs")
def docs():
    return DOCS_PAGE


@bp.get("/docs/assets/<path:filename>")
def docs_assets(filename: str):
    return send_from_directory(SWAGGER_UI, filename)
