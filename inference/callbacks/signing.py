"""Signed callbacks: each API key (tenant) has its own secret, derived from one signing key, and
every delivery carries `X-Inference-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
A receiver recomputes it with its secret (`GET /v1/callbacks/secret`), compares in constant
time, and refuses a timestamp older than a few minutes: a captured delivery cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import redis as redis_lib

from inference.core.settings import get_settings

SIGNING_KEY = "inference:callback:signing_key"  # made at random on first use when CALLBACK_SIGNING_KEY is unset
SIGNATURE_HEADER = "X-Inference-Signature"
TOLERANCE_SECONDS = 300


def signing_key(redis: redis_lib.Redis) -> bytes:
    configured = get_settings().callback_signing_key
    if configured:
        return configured.encode()
    redis.set(SIGNING_KEY, secrets.token_hex(32), nx=True)  # the first process to need one makes it, for all
    key = redis.get(SIGNING_KEY)
    if key is None:  # written a moment ago: only a Redis lost in between leaves it missing
        raise redis_lib.RedisError("the callback signing key is missing from Redis")
    return key.encode() if isinstance(key, str) else bytes(key)


def secret_for(redis: redis_lib.Redis, tenant: str) -> str:
    """The callback secret of a tenant (an API key's digest; "" without API keys)."""
    return "whsec_" + hmac.new(signing_key(redis), b"callback-secret:" + tenant.encode(), hashlib.sha256).hexdigest()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, now: float | None = None, tolerance: float = TOLERANCE_SECONDS) -> bool:
    """What a receiver does with a delivery: True if it was signed with `secret` lately."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), f"t={timestamp},v1={fields.get('v1', '')}")
