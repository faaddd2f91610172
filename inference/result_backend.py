"""Celery's Redis result backend, storing a result in one round trip instead of two.

Before each write Celery reads the stored record, so that a late duplicate run (a task
redelivered after its worker was lost) never overwrites a SUCCESS: a GET, then SET + PUBLISH.
This backend makes the same check inside Redis, in the script that writes and publishes. The
records are Celery's own, so any Celery client with a plain `redis://` backend reads them.
"""

from __future__ import annotations

from functools import cached_property

from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str

# KEYS[1]: the result key; ARGV[1]: the encoded record; ARGV[2]: seconds to keep it (0: for ever).
STORE_UNLESS_SUCCEEDED = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then return 0 end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


class OneTripRedisBackend(RedisBackend):
    """`result_backend = "inference.result_backend:OneTripRedisBackend+redis://..."`."""

    def _store_result(self, task_id, result, state, traceback=None, request=None, **kwargs):
        # Celery's own, less its read of the stored record: `_set` checks it inside Redis.
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        try:
            self._set_with_state(self.get_key_for_task(task_id), self.encode(meta), state)
        except BackendStoreError as ex:
            raise BackendStoreError(str(ex), state=state, task_id=task_id) from ex
        return result

    @cached_property
    def _store_script(self):
        return self.client.register_script(STORE_UNLESS_SUCCEEDED)  # redis-py reloads it after a Redis restart

    def _set(self, key, value) -> None:
        """What RedisBackend.set runs (after its size check, under its retries): SET with the
        expiry and PUBLISH, unless the key holds a SUCCESS."""
        self._store_script(keys=[key], args=[value, int(self.expires or 0)])
