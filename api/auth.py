"""API keys: with API_KEYS set, every endpoint but liveness and the page shells wants
`Authorization: Bearer <key>` or `X-API-Key: <key>`; keys are compared in constant time.
RATE_LIMIT_PER_MINUTE caps each key with a fixed one-minute window counted in Redis."""

from __future__ import annotations

import hashlib
import hmac
import time

from flask import Flask, current_app, request

from api.errors import error_response
from inference.settings import get_settings

# Liveness, and page shells and their assets that hold no data: the dashboard and the docs page
# ask for the key before they read anything (the API's description, /openapi.json, included).
OPEN_ENDPOINTS = {"ops.live", "ops.dashboard", "openapi.docs", "openapi.docs_assets", "static"}


def presented_key() -> str:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("X-API-Key", "").strip()


def key_is_valid(key: str, keys: list[str]) -> bool:
    # Compare against every key, without stopping early, so timing tells nothing.
    matches = [hmac.compare_digest(key.encode(), k.encode()) for k in keys]
    return bool(key) and any(matches)


def over_rate_limit(key: str, limit: int) -> int:
    """0 if this request is within the key's limit, else the seconds until its window ends."""
    now = time.time()
    window = int(now // 60)
    counter = f"inference:ratelimit:{hashlib.sha256(key.encode()).hexdigest()[:16]}:{window}"
    pipe = current_app.extensions["redis"].pipeline()
    count, _ = pipe.incr(counter).expire(counter, 120).execute()
    return 0 if count <= limit else max(1, int((window + 1) * 60 - now))


def register_auth(app: Flask) -> None:
    settings = get_settings()
    keys = [k.strip() for k in settings.api_keys.split(",") if k.strip()]
    if not keys:
        return

    @app.before_request
    def require_key():
        if request.endpoint in OPEN_ENDPOINTS or request.method == "OPTIONS":
            return None
        key = presented_key()
        if not key_is_valid(key, keys):
            return error_response(401, "unauthorized", "send an API key: Authorization: Bearer <key> or X-API-Key: <key>",
                                  {"WWW-Authenticate": 'Bearer realm="inference"'})
        if settings.rate_limit_per_minute:
            wait = over_rate_limit(key, settings.rate_limit_per_minute)
            if wait:
                return error_response(429, "rate_limited", f"more than {settings.rate_limit_per_minute} requests a minute "
                                      "for this key; retry later", {"Retry-After": str(wait)})
        return None
