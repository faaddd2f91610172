"""Image-classification inference served by Celery workers.

    inference/core/     what every process needs: settings, errors, Redis keys, queues, the
                        model registry, picture checks, the Celery app (no torch, no worker code)
    inference/submit/   submitting requests, reading their status, waiting: the API and clients
    inference/worker/   what runs only in a worker: the bootstep, the task, batching, the model
    inference/cli/      commands: launch a worker, the embedded Redis, Flower, weights

`celery -A inference worker --model resnet18` finds the app here. It is looked up lazily, with
the worker's bootstep and control commands, so that importing the client or the API loads no
worker code.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "app":  # celery -A inference: the app, with `--model` and `inspect model_info` registered
        from inference.core.celery_app import app
        from inference.worker import bootstep  # noqa: F401  (registers the bootstep and control commands)

        return app
    raise AttributeError(f"module 'inference' has no attribute {name!r}")


__all__ = ["app"]
