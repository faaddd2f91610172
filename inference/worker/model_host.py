"""The model of a threads- or solo-pool worker, in a child process of its own.

The threads pool runs many requests in one process and batches them (inference/worker/batching.py);
the model used to run in that process too, so a picture that crashed the decoder or the model took
the Celery consumer down with it: every request the worker held came back only after the
visibility timeout, and a message that Redis handed to the dying consumer was lost (kombu's
transport pops it before recording it as unacknowledged). Here the consumer's batcher forms the
batches and sends them to this child, which decodes and classifies them with the same code a
prefork pool process runs (`process.load_model_in_process`). When the child dies (a crash, an
out-of-memory kill) or a batch outlasts twice WORKER_TIMEOUT (the child is killed, as prefork's
hard time limit would), the batch fails with `ModelProcessDied`, the host starts a fresh child,
and the batcher runs each request of that batch again by itself: a picture that kills the model
each time fails alone as `poison_message`; the others succeed. Nothing is redelivered.

    parent (Celery consumer, task threads, MicroBatcher) --batch--> child (model, decoders)
                 one socket per model instance, pickled (picture bytes, top_k) lists
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from inference.core.settings import get_settings, use_settings
from inference.worker.batching import RunnerDied

log = logging.getLogger(__name__)


class ModelProcessDied(RunnerDied):
    """The model's process ended (or was ended) while it ran a batch."""


class _Child:
    """One started child: its process and a connection per model instance."""

    def __init__(self, process: subprocess.Popen, connections: list[Connection]):
        self.process = process
        self.connections = connections
        self.free = list(range(len(connections)))  # used last in, first out: at low load one warm instance
        self.lock = threading.Lock()

    def take(self) -> int:
        with self.lock:
            return self.free.pop()

    def give_back(self, channel: int) -> None:
        with self.lock:
            self.free.append(channel)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for connection in self.connections:
            connection.close()


class ModelHost:
    """The batcher's `run_batch` for a worker whose model runs in a child process."""

    def __init__(self, instances: int, report_dir: str | None, hang_seconds: float, start_timeout: float):
        self.instances = instances
        self.report_dir = report_dir
        self.hang_seconds = hang_seconds
        self.start_timeout = start_timeout
        self.info: dict[str, Any] = {}
        self.starts = 0
        self._child: _Child | None = None
        self._restart_lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._child.process.pid if self._child else None

    def start(self) -> None:
        """Start the child and wait until its model is loaded and warm (ModelProcessDied if not)."""
        ours, theirs = zip(*(socket.socketpair() for _ in range(self.instances)))
        fds = [s.fileno() for s in theirs]
        process = subprocess.Popen([sys.executable, "-m", "inference.worker.model_host", ",".join(map(str, fds))], pass_fds=fds)
        for s in theirs:
            s.close()
        child = _Child(process, [Connection(s.detach()) for s in ours])
        first = child.connections[0]
        try:
            first.send((get_settings(), self.report_dir))
            if not first.poll(self.start_timeout):
                raise ModelProcessDied(f"the model process did not load its model within {self.start_timeout} s")
            outcome, value = first.recv()
        except (EOFError, OSError) as exc:
            child.kill()
            raise ModelProcessDied(f"the model process ended while loading its model (exit {process.poll()})") from exc
        except ModelProcessDied:
            child.kill()
            raise
        if outcome != "ready":
            child.kill()
            raise value
        self.info, self._child = value, child
        self.starts += 1

    def run(self, items: list) -> list:
        """One batch through the child: each item's output, or ModelProcessDied for all of them."""
        with self._restart_lock:  # a batch waits while a new child starts, rather than fail
            child = self._child
        if child is None:
            raise ModelProcessDied("the model process is not running")
        channel = child.take()
        connection = child.connections[channel]
        try:
            connection.send(items)
            if not connection.poll(self.hang_seconds):
                log.critical("a batch has run for %.0f s, past twice WORKER_TIMEOUT: killing the model process %s",
                             self.hang_seconds, child.process.pid)
                child.process.kill()
                raise ModelProcessDied(f"the batch ran past {self.hang_seconds:.0f} s; its model process was killed")
            outputs = connection.recv()
        except (EOFError, OSError) as exc:
            self._restart(child)
            raise ModelProcessDied(f"the model process died running this batch (exit {child.process.poll()})") from exc
        except ModelProcessDied:
            self._restart(child)
            raise
        finally:
            child.give_back(channel)
        return outputs

    def _restart(self, dead: _Child) -> None:
        """A fresh child for a dead one, once, however many batches saw it die."""
        with self._restart_lock:
            if self._child is not dead:
                return
            dead.kill()
            log.error("the model process %s ended (exit %s); starting a new one", dead.process.pid, dead.process.returncode)
            while True:
                try:
                    return self.start()
                except Exception as exc:  # say, the model's files gone: keep trying, as a supervisor would
                    log.error("could not start the model process: %s; trying again in 2 s", exc)
                    time.sleep(2)


# The child ------------------------------------------------------------------------------------


def serve(connections: list[Connection]) -> None:
    """Load the model as a prefork pool process does, then run what each connection sends."""
    from inference.worker import process
    from inference.worker.batching import BatchOutcome

    settings, report_dir = connections[0].recv()
    use_settings(settings)
    process.report_dir = report_dir
    try:
        process.load_model_in_process()
    except BaseException as exc:
        connections[0].send(("failed", _sendable(exc)))
        raise
    gatherer = process.batcher()

    def through_the_batcher(items: list) -> list:
        gatherer.expect(len(items))
        return [o.output if isinstance(o, BatchOutcome) else o for o in gatherer.submit_many(items, expected=True).outcomes()]

    # The worker's batcher sent a batch ready to run. OpenVINO runs it in the thread that received
    # it; handing it to this process's batcher and back cost a lone request ~0.5 ms here (two
    # thread switches). A PyTorch model keeps to the batcher's thread (its OpenMP team).
    run_batch = process.decode_and_classify if process.runs_in_any_thread() else through_the_batcher

    def answer(connection: Connection) -> None:
        while True:
            try:
                items = connection.recv()
            except (EOFError, OSError):
                os._exit(0)  # the worker is gone: so is its model
            try:
                outcomes = run_batch(items)  # each item's output, or the exception that failed it alone
            except BaseException as exc:  # the whole batch failed: each of its requests learns why
                outcomes = [exc] * len(items)
            connection.send([_sendable(o) if isinstance(o, BaseException) else o for o in outcomes])

    threads = [threading.Thread(target=answer, args=(c,), name=f"channel-{n}", daemon=True) for n, c in enumerate(connections)]
    for thread in threads:
        thread.start()
    connections[0].send(("ready", process.loaded_model().info))
    for thread in threads:
        thread.join()


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: end of file alone ends this process
        pass
    if os.getppid() == 1:  # the worker died before that took effect
        os._exit(0)


def _sendable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling (ours do), else a RuntimeError that says what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def main() -> None:
    from inference.core.logging_setup import configure_process_logging

    # A signal to the whole process group (Ctrl-C, honcho, a container's stop) must not end the
    # model under a worker that is finishing its requests: this process ends when the worker
    # does (end of file on its sockets), or with it if the worker is killed (Linux's parent-death
    # signal).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    configure_process_logging()
    serve([Connection(int(fd)) for fd in sys.argv[1].split(",")])


if __name__ == "__main__":
    main()

