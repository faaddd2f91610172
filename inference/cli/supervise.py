"""Run workers' commands as one unit: `python -m inference.cli.supervise [--restart] '[[...], ...]'`.

What `python -m inference.cli.launch` becomes (exec, the same process) when it supervises:
`--restart`, or a config's replicas. It stays for as long as the workers run, so it imports
nothing but the standard library (~7 MB of memory, PSS, instead of the launcher's 21 with pydantic
and the settings). The commands come as JSON, the environment as it is.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import time

log = logging.getLogger("launch")


def supervise(cmds: list[list[str]], restart: bool, pause: float = 2.0) -> int:
    """Run one worker per command, as one unit: SIGTERM/SIGINT go to all of them, and this
    returns once they are gone. One that dies on its own is started again (`restart`), or
    stops the others (its exit code is returned)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stopping = False
    running: dict[int, tuple[list[str], subprocess.Popen]] = {}

    def start(cmd: list[str]) -> None:
        child = subprocess.Popen(cmd)
        running[child.pid] = (cmd, child)  # held: a dropped Popen of a live child is reaped by the next Popen()

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        for pid in list(running):
            try:
                os.kill(pid, signum)  # not Popen.send_signal: its poll() could reap a child os.wait() waits for
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for cmd in cmds:
        start(cmd)
    code = 0
    while running:
        pid, status = os.wait()
        if pid not in running:
            continue
        cmd, child = running.pop(pid)
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if stopping:
            code = code or child.returncode
        elif restart:
            log.warning("worker %s exited with %s; starting it again in %.0f s", cmd[-1], child.returncode, pause)
            time.sleep(pause)
            if not stopping:
                start(cmd)
        else:
            log.warning("worker %s exited with %s; stopping the others", cmd[-1], child.returncode)
            code = child.returncode
            stop(signal.SIGTERM, None)
    return code


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restart", action="store_true", help="start a worker again when it dies (else stop the others)")
    parser.add_argument("commands", help="the workers' commands, a JSON list of argument lists")
    args = parser.parse_args(argv)
    raise SystemExit(supervise(json.loads(args.commands), args.restart))


if __name__ == "__main__":
    main()
