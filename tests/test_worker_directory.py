"""The API's view of the live workers (api/workers.py), against the suite's real workers: the API's
processes share one `model_info` broadcast a turn through Redis instead of each asking every
worker on its own."""

from __future__ import annotations

import time

import pytest
import redis as redis_lib

from api import workers as directory_module
from api.workers import BROADCASTER_KEY, SNAPSHOT_KEY, WorkerDirectory
from tests.helpers import MODELS


@pytest.fixture
def shared(redis_url, monkeypatch, system):
    """A database of the suite's server of its own for the shared view (the workers answer on the
    suite's), and a count of this process's broadcasts (each still the real one)."""
    server = redis_url.rsplit("/", 1)[0]  # the URL's own database would win over a db= argument
    db = redis_lib.Redis.from_url(f"{server}/4")
    db.delete(SNAPSHOT_KEY, BROADCASTER_KEY)
    broadcasts = []
    real = directory_module.fetch_workers
    monkeypatch.setattr(directory_module, "fetch_workers", lambda: broadcasts.append(time.monotonic()) or real())
    yield db, broadcasts
    db.delete(SNAPSHOT_KEY, BROADCASTER_KEY)


def served_models(directory: WorkerDirectory) -> set[str]:
    return set(directory.live_models())


def test_api_processes_share_one_broadcast_a_turn(shared):
    db, broadcasts = shared
    first, second = (WorkerDirectory(1.0, db) for _ in range(2))  # two API processes, WORKER_CACHE_SECONDS=1
    try:
        assert served_models(first) == set(MODELS) and len(broadcasts) == 1
        assert served_models(second) == set(MODELS) and len(broadcasts) == 1  # the first one's replies, read from Redis
        started = time.monotonic()
        time.sleep(5)
        watched = time.monotonic() - started
        # A turn: the snapshot kept a second, then a broadcast's REPLY_TIMEOUT. Each broadcasting
        # on its own, both would, twice as often.
        turns = len(broadcasts) - 1
        assert 2 <= turns <= watched / (1.0 + directory_module.REPLY_TIMEOUT) + 1, broadcasts
        for directory in (first, second):
            assert served_models(directory) == set(MODELS)
            assert directory.age < 1.0 + directory_module.REPLY_TIMEOUT + 0.6  # kept fresh all along
        # A view wanted fresher than the shared one (a model seen with no worker) asks at once.
        second.close()
        first.close()  # their background turns stop (one under way ends within REPLY_TIMEOUT)
        time.sleep(directory_module.REPLY_TIMEOUT + 0.3)
        before = len(broadcasts)
        first.refresh(max_age=0)
        assert len(broadcasts) == before + 1 and first.age < 0.5
    finally:
        first.close()
        second.close()


def test_a_snapshot_that_is_not_one_is_replaced(shared):
    db, broadcasts = shared
    for garbage in (b"not json", b"[]", b'{"workers": "all of them", "kept_ms": 1000}', b'{"workers": [{"ready": 1}], "kept_ms": 1000}'):
        db.set(SNAPSHOT_KEY, garbage, px=60_000)  # say, written by something else under our key
        directory = WorkerDirectory(1.0, db)
        try:
            assert served_models(directory) == set(MODELS), garbage
            assert db.pttl(SNAPSHOT_KEY) <= 1000  # written anew, kept a turn
        finally:
            directory.close()
    assert len(broadcasts) == 4


def test_broadcasts_one_after_another_or_at_once_each_hear_every_worker(system):
    # Back to back, every other one heard nothing (kombu 5.7); two threads at once drained each
    # other's replies from the process's one reply queue.
    from concurrent.futures import ThreadPoolExecutor

    in_turn = [directory_module.fetch_workers() for _ in range(4)]
    with ThreadPoolExecutor(3) as pool:
        at_once = list(pool.map(lambda _: directory_module.fetch_workers(), range(3)))
    for heard in in_turn + at_once:
        assert {worker["model"] for worker in heard} >= set(MODELS)


def test_with_the_shared_view_out_of_reach_a_process_asks_the_workers_itself(shared):
    _, broadcasts = shared
    from tests.system import free_port

    nowhere = redis_lib.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)  # say, Redis between primaries
    directory = WorkerDirectory(1.0, nowhere)
    try:
        assert served_models(directory) == set(MODELS) and len(broadcasts) == 1  # through the broker, as before
    finally:
        directory.close()


def test_a_view_of_no_worker_is_kept_to_itself_and_waits_for_no_turn(shared, monkeypatch):
    db, broadcasts = shared
    real = directory_module.fetch_workers
    # A broadcast that heard no worker (the workers reconnecting after a failover, say): the
    # decision alone is under test here.
    monkeypatch.setattr(directory_module, "fetch_workers", lambda: broadcasts.append(time.monotonic()) and [])
    directory = WorkerDirectory(1.0, db)
    try:
        assert directory.workers() == [] and len(broadcasts) == 1
        assert not db.exists(SNAPSHOT_KEY) and not db.exists(BROADCASTER_KEY)  # not for the others to keep
        monkeypatch.setattr(directory_module, "fetch_workers", real)
        db.set(BROADCASTER_KEY, 1, px=60_000)  # another process's turn, as if it had died broadcasting
        directory._refresh(1.0, take_turns=True)  # the background thread's refresh
        assert served_models(directory) == set(MODELS)  # it asked at once
        assert db.exists(SNAPSHOT_KEY) and not db.exists(BROADCASTER_KEY)
    finally:
        directory.close()
