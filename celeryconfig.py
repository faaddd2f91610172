"""Celery settings (flat, lower-case names, as Celery reads them).

Values come from `inference.settings` (environment variables with documented defaults);
comments say why a value differs from Celery's default.
"""

from inference.settings import get_settings

_s = get_settings()

broker_url = _s.redis_url
result_backend = _s.redis_url
broker_connection_retry_on_startup = True

# Tasks are a public JSON contract that other services call with send_task: never pickle.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# Modules the worker imports: the task, and worker start-up (model loading, inspect command).
imports = ("inference.tasks", "inference.worker")
task_routes = ("inference.queues.route_task",)
task_default_queue = "celery"
task_create_missing_queues = True

# At-least-once delivery: ack after the task ran, requeue if its process died, reserve one
# message at a time so a busy worker does not hold requests that another could serve and so
# that queue priority is honoured.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_track_started = True
result_extended = True
result_expires = _s.result_expires

task_time_limit = _s.worker_timeout
task_soft_time_limit = max(1, _s.worker_timeout - 5)

# Strict order across a model's queues (high, then normal, then low) needs the "priority"
# strategy and kombu >= 5.7.0. Unacked messages come back after the visibility timeout;
# it must exceed any task's run time plus retry countdown, and is set alike everywhere.
broker_transport_options = {
    "queue_order_strategy": "priority",
    "visibility_timeout": _s.visibility_timeout,
}
result_backend_transport_options = {"visibility_timeout": _s.visibility_timeout}
visibility_timeout = _s.visibility_timeout

# Model loading in worker_process_init takes longer than Celery's 4 s allowance.
worker_proc_alive_timeout = _s.worker_proc_alive_timeout
worker_concurrency = _s.worker_concurrency

# Events let Flower and `celery events` show workers and tasks.
worker_send_task_events = True
task_send_sent_event = True
worker_hijack_root_logger = False
