"""The test suite's own machinery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.helpers import repo_root
from tests.system import children_of, command_line, still_running, wait_until


def test_a_suite_stopped_with_sigterm_stops_its_servers(tmp_path):
    """SIGTERM (`kill`, a CI timeout) unwinds a suite as Ctrl-C does (conftest.py): its Valkey,
    started before any test, does not outlive it."""
    started = tmp_path / "started"
    (tmp_path / "test_waits.py").write_text(
        "import os, time\n\n\ndef test_waits():\n"
        "    open(os.environ['STARTED_FILE'], 'w').close()\n    time.sleep(120)\n")
    env = {**os.environ, "TEST_LOG_DIR": str(tmp_path), "STARTED_FILE": str(started)}
    suite = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
                              str(tmp_path / "test_waits.py")], cwd=repo_root(), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_until(started.exists, 60, interval=0.05, what="the inner suite's test running")
        servers = {pid: command_line(pid) for pid in children_of(suite.pid)}
        assert any("valkey" in cmdline for cmdline in servers.values()), servers
        suite.send_signal(signal.SIGTERM)
        output, _ = suite.communicate(timeout=60)
    finally:
        if suite.poll() is None:
            os.killpg(suite.pid, signal.SIGKILL)

    assert "KeyboardInterrupt" in output and "SIGTERM" in output, output[-2000:]
    assert not [pid for pid, cmdline in servers.items() if still_running(pid, cmdline)], output[-2000:]
