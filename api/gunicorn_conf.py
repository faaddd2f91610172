"""gunicorn settings, from the same environment variables as everything else."""

from inference.settings import get_settings

_s = get_settings()

bind = f"{_s.api_host}:{_s.api_port}"
workers = _s.api_workers
# gevent: a greenlet per connection, so that idle, slow (a byte at a time) and long-polling
# clients hold no thread: with gthread, 200 of them and 150 `?wait` polls left /health/live
# waiting for a free thread (tests/test_hostile.py). The worker patches the standard library
# (sockets, threads, select) before it loads the app: redis-py, kombu and Celery's client cooperate.
worker_class = _s.api_server
worker_connections = _s.api_connections
threads = _s.api_threads  # gthread only
# One listening socket per worker process, so the kernel spreads connections across them: with
# one shared socket, a few keep-alive clients (a load balancer, a benchmark) could all land on
# one process, and the API then ran at half speed (273 vs 598 submissions/s here).
reuse_port = True
# Longer than the longest wait the API allows, so gunicorn never kills a waiting request.
timeout = int(max(_s.max_wait_seconds, _s.sync_timeout)) + 30
graceful_timeout = 10
# gunicorn's default (2 s) closes idle connections that pooled clients still hold: a request
# sent just as the API closes one fails with "Remote end closed connection without response".
# An idle connection costs a file descriptor and a sleeping greenlet.
keepalive = _s.api_keepalive
# One line per HTTP request at LOG_LEVEL INFO or DEBUG; above that none: formatting and writing
# it took ~10 % of an API process's CPU at saturation.
accesslog = "-" if _s.log_level.upper() in ("DEBUG", "INFO") else None
loglevel = _s.log_level.lower()
