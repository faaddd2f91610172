"""The worker's claim on a request before it runs it (see inference/core/keys.py)."""

from __future__ import annotations

from dataclasses import dataclass

import redis as redis_lib

from inference.core.keys import CANCELLED_CLAIM, REDELIVERED, STARTED, claim_key, claimed_as_cancelled, starts_key
from inference.core.settings import get_settings


@dataclass
class Claim:
    outcome: str  # STARTED (first run), REDELIVERED (run before) or CANCELLED_CLAIM (cancelled first: do not run)
    pictures: list  # the values of the keys asked for (the request's stored pictures)
    starts: int  # how often the request has been started, this time included (retries and redeliveries)


def claim_and_read(redis: redis_lib.Redis, request_id: str, keys: list[str]) -> Claim:
    """Called by the worker before running, in one round trip: claims the request, counts this
    start, and reads the `keys` (the request's stored pictures)."""
    expires = get_settings().result_expires
    pipe = redis.pipeline(transaction=False)
    pipe.set(claim_key(request_id), STARTED, nx=True, ex=expires)
    pipe.incr(starts_key(request_id))
    pipe.expire(starts_key(request_id), expires)
    if keys:
        pipe.mget(keys)
    claimed, starts, _, *read = pipe.execute()
    values = read[0] if keys else []
    if claimed:
        return Claim(STARTED, values, starts)
    return Claim(CANCELLED_CLAIM if claimed_as_cancelled(redis, request_id) else REDELIVERED, values, starts)
