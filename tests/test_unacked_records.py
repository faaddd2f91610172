"""kombu's records of the messages a worker holds, written behind (inference/worker/unacked_records.py),
against the suite's real Redis: in order, sent again when their connection breaks, and a refused
one does not hold up the rest. Workers record every request this way (the end-to-end tests: no
message is left unacknowledged after a run, tests/test_task_messages.py; a killed worker's
messages come back from these records, tests/test_resilience.py)."""

from __future__ import annotations

import logging
import uuid

import pytest
from kombu.transport import redis as kombu_redis

from inference.worker.unacked_records import WriteBehind, WriteBehindQoS, use_write_behind


@pytest.fixture
def keys(redis_client):
    names = {"index": f"test:unacked_index:{uuid.uuid4().hex}", "records": f"test:unacked:{uuid.uuid4().hex}"}
    yield names
    redis_client.delete(*names.values())


def test_records_and_their_removal_reach_redis_in_order(redis_client, keys):
    writes = WriteBehind(redis_client.connection_pool)
    writes.send(("ZADD", keys["index"], 1.0, "a"), ("HSET", keys["records"], "a", "one"))
    writes.send(("ZREM", keys["index"], "a"), ("HDEL", keys["records"], "a"))
    writes.send(("ZADD", keys["index"], 2.0, "b"), ("HSET", keys["records"], "b", "two"))
    writes.confirm()
    assert redis_client.zrange(keys["index"], 0, -1, withscores=True) == [(b"b", 2.0)]
    assert redis_client.hgetall(keys["records"]) == {b"b": b"two"}
    writes.close()


def test_writes_whose_connection_broke_are_sent_again(redis_client, keys):
    writes = WriteBehind(redis_client.connection_pool)
    writes.send(("HSET", keys["records"], "a", "one"))
    writes.confirm()
    host, port = writes._connection._sock.getsockname()[:2]
    assert redis_client.client_kill_filter(_id=None, addr=f"{host}:{port}") == 1  # Redis drops it, as a failover or a restart would
    writes.send(("HSET", keys["records"], "b", "two"))  # into the dead connection, or refused at once
    writes.send(("HSET", keys["records"], "c", "three"))
    writes.confirm()
    assert redis_client.hgetall(keys["records"]) == {b"a": b"one", b"b": b"two", b"c": b"three"}
    writes.close()


def test_a_refused_write_is_logged_and_the_next_ones_go_through(redis_client, keys, caplog):
    redis_client.set(keys["index"], "not a sorted set")
    writes = WriteBehind(redis_client.connection_pool)
    with caplog.at_level(logging.WARNING, logger="inference.worker.unacked_records"):
        writes.send(("ZADD", keys["index"], 1.0, "a"), ("HSET", keys["records"], "a", "one"))
        writes.confirm()
    assert "Redis refused ZADD" in caplog.text and "WRONGTYPE" in caplog.text
    assert redis_client.hget(keys["records"], "a") == b"one"
    writes.close()


def test_workers_channels_record_messages_this_way(redis_url):
    """What the bootstep turns on: a worker's Redis channel (kombu's own class, a real connection)."""
    from kombu import Connection

    use_write_behind()
    with Connection(redis_url) as connection:
        assert connection.default_channel.QoS is WriteBehindQoS
    with Connection(redis_url, transport_options={"global_keyprefix": "other:"}) as connection:
        assert connection.default_channel.QoS is kombu_redis.QoS  # prefixed keys: kombu's own writes
