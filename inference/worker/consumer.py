"""The worker's consumer: Celery's, with two changes for serving.

- **It reconnects within a second.** Celery's consumer reconnects through kombu's
  `ensure_connection` with its defaults: 2 s before the second try, 2 s more before each next
  one. After a Sentinel failover (the new primary named ~2 s after the old one died) that left a
  worker away for 6 s, and the API without a ready worker for 8 s. Each try asks every Sentinel
  in turn, so trying often costs them little.
- **No gossip** (`celery worker --without-gossip`, always). Celery's gossip has every worker
  consume every other worker's events (their heartbeats, each on a Redis connection of its own)
  to keep a view of the cluster that nothing here reads: Flower, `/workers/status` and
  `celery inspect` get theirs from the heartbeats and broadcasts directly. It was a third of an
  idle worker's CPU (`make run` on 2 Zen 4 cores: each worker 3.0-3.5 ms a second with it,
  1.8-2.2 without; the whole system 29 against 22-27). Mingle (revoked ids from the other workers
  at start) stays.
"""

from __future__ import annotations

from celery.worker.consumer import Consumer

RETRY_INTERVALS = {"interval_start": 0.2, "interval_step": 0.3, "interval_max": 1.0}


class ServingConsumer(Consumer):
    def __init__(self, *args, worker_options=None, **kwargs):
        super().__init__(*args, worker_options={**(worker_options or {}), "without_gossip": True}, **kwargs)

    def ensure_connected(self, conn):
        ensure = conn.ensure_connection
        conn.ensure_connection = lambda *args, **kwargs: ensure(*args, **{**RETRY_INTERVALS, **kwargs})
        return super().ensure_connected(conn)
