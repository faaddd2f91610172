"""Start Flower behind a login: `python -m inference.cli.flower` (the Procfile's and Compose's way).

Flower shows every task's arguments (the images) and can revoke tasks and shut workers down,
so it never runs open. FLOWER_BASIC_AUTH=user:password chooses the login; without it a random
password is made once and kept, readable by this user only, beside Flower's database.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

from inference.core.settings import get_settings

log = logging.getLogger("flower")


def credentials_file() -> Path:
    return Path(get_settings().flower_db).parent / "flower-credentials"


def basic_auth() -> str:
    """FLOWER_BASIC_AUTH, else the generated login (made on first start, then reused)."""
    configured = get_settings().flower_basic_auth
    if configured:
        return configured
    path = credentials_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"admin:{secrets.token_urlsafe(16)}\n")
    return path.read_text().strip()


def flower_argv() -> list[str]:
    settings = get_settings()
    Path(settings.flower_db).parent.mkdir(parents=True, exist_ok=True)
    return [
        sys.executable, "-m", "celery", "-A", "inference", "flower",
        f"--address={settings.flower_address}",
        f"--port={settings.flower_port}",
        "--persistent=True",
        f"--max_tasks={settings.flower_max_tasks}",  # each task it keeps costs memory (FLOWER_MAX_TASKS)
        f"--enable_events={settings.flower_enable_events}",  # task events cost every request CPU (FLOWER_ENABLE_EVENTS)
        f"--db={settings.flower_db}",
    ]  # the login goes in FLOWER_BASIC_AUTH (see main): a command line is readable by every user


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = get_settings()
    if settings.flower_basic_auth:
        log.info("Flower on http://%s:%s, login from FLOWER_BASIC_AUTH", settings.flower_address, settings.flower_port)
    else:
        user = basic_auth().split(":", 1)[0]
        log.info("Flower on http://%s:%s, user %r, password in %s (or set FLOWER_BASIC_AUTH=user:password)",
                 settings.flower_address, settings.flower_port, user, credentials_file())
    sys.stdout.flush()
    argv = flower_argv()
    # Flower reads any option from FLOWER_<OPTION>; the environment is readable by this user only.
    os.environ["FLOWER_BASIC_AUTH"] = basic_auth()
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
