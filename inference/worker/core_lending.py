"""Lend a worker the cores the other models on its machine leave idle, and take them back.

`make run` starts four model workers on one machine, each sized for its share of the cores
(HOST_WORKERS). When the load falls on one model, the other three's shares sit idle: a batch
that runs while no other model worker on the machine is busy may use every core, one that runs
beside k busy ones its part of the machine (cores / (k + 1)), never less than its share.

The workers tell each other through a board of files, one per model process, in shared memory
(/dev/shm): a file's mtime in the future means "running a batch now", in the past "last batch
ended then". Reading it is a scandir and a few stats (~30 us) before each batch; a worker whose
process died is known by its pid. Processes of other systems on the machine count too: they
use the same cores.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

RUNNING = 10**9  # added to a file's mtime while its process runs a batch
RECENT_SECONDS = 0.05  # a worker whose batch ended this recently is still busy (its next batch is on its way)


def board_dir() -> Path:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    return base / f"inference-cores-{os.getuid()}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CoreLender:
    """Before each batch, `threads()`: how many threads it may use now, from `choices` (the
    thread counts compiled for, from the worker's share up to every core). `running()` wraps the
    batch, so that the others see it."""

    def __init__(self, share: int, cores: int, board: Path | None = None):
        self.share, self.cores = share, cores
        self.board = board or board_dir()
        self.mine = self.board / str(os.getpid())
        try:
            self.board.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self.board.is_symlink() or self.board.stat().st_uid != os.getuid():
                raise PermissionError(f"{self.board} is not this user's own folder")
            self.mine.touch()
        except OSError as exc:  # no lending rather than no worker
            log.warning("cores are not lent to this worker (its share only): %s", exc)
            self.cores = share
        atexit.register(self.mine.unlink, missing_ok=True)

    @functools.cached_property
    def choices(self) -> list[int]:
        """Every thread count `threads()` may answer (compiled for at start): all the cores, a
        half, a third, a quarter, never less than the share."""
        return sorted({max(self.share, self.cores // n) for n in (1, 2, 3, 4)})

    def busy_others(self) -> int:
        now, busy = time.time(), 0
        with contextlib.suppress(FileNotFoundError), os.scandir(self.board) as entries:
            for entry in entries:
                if entry.name == self.mine.name or not entry.name.isdigit():
                    continue
                try:
                    mtime = entry.stat().st_mtime
                except FileNotFoundError:
                    continue
                if mtime > now - RECENT_SECONDS and (mtime < now + RUNNING / 2 or alive(int(entry.name))):
                    busy += 1
        return busy

    def threads(self) -> int:
        """The most threads of `choices` within this worker's part of the cores now."""
        if self.cores <= self.share:
            return self.share
        part = self.cores // (self.busy_others() + 1)
        return max([count for count in self.choices if count <= part], default=self.share)

    @contextlib.contextmanager
    def running(self):
        if self.cores <= self.share:
            yield
            return
        now = time.time()
        os.utime(self.mine, (now, now + RUNNING))
        try:
            yield
        finally:
            now = time.time()
            os.utime(self.mine, (now, now))
