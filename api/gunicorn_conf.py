"""gunicorn settings, from the same environment variables as everything else."""

from inference.settings import get_settings

_s = get_settings()

bind = f"{_s.api_host}:{_s.api_port}"
workers = _s.api_workers
# Threads: a request waiting on ?wait or the synchronous endpoints holds one while idle.
worker_class = "gthread"
threads = _s.api_threads
# Longer than the longest wait the API allows, so gunicorn never kills a waiting request.
timeout = int(max(_s.max_wait_seconds, _s.sync_timeout)) + 30
graceful_timeout = 10
accesslog = "-"
loglevel = _s.log_level.lower()
