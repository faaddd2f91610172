"""kombu's record of each message a worker holds, written to Redis without waiting for the reply.

kombu's Redis transport records every message it hands to the worker as unacknowledged (the
`unacked` hash and its index, which VISIBILITY_TIMEOUT restores from if the worker dies) and
removes the record on ack, each in a MULTI/EXEC round trip of its own that the consumer's main
thread waited for: ~0.35 ms here between BRPOP and the task's start, on every request's way.
Here the same commands go out on a connection of their own, in order, and their replies are read
later: before the next write when they have come, and all of them before anything reads the
records back (a restore, a requeueing reject). A reply that never came (the connection broke) has
its commands sent again on a new connection: ZADD, HSET, ZREM and HDEL repeated in order leave the
same records. A record lost with its connection before it reached Redis is the case that
inference/worker/lost_messages.py covers already (a message between BRPOP and its record).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from functools import cached_property

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

log = logging.getLogger(__name__)

# Replies left unread before a write waits for them: a connection that died silently (no reply,
# no error) is found by then, and its commands are sent again.
MOST_UNCONFIRMED = 1000


class WriteBehind:
    """Commands sent in order on one connection of `pool`, their replies read later (`confirm`)."""

    def __init__(self, pool: redis.ConnectionPool):
        self._pool = pool
        self._lock = threading.Lock()
        self._connection: redis.connection.Connection | None = None
        self._unconfirmed: deque[tuple] = deque()  # sent, reply not read yet: sent again if the connection breaks

    def send(self, *commands: tuple) -> None:
        with self._lock:
            self._read_replies(wait=len(self._unconfirmed) >= MOST_UNCONFIRMED)
            self._unconfirmed.extend(commands)
            self._send(list(commands))

    def confirm(self) -> None:
        """Wait until Redis has answered every command sent (say, before reading the records)."""
        with self._lock:
            self._read_replies(wait=True)

    def close(self) -> None:
        with self._lock:
            try:
                self._read_replies(wait=True)
            finally:
                self._drop_connection()

    def _send(self, commands: list[tuple]) -> None:
        for attempt in range(2):
            try:
                if self._connection is None:
                    self._connection = self._pool.get_connection()
                    commands = list(self._unconfirmed)  # a new connection: everything unconfirmed, in order
                # No health check: its PING's reply would be read before the replies it follows.
                self._connection.send_packed_command(self._connection.pack_commands(commands), check_health=False)
                return
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                self._drop_connection()
                if attempt:
                    raise  # as kombu's own write would; the commands stay unconfirmed for the next one

    def _read_replies(self, wait: bool) -> None:
        """The replies that have come (`wait`: all of them, the commands sent again first if
        their connection broke)."""
        for attempt in range(2):
            try:
                if self._connection is None:
                    if not (wait and self._unconfirmed):
                        return  # the next write sends them again
                    self._send([])
                assert self._connection is not None
                while self._unconfirmed:
                    if not wait and not self._connection.can_read(timeout=0):
                        return
                    try:
                        self._connection.read_response()
                    except redis.ResponseError as exc:  # refused (say, Redis out of memory): as with kombu's, not retried
                        log.warning("Redis refused %s of a message's unacknowledged record: %s", self._unconfirmed[0][0], exc)
                    self._unconfirmed.popleft()
                return
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                self._drop_connection()
                if attempt:
                    raise

    def _drop_connection(self) -> None:
        if self._connection is not None:
            self._connection.disconnect()
            self._pool.release(self._connection)
            self._connection = None


class WriteBehindQoS(kombu_redis.QoS):
    """kombu's Redis QoS with its records written behind (see the module's docstring)."""

    @cached_property
    def _writes(self) -> WriteBehind:
        return WriteBehind(self.channel.pool)

    def append(self, message, delivery_tag):
        delivery = message.delivery_info
        record = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        self._writes.send(("ZADD", self.unacked_index_key, time.time(), delivery_tag), ("HSET", self.unacked_key, delivery_tag, record))
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag):
        self._writes.send(("ZREM", self.unacked_index_key, delivery_tag), ("HDEL", self.unacked_key, delivery_tag))
        virtual.QoS.ack(self, delivery_tag)

    # Whatever reads or moves the records waits until Redis holds every write sent before it.

    def reject(self, delivery_tag, requeue=False):
        self._writes.confirm()
        super().reject(delivery_tag, requeue)

    def restore_by_tag(self, tag, client=None, leftmost=False):
        self._writes.confirm()
        super().restore_by_tag(tag, client, leftmost)

    def restore_unacked(self, client=None):
        self._writes.confirm()
        super().restore_unacked(client)

    def restore_visible(self, start=0, num=10, interval=10):
        self._writes.confirm()
        super().restore_visible(start, num, interval)


def use_write_behind() -> None:
    """Make the worker's Redis channels record messages this way (kombu's prefixed keys, a
    `global_keyprefix`, keep kombu's own: these commands go out unprefixed)."""
    original_init = kombu_redis.Channel.__init__
    if getattr(original_init, "writes_behind", False):
        return

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        if self.QoS is kombu_redis.QoS and not self.global_keyprefix:
            self.QoS = WriteBehindQoS

    __init__.writes_behind = True  # type: ignore[attr-defined]
    kombu_redis.Channel.__init__ = __init__  # type: ignore[method-assign]  # SentinelChannel's too (a subclass)
