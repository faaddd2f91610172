"""Log format for API and workers: LOG_LEVEL, and LOG_FORMAT=text|json.

Worker lines written while a task runs carry its request id (the task id is the request id),
so one id follows a request from the API's log into the worker's.
"""

from __future__ import annotations

import json
import logging
import time

from inference.core.settings import get_settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
TASK_TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s request_id=%(task_id)s %(name)s: %(message)s"


def current_request_id() -> str | None:
    from celery._state import get_current_task

    task = get_current_task()
    return task.request.id if task is not None and task.request is not None else None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or current_request_id()
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def formatter(for_tasks: bool = False) -> logging.Formatter:
    if get_settings().log_format == "json":
        return JsonFormatter()
    if for_tasks:
        from celery.app.log import TaskFormatter

        return TaskFormatter(TASK_TEXT_FORMAT)
    return logging.Formatter(TEXT_FORMAT)


def configure_process_logging() -> None:
    """For processes that Celery does not set up: the API, a worker's model process."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(get_settings().log_level.upper())
