"""The HTTP API: `create_app(settings)` builds the Flask app (HTTP only; it never imports torch).

As in Flask's factory examples, the app is built from its settings and has no other side
effect: the process entry point (api/wsgi.py) configures logging, and tests build apps with
settings of their own (`create_app(Settings(queue_limit=3))`) and talk to them in-process.
"""

from __future__ import annotations

import time

from flask import Flask
from prometheus_client import CollectorRegistry

from api.auth import register_auth
from api.errors import register_error_handlers
from api.memory import MemoryGauge
from api.prometheus import InferenceCollector
from api.request import StrictJSONProvider, WholeBodyRequest, WholeBodyResponse
from api.workers import WorkerDirectory
from inference.core import redis_connection, tracing
from inference.core.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> Flask:
    """The API for `settings` (by default the environment's); every part of it reads them from
    `app.extensions["settings"]` (`api.extensions.api_settings()`), never from the environment."""
    settings = settings or get_settings()
    app = Flask(__name__)
    app.request_class = WholeBodyRequest
    app.response_class = WholeBodyResponse
    app.json = StrictJSONProvider(app)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_content_length,
        STARTED_AT=time.time(),
        JSON_SORT_KEYS=False,
    )
    # Short socket timeouts: with Redis down the API answers 503 quickly instead of hanging.
    # Connections: a long poll holds one (its subscription) and borrows another for reads, in
    # each of API_THREADS (redis-py's default pool stops at 100: "Too many connections").
    app.extensions["redis"] = redis_connection.connect(
        settings, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30, max_connections=2 * settings.api_threads + 16,
    )
    app.extensions["settings"] = settings
    app.extensions["workers"] = WorkerDirectory(settings.worker_cache_seconds, app.extensions["redis"])
    app.extensions["memory"] = MemoryGauge(app.extensions["redis"], settings.redis_memory_high_water)
    registry = CollectorRegistry()
    registry.register(InferenceCollector(app.extensions["redis"], app.extensions["workers"]))
    app.extensions["prometheus"] = registry

    from api import openapi, routes_chaos, routes_legacy, routes_ops, routes_v1, routes_v2

    for blueprint in (routes_v1.bp, routes_v2.bp, routes_legacy.bp, routes_ops.bp, routes_chaos.bp, openapi.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    register_auth(app, settings)
    if tracing.enabled():  # this process traces (api/wsgi.py): a span per HTTP request
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor().instrument_app(app)
    return app
