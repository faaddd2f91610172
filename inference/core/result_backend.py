"""Celery's Redis result backend, storing a result in one round trip instead of two, and
dropping what a request kept in Redis with its final state.

Before each write Celery reads the stored record, so that a late duplicate run (a task
redelivered after its worker was lost) never overwrites a SUCCESS: a GET, then SET + PUBLISH.
This backend makes the same check inside Redis, in the script that writes and publishes. The
records are Celery's own, so any Celery client with a plain `redis://` backend reads them.

Every final outcome of a request is written here, whoever writes it: success, a failure in the
task (a bad picture, a time limit, retries exhausted), the hard time limit (written by the
worker's main process after it killed the pool process), a revoked request, an expired or
cancelled one, one refused as a poison message. So the same script deletes the request's
temporary keys (`keys.temporary_keys`: the pictures `submission.submit` stored, the count of starts)
and takes it out of its tenant's requests in flight: nothing stays behind, whichever way a
request ends, and it costs no round trip of its own. A request with a callback has its delivery
message moved onto the callbacks queue by the same script (inference/callbacks/): once, and
never a final state without it.
"""

from __future__ import annotations

from functools import cached_property

from celery import states
from celery.app.backends import BACKEND_ALIASES
from celery.backends.redis import RedisBackend, SentinelBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str

from inference.core.keys import CALLBACK_QUEUE, FINAL_STATES, callback_key, in_flight_key, temporary_keys, tenant_of

# KEYS[1]: the result key; with a final state also KEYS[2]: its callback's delivery message,
# KEYS[3]: the callbacks queue, KEYS[4]: its tenant's requests in flight, KEYS[5...]: its
# temporary keys, to delete. ARGV[1]: the encoded record; ARGV[2]: seconds to keep it (0: for
# ever); ARGV[3]: the task id.
# A state that is not final (RETRY, STARTED) never replaces a final one: Celery stores a
# retry's RETRY after it has queued the next attempt, and with a countdown of 0 (full jitter)
# the next attempt ran, failed for good and stored FAILURE first; the late RETRY then left the
# request "queued" for ever (seen once in make test).
FINAL_STATES_LUA = "{" + ", ".join(f"['{state}'] = true" for state in sorted(FINAL_STATES)) + "}"
STORE_UNLESS_SUCCEEDED = """
local final = """ + FINAL_STATES_LUA + """
local storing_final = #KEYS > 1
if storing_final then
  local delivery = redis.call('GET', KEYS[2])
  if delivery then
    redis.call('LPUSH', KEYS[3], delivery)
    redis.call('DEL', KEYS[2])
  end
  redis.call('ZREM', KEYS[4], ARGV[3])
end
if #KEYS > 4 then redis.call('DEL', unpack(KEYS, 5)) end
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' then
    if meta['status'] == 'SUCCESS' then return 0 end
    if not storing_final and final[meta['status']] then return 0 end
  end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


class OneTrip(RedisBackend):
    """The one-trip store, for Celery's RedisBackend and its SentinelBackend."""

    def _store_result(self, task_id, result, state, traceback=None, request=None, **kwargs):
        # Celery's own, less its read of the stored record: `_set` checks it inside Redis.
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:  # what RedisBackend.set checks
            raise BackendStoreError("value too large for Redis backend", state=state, task_id=task_id)
        task_id = meta["task_id"]
        ended = [callback_key(task_id), CALLBACK_QUEUE, in_flight_key(tenant_of(task_id)),
                 *temporary_keys(task_id, getattr(request, "kwargs", None))] if state in FINAL_STATES else []
        try:
            self.ensure(self._set, (self.get_key_for_task(task_id), value, task_id, ended))
        except BackendStoreError as ex:
            raise BackendStoreError(str(ex), state=state, task_id=task_id) from ex
        return result

    @cached_property
    def _store_script(self):
        return self.client.register_script(STORE_UNLESS_SUCCEEDED)  # redis-py reloads it after a Redis restart

    def _set(self, key, value, task_id: str = "", ended: list[str] | tuple = ()) -> None:
        """SET with the expiry and PUBLISH, unless the key holds a SUCCESS; for a request that
        `ended`, out of its tenant's in-flight set, its temporary keys deleted."""
        self._store_script(keys=[key, *ended], args=[value, int(self.expires or 0), task_id])


class OneTripRedisBackend(OneTrip):
    """`result_backend = "onetrip+redis://..."` (or `+rediss://`)."""


class OneTripSentinelBackend(OneTrip, SentinelBackend):
    """`onetripsentinel+sentinel://host:port/db;sentinel://...` (REDIS_SENTINELS)."""


# Names for Celery's `<backend>+<url>` form. Celery also takes "module:Class+redis://...", but
# that is no URL to anyone else: kombu, which masks the password of `result_backend` for
# `celery inspect conf` and Flower's Config tab, could not parse it, and both failed on every worker.
BACKEND_NAMES = {"onetrip": f"{__name__}:OneTripRedisBackend", "onetripsentinel": f"{__name__}:OneTripSentinelBackend"}


def register_backend_names() -> None:
    """Make Celery know `onetrip+...` and `onetripsentinel+...` in this process (celeryconfig.py)."""
    BACKEND_ALIASES.update(BACKEND_NAMES)


assert states.SUCCESS in FINAL_STATES and states.RETRY not in FINAL_STATES
