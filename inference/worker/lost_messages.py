"""Send again a message that Redis handed to a consumer that was gone.

kombu's Redis transport takes a message with BRPOP and only then, in the consumer, records it as
unacknowledged (the `unacked` hash that VISIBILITY_TIMEOUT restores from). A consumer whose host
vanished with a BRPOP outstanding (its link down, its machine off) gets the message popped for
it and never records it: no queue and no worker holds it any more (seen: one message per model
worker of a host cut off under load). kombu has no reliable hand-over for Redis, so the
submission keeps a copy of every message until the request ends (inference/submit/enqueue.py),
and the workers sweep, one at a time:

a request in flight for longer than VISIBILITY_TIMEOUT that no worker claimed and that has no
result, whose message is neither in its queue nor unacknowledged, twice in a row (a message
between BRPOP and `unacked` for the length of a sweep is not in transit, it is lost), is pushed
to its queue again from the copy. A request that a worker claimed is not this sweep's: a worker
lost while running it left its message unacknowledged, and kombu restores that.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import cast

import redis as redis_lib
from kombu.transport.redis import Channel
from redis.utils import str_if_bytes

from inference.core import redis_connection
from inference.core.keys import IN_FLIGHT_PREFIX, claim_key, message_key
from inference.core.settings import get_settings

log = logging.getLogger(__name__)
LOCK_KEY = "inference:lost-messages:lock"
SUSPECTS_KEY = "inference:lost-messages:suspects"  # hash: task id -> when a sweep first missed its message
RESENT_KEY = "inference:stats:lost_messages_resent"
BATCH = 200  # requests looked at per in-flight set per sweep

# KEYS: the queues, then kombu's unacked hash. ARGV: delivery tags. Returns the tags found in
# neither (one pass over each queue: a message restored by kombu is re-serialised, so its bytes
# differ from the copy; its delivery tag does not).
MISSING = """
local wanted, left = {}, 0
for _, tag in ipairs(ARGV) do wanted[tag] = true; left = left + 1 end
local unacked = KEYS[#KEYS]
for _, tag in ipairs(ARGV) do
  if redis.call('HEXISTS', unacked, tag) == 1 then wanted[tag] = nil; left = left - 1 end
end
for i = 1, #KEYS - 1 do
  if left == 0 then break end
  for _, item in ipairs(redis.call('LRANGE', KEYS[i], 0, -1)) do
    local tag = string.match(item, '"delivery_tag": "([%w%-]+)"')
    if tag and wanted[tag] then wanted[tag] = nil; left = left - 1 end
  end
end
local missing = {}
for tag in pairs(wanted) do table.insert(missing, tag) end
return missing
"""


def candidates(redis: redis_lib.Redis, older_than: float, match: str) -> list[tuple[str, bytes]]:
    """(task id, message copy) of requests in flight since before `older_than`, unclaimed, without a result."""
    ids: list[str] = []
    for key in redis.scan_iter(match=match, count=100):
        members = cast(list[bytes], redis.zrangebyscore(key, "-inf", older_than, start=0, num=BATCH))
        ids += [str_if_bytes(member) for member in members]
    if not ids:
        return []
    pipe = redis.pipeline(transaction=False)
    for task_id in ids:
        pipe.exists(claim_key(task_id), f"celery-task-meta-{task_id}")
        pipe.get(message_key(task_id))
    replies = pipe.execute()
    return [(task_id, copy) for task_id, held, copy in zip(ids, replies[::2], replies[1::2]) if not held and copy]


def sweep(redis: redis_lib.Redis, now: float | None = None, in_flight_sets: str = f"{IN_FLIGHT_PREFIX}*") -> list[str]:
    """One sweep (of the in-flight sets matching `in_flight_sets`); returns the task ids sent again."""
    settings = get_settings()
    now = now or time.time()
    found = candidates(redis, now - settings.visibility_timeout, in_flight_sets)
    by_tag = {}
    for task_id, copy in found:
        message = json.loads(copy)
        by_tag[message["properties"]["delivery_tag"]] = (task_id, copy, message["properties"]["delivery_info"]["routing_key"])
    queues = sorted({queue for _, _, queue in by_tag.values()})
    missing = redis.eval(MISSING, len(queues) + 1, *queues, Channel.unacked_key, *by_tag) if by_tag else []
    missing_ids = {by_tag[str_if_bytes(tag)][0]: by_tag[str_if_bytes(tag)] for tag in missing}
    suspects = {str_if_bytes(key): float(value) for key, value in redis.hgetall(SUSPECTS_KEY).items()}
    resent = []
    pipe = redis.pipeline(transaction=False)
    pipe.delete(SUSPECTS_KEY)
    for task_id, (_, copy, queue) in missing_ids.items():
        if task_id in suspects:  # missed by the last sweep too
            pipe.lpush(queue, copy)
            pipe.incr(RESENT_KEY)
            resent.append(task_id)
            log.warning("request %s: its message was handed to a consumer that is gone; sent to %s again", task_id, queue,
                        extra={"request_id": task_id})
        else:
            pipe.hset(SUSPECTS_KEY, task_id, now)
    pipe.execute()
    return resent


def sweep_interval() -> float:
    return max(1.0, get_settings().visibility_timeout / 4)


def run_forever(stop: threading.Event) -> None:
    """Sweep every VISIBILITY_TIMEOUT / 4 seconds, one worker at a time (a lock in Redis)."""
    redis = redis_connection.connect(socket_timeout=10, socket_connect_timeout=5)
    interval = sweep_interval()
    while not stop.wait(interval):
        try:
            if redis.set(LOCK_KEY, "1", nx=True, px=int(interval * 900)):
                sweep(redis)
        except redis_lib.RedisError as exc:  # Redis away (a failover): the next sweep
            log.info("lost-message sweep skipped: %s", exc)


def start() -> threading.Event:
    """The sweeping thread of a worker's main process; set the returned event to stop it."""
    stop = threading.Event()
    threading.Thread(target=run_forever, args=(stop,), name="lost-messages", daemon=True).start()
    return stop
