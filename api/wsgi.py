"""gunicorn entry point: `gunicorn -c api/gunicorn_conf.py api.wsgi:app`."""

from api import create_app
from inference.core import tracing
from inference.core.logging_setup import configure_process_logging

configure_process_logging()
tracing.setup("api")  # off unless OTEL_* variables ask for traces
app = create_app()
