"""Convert a registry model to OpenVINO IR, with the sidecar a torch-free worker serves it from.

`python -m inference.worker.convert [MODEL ...] [--weights auto --seed 0 --cache-dir var/models]`
prints the .xml it wrote (or found) for each model (default: every registry model, with the
settings' weights, seed and cache). OpenVINO workers run it as a child process when their model
is not cached yet (inference/worker/openvino_runtime.py), so torch is imported here and not there.

`--missing` (`make run` runs it first) converts only what the worker configs' workers would
otherwise convert at their start, each with its config's settings: four workers converting at
once each import torch in a child (a first start on a 2-core Zen 4: 24-28 s to four ready
workers, against 19-20 after `--missing`). With nothing missing, on a host without an NVIDIA
driver, it imports no torch (0.4 s).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import warnings
from pathlib import Path

from inference.core.registry import ModelSpec, get_spec, model_names
from inference.core.settings import CONFIG_DIR, Settings, get_settings
from inference.worker.device import pick_device
from inference.worker.openvino_runtime import cached, ir_key, ir_path, whole
from inference.worker.preprocessing import ClassificationTransform
from inference.worker.runtime_choice import resolve_runtime

log = logging.getLogger(__name__)


def convert_to_ir(spec: ModelSpec, mode: str, seed: int, cache_dir: Path, allow_download: bool = False) -> Path:
    """The model MODEL_WEIGHTS=`mode` gives (pretrained, or random with its seed) as IR in
    `cache_dir`. Written under temporary names and renamed, the .xml last: two processes
    converting at once never leave half a model behind, and the .xml's presence means the
    .bin and .json beside it are whole."""
    import openvino as ov
    import torch
    from torchvision.models import get_weight

    from inference.worker.model_runtime import build_model

    model, used = build_model(spec, mode, seed, allow_download)
    xml = ir_path(cache_dir, ir_key(spec, used, seed))
    if whole(xml):
        return xml
    weights = get_weight(spec.weights)
    sidecar = {
        "weights": used,
        "categories": list(weights.meta["categories"]),
        "transform": ClassificationTransform.of(weights.transforms()).as_dict(),
        "pretrained_checkpoint": os.path.basename(weights.url),  # under `auto`, random serves while this is missing
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # OpenVINO's converter traces with torch.jit, which torch 2.14 calls deprecated: nobody's to act on
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace(_method)?` is deprecated", category=FutureWarning)
        converted = ov.convert_model(model.eval(), example_input=torch.zeros(1, 3, 224, 224),
                                     input=[ov.PartialShape([-1, 3, 224, 224])])
    temporary = cache_dir / f".{xml.stem}.{os.getpid()}.{threading.get_ident()}.xml"
    ov.save_model(converted, temporary, compress_to_fp16=False)  # weights stay f32: the precision is chosen when compiling
    temporary.with_suffix(".json").write_text(json.dumps(sidecar))
    for suffix in (".bin", ".json", ".xml"):
        os.replace(temporary.with_suffix(suffix), xml.with_suffix(suffix))
    log.info("converted %s (%s weights) to OpenVINO IR: %s", spec.name, used, xml)
    return xml


def missing_for_workers(config_dir: Path = CONFIG_DIR) -> list[Settings]:
    """The settings of each worker config whose worker would convert its model at its start: it
    runs on OpenVINO, and the cache lacks the IR its weights, seed and cache folder name."""
    missing = []
    for config in sorted(config_dir.glob("*.toml")):
        try:
            settings = Settings(worker_config=str(config))
            spec = get_spec(settings.worker_model) if settings.worker_model else None
        except (ValueError, KeyError) as exc:  # its worker fails its start with the same words
            print(f"{config.name} does not load, nothing converted for it: {exc}", flush=True)
            continue
        runtime = resolve_runtime(settings.worker_runtime, pick_device(settings.worker_device), warn=False, importing=False)
        if spec and runtime == "openvino" and cached(spec, settings.model_weights, settings.random_weights_seed,
                                                     Path(settings.model_cache_dir), settings.weights_download) is None:
            missing.append(settings)
    return missing


def convert_missing(config_dir: Path = CONFIG_DIR) -> None:
    """`--missing`: each model the workers would convert, here, torch imported once. One that fails
    is left to its worker, which fails its start with the same reason."""
    missing = missing_for_workers(config_dir)
    if missing:
        print(f"converting {', '.join(s.worker_model for s in missing)} to OpenVINO once (MODEL_CACHE_DIR)", flush=True)
    for settings in missing:
        try:
            convert_to_ir(get_spec(settings.worker_model), settings.model_weights, settings.random_weights_seed,
                          Path(settings.model_cache_dir), settings.weights_download)
        except Exception as exc:  # noqa: BLE001 - its worker reports it
            print(f"{settings.worker_model} did not convert ({type(exc).__name__}: {exc}); its worker will say why it cannot start",
                  flush=True)


def main() -> None:
    settings = get_settings()  # by default, what this environment's workers would load
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="registry models (default: all); one process converts them all, torch imported once")
    parser.add_argument("--weights", default=settings.model_weights, choices=["auto", "pretrained", "random"])
    parser.add_argument("--seed", type=int, default=settings.random_weights_seed)
    parser.add_argument("--cache-dir", default=settings.model_cache_dir)
    parser.add_argument("--allow-download", action="store_true", default=settings.weights_download)
    parser.add_argument("--missing", action="store_true",
                        help="only what the worker configs' OpenVINO workers would convert at their start, with their settings")
    args = parser.parse_args()
    if args.missing:
        if args.models:
            parser.error("--missing takes the models and their settings from the worker configs: name no models")
        return convert_missing()
    if unknown := [name for name in args.models if name not in model_names()]:
        parser.error(f"unknown model {', '.join(unknown)}; known models: {', '.join(model_names())}")
    for name in args.models or model_names():
        print(convert_to_ir(get_spec(name), args.weights, args.seed, Path(args.cache_dir), args.allow_download), flush=True)


if __name__ == "__main__":
    main()
