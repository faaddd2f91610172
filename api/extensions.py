"""What `create_app` puts in `app.extensions`, read inside a request: the app's settings, its
Redis client and its view of live workers."""

from __future__ import annotations

import redis
from flask import current_app

from inference.core.settings import Settings


def api_settings() -> Settings:
    return current_app.extensions["settings"]


def redis_client() -> redis.Redis:
    return current_app.extensions["redis"]


def worker_directory():
    return current_app.extensions["workers"]
