"""Enqueue a request in one Redis round trip: admission, job record, pictures, Celery message.

Celery's `send_task` publishes in a round trip of its own, after the job record's, and cost the
API ~0.5 ms of CPU per request here (routing, a producer from the pool, kombu's new Redis client
for each publish, a SUBSCRIBE to the result's channel that nobody reads, the AsyncResult it
returns): a sixth of all the API's work on a request. Here Celery still builds the message
(`app.amqp.create_task_message`, protocol 2), wrapped as kombu's Redis transport stores a
message in a queue's list (the wire format that every Celery client, in any language, writes),
and one script checks the model's queue limit (and the tenant's requests in flight), writes the
job record and pushes the message: both or neither. `submission.submit` costs 0.2 ms of CPU instead of 0.7.

The pictures are written in the same round trip, by plain SETs pipelined ahead of the script,
not by the script: every byte a script is given is copied into Lua and again into Redis, and
for a request of 128 pictures (6.5 MB) that cost the API 75 us of CPU per picture against 30
(and Redis more, on its one thread). A refused submission deletes them again.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass

import redis as redis_lib
from redis.exceptions import NoScriptError

from inference.core import tracing
from inference.core.celery_app import app
from inference.core.keys import callback_key, message_key
from inference.core.queues import TASK_NAME

# KEYS: the job record, the queue, the set of requests in flight (the tenant's), the copy of
# the message, its callback's delivery message, the model's queues counted for the limit. ARGV:
# the job record, the message, seconds to keep the record, the queue limit (0: none), the
# in-flight limit (0: none), the time now, the task id, the most memory Redis may use once this
# request's pictures are in (0: no bound), the callback's delivery message ("": none). A request
# id submitted again is answered first, whatever the limits.
ENQUEUE = """
local existing = redis.call('GET', KEYS[1])
if existing then return {'exists', existing} end
local memory_limit = tonumber(ARGV[8])
if memory_limit > 0 then
  local used = tonumber(string.match(redis.call('INFO', 'memory'), 'used_memory:(%d+)'))
  if used > memory_limit then return {'memory', used} end
end
local limit = tonumber(ARGV[4])
if limit > 0 then
  local depth = 0
  for i = 6, #KEYS do depth = depth + redis.call('LLEN', KEYS[i]) end
  if depth >= limit then return {'full', depth} end
end
-- Entries older than a job record are requests whose end was never written.
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[6]) - tonumber(ARGV[3]))
local most = tonumber(ARGV[5])
if most > 0 then
  local in_flight = redis.call('ZCARD', KEYS[3])
  if in_flight >= most then return {'busy', in_flight} end
end
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[7])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('SET', KEYS[4], ARGV[2], 'EX', ARGV[3])
if ARGV[9] ~= '' then redis.call('SET', KEYS[5], ARGV[9], 'EX', ARGV[3]) end
redis.call('LPUSH', KEYS[2], ARGV[2])
return {'queued'}
"""
ENQUEUE_SHA = hashlib.sha1(ENQUEUE.encode()).hexdigest()  # what EVALSHA names it by


@dataclass
class Outcome:
    status: str  # "queued"; "exists" (the job record was there), "full", "busy" or "memory": nothing written
    existing: bytes | None = None  # the job record found, for "exists"
    depth: int = 0  # requests in the model's queues, for "full"; the tenant's in flight, for "busy"; bytes, for "memory"
    replicas: int | None = None  # replicas that acknowledged it within the wait, when some were asked for


@dataclass
class InFlight:
    """The requests in flight (a tenant's, with API keys): a sorted set of task ids (by submission
    time) that the result backend removes each from once it ends (inference/core/result_backend.py),
    with a copy of each one's message until then: inference/worker/lost_messages.py sends again
    what Redis handed to a consumer that was gone."""

    key: str
    limit: int  # most at once; 0: none (only counted)
    task_id: str


def task_message(task_id: str, kwargs: dict, queue: str, task_name: str = TASK_NAME) -> str:
    """`inference.classify` (or `task_name`) with these keyword arguments, as kombu's Redis
    transport stores it in `queue`'s list (what `send_task(..., queue=Queue(queue, Exchange(""),
    routing_key=queue))` writes, through the default exchange)."""
    # The arguments as Flower and `celery inspect` show them: Celery's saferepr (a streaming repr
    # in Python) took ~8 % of the API's CPU per submission; repr is C. Cut at Celery's own limit
    # (`image` may hold a whole picture in base64).
    kwargsrepr = repr(kwargs)[: app.amqp.kwargsrepr_maxsize]
    message = app.amqp.create_task_message(task_id, task_name, (), kwargs, argsrepr="()", kwargsrepr=kwargsrepr)
    return json.dumps({
        "body": json.dumps(message.body),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        # With traces on, the trace context (`traceparent`) among the headers, where send_task's
        # instrumentation puts it (at publishing, as here) and the worker's looks for it.
        "headers": {**message.headers, **tracing.context_headers()},
        "properties": {
            **message.properties,
            "delivery_mode": 2,  # persistent
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": None,  # JSON as it is (celeryconfig's broker_transport_options)
            "delivery_tag": str(uuid.uuid4()),
        },
    })


def enqueue(redis: redis_lib.Redis, *, job_key: str, job: str, queue: str, message: str, expires: int,
            pictures: dict[str, bytes], counted_queues: list[str], limit: int | None, in_flight: InFlight,
            memory_limit: int = 0, replicas: int = 0, replica_timeout_ms: int = 0, callback: str = "") -> Outcome:
    """Write the job record, the pictures (key -> bytes), the request in flight and a copy of its
    message (keys.message_key), and push the message, unless the record
    exists, `counted_queues` hold `limit` requests or more (limit None: no limit, none counted),
    the tenant has `in_flight.limit` requests in flight, or Redis uses more than `memory_limit`
    bytes with the pictures written: then nothing stays written. The memory is read inside the
    script, after the pictures: whatever other submissions wrote meanwhile counts too.

    With a `callback` (its delivery message), that is kept too, for the request's final state to
    queue (inference/core/result_backend.py). With `replicas`, Redis's WAIT follows in the same round trip: the outcome says how many
    replicas held all of it within `replica_timeout_ms` (WAIT counts this connection's writes)."""
    counted_queues = counted_queues if limit else []
    for attempt in range(2):
        pipe = redis.pipeline(transaction=False)
        for key, picture in pictures.items():
            pipe.set(key, picture, ex=expires)
        pipe.evalsha(ENQUEUE_SHA, 5 + len(counted_queues), job_key, queue, in_flight.key, message_key(in_flight.task_id),
                     callback_key(in_flight.task_id), *counted_queues, job, message, expires, limit or 0, in_flight.limit,
                     time.time(), in_flight.task_id, memory_limit, callback)
        if replicas:
            pipe.wait(replicas, replica_timeout_ms)
        try:
            replies = pipe.execute()
            reply = replies[-2] if replicas else replies[-1]
            break
        except NoScriptError:  # a restarted Redis holds no scripts: load it, send it all again
            if attempt:
                raise
            redis.script_load(ENQUEUE)
        except redis_lib.ResponseError:  # say, Redis full (maxmemory): the pictures written go again
            if pictures:
                redis.delete(*pictures)
            raise
    status = reply[0].decode()
    if status != "queued" and pictures:
        redis.delete(*pictures)
    if status in ("full", "busy", "memory"):
        return Outcome(status, depth=int(reply[1]))
    return Outcome(status, existing=reply[1] if status == "exists" else None, replicas=replies[-1] if replicas else None)
