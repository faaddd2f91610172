"""API keys: with API_KEYS set, every endpoint but liveness and the static pages wants
`Authorization: Bearer <key>` or `X-API-Key: <key>`; keys are compared in constant time."""

from __future__ import annotations

import hmac

from flask import Flask, request

from api.errors import error_response
from inference.settings import get_settings

# Liveness, and pages that hold no data (the dashboard asks for the key before it reads any).
OPEN_ENDPOINTS = {"ops.live", "ops.dashboard", "openapi.docs", "openapi.docs_assets", "openapi.openapi_json", "static"}


def presented_key() -> str:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("X-API-Key", "").strip()


def key_is_valid(key: str, keys: list[str]) -> bool:
    # Compare against every key, without stopping early, so timing tells nothing.
    matches = [hmac.compare_digest(key.encode(), k.encode()) for k in keys]
    return bool(key) and any(matches)


def register_auth(app: Flask) -> None:
    keys = [k.strip() for k in get_settings().api_keys.split(",") if k.strip()]
    if not keys:
        return

    @app.before_request
    def require_key():
        if request.endpoint in OPEN_ENDPOINTS or request.method == "OPTIONS":
            return None
        if key_is_valid(presented_key(), keys):
            return None
        return error_response(401, "unauthorized", "send an API key: Authorization: Bearer <key> or X-API-Key: <key>",
                              {"WWW-Authenticate": 'Bearer realm="inference"'})
