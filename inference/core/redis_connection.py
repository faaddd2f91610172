"""Where every process finds Redis: REDIS_URL, or the primary that REDIS_SENTINELS name.

The Celery app (broker and result backend) takes `broker_url()`; the API and the workers' own
clients take `connect()`. With Sentinels, a connection asks them for the primary
when it (re)connects, so a failover reaches every part without a restart.
"""

from __future__ import annotations

from urllib.parse import urlparse

import redis
from redis.sentinel import Sentinel, SentinelManagedConnection

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
    """redis-py 8.1's Sentinel connection asks the Sentinels for the primary in `connect()`, but a
    command sent on a connection dropped earlier reconnects through `connect_check_health()`, to
    the address it had: after a failover, the old primary (seen: a worker's claim failed 20 s
    after the replica was promoted). This one asks before every reconnect."""

    def connect_check_health(self, *args, **kwargs):
        if not self._sock and self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        return super().connect_check_health(*args, **kwargs)


def connect(settings: Settings | None = None, **kwargs) -> redis.Redis:
    """A client of the primary (connection options in `kwargs`, as redis.Redis takes them)."""
    settings = settings or get_settings()
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url, **kwargs)
    password, db = _password_and_db(settings)
    timeouts = {k: kwargs[k] for k in ("socket_timeout", "socket_connect_timeout") if k in kwargs}
    sentinel = Sentinel(sentinel_addresses(settings), sentinel_kwargs=timeouts)
    return sentinel.master_for(settings.redis_master_name, password=password, db=db, connection_class=PrimaryConnection, **kwargs)
