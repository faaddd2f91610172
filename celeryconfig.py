"""Celery settings (flat, lower-case names, as Celery reads them).

Values come from `inference.core.settings` (environment variables with documented defaults);
comments say why a value differs from Celery's default.
"""

from inference.core.redis_connection import broker_url as _redis_urls
from inference.core.result_backend import register_backend_names
from inference.core.settings import get_settings

_s = get_settings()

broker_url = _redis_urls(_s)  # REDIS_URL, or `sentinel://` URLs of REDIS_SENTINELS
# Celery's Redis backend, storing each result in one round trip (inference/core/result_backend.py).
register_backend_names()
result_backend = ("onetripsentinel+" if _s.redis_sentinels else "onetrip+") + _redis_urls(_s)
broker_connection_retry_on_startup = True
broker_connection_max_retries = None  # workers keep reconnecting until Redis is back
# Not worker_cancel_long_running_tasks_on_connection_loss: cancelling writes a RETRY state to
# the result backend, which is the same (unreachable) Redis, and the worker then died with
# "Unrecoverable error: ConnectionError" (seen with celery 5.6.3). A task running through a
# connection loss finishes, cannot ack, and runs once more after the visibility timeout; that
# second run is harmless (results are per request id) and counted as a duplicate.
worker_cancel_long_running_tasks_on_connection_loss = False

# Tasks are a public JSON contract that other services call with send_task: never pickle.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# Modules the worker imports: the task, and worker start-up (model loading, inspect command).
imports = ("inference.worker.tasks", "inference.worker.bootstep")
task_routes = ("inference.core.queues.route_task",)
task_default_queue = "celery"
task_create_missing_queues = True

# At-least-once delivery: ack after the task ran, requeue if its process died, reserve one
# message at a time so a busy worker does not hold requests that another could serve and so
# that queue priority is honoured.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# Not task_track_started: a request's claim (inference/core/keys.py) already says it is running, and
# the STARTED write would cost every task a Redis round trip before it starts.
task_track_started = False
# Not result_extended: it copies the task's arguments (the whole base64 image) into the result,
# twice per request (STARTED, then SUCCESS), and Redis keeps it for RESULT_EXPIRES.
result_extended = False
result_expires = _s.result_expires
# Writing a result while Redis restarts retries instead of failing the request.
result_backend_always_retry = True
result_backend_max_retries = 20

task_time_limit = _s.worker_timeout
task_soft_time_limit = max(1, _s.worker_timeout - 1)

# Strict order across a model's queues (high, then normal, then low) needs the "priority"
# strategy and kombu >= 5.7.0. Unacked messages come back after the visibility timeout;
# it must exceed any task's run time plus retry countdown, and is set alike everywhere.
# The restore sweep runs every restore_interval x throttle seconds (10 x 10 by default): with
# throttle 1, a dead worker's tasks return about VISIBILITY_TIMEOUT + RESTORE_INTERVAL after.
broker_transport_options: dict[str, object] = {
    "queue_order_strategy": "priority",
    # Messages are JSON already: kombu's default base64 layer on top made every 47 KB image a
    # 64 KB body, encoded by the API and decoded by the worker. Messages from clients that keep
    # the default still work: each message names its own body encoding.
    "body_encoding": None,
    "visibility_timeout": _s.visibility_timeout,
    "unacked_restore_interval": _s.restore_interval,
    "unacked_restore_throttle": 1,
    # Detect a silently dead connection (network partition) instead of blocking forever.
    "socket_keepalive": True,
    "socket_timeout": 15,
    "socket_connect_timeout": 5,
    "health_check_interval": 10,
}
result_backend_transport_options: dict[str, object] = {"visibility_timeout": _s.visibility_timeout}
if _s.redis_sentinels:  # which primary the Sentinels are asked for
    broker_transport_options["master_name"] = result_backend_transport_options["master_name"] = _s.redis_master_name
visibility_timeout = _s.visibility_timeout
# Back to a broker that returned (a Sentinel failover) within a second, not Celery's 2 + 4 s;
# and no gossip (workers consuming each other's heartbeats): inference/worker/consumer.py.
worker_consumer = "inference.worker.consumer:ServingConsumer"

# Model loading in worker_process_init takes longer than Celery's 4 s allowance.
worker_proc_alive_timeout = _s.worker_proc_alive_timeout
worker_concurrency = _s.worker_concurrency

# Task events let Flower and `celery events` show tasks; off until a monitor turns them on
# (Flower does, every 5 s, with FLOWER_ENABLE_EVENTS), as in Celery. Not task_send_sent_event: it would cost every
# submission one more Redis round trip; Flower lists a task from the moment a worker receives it.
worker_send_task_events = _s.worker_task_events
task_send_sent_event = False
worker_hijack_root_logger = False
