"""gunicorn entry point: `gunicorn -c api/gunicorn_conf.py api.wsgi:app`."""

from api import create_app
from inference.core.logging_setup import configure_api_logging

configure_api_logging()
app = create_app()
