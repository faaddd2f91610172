"""`celery inspect conf` (and Flower's Config tab, which asks for it) with the password of every
Redis URL masked. With REDIS_SENTINELS, `result_backend` holds one URL, password included, per
Sentinel (kombu needs it in each: it moves to the next when one is down), and Celery masked the
first one's only. Imported by every kind of worker (a control command is the process's own)."""

from __future__ import annotations

import re

from celery.utils.serialization import strtobool
from celery.worker.control import Panel, inspect_command

_celery_conf = Panel.data["conf"]
PASSWORD = re.compile(r"(\w[\w+.-]*://[^:@/;]*:)[^@;/]+@")


@inspect_command(signature="[include_defaults=False]", args=[("with_defaults", strtobool)])
def conf(state, with_defaults=False, **kwargs):
    """List configuration (Celery's, every URL's password masked)."""
    table = _celery_conf(state, with_defaults=with_defaults, **kwargs)
    return {key: PASSWORD.sub(r"\1********@", value) if isinstance(value, str) else value for key, value in table.items()}
