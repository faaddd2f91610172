"""Enqueue a request in one Redis round trip: admission, job record, pictures, Celery message.

Celery's `send_task` publishes in a round trip of its own, after the job record's, and cost the
API ~0.5 ms of CPU per request here (routing, a producer from the pool, kombu's new Redis client
for each publish, a SUBSCRIBE to the result's channel that nobody reads, the AsyncResult it
returns): a sixth of all the API's work on a request. Here Celery still builds the message
(`app.amqp.create_task_message`, protocol 2), wrapped as kombu's Redis transport stores a
message in a queue's list (the wire format that every Celery client, in any language, writes),
and one script checks the model's queue limit, writes the job record (SET NX) and pushes the
message: both or neither. `jobs.submit` costs 0.2 ms of CPU instead of 0.7.

The pictures are written in the same round trip, by plain SETs pipelined ahead of the script,
not by the script: every byte a script is given is copied into Lua and again into Redis, and
for a request of 128 pictures (6.5 MB) that cost the API 75 us of CPU per picture against 30
(and Redis more, on its one thread). A refused submission deletes them again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass

import redis as redis_lib
from redis.exceptions import NoScriptError

from inference.celery_app import app
from inference.queues import TASK_NAME

# KEYS: the job record, the queue, the model's queues counted for the limit. ARGV: the job
# record, the message, seconds to keep the record, the queue limit (0: none).
ENQUEUE = """
local limit = tonumber(ARGV[4])
if limit > 0 then
  local depth = 0
  for i = 3, #KEYS do depth = depth + redis.call('LLEN', KEYS[i]) end
  if depth >= limit then return {'full', depth} end
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[3]) then
  return {'exists', redis.call('GET', KEYS[1])}
end
redis.call('LPUSH', KEYS[2], ARGV[2])
return {'queued'}
"""
ENQUEUE_SHA = hashlib.sha1(ENQUEUE.encode()).hexdigest()  # what EVALSHA names it by


@dataclass
class Outcome:
    status: str  # "queued", "exists" (the job record was there: nothing written) or "full" (nothing written)
    existing: bytes | None = None  # the job record found, for "exists"
    depth: int = 0  # requests in the model's queues, for "full"


def task_message(task_id: str, kwargs: dict, queue: str) -> str:
    """`inference.classify` with these keyword arguments, as kombu's Redis transport stores it
    in `queue`'s list (what `send_task(..., queue=Queue(queue, Exchange(""), routing_key=queue))`
    writes, through the default exchange)."""
    # The arguments as Flower and `celery inspect` show them: Celery's saferepr (a streaming repr
    # in Python) took ~8 % of the API's CPU per submission; repr is C. Cut at Celery's own limit
    # (`image` may hold a whole picture in base64).
    kwargsrepr = repr(kwargs)[: app.amqp.kwargsrepr_maxsize]
    message = app.amqp.create_task_message(task_id, TASK_NAME, (), kwargs, argsrepr="()", kwargsrepr=kwargsrepr)
    return json.dumps({
        "body": json.dumps(message.body),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": message.headers,
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
            pictures: dict[str, bytes], counted_queues: list[str], limit: int | None) -> Outcome:
    """Write the job record, the pictures (key -> bytes) and push the message, unless the record
    exists or `counted_queues` hold `limit` requests or more (limit None: no limit, none counted):
    then nothing stays written."""
    counted_queues = counted_queues if limit else []
    for attempt in range(2):
        pipe = redis.pipeline(transaction=False)
        for key, picture in pictures.items():
            pipe.set(key, picture, ex=expires)
        pipe.evalsha(ENQUEUE_SHA, 2 + len(counted_queues), job_key, queue, *counted_queues, job, message, expires, limit or 0)
        try:
            reply = pipe.execute()[-1]
            break
        except NoScriptError:  # a restarted Redis holds no scripts: load it, send it all again
            if attempt:
                raise
            redis.script_load(ENQUEUE)
    status = reply[0].decode()
    if status != "queued" and pictures:
        redis.delete(*pictures)
    if status == "full":
        return Outcome(status, depth=int(reply[1]))
    return Outcome(status, existing=reply[1] if status == "exists" else None)
