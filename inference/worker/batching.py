"""Dynamic batching inside one worker process.

With the threads pool and concurrency N, up to N classify tasks run at once, each a normal
Celery task with its own ack, retries, events and result. Each hands its decoded picture to
the process's MicroBatcher and waits; the batcher closes a batch when it holds
`max_batch_size` items, `max_delay` seconds after the batch's first item arrived, or as soon as
no other request is on its way (a task announces itself with `expect()` before it checks its
request): waiting longer could only add latency, since a new request needs a free task thread,
and the threads are all waiting for this batch. Then it runs one forward pass and gives every
task its own predictions. Batch size 1 is the same code path (the batch closes at once).
`run_batch` may return an exception in place of one item's output: that request alone fails
(a corrupt image found while decoding, say); a request that fails before it is submitted calls
`forget()`.

All model work (warm-up included) runs in the batcher's threads (one per model instance):
torch's OpenMP thread team belongs to the thread that uses it, and a second team (say, the main
thread's, left spinning after a warm-up) competes with the first for the same cores.

With several instances, `share_cores(n)` runs in an instance's thread before each batch, with
the number of instances about to run side by side (1 when this batch runs alone): the worker
gives a lone batch every core and each of n busy instances its share (adaptive intra-op threads).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

log = logging.getLogger(__name__)


class Submission:
    """Items submitted together (a request's pictures) and, once every one has run, what each
    gave. One event and one lock for all of them: a Future per picture (a Condition and a lock
    each) held a GPU worker's GIL ~20% of the time at 128 pictures per request."""

    def __init__(self, count: int):
        self._outcomes: list[Any] = [None] * count
        self._left = count
        self._lock = threading.Lock()
        self._done = threading.Event()
        if not count:
            self._done.set()

    def _set(self, index: int, outcome: Any) -> None:
        self._outcomes[index] = outcome
        with self._lock:
            self._left -= 1
            if not self._left:
                self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def outcomes(self, timeout: float | None = None) -> list:
        """Each item's BatchOutcome, or the exception it failed with, in order."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"the batcher did not finish {len(self._outcomes)} item(s) within {timeout} s")
        return list(self._outcomes)

    def result(self, timeout: float | None = None) -> BatchOutcome:
        """The one item's BatchOutcome (or its exception, raised)."""
        (outcome,) = self.outcomes(timeout)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class BatchItem(NamedTuple):
    payload: Any
    submission: Submission
    position: int  # in its submission


@dataclass
class BatchOutcome:
    output: Any
    batch_size: int
    compute_seconds: float
    batch_number: int = 0  # which forward pass of this batcher (a request's images may span several)


class MicroBatcher:
    def __init__(self, run_batch: Callable[[list[Any]], list[Any]], max_batch_size: int, max_delay: float,
                 initializer: Callable[[], None] | None = None, instances: int = 1,
                 instance_initializer: Callable[[], None] | None = None,
                 share_cores: Callable[[int], None] | None = None, hang_seconds: float | None = None,
                 on_hang: Callable[[float], None] | None = None):
        """`instances` threads run batches side by side (model instances, as Triton calls them):
        the first runs `initializer` (say, load and warm up the model), every other one
        `instance_initializer` (warm up in its own thread) before it serves. `share_cores`: see
        the module's docstring. `hang_seconds`: a batch still running after that long calls
        `on_hang(its age)`, by default the end of the process (see `exit_on_hang`)."""
        self.run_batch = run_batch
        self.max_batch_size = max(1, max_batch_size)
        self.max_delay = max(0.0, max_delay)
        self._initializer = initializer
        self._instances = max(1, instances)
        self._instance_initializer = instance_initializer
        self._share_cores = share_cores
        self._running = 0  # instances running a batch
        self._ready = threading.Event()
        self._init_error: BaseException | None = None
        self._cond = threading.Condition()
        self._pending: deque[BatchItem] = deque()
        self._expected = 0  # items announced (being checked) but not submitted yet
        self._batches = 0  # forward passes run so far
        self._batch_started: dict[int, float] = {}  # instance -> when its running batch started (monotonic)
        if hang_seconds:
            threading.Thread(target=self._watch, args=(hang_seconds, on_hang or exit_on_hang), name="batch-watchdog", daemon=True).start()
        self._thread = threading.Thread(target=self._start, name="micro-batcher-0", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the initializer (e.g. the model load and warm-up) ran in the batcher's thread."""
        if not self._ready.wait(timeout):
            raise TimeoutError("the batcher did not start in time")
        if self._init_error is not None:
            raise self._init_error

    def expect(self, count: int = 1) -> None:
        """Items are on their way: a batch that is not full waits for them (up to max_delay)."""
        with self._cond:
            self._expected += count

    def forget(self, count: int = 1) -> None:
        """Expected items will not come (they failed before reaching the batcher)."""
        if count:
            with self._cond:
                self._expected -= count
                self._cond.notify_all()

    def submit(self, payload: Any, expected: bool = False) -> Submission:
        return self.submit_many([payload], expected)

    def submit_many(self, payloads: list[Any], expected: bool = False) -> Submission:
        """Several items at once (a request's pictures): one lock and one wake-up of the batcher
        instead of one per item, which woke it 128 times for a request of 128 pictures."""
        submission = Submission(len(payloads))
        items = [BatchItem(payload, submission, n) for n, payload in enumerate(payloads)]
        with self._cond:
            self._pending.extend(items)
            if expected:
                self._expected -= len(items)
            self._cond.notify_all()
        return submission

    def run(self, payload: Any, timeout: float | None = None, expected: bool = False) -> BatchOutcome:
        return self.submit(payload, expected).result(timeout)

    def _gather(self, instance: int) -> tuple[int, list[BatchItem], int]:
        with self._cond:
            # Instance n takes a batch only while n others run one: at low load the same instance
            # (and its warm OpenMP team) serves every request, instead of each in turn.
            self._cond.wait_for(lambda: self._pending and self._running >= instance)
            closes_at = time.monotonic() + self.max_delay  # counted from the batch's first request
            while len(self._pending) < self.max_batch_size and self._expected > 0:
                remaining = closes_at - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._batches += 1
            batch = [self._pending.popleft() for _ in range(min(self.max_batch_size, len(self._pending)))]
            if self._pending:
                self._cond.notify_all()  # more than a batch waits: wake another instance for it
            self._running += 1
            # Side by side soon: the running instances, this one included, and an idle one for
            # each batch still waiting.
            waiting_batches = -(-len(self._pending) // self.max_batch_size)
            return self._batches, batch, min(self._instances, self._running + waiting_batches)

    def _done(self) -> None:
        with self._cond:
            self._running -= 1

    def _start(self) -> None:
        """Thread 0: initialise, start the other instances, wait until each is warm, serve."""
        errors: list[BaseException] = []
        try:
            if self._initializer is not None:
                self._initializer()
            warmed = [threading.Event() for _ in range(self._instances - 1)]
            for n, warm in enumerate(warmed, start=1):
                threading.Thread(target=self._warm_then_serve, args=(errors, warm, n), name=f"micro-batcher-{n}", daemon=True).start()
            for warm in warmed:
                warm.wait()
        except BaseException as exc:
            errors.append(exc)
        self._init_error = errors[0] if errors else None
        self._ready.set()
        if self._init_error is None:
            self._serve(0)

    def _warm_then_serve(self, errors: list[BaseException], warm: threading.Event, instance: int) -> None:
        try:
            if self._instance_initializer is not None:
                self._instance_initializer()
        except BaseException as exc:
            errors.append(exc)
            return
        finally:
            warm.set()
        self._ready.wait()
        if self._init_error is None:
            self._serve(instance)

    def _serve(self, instance: int) -> None:
        while True:
            number, batch, side_by_side = self._gather(instance)
            started = time.perf_counter()
            self._batch_started[instance] = time.monotonic()
            try:
                if self._share_cores is not None:
                    self._share_cores(side_by_side)
                outputs = self.run_batch([item.payload for item in batch])
            except BaseException as exc:  # the whole forward pass failed: every request learns why
                for item in batch:
                    item.submission._set(item.position, exc)
                continue
            finally:
                self._batch_started.pop(instance, None)
                self._done()
            seconds = time.perf_counter() - started
            for item, output in zip(batch, outputs):
                # An exception fails this item alone (say, a corrupt image).
                item.submission._set(item.position, output if isinstance(output, BaseException)
                                     else BatchOutcome(output, len(batch), seconds, number))

    def _watch(self, hang_seconds: float, on_hang: Callable[[float], None]) -> None:
        """The threads pool's hard time limit: a batch that never ends (a forward pass or a decoder
        stuck) would hold every later request of this worker, each failing as `timeout` while the
        batcher stays stuck; prefork's pool kills such a child, this kills the process."""
        while True:
            time.sleep(min(1.0, hang_seconds / 4))
            now = time.monotonic()
            oldest = max((now - started for started in list(self._batch_started.values())), default=0.0)
            if oldest > hang_seconds:
                on_hang(oldest)
                return


def exit_on_hang(age: float) -> None:
    """End the worker process at once (no clean shutdown can finish while a batch is stuck): its
    supervisor (`inference.cli.launch --restart`, Compose, systemd) starts it again, and its
    unacknowledged requests are delivered again (that a stuck one then ends as `poison_message`
    is proven for prefork only: docs/security.md)."""
    log.critical("a batch has run for %.0f s, past twice WORKER_TIMEOUT: ending this worker process to free it", age)
    logging.shutdown()
    os._exit(70)
