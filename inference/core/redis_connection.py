"""Where every process finds Redis: REDIS_URL, or the primary that REDIS_SENTINELS name.

The Celery app (broker and result backend) takes `broker_url()`; the API and the workers' own
clients take `connect()`. With Sentinels, a connection asks them for the primary
when it (re)connects, so a failover reaches every part without a restart.
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import urlparse

import redis
from kombu.transport import redis as kombu_redis
from redis.connection import Encoder, HiredisRespSerializer, PythonRespSerializer
from redis.sentinel import Sentinel, SentinelManagedConnection
from redis.utils import str_if_bytes

from inference.core.settings import Settings, get_settings


def sentinel_addresses(settings: Settings) -> list[tuple[str, int]]:
    addresses = []
    for item in filter(None, (part.strip() for part in settings.redis_sentinels.split(","))):
        host, _, port = item.rpartition(":")
        addresses.append((host or item, int(port) if host else 26379))
    return addresses


def _password_and_db(settings: Settings) -> tuple[str | None, int]:
    url = urlparse(settings.redis_url)
    return url.password, int(url.path.strip("/") or 0)


def broker_url(settings: Settings | None = None) -> str:
    """REDIS_URL, or kombu's and Celery's form for Sentinels: `sentinel://:pw@host:port/db;...`."""
    settings = settings or get_settings()
    if not settings.redis_sentinels:
        return settings.redis_url
    password, db = _password_and_db(settings)
    auth = f":{password}@" if password else ""
    return ";".join(f"sentinel://{auth}{host}:{port}/{db}" for host, port in sentinel_addresses(settings))


class PrimaryConnection(SentinelManagedConnection):
    """A connection to the primary the Sentinels name, through every kind of failover.

    redis-py 8.1's Sentinel connection asks the Sentinels for the primary in `connect()`, but a
    command sent on a connection dropped earlier reconnects through `connect_check_health()`, to
    the address it had: after a failover, the old primary (seen: a worker's claim failed 20 s
    after the replica was promoted). This one asks before every reconnect.

    A primary that becomes a replica while alive (a coordinated failover, a partition healed)
    answers a blocked BRPOP with `UNBLOCKED ... (master -> replica?)`, which redis-py raises as
    a plain ResponseError: kombu took it for a fault of its own and the worker shut down
    ("Unrecoverable error", celery#7946). Here it is what it is, the connection lost to the
    primary: dropped, and raised as a ConnectionError, which every client reconnects after.

    And while the Sentinels still name the old primary (the first second of a coordinated
    failover), a reconnect reached it as a replica, where a worker's BRPOP blocked for nothing
    (10 s, until kombu's health check). A new connection asks the server its role: not the
    primary, a ConnectionError, and the client tries again (the Sentinels soon name the new one)."""

    def connect_check_health(self, *args, **kwargs):
        if not self._sock and self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        return super().connect_check_health(*args, **kwargs)

    def on_connect_check_health(self, *args, **kwargs):
        super().on_connect_check_health(*args, **kwargs)
        if self.connection_pool.is_master:
            self.send_command("ROLE")
            role = self.read_response()
            if str_if_bytes(role[0]) != "master":
                self.disconnect()
                raise redis.ConnectionError(f"{self.host}:{self.port} is not the primary (any more)")

    def read_response(self, *args, **kwargs):
        try:
            return super().read_response(*args, **kwargs)
        except redis.ResponseError as exc:
            if not str(exc).startswith("UNBLOCKED"):
                raise
            self.disconnect()
            raise redis.ConnectionError(f"the primary became a replica: {exc}") from exc


# kombu's Sentinel transport (the workers' consumers, the API's and Flower's control
# connections) makes its connections from this class attribute: ours, for the same reasons.
kombu_redis.SentinelChannel.connection_class = PrimaryConnection


@contextlib.contextmanager
def _one_client_per_pool(channel: kombu_redis.Channel, client: Any = None):  # kombu passes a client or a pipeline
    """kombu's Redis channel makes a new client for every command it sends outside its BRPOP
    (a message's unacked record, its ack, each task event): 0.12 ms of CPU each in redis-py 8.1
    (its response callbacks), 3.4 a request in a worker's consumer. A client is only a
    handle on the channel's connection pool (thread-safe: a connection is taken from the pool
    for each command), so one serves them all; a new pool (the channel reconnected) gets a new one."""
    if client:  # as kombu's (an empty pipeline passed in counts as none)
        yield client
        return
    shared = channel.__dict__.get("_client_of_pool")
    if shared is None or shared.connection_pool is not channel.pool:
        shared = channel.__dict__["_client_of_pool"] = channel._create_client()
    yield shared


kombu_redis.Channel.conn_or_acquire = _one_client_per_pool  # type: ignore[method-assign,assignment]  # SentinelChannel's too (a subclass)


class LargeValuesAsTheyAre(HiredisRespSerializer):
    """Commands packed by hiredis, but for those carrying a large value (a picture), which
    redis-py's own packer sends as it is. hiredis copies every argument into one buffer while
    holding the GIL: 0.15 to 2.1 ms of CPU for a 1 MB photo here, as the allocator has it; the
    other packer hands those bytes to sendall as they are."""

    LARGE = 6000  # bytes: redis-py's own cut-off for sending an argument as a piece of its own

    def __init__(self) -> None:
        self._pieces = PythonRespSerializer(self.LARGE, Encoder("utf-8", "strict", False).encode)

    def pack(self, *args):
        if any(isinstance(arg, (bytes, bytearray, memoryview)) and len(arg) > self.LARGE for arg in args):
            return self._pieces.pack(*args)
        return super().pack(*args)


def connect(settings: Settings | None = None, **kwargs) -> redis.Redis:
    """A client of the primary (connection options in `kwargs`, as redis.Redis takes them)."""
    settings = settings or get_settings()
    kwargs.setdefault("command_packer", LargeValuesAsTheyAre())  # stateless: one for all the pool's connections
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url, **kwargs)
    password, db = _password_and_db(settings)
    timeouts = {k: kwargs[k] for k in ("socket_timeout", "socket_connect_timeout") if k in kwargs}
    sentinel = Sentinel(sentinel_addresses(settings), sentinel_kwargs=timeouts)
    return sentinel.master_for(settings.redis_master_name, password=password, db=db, connection_class=PrimaryConnection, **kwargs)
