"""Choosing a model for `model_type: any` (LOAD_BALANCE_STRATEGY)."""

from __future__ import annotations

import random

import redis

from inference.core.queues import PRIORITIES
from inference.submit import tracking

ROUND_ROBIN_KEY = "inference:round_robin"  # shared by every API process


def least_loaded(live: dict[str, list[dict]], redis_client: redis.Redis) -> str:
    """Fewest queued + running requests per ready worker process."""
    depths = tracking.queue_depths(redis_client, list(live), PRIORITIES)

    def load(model: str) -> float:
        processes = sum(w.get("ready_processes") or 0 for w in live[model]) or 1
        running = sum(w.get("active") or 0 for w in live[model])
        return (sum(depths[model].values()) + running) / processes

    candidates = sorted(live)
    random.shuffle(candidates)  # equal loads: spread rather than always the first name
    return min(candidates, key=load)


def round_robin(live: dict[str, list[dict]], redis_client: redis.Redis) -> str:
    turn = redis_client.incr(ROUND_ROBIN_KEY)
    return sorted(live)[(turn - 1) % len(live)]


def pick_random(live: dict[str, list[dict]], redis_client: redis.Redis) -> str:
    return random.choice(sorted(live))


STRATEGIES = {"least_loaded": least_loaded, "round_robin": round_robin, "random": pick_random}


def choose_model(strategy: str, live: dict[str, list[dict]], redis_client: redis.Redis) -> str:
    return STRATEGIES[strategy](live, redis_client)
