"""inference/worker/lost_messages.py against a real Redis: a message popped for a consumer that
never recorded it is sent again from its copy, after two sweeps; no other request is touched."""

from __future__ import annotations

import json
import time
import uuid

from kombu.transport.redis import Channel

from inference.core import keys
from inference.core.settings import get_settings
from inference.submit import enqueue
from inference.worker import lost_messages


def test_only_a_message_that_no_queue_and_no_consumer_holds_is_sent_again(redis_client):
    tenant = f"lost-test-{uuid.uuid4().hex[:8]}"
    in_flight, queue = keys.in_flight_key(tenant), f"lost-test-{uuid.uuid4().hex[:8]}.normal"
    ids = {name: keys.scoped_id(tenant, name) for name in ("lost", "queued", "unacked", "claimed", "ended")}
    messages = {}
    try:
        for name, task_id in ids.items():
            messages[name] = enqueue.task_message(task_id, {"model": "squeezenet"}, queue)
            outcome = enqueue.enqueue(redis_client, job_key=keys.job_key(task_id), job="{}", queue=queue, message=messages[name],
                                      expires=60, pictures={}, counted_queues=[], limit=None,
                                      in_flight=enqueue.InFlight(in_flight, 0, task_id))
            assert outcome.status == "queued"
        # What workers did with them: "lost" was popped for a consumer that vanished; "unacked" is
        # held by a live one; "claimed" runs; "ended" has its result.
        for name in ("lost", "unacked", "claimed", "ended"):
            assert redis_client.lrem(queue, 1, messages[name]) == 1
        tag = json.loads(messages["unacked"])["properties"]["delivery_tag"]
        redis_client.hset(Channel.unacked_key, tag, "[]")
        redis_client.set(keys.claim_key(ids["claimed"]), keys.STARTED, ex=60)
        redis_client.set(f"celery-task-meta-{ids['ended']}", "{}", ex=60)

        later = time.time() + get_settings().visibility_timeout + 1
        assert lost_messages.sweep(redis_client, now=later, in_flight_sets=in_flight) == []  # once missed: a suspect
        assert redis_client.llen(queue) == 1
        assert lost_messages.sweep(redis_client, now=later + 5, in_flight_sets=in_flight) == [ids["lost"]]
        assert set(redis_client.lrange(queue, 0, -1)) == {messages["queued"].encode(), messages["lost"].encode()}
        assert lost_messages.sweep(redis_client, now=later + 10, in_flight_sets=in_flight) == []  # in its queue now
    finally:
        redis_client.hdel(Channel.unacked_key, tag)
        redis_client.delete(queue, in_flight, keys.claim_key(ids["claimed"]), f"celery-task-meta-{ids['ended']}",
                            *(keys.job_key(i) for i in ids.values()), *(keys.message_key(i) for i in ids.values()))


def test_the_copy_goes_with_the_request(redis_client):
    """A request's final state deletes its message copy and takes it out of flight (result_backend.py)."""
    from inference.core.celery_app import app

    task_id = f"lost-test-{uuid.uuid4().hex}"
    redis_client.set(keys.message_key(task_id), "copy", ex=60)
    redis_client.zadd(keys.in_flight_key(""), {task_id: time.time()})
    app.backend.store_result(task_id, {"reason": "test"}, keys.CANCELLED)
    assert not redis_client.exists(keys.message_key(task_id))
    assert redis_client.zscore(keys.in_flight_key(""), task_id) is None
    redis_client.delete(f"celery-task-meta-{task_id}")
