"""Download and cache the pretrained weights: `python -m inference.cli.weights download`.

Run it on a machine with internet; the files land in $TORCH_HOME/hub/checkpoints (default
~/.cache/torch). Copy that folder to offline machines and point TORCH_HOME at it.
`python -m inference.cli.weights status` says which models have their weights cached.
"""

from __future__ import annotations

import argparse
import os

from inference.core.registry import MODELS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.cli.weights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["download", "status"])
    parser.add_argument("models", nargs="*", default=list(MODELS), help="models (default: all)")
    args = parser.parse_args(argv)
    from torchvision.models import get_weight

    from inference.worker.model_runtime import checkpoint_path

    missing = 0
    for name in args.models:
        weights = get_weight(MODELS[name].weights)
        path = checkpoint_path(weights)
        if args.command == "download" and not os.path.exists(path):
            print(f"{name}: downloading {weights.url}")
            try:
                weights.get_state_dict(progress=True, check_hash=True)
            except Exception as exc:  # offline, proxy, disk
                print(f"{name}: download failed: {exc}")
        present = os.path.exists(path)
        missing += not present
        print(f"{name}: {'cached' if present else 'MISSING'} at {path}")
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
