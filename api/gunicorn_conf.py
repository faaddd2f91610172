"""gunicorn settings, from the same environment variables as everything else."""

from inference.core import heap_trim
from inference.core.settings import get_settings

_s = get_settings()

bind = f"{_s.api_host}:{_s.api_port}"
workers = _s.api_workers
# Threads: a request waiting on ?wait or the synchronous endpoints holds one while idle, and so
# does a client sending its request slowly; API_THREADS says how many (see its description).
worker_class = "gthread"
threads = _s.api_threads
# One listening socket per worker process, so the kernel spreads connections across them: with
# one shared socket, a few keep-alive clients (a load balancer, a benchmark) could all land on
# one process, and the API then ran at half speed (273 vs 598 submissions/s here).
reuse_port = True
# Longer than the longest wait the API allows, so gunicorn never kills a waiting request.
timeout = int(max(_s.max_wait_seconds, _s.sync_timeout)) + 30
graceful_timeout = 10
# gunicorn's default (2 s) closes idle connections that pooled clients still hold: a request
# sent just as the API closes one fails with "Remote end closed connection without response".
# An idle connection costs gthread a file descriptor, not a thread.
keepalive = _s.api_keepalive
# One line per HTTP request at LOG_LEVEL INFO or DEBUG; above that none: formatting and writing
# it took ~10 % of an API process's CPU at saturation.
accesslog = "-" if _s.log_level.upper() in ("DEBUG", "INFO") else None
loglevel = _s.log_level.lower()


def post_worker_init(worker):
    heap_trim.limit_arenas(_s.malloc_arena_max)
    heap_trim.start(_s.heap_trim_seconds)  # in each worker process: threads do not survive the fork
