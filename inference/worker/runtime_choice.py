"""Which runtime serves a CPU or CUDA worker, OpenVINO or PyTorch, decided without loading either.

The model's own process decides with `import openvino` as the test (an install that does not
import falls back to PyTorch). The Celery consumer in front of it, which only sizes it
(inference/worker/sizing.py), asks whether openvino is installed without importing it: the import
(its libraries, frontends and TBB) and numpy (by way of inference/worker/openvino_runtime.py) held
~20 MB of each consumer's memory (an idle one, PSS: 87 MB with them, 66 without).
"""

from __future__ import annotations

import importlib.util
import logging

log = logging.getLogger(__name__)


def available() -> bool:
    """OpenVINO imports here."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def installed() -> bool:
    """OpenVINO is installed (found, not imported)."""
    return importlib.util.find_spec("openvino") is not None


def resolve_runtime(runtime: str, device: str, warn: bool = True, importing: bool = True) -> str:
    """WORKER_RUNTIME on `device`: OpenVINO only on a CPU and only where it is installed (`auto`:
    there, PyTorch elsewhere). Asked for by name where it cannot run: PyTorch, with a warning.
    `importing`: whether OpenVINO must import, or only be installed (a process that never runs it)."""
    if runtime == "torch":
        return "torch"
    if not device.startswith("cpu"):
        if runtime == "openvino" and warn:
            log.warning("WORKER_RUNTIME=openvino on %s: PyTorch serves instead (OpenVINO runs CPU workers)", device)
        return "torch"
    if not (available() if importing else installed()):
        if runtime == "openvino" and warn:
            log.warning("WORKER_RUNTIME=openvino but openvino is not installed: PyTorch serves instead")
        return "torch"
    return "openvino"
