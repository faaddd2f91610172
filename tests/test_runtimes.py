"""OpenVINO beside PyTorch: the same answers, the conversion cached, PyTorch where OpenVINO cannot run."""

from __future__ import annotations

import os

import pytest

from tests.helpers import MODELS, image_b64, image_bytes, paused, suite_processes
from tests.system import start_worker, wait_until

IMAGES = ("chelsea.jpg", "astronaut.jpg")


@pytest.fixture(scope="module")
def pictures():
    from inference.core.imaging import load_rgb

    return [load_rgb(image_bytes(name), 10**8) for name in IMAGES]


def load(model: str, cache_dir, **options):
    from inference.core.registry import MODELS as SPECS
    from inference.worker import model_runtime

    return model_runtime.load(SPECS[model], "random", 0, warmup=False, threads=2, cache_dir=str(cache_dir), **options)


@pytest.mark.parametrize("model", MODELS)
def test_openvino_answers_as_pytorch_does(model, pictures, tmp_path_factory):
    """fp32: PyTorch's classes and confidences (to 1e-4, what the system promises between its
    own runs). bf16: the same top class; of the top five, four at least (random weights leave
    classes within bf16's rounding of each other: efficientnet's fifth place is a tie)."""
    import torch

    cache = tmp_path_factory.mktemp("models")
    reference = load(model, cache)
    batch = reference.preprocess(pictures)
    want = reference.forward(batch)
    for precision in ("fp32", "bf16"):
        compiled = load(model, cache, runtime="openvino", precision=precision)
        assert (compiled.info["runtime"], compiled.info["precision"]) == ("openvino", precision)
        got = compiled.forward(batch)
        difference = float((got - want).abs().max())
        print(f"{model} {precision}: largest difference in a confidence {difference:.2e}")
        assert torch.equal(got.argmax(1), want.argmax(1))
        for got_row, want_row in zip(got, want):
            shared = set(got_row.topk(5).indices.tolist()) & set(want_row.topk(5).indices.tolist())
            assert len(shared) == 5 if precision == "fp32" else len(shared) >= 4, (precision, shared)
        if precision == "fp32":
            assert difference <= 1e-4


def test_a_model_is_converted_once_and_loaded_from_the_cache(pictures, tmp_path):
    import torch

    first = load("squeezenet", tmp_path, runtime="openvino", precision="fp32")
    assert first.info["converted"] is True and len(list(tmp_path.glob("squeezenet1_1-random-seed*-openvino-*.xml"))) == 1
    second = load("squeezenet", tmp_path, runtime="openvino", precision="fp32")
    assert second.info["converted"] is False  # the next process loads the IR: no conversion
    batch = first.preprocess(pictures)
    assert torch.equal(first.forward(batch), second.forward(batch))
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_pytorch_serves_where_openvino_cannot_run(monkeypatch, caplog, tmp_path):
    from inference.worker import openvino_runtime

    assert openvino_runtime.resolve_runtime("openvino", "cuda:0") == "torch"
    assert openvino_runtime.resolve_runtime("auto", "cuda:0") == "torch"  # CUDA workers keep PyTorch
    assert openvino_runtime.resolve_runtime("torch", "cpu") == "torch"
    assert openvino_runtime.resolve_runtime("auto", "cpu") == "openvino"  # the default, where it is installed
    monkeypatch.setattr(openvino_runtime, "available", lambda: False)
    assert openvino_runtime.resolve_runtime("auto", "cpu") == "torch"
    loaded = load("squeezenet", tmp_path, runtime="openvino")
    assert loaded.info["runtime"] == "torch" and loaded.info["precision"] == "fp32"
    assert "openvino is not installed: PyTorch serves instead" in caplog.text


@pytest.mark.e2e
def test_an_openvino_worker_serves_and_says_what_ran(api, redis_client, worker_ids, tmp_path, pictures):
    """A squeezenet worker with WORKER_RUNTIME=openvino: its answers are the in-process OpenVINO
    model's, and the result and /workers/status say runtime and precision."""
    from inference.submit import submission, waiting

    env = {**os.environ, "WORKER_RUNTIME": "openvino", "MODEL_CACHE_DIR": str(tmp_path)}
    name = start_worker(suite_processes, "squeezenet", env, name=f"squeezenet-ov-{os.getpid()}@%h")
    try:
        worker = wait_until(lambda: next((w for w in api.get(f"{api.base_url}/workers/status", timeout=5).json()["workers"]
                                          if w["worker_id"].startswith("squeezenet-ov") and w.get("ready_processes")), None),
                            120, interval=0.5, what="the OpenVINO worker")
        process, = worker["processes"]
        assert process["runtime"] == "openvino" and process["precision"] in ("bf16", "fp32") and process["optimize"] == "openvino"
        queues = ("squeezenet.high", "squeezenet.normal", "squeezenet.low")
        with paused(worker_ids["squeezenet"], *queues):
            ids = [submission.submit(redis_client, image_b64=image_b64(picture), model="squeezenet", priority="normal", top_k=5)
                   .job["request_id"] for picture in IMAGES]
            results = [waiting.wait_for(redis_client, request_id, 60)["result"] for request_id in ids]
    finally:
        suite_processes.stop(f"worker-{name}")
    reference = load("squeezenet", tmp_path, runtime="openvino", precision=process["precision"])
    for result, picture in zip(results, pictures):
        assert result["worker_id"].startswith("squeezenet-ov")
        assert (result["runtime"], result["precision"]) == ("openvino", process["precision"])
        expected = reference.classify([picture], 5)[0]
        assert [p["class_id"] for p in result["predictions"]] == [p["class_id"] for p in expected]
        assert all(abs(p["confidence"] - e["confidence"]) <= 1e-4 for p, e in zip(result["predictions"], expected))
