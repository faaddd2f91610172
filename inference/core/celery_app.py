"""The Celery application shared by workers, the API and Python clients (torch-free)."""

from __future__ import annotations

from celery import Celery
from click import Option

app = Celery("inference")
app.config_from_object("celeryconfig")

# `celery -A inference worker --model resnet18`: pins the worker to one model's queues.
app.user_options["worker"].add(
    Option(["--model"], default=None, help="Model this worker serves; it consumes only <model>.high, .normal, .low.")
)
