"""The API's HTTP server: `python -m api.serve` (what the Procfile, Compose and the tests start).

granian (HTTP in Rust) serves the Flask app (api/wsgi.py) over WSGI in API_WORKERS processes,
each running the app in up to API_THREADS threads. Against gunicorn's gthread workers on the
2-core build machine it cost 0.6 ms less CPU a submission (1.4 against 2.1 ms; /health/live 0.2
against 0.65) and answered one 0.5 ms sooner: connections are read and written by the Rust side,
where gthread handed each request from its main thread to a pool thread in Python. Idle
connections and headers being read hold no thread; a body reaches the app as a stream
(MAX_CONTENT_LENGTH is checked before it is read), and a client trickling one holds a thread.
The processes share one listening socket (granian has no SO_REUSEPORT, which gunicorn was set to
use): two keep-alive clients may land on one process, which still took 455-550 submissions/s
there against gunicorn's 346-397 with its two.
"""

from __future__ import annotations

import logging
import os

import granian._signals
from granian._granian import WorkerSignal
from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.mp import MPServer

from inference.core.settings import Settings, get_settings

APP = "api.wsgi:app"
# A worker that ends (killed, out of memory) is started again, as gunicorn's arbiter did.
RESPAWN_SECONDS = 1.0
# Seconds a worker gets to finish its requests once told to stop (gunicorn's graceful_timeout).
GRACEFUL_SECONDS = 10


def logging_config() -> dict:
    """granian's own lines and, at LOG_LEVEL INFO or DEBUG, one access line per request, in the
    project's format (LOG_FORMAT); above INFO no access lines: writing them cost ~10 % of an API
    process's CPU at saturation."""
    handler = {"class": "logging.StreamHandler", "formatter": "project", "stream": "ext://sys.stderr", "filters": ["threads"]}
    return {
        "formatters": {"project": {"()": "inference.core.logging_setup.formatter"}},
        "filters": {"threads": {"()": WithoutThreadsAdvice}},
        "handlers": {"project": handler},
        "loggers": {
            "_granian": {"handlers": ["project"], "propagate": False},
            "granian.access": {"handlers": ["project"], "level": "INFO", "propagate": False},
        },
    }


class WithoutThreadsAdvice(logging.Filter):
    """granian advises against more Python threads than 2 x cores + 1 at every start: the API's
    threads wait (long polls, Redis), they do not compute, and API_THREADS says why it has 256."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Configuration allows spawning up to")


class Server(MPServer):
    """granian's server, less one way to lose a stop signal.

    A worker is forked with the main process's handlers for SIGINT and SIGTERM and puts in its
    own only once the app is loaded (~1 s: api.wsgi's imports). A stop signal in between (Ctrl-C
    to the whole process group, or the main process's SIGTERM as it stops its workers) ran the
    main process's handler in the worker's copy of the server, where it changed nothing: the
    worker went on to serve until it was killed GRACEFUL_SECONDS later (6 stops in 10 when the
    signal came right after the first answer). Such a worker has served nothing yet, so it ends
    at once.
    """

    def signal_handler_interrupt(self, *args, **kwargs):
        if os.getpid() != self.pid:  # a worker that is still loading the app
            os._exit(0)  # nothing to finish; no logging in a handler that interrupts any code
        super().signal_handler_interrupt(*args, **kwargs)


def set_sync_signals_once() -> WorkerSignal:
    """granian's `set_sync_signals` for a WSGI worker, whose handler passes on the first stop
    signal only. Its event holds one signal until the worker starts serving and reads it; a
    second `set()` before then blocked the worker's main thread inside the handler for good.
    A worker that had loaded the app and was about to serve got two: Ctrl-C's SIGINT to the
    whole process group, then the main process's SIGTERM as it stopped its workers. It was
    killed GRACEFUL_SECONDS later (one stop in many, on a loaded machine)."""
    event = WorkerSignal()
    passed: list[int] = []

    def handler(signum, frame) -> None:  # runs in the main thread only, one at a time
        if not passed:
            passed.append(signum)
            event.set()

    granian._signals.set_main_signals(handler)
    return event


granian._signals.set_sync_signals = set_sync_signals_once  # looked up by each worker as it starts


def access_log(settings: Settings) -> bool:
    return settings.api_access_log and settings.log_level.upper() in ("DEBUG", "INFO")


def server(settings: Settings | None = None) -> Server:
    settings = settings or get_settings()
    # Processes, not threads: one GIL each (granian.Granian is this class on a Python with a GIL).
    return Server(
        APP,
        address=settings.api_host,
        port=settings.api_port,
        interface=Interfaces.WSGI,
        workers=settings.api_workers,
        # A request being served holds one, a long poll (`?wait`) too; reading and writing hold none.
        blocking_threads=settings.api_threads,
        blocking_threads_idle_timeout=settings.api_thread_idle_seconds,
        http=HTTPModes.http1,
        websockets=False,
        # An idle keep-alive connection is closed after API_KEEPALIVE s (the timeout runs until
        # the next request's headers are in), as are headers sent slower than that.
        http1_settings=HTTP1Settings(header_read_timeout=settings.api_keepalive * 1000),
        log_level=LogLevels(settings.log_level.lower()),
        log_dictconfig=logging_config(),
        log_access=access_log(settings),
        respawn_failed_workers=True,
        respawn_interval=RESPAWN_SECONDS,
        workers_kill_timeout=GRACEFUL_SECONDS,
    )


def main() -> None:
    server().serve()


if __name__ == "__main__":
    main()
