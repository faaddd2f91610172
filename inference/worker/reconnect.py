"""A worker that lost the broker tries again every fraction of a second, not after 2, 4, 6 s.

Celery's consumer reconnects through kombu's `ensure_connection` with its defaults: 2 s before
the second try, 2 s more before each next one. After a Sentinel failover (the new primary named
~2 s after the old one died) that left a worker away for 6 s, and the API without a ready worker
for 8 s. Each try asks every Sentinel in turn, so trying often costs them little.
"""

from __future__ import annotations

from celery.worker.consumer import Consumer

RETRY_INTERVALS = {"interval_start": 0.2, "interval_step": 0.3, "interval_max": 1.0}


class QuickReconnectConsumer(Consumer):
    def ensure_connected(self, conn):
        ensure = conn.ensure_connection
        conn.ensure_connection = lambda *args, **kwargs: ensure(*args, **{**RETRY_INTERVALS, **kwargs})
        return super().ensure_connected(conn)
