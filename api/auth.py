"""API keys, tenants and rate limits.

With API_KEYS set, every endpoint but liveness and the page shells wants `Authorization: Bearer
<key>` or `X-API-Key: <key>`; keys are compared in constant time. Each key is a tenant
(`g.tenant`, a digest of the key): its request and batch ids are scoped to it (`keys.scoped_id`)
and its requests in flight are bounded (MAX_IN_FLIGHT_PER_KEY). A client address that fails
AUTH_FAILURES_PER_MINUTE times in a minute is refused until the minute ends.
RATE_LIMIT_PER_MINUTE caps each key, or without keys each client address, with a fixed
one-minute window counted in Redis (shared by all API processes). Behind a proxy, the client
address is the proxy's unless the proxy is trusted to say otherwise (werkzeug's ProxyFix).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from flask import Flask, g, request

from api.errors import error_response
from api.extensions import redis_client
from inference.core.errors import RateLimited, TooManyAuthFailures, Unauthorized
from inference.core.settings import Settings

# Liveness, and page shells and their assets that hold no data: the dashboard and the docs page
# ask for the key before they read anything (the API's description, /openapi.json, included).
OPEN_ENDPOINTS = {"ops.live", "v2.live", "ops.dashboard", "openapi.docs", "openapi.docs_assets", "static"}


def presented_key() -> str:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("X-API-Key", "").strip()


def key_is_valid(key: str, keys: list[str]) -> bool:
    # Compare against every key, without stopping early, so timing tells nothing.
    matches = [hmac.compare_digest(key.encode(), k.encode()) for k in keys]
    return bool(key) and any(matches)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tenant() -> str:
    """The caller's tenant: a digest of its API key; "" without API keys."""
    return g.get("tenant", "")


def window(name: str) -> tuple[str, int]:
    """The Redis counter of `name` for this minute, and the seconds left in the minute."""
    now = time.time()
    minute = int(now // 60)
    return f"inference:ratelimit:{name}:{minute}", max(1, int((minute + 1) * 60 - now))


def count_one(name: str) -> tuple[int, int]:
    """One more event under `name` this minute: (events this minute, seconds left in it)."""
    counter, left = window(name)
    pipe = redis_client().pipeline()
    pipe.incr(counter)
    pipe.expire(counter, 120)
    count, _ = pipe.execute()
    return count, left


def counted(name: str) -> tuple[int, int]:
    counter, left = window(name)
    return int(redis_client().get(counter) or 0), left


def register_auth(app: Flask, settings: Settings) -> None:
    keys = [k.strip() for k in settings.api_keys.split(",") if k.strip()]

    @app.before_request
    def authenticate():
        if request.endpoint in OPEN_ENDPOINTS or request.method == "OPTIONS":
            return None
        address = digest(request.remote_addr or "unknown")
        if keys:
            if settings.auth_failures_per_minute:
                failures, left = counted(f"authfail:{address}")
                if failures >= settings.auth_failures_per_minute:
                    return error_response(TooManyAuthFailures(f"{failures} failed authentications from this address this "
                                                              "minute; retry later", retry_after=left))
            key = presented_key()
            if not key_is_valid(key, keys):
                if settings.auth_failures_per_minute:
                    count_one(f"authfail:{address}")
                return error_response(Unauthorized("send an API key: Authorization: Bearer <key> or X-API-Key: <key>"))
            g.tenant = digest(key)
        if settings.rate_limit_per_minute:
            who = f"key:{g.tenant}" if keys else f"address:{address}"
            count, left = count_one(who)
            if count > settings.rate_limit_per_minute:
                return error_response(RateLimited(f"more than {settings.rate_limit_per_minute} requests a minute for this "
                                                  f"{'key' if keys else 'address'}; retry later", retry_after=left))
        return None
