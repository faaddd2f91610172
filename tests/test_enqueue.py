"""inference/submit/enqueue.py: a submission in one round trip writes what Celery's send_task would."""

from __future__ import annotations

import json
import uuid

import pytest
from kombu import Exchange, Queue

from inference.core import keys
from inference.core.celery_app import app
from inference.submit import enqueue


def scratch_queue() -> str:
    return f"test-enqueue-{uuid.uuid4().hex[:8]}"


def test_the_message_is_what_send_task_writes(redis_client):
    """Celery's own publish and ours, side by side in two lists: equal but for the fields
    that differ per publish (delivery tag) or per process (origin, reply_to)."""
    queue = scratch_queue()
    kwargs = {"image_ref": "inference:image:x:y:0", "model": "resnet18", "top_k": 3, "request_id": "r1",
              "priority": "normal", "submitted_at": 1.5, "deadline": None}
    task_id = uuid.uuid4().hex
    app.send_task("inference.classify", task_id=task_id, kwargs=kwargs, queue=Queue(queue, Exchange(""), routing_key=queue))
    theirs = json.loads(redis_client.rpop(queue))
    ours = json.loads(enqueue.task_message(task_id, kwargs, queue))
    for message in (theirs, ours):
        message["properties"].pop("delivery_tag")
        message["properties"].pop("reply_to")
        message["headers"].pop("origin")
    assert json.loads(ours.pop("body")) == json.loads(theirs.pop("body"))
    assert ours == theirs


def test_one_round_trip_writes_record_pictures_and_message_or_nothing(redis_client):
    queue, request_id = scratch_queue(), uuid.uuid4().hex
    key, counted, in_flight = keys.job_key(request_id), [f"{queue}.a", f"{queue}.b"], f"{queue}.in-flight"

    def attempt(record: str, limit: int | None, picture: bytes = b"picture"):
        ref = f"{keys.IMAGE_PREFIX}{request_id}:{uuid.uuid4().hex[:12]}:0"
        outcome = enqueue.enqueue(redis_client, job_key=key, job=record, queue=queue, message="message", expires=60,
                                  pictures={ref: picture}, counted_queues=counted, limit=limit,
                                  in_flight=enqueue.InFlight(in_flight, 0, request_id))
        return outcome, ref

    try:
        redis_client.rpush(counted[0], "x", "y")
        redis_client.rpush(counted[1], "z")
        full, ref = attempt("first", limit=3)
        assert (full.status, full.depth) == ("full", 3)
        assert not redis_client.exists(key, ref) and redis_client.llen(queue) == 0

        queued, ref = attempt("first", limit=4)
        assert queued.status == "queued"
        assert redis_client.get(key) == b"first" and redis_client.get(ref) == b"picture"
        assert redis_client.lrange(queue, 0, -1) == [b"message"]
        assert 0 < redis_client.ttl(key) <= 60 and 0 < redis_client.ttl(ref) <= 60
        # In flight, with a copy of its message (inference/worker/lost_messages.py)
        assert redis_client.zrange(in_flight, 0, -1) == [request_id.encode()]
        assert redis_client.get(keys.message_key(request_id)) == b"message"

        again, second_ref = attempt("second", limit=None)  # the same request id: the first stands
        assert (again.status, again.existing) == ("exists", b"first")
        assert not redis_client.exists(second_ref) and redis_client.llen(queue) == 1
    finally:
        redis_client.delete(key, queue, in_flight, keys.message_key(request_id), *counted, *redis_client.keys(f"{keys.IMAGE_PREFIX}{request_id}:*"))


@pytest.mark.parametrize("pictures", [0, 3])
def test_pictures_and_their_keys_pair_up(redis_client, pictures):
    """The script reads the pictures' bytes after the counted queues' names: each key gets its own."""
    queue, request_id = scratch_queue(), uuid.uuid4().hex
    refs = {f"{keys.IMAGE_PREFIX}{request_id}:s:{n}": f"bytes {n}".encode() for n in range(pictures)}
    counted = [f"{queue}.a"]
    try:
        outcome = enqueue.enqueue(redis_client, job_key=keys.job_key(request_id), job="{}", queue=queue, message="m",
                                  expires=60, pictures=refs, counted_queues=counted, limit=10,
                                  in_flight=enqueue.InFlight(f"{queue}.in-flight", 0, request_id))
        assert outcome.status == "queued"
        assert [redis_client.get(ref) for ref in refs] == list(refs.values())
    finally:
        redis_client.delete(keys.job_key(request_id), queue, *refs)


def test_a_redis_that_lost_its_scripts_still_takes_the_submission(redis_client):
    """A restarted Redis holds no scripts: enqueue loads it again and sends it all once more."""
    queue, request_id = scratch_queue(), uuid.uuid4().hex
    ref = f"{keys.IMAGE_PREFIX}{request_id}:s:0"
    redis_client.script_flush()
    try:
        outcome = enqueue.enqueue(redis_client, job_key=keys.job_key(request_id), job="{}", queue=queue, message="m",
                                  expires=60, pictures={ref: b"picture"}, counted_queues=[queue], limit=10,
                                  in_flight=enqueue.InFlight(f"{queue}.in-flight", 0, request_id))
        assert outcome.status == "queued"
        assert redis_client.get(ref) == b"picture" and redis_client.lrange(queue, 0, -1) == [b"m"]
    finally:
        redis_client.delete(keys.job_key(request_id), queue, ref)


def test_a_channel_sends_every_command_through_one_client(redis_client):
    """kombu's Redis channel made a redis-py client for each command outside its BRPOP (each
    publish, a message's unacked record, its ack: 3.4 a request in a worker); one serves
    them all now (inference/core/redis_connection.py), and a client passed in is used as is."""
    queue = scratch_queue()
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        made = []
        create = channel._create_client
        channel._create_client = lambda *a, **kw: made.append(create(*a, **kw)) or made[-1]
        producer = connection.Producer(channel)
        for n in range(20):
            producer.publish({"n": n}, routing_key=queue, exchange="")
        assert redis_client.llen(queue) == 20 and len(made) == 1
        with channel.conn_or_acquire() as client:
            assert client is made[0] and client.ping()
        with channel.conn_or_acquire(redis_client) as client:
            assert client is redis_client
        channel._disconnect_pools()  # a reconnection: a new pool, a client of it
        with channel.conn_or_acquire() as client:
            assert len(made) == 2 and client.connection_pool is channel.pool
    redis_client.delete(queue)


def test_a_picture_is_sent_as_it_is_and_every_command_packs_as_hiredis_would():
    """A value over 6,000 bytes goes to the socket as the very bytes object (hiredis copied it
    into one buffer: up to 2 ms of CPU for a 1 MB photo); the bytes on the wire are
    the same for every command."""
    from redis.connection import HiredisRespSerializer

    from inference.core.redis_connection import LargeValuesAsTheyAre, connect

    assert isinstance(connect().connection_pool.connection_kwargs["command_packer"], LargeValuesAsTheyAre)  # every client of ours
    picture = bytes(range(256)) * 40
    ours, theirs = LargeValuesAsTheyAre(), HiredisRespSerializer()
    for command in (("SET", "inference:image:x", picture, "EX", 60), ("SET", "k", b"small"), ("MGET", "a", "b"),
                    ("EVALSHA", "abc", 2, "k1", "k2", "ünïcode", 1.5, picture, picture)):
        assert b"".join(ours.pack(*command)) == b"".join(theirs.pack(*command))
    assert any(piece is picture for piece in ours.pack("SET", "k", picture))
