"""The WSGI app the API's server loads in each of its processes (api/serve.py: `api.wsgi:app`)."""

from api import create_app, stop_signals
from inference.core import heap_trim, tracing
from inference.core.logging_setup import configure_process_logging
from inference.core.settings import get_settings

configure_process_logging()
tracing.setup("api")  # off unless OTEL_* variables ask for traces
# Loaded in each server process, after it started: its own heap trimming thread.
settings = get_settings()
heap_trim.bound_and_trim(settings.malloc_arena_max, settings.heap_trim_seconds)
stop_signals.relay_to_main_thread()  # before the server's own handlers; see its module
app = create_app()
