"""`python -m inference.callbacks [NODE_NAME]`: the callbacks worker (the Procfile's `callbacks`),
a Celery worker of threads on the `callbacks` queue alone: deliveries wait on the network, not
the CPU, and a receiver that hangs holds one of its threads, none of a model worker's."""

from __future__ import annotations

import sys

from inference.core.keys import CALLBACK_QUEUE
from inference.core.settings import get_settings


def main() -> None:
    from inference.callbacks.delivery import app
    from inference.core import tracing

    if tracing.setup("callbacks"):  # each delivery a span in its request's trace
        tracing.instrument_celery()
    settings = get_settings()
    app.worker_main(["worker", "--queues", CALLBACK_QUEUE, "--pool", "threads", "--concurrency", str(settings.callback_concurrency),
                     "--loglevel", settings.log_level, "--hostname", sys.argv[1] if len(sys.argv) > 1 else "callbacks@%h"])


if __name__ == "__main__":
    main()
