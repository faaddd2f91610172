"""Dynamic batching inside one worker process.

With the threads pool and concurrency N, up to N classify tasks run at once, each a normal
Celery task with its own ack, retries, events and result. Each hands its decoded picture to
the process's MicroBatcher and waits; the batcher closes a batch when it holds
`max_batch_size` items, `max_delay` seconds after the batch's first item arrived, or as soon as
no other request is on its way (a task announces itself with `expect()` before it checks its
request): waiting longer could only add latency, since a new request needs a free task thread,
and the threads are all waiting for this batch. Then it runs one forward pass and gives every
task its own predictions. Batch size 1 is the same code path (the batch closes at once).
Waiting items go in order of rank (a request's priority: a high request that reaches a busy
worker runs in its next batch, ahead of the lows already waiting there), then of arrival.
`run_batch` may return an exception in place of one item's output: that request alone fails
(a corrupt image found while decoding, say); a request that fails before it is submitted calls
`forget()`.

All model work (warm-up included) runs in the batcher's threads (one per model instance):
torch's OpenMP thread team belongs to the thread that uses it, and a second team (say, the main
thread's, left spinning after a warm-up) competes with the first for the same cores.

With several instances, `share_cores(n)` runs in an instance's thread before each batch, with
the number of instances about to run side by side (1 when this batch runs alone): the worker
gives a lone batch every core and each of n busy instances its share (adaptive intra-op threads).

When `run_batch` raises RunnerDied (the model's process died running the batch: see
inference/worker/model_host.py), each submission in the batch runs again `alone`: in a batch of
its own pictures, while no other batch runs, so a second death is held against it only; one that
died `max_crashes` times, the last one alone, fails with `give_up(crashes)`. A request whose
worker died while running it arrives `alone` too (tasks.py). A submission whose task stopped
waiting (its time limit) is dropped from the queue instead of run for nobody.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

log = logging.getLogger(__name__)


RUN_AGAIN_RANK = -1  # the items of a batch whose runner died run again before any other


class RunnerDied(Exception):
    """`run_batch` could not finish the batch because what runs it died: its items run again."""


class Submission:
    """Items submitted together (a request's pictures) and, once every one has run, what each
    gave. One event and one lock for all of them: a Future per picture (a Condition and a lock
    each) held a GPU worker's GIL ~20% of the time at 128 pictures per request."""

    def __init__(self, count: int, alone: bool = False, rank: int = 0):
        self._outcomes: list[Any] = [None] * count
        self._left = count
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.alone = alone
        self.rank = rank  # lower runs first (a request's priority); equal ranks in order of arrival
        self.abandoned = False  # its task stopped waiting: the batcher drops what is left of it
        self.crashes = 0  # batches of it whose runner died
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

    def outcomes(self, timeout: float | None = None, abandon: bool = False) -> list:
        """Each item's BatchOutcome, or the exception it failed with, in order. `abandon`: if
        they are not done within `timeout`, the caller gives up on them (none not yet run will be)."""
        if not self._done.wait(timeout):
            self.abandoned = abandon
            raise TimeoutError(f"the batcher did not finish {len(self._outcomes)} item(s) within {timeout} s")
        return list(self._outcomes)

    def result(self, timeout: float | None = None, abandon: bool = False) -> BatchOutcome:
        """The one item's BatchOutcome (or its exception, raised)."""
        (outcome,) = self.outcomes(timeout, abandon)
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
                 share_cores: Callable[[int], None] | None = None, max_crashes: int = 3,
                 give_up: Callable[[int], BaseException] | None = None):
        """`instances` threads run batches side by side (model instances, as Triton calls them):
        the first runs `initializer` (say, load and warm up the model), every other one
        `instance_initializer` (warm up in its own thread) before it serves. `share_cores`,
        `max_crashes` and `give_up`: see the module's docstring."""
        self.run_batch = run_batch
        self.max_batch_size = max(1, max_batch_size)
        self.max_delay = max(0.0, max_delay)
        self._initializer = initializer
        self._instances = max(1, instances)
        self._instance_initializer = instance_initializer
        self._share_cores = share_cores
        self._running = 0  # instances running a batch
        self._exclusive = False  # the running batch is an `alone` submission's
        self._ready = threading.Event()
        self._init_error: BaseException | None = None
        self._cond = threading.Condition()
        self._pending: list[tuple[int, int, BatchItem]] = []  # a heap of (rank, arrival, item)
        self._arrivals = itertools.count()
        self._expected = 0  # items announced (being checked) but not submitted yet
        self._batches = 0  # forward passes run so far
        self._max_crashes = max(1, max_crashes)
        self._give_up = give_up or (lambda crashes: RunnerDied(f"its batch's runner died {crashes} times"))
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

    def submit(self, payload: Any, expected: bool = False, alone: bool = False, rank: int = 0) -> Submission:
        return self.submit_many([payload], expected, alone, rank)

    def submit_many(self, payloads: list[Any], expected: bool = False, alone: bool = False, rank: int = 0) -> Submission:
        """Several items at once (a request's pictures): one lock and one wake-up of the batcher
        instead of one per item, which woke it 128 times for a request of 128 pictures."""
        submission = Submission(len(payloads), alone, rank)
        items = [BatchItem(payload, submission, n) for n, payload in enumerate(payloads)]
        with self._cond:
            for item in items:
                heapq.heappush(self._pending, (submission.rank, next(self._arrivals), item))
            if expected:
                self._expected -= len(items)
            self._cond.notify_all()
        return submission

    def run(self, payload: Any, timeout: float | None = None, expected: bool = False, alone: bool = False,
            rank: int = 0) -> BatchOutcome:
        """One item, waited for up to `timeout`, then given up on."""
        return self.submit(payload, expected, alone, rank).result(timeout, abandon=True)

    def _may_take(self, instance: int) -> bool:
        # Instance n takes a batch only while n others run one: at low load the same instance
        # (and its warm OpenMP team) serves every request, instead of each in turn.
        if not self._pending or self._running < instance or self._exclusive:
            return False
        return not (self._head().submission.alone and self._running)

    def _head(self) -> BatchItem:
        return self._pending[0][2]

    def _gather(self, instance: int) -> tuple[int, list[BatchItem], int, bool]:
        with self._cond:
            batch: list[BatchItem] = []
            while not batch:
                self._cond.wait_for(lambda: self._may_take(instance))
                if not self._head().submission.alone:
                    closes_at = time.monotonic() + self.max_delay  # counted from the batch's first request
                    while len(self._pending) < self.max_batch_size and self._expected > 0:
                        remaining = closes_at - time.monotonic()
                        if remaining <= 0:
                            break
                        self._cond.wait(remaining)
                batch = self._take_batch()
            self._batches += 1
            if self._pending:
                self._cond.notify_all()  # more than a batch waits: wake another instance for it
            self._running += 1
            self._exclusive = batch[0].submission.alone
            # Side by side soon: the running instances, this one included, and an idle one for
            # each batch still waiting.
            waiting_batches = -(-len(self._pending) // self.max_batch_size)
            return self._batches, batch, min(self._instances, self._running + waiting_batches), self._exclusive

    def _take_batch(self) -> list[BatchItem]:
        """The next batch off the queue: up to max_batch_size items, an `alone` submission's by
        themselves; abandoned items dropped."""
        batch: list[BatchItem] = []
        while self._pending and len(batch) < self.max_batch_size:
            item = self._head()
            if item.submission.abandoned:
                heapq.heappop(self._pending)
                continue
            if batch and item.submission is not batch[0].submission and (item.submission.alone or batch[0].submission.alone):
                break
            batch.append(heapq.heappop(self._pending)[2])
        return batch

    def _done(self) -> None:
        with self._cond:
            self._running -= 1
            self._exclusive = False
            self._cond.notify_all()  # an `alone` submission may wait for every batch to end

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
            number, batch, side_by_side, alone = self._gather(instance)
            started = time.perf_counter()
            try:
                if self._share_cores is not None:
                    self._share_cores(side_by_side)
                outputs = self.run_batch([item.payload for item in batch])
            except RunnerDied:
                self._run_again(batch, alone)
                continue
            except BaseException as exc:  # the whole forward pass failed: every request learns why
                for item in batch:
                    item.submission._set(item.position, exc)
                continue
            finally:
                self._done()
            seconds = time.perf_counter() - started
            for item, output in zip(batch, outputs):
                # An exception fails this item alone (say, a corrupt image).
                item.submission._set(item.position, output if isinstance(output, BaseException)
                                     else BatchOutcome(output, len(batch), seconds, number))

    def _run_again(self, batch: list[BatchItem], alone: bool) -> None:
        """A batch whose runner died: each submission in it queued again at the front, alone,
        or failed if it died `max_crashes` times, the last time alone (see the module's docstring)."""
        again: list[BatchItem] = []
        for submission in dict.fromkeys(item.submission for item in batch):
            submission.crashes += 1
            submission.alone = True
            if alone and submission.crashes >= self._max_crashes:
                log.error("a request's batch died %d times, the last time alone: it fails", submission.crashes)
                failure = self._give_up(submission.crashes)
                for item in batch:
                    if item.submission is submission:
                        submission._set(item.position, failure)
            elif not submission.abandoned:
                again.extend(item for item in batch if item.submission is submission)
        with self._cond:
            for item in again:  # ahead of everything else, in their order
                heapq.heappush(self._pending, (RUN_AGAIN_RANK, next(self._arrivals), item))
            self._cond.notify_all()
