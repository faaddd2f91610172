"""Dynamic batching inside one worker process.

With the threads pool and concurrency N, up to N classify tasks run at once, each a normal
Celery task with its own ack, retries, events and result. Each hands its decoded picture to
the process's MicroBatcher and waits; the batcher closes a batch when it holds
`max_batch_size` items or `max_delay` seconds after the batch's first item arrived, runs one
forward pass, and gives every task its own predictions. Batch size 1 is the same code path
(the batch closes at once). A bad image never reaches the batcher: it fails in its own task.

All model work (warm-up included) runs in the batcher's one thread: torch's OpenMP thread team
belongs to the thread that uses it, and a second team (say, the main thread's, left spinning
after a warm-up) competes with the first for the same cores.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BatchItem:
    payload: Any
    future: Future = field(default_factory=Future)


@dataclass
class BatchOutcome:
    output: Any
    batch_size: int
    compute_seconds: float


class MicroBatcher:
    def __init__(self, run_batch: Callable[[list[Any]], list[Any]], max_batch_size: int, max_delay: float,
                 initializer: Callable[[], None] | None = None):
        self.run_batch = run_batch
        self.max_batch_size = max(1, max_batch_size)
        self.max_delay = max(0.0, max_delay)
        self._initializer = initializer
        self._ready = threading.Event()
        self._init_error: BaseException | None = None
        self._queue: queue.Queue[BatchItem] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the initializer (e.g. the warm-up) ran in the batcher's thread."""
        if not self._ready.wait(timeout):
            raise TimeoutError("the batcher did not start in time")
        if self._init_error is not None:
            raise self._init_error

    def submit(self, payload: Any) -> Future:
        item = BatchItem(payload)
        self._queue.put(item)
        return item.future

    def run(self, payload: Any, timeout: float | None = None) -> BatchOutcome:
        return self.submit(payload).result(timeout)

    def _gather(self) -> list[BatchItem]:
        batch = [self._queue.get()]
        closes_at = time.monotonic() + self.max_delay  # counted from the batch's first request
        while len(batch) < self.max_batch_size:
            remaining = closes_at - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _loop(self) -> None:
        try:
            if self._initializer is not None:
                self._initializer()
        except BaseException as exc:
            self._init_error = exc
        finally:
            self._ready.set()
        while True:
            batch = self._gather()
            started = time.perf_counter()
            try:
                outputs = self.run_batch([item.payload for item in batch])
            except BaseException as exc:  # the whole forward pass failed: every request learns why
                for item in batch:
                    item.future.set_exception(exc)
                continue
            seconds = time.perf_counter() - started
            for item, output in zip(batch, outputs):
                item.future.set_result(BatchOutcome(output, len(batch), seconds))
