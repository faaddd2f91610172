"""Which device a worker's model runs on, found without importing torch where no GPU can be."""

from __future__ import annotations

from pathlib import Path


def pick_device(requested: str = "auto") -> str:
    """WORKER_DEVICE: `auto` is CUDA when torch sees a GPU. Without an NVIDIA driver there is
    none to see, and an OpenVINO worker never imports torch (366 MB) just to learn that."""
    if requested != "auto":
        return requested
    if not (Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
