"""Stop signals reach an API process's main thread, where Python runs their handlers.

A granian worker's main thread waits on an event without a timeout while other threads serve.
The kernel may hand a process's SIGINT or SIGTERM to any of its threads; Python then only notes
it, and runs the handler (which would stop the worker) when the main thread next runs Python
code, which it did not until the server's main process killed it after GRACEFUL_SECONDS: about
one stop in ten, with SIGINT sent to the whole process group as Ctrl-C in a terminal does.
Here every such signal is also written to a pipe (`signal.set_wakeup_fd`, whichever thread got
it), and a thread reading it wakes the main thread with SIGUSR2, whose handler does nothing:
waking it is enough for the pending handlers to run. (A signal that comes before the app is
loaded, before any of this is set up, is api/serve.py's `Server`'s to handle.)
"""

from __future__ import annotations

import os
import signal
import threading

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
NUDGE = signal.SIGUSR2


def relay_to_main_thread() -> bool:
    """Call from the main thread before the server installs its handlers. Whether it is set up
    (not where another wakeup fd is set already, such as an asyncio loop's)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    reader, writer = os.pipe()
    os.set_blocking(writer, False)  # a full pipe drops a byte rather than blocking a handler
    previous = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
    if previous != -1:
        signal.set_wakeup_fd(previous)  # someone else's: put it back
        os.close(reader)
        os.close(writer)
        return False
    signal.signal(NUDGE, lambda *_: None)
    main = threading.main_thread().ident
    assert main is not None

    def relay() -> None:
        while True:
            received = os.read(reader, 64)
            if STOP_SIGNALS & set(received):
                signal.pthread_kill(main, NUDGE)

    threading.Thread(target=relay, name="stop-signals", daemon=True).start()
    return True
