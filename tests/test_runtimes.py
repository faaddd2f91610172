"""OpenVINO beside PyTorch: the same answers, the conversion cached, PyTorch where OpenVINO cannot run."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

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
def test_openvino_answers_as_pytorch_does(model, pictures, model_cache, caplog):
    """The torch-free preprocessing gives torchvision's arrays (numpy's normalisation standing in
    for the one in the compiled graph). fp32: PyTorch's classes and
    confidences (to 1e-4, what the system promises between its own runs). bf16 (where the CPU
    has it; elsewhere fp32 serves, with a warning): the same top class; of the top five, four at
    least (random weights leave classes within bf16's rounding of each other)."""
    import numpy as np

    from inference.worker.openvino_runtime import cpu_has_bf16

    reference = load(model, model_cache)
    batch = reference.preprocess(pictures)
    want = reference.forward(batch).numpy()
    for precision in ("fp32", "bf16"):
        compiled = load(model, model_cache, runtime="openvino", precision=precision)
        served = precision if precision == "fp32" or cpu_has_bf16() else "fp32"
        assert (compiled.info["runtime"], compiled.info["precision"]) == ("openvino", served)
        assert served == precision or "this CPU has no bf16" in caplog.text
        pixels = compiled.preprocess(pictures)  # resized and cropped; the graph normalises them
        assert pixels.dtype == np.uint8
        assert float(np.abs(np.stack([compiled.transform.normalise(p) for p in pixels]) - batch.numpy()).max()) <= 1e-6
        got = compiled.forward(pixels)
        with pytest.raises(TypeError, match="uint8"):  # normalised floats would be cast to nonsense
            compiled.forward(batch.numpy())
        difference = float(np.abs(got - want).max())
        print(f"{model} {precision}, served {served}: largest difference in a confidence {difference:.2e}")
        assert np.array_equal(got.argmax(1), want.argmax(1))
        for got_row, want_row in zip(got, want):
            shared = set(np.argsort(-got_row)[:5].tolist()) & set(np.argsort(-want_row)[:5].tolist())
            assert len(shared) == 5 if served == "fp32" else len(shared) >= 4, (served, shared)
        if served == "fp32":
            assert difference <= 1e-4
            expected, answered = reference.classify(pictures, 5), compiled.classify(pictures, 5)
            assert [[p["class"] for p in row] for row in answered] == [[p["class"] for p in row] for row in expected]


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (256, 256), (300, 20), (7, 900), (1, 1), (2048, 256)])
@pytest.mark.parametrize("weights", ["ResNet18_Weights.IMAGENET1K_V1", "EfficientNet_B0_Weights.IMAGENET1K_V1"])
def test_the_torch_free_transforms_are_torchvisions(size, weights):
    """PIL + numpy (what an OpenVINO worker runs) against the weights' own transforms: bilinear
    and bicubic (efficientnet), pictures smaller than the crop, extreme shapes."""
    import numpy as np
    from PIL import Image
    from torchvision.models import get_weight

    from inference.worker.preprocessing import ClassificationTransform

    transforms = get_weight(weights).transforms()
    picture = Image.fromarray(np.random.default_rng(sum(size)).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    got, want = ClassificationTransform.of(transforms)(picture), transforms(picture).numpy()
    assert got.shape == want.shape and got.dtype == np.float32
    assert float(np.abs(got - want).max()) <= 1e-6


def test_a_model_is_converted_once_and_loaded_from_the_cache(pictures, tmp_path, monkeypatch):
    """The IR and its sidecar are written once; the next load converts nothing. Under
    MODEL_WEIGHTS=auto a cached random model serves only while no pretrained checkpoint is there."""
    import numpy as np

    from inference.core.registry import MODELS as SPECS
    from inference.worker.openvino_runtime import cached

    first = load("squeezenet", tmp_path, runtime="openvino", precision="fp32")
    xml, = tmp_path.glob("squeezenet1_1-random-seed*-openvino-*.xml")
    assert first.info["converted"] is True and xml.with_suffix(".bin").exists() and xml.with_suffix(".json").exists()
    second = load("squeezenet", tmp_path, runtime="openvino", precision="fp32")
    assert second.info["converted"] is False  # the next process loads the IR: no conversion
    batch = first.preprocess(pictures)
    assert np.array_equal(first.forward(batch), second.forward(batch))
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert cached(SPECS["squeezenet"], "auto", 0, tmp_path, allow_download=False) == xml
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / json.loads(xml.with_suffix(".json").read_text())["pretrained_checkpoint"]).write_bytes(b"")
    assert cached(SPECS["squeezenet"], "auto", 0, tmp_path, allow_download=False) is None  # convert the pretrained one
    assert cached(SPECS["squeezenet"], "random", 0, tmp_path, allow_download=False) == xml


@pytest.mark.parametrize("damage", [".bin", ".json"])
def test_a_damaged_cache_is_converted_again(damage, pictures, tmp_path, caplog):
    """A truncated .bin or a broken sidecar in MODEL_CACHE_DIR (a half copy): converted again, once,
    with a warning, and the answers are the model's."""
    import numpy as np

    first = load("squeezenet", tmp_path, runtime="openvino", precision="fp32")
    damaged, = tmp_path.glob(f"squeezenet1_1-*{damage}")
    whole = damaged.read_bytes()
    damaged.unlink()  # a new file: `first` still maps the old one (truncating that in place would crash it)
    damaged.write_bytes(whole[: len(whole) // 3])
    again = load("squeezenet", tmp_path, runtime="openvino", precision="fp32")
    assert again.info["converted"] is True and "converting it again" in caplog.text
    batch = first.preprocess(pictures)
    assert np.array_equal(first.forward(batch), again.forward(batch))


def test_auto_precision_is_whichever_runs_faster_on_this_cpu_timed_once(tmp_path, monkeypatch):
    """WORKER_PRECISION=auto on a CPU that computes in bf16 times a pass in each precision at the
    first start and serves the faster (bf16 only at BF16_AT_MOST of f32's time: fp32 gives
    PyTorch's answers); the timing is kept beside the IR for this CPU and thread count, and a
    later start reads it. A CPU without bf16 serves fp32 without timing anything."""
    from inference.worker import openvino_runtime

    first = load("squeezenet", tmp_path, runtime="openvino", precision="auto")
    timing = first.info["precision_timing"]
    if openvino_runtime.cpu_has_bf16():
        record, = tmp_path.glob("squeezenet1_1-*.precision-*-2t.json")
        assert timing["timed_now"] is True and timing["threads"] == 2 and min(timing["ms_a_pass"].values()) > 0
        assert first.info["precision"] == openvino_runtime.faster_precision(timing["ms_a_pass"])
        print(f"squeezenet, a picture's pass: {timing['ms_a_pass']}; {first.info['precision']} serves")
        second = load("squeezenet", tmp_path, runtime="openvino", precision="auto")
        assert second.info["precision_timing"] == {**timing, "timed_now": False}
        assert second.info["precision"] == first.info["precision"]
        for ms_a_pass, serves in (({"fp32": 10, "bf16": 5}, "bf16"), ({"fp32": 10, "bf16": 9.5}, "fp32"),
                                  ({"fp32": 5, "bf16": 10}, "fp32")):
            record.write_text(json.dumps({**timing, "ms_a_pass": ms_a_pass}))
            assert load("squeezenet", tmp_path, runtime="openvino", precision="auto").info["precision"] == serves
        record.write_text("{")  # a damaged record is timed again, and replaced whole
        again = load("squeezenet", tmp_path, runtime="openvino", precision="auto")
        assert again.info["precision_timing"]["timed_now"] is True
        assert json.loads(record.read_text())["ms_a_pass"] == again.info["precision_timing"]["ms_a_pass"]
        assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    else:
        assert first.info["precision"] == "fp32" and timing is None
    monkeypatch.setattr(openvino_runtime, "cpu_has_bf16", lambda: False)
    for record in tmp_path.glob("*.precision-*"):
        record.unlink()
    plain = load("squeezenet", tmp_path, runtime="openvino", precision="auto")
    assert plain.info["precision"] == "fp32" and plain.info["precision_timing"] is None
    assert not list(tmp_path.glob("*.precision-*"))


def test_a_process_without_torch_converts_in_a_child_and_hears_why_it_failed(tmp_path):
    """The worker's path: no torch in the process, so conversion runs in a child; pretrained
    weights that are missing come back as WeightsUnavailable (the worker's start fails with it)."""
    import subprocess
    import sys

    probe = ("import sys; from inference.core.registry import MODELS; from inference.worker import openvino_runtime as ov\n"
             "try:\n    ov.load(MODELS['squeezenet'], 'pretrained', 0, cache_dir=sys.argv[1], warmup=False)\n"
             "except Exception as exc:\n    print(type(exc).__name__, 'torch' in sys.modules)")
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch")}  # no checkpoints there
    answer = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert answer.stdout.split() == ["WeightsUnavailable", "False"], answer.stdout + answer.stderr
    assert not list(tmp_path.glob("*.xml"))


def test_pytorch_serves_where_openvino_cannot_run(monkeypatch, caplog, tmp_path):
    from inference.worker import runtime_choice

    assert runtime_choice.resolve_runtime("openvino", "cuda:0") == "torch"
    assert runtime_choice.resolve_runtime("auto", "cuda:0") == "torch"  # CUDA workers keep PyTorch
    assert runtime_choice.resolve_runtime("torch", "cpu") == "torch"
    assert runtime_choice.resolve_runtime("auto", "cpu") == "openvino"  # the default, where it is installed
    assert runtime_choice.resolve_runtime("auto", "cpu", importing=False) == "openvino"
    monkeypatch.setattr(runtime_choice, "available", lambda: False)
    monkeypatch.setattr(runtime_choice, "installed", lambda: False)
    assert runtime_choice.resolve_runtime("auto", "cpu") == "torch"
    assert runtime_choice.resolve_runtime("auto", "cpu", importing=False) == "torch"
    loaded = load("squeezenet", tmp_path, runtime="openvino")
    assert loaded.info["runtime"] == "torch" and loaded.info["precision"] == "fp32"
    assert "openvino is not installed: PyTorch serves instead" in caplog.text


def test_a_worker_borrows_the_cores_other_workers_leave_idle(tmp_path):
    """All the cores while no other model worker runs a batch or ran one a moment ago; its part
    beside the busy ones; never less than its share. A dead process's "running" mark is ignored;
    a board that is not the user's own folder lends nothing."""
    import subprocess
    import time

    from inference.worker.core_lending import RECENT_SECONDS, RUNNING, CoreLender

    lender = CoreLender(share=1, cores=4, board=tmp_path)
    assert lender.choices == [1, 2, 4] and lender.threads() == 4
    other, another = subprocess.Popen(["sleep", "60"]), subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        now = time.time()
        (tmp_path / str(dead.pid)).touch()
        os.utime(tmp_path / str(dead.pid), (now, now + RUNNING))  # died mid-batch
        assert lender.threads() == 4
        (tmp_path / str(other.pid)).touch()
        os.utime(tmp_path / str(other.pid), (now, now + RUNNING))  # running a batch now
        assert lender.threads() == 2
        (tmp_path / str(another.pid)).touch()  # and one more, whose batch ended just now
        assert lender.threads() == 1
        os.utime(tmp_path / str(another.pid), (now, now - 10 * RECENT_SECONDS))
        os.utime(tmp_path / str(other.pid), (now, now - 10 * RECENT_SECONDS))  # its last batch ended a while ago
        assert lender.threads() == 4
        with lender.running():  # its own mark
            assert (tmp_path / str(os.getpid())).stat().st_mtime > time.time() + RUNNING / 2 and lender.threads() == 4
    finally:
        other.kill()
        another.kill()
    assert CoreLender(share=4, cores=64, board=tmp_path).choices == [16, 21, 32, 64]  # a few compiled counts, not one per core
    (tmp_path / "not-mine").symlink_to(tmp_path)
    refused = CoreLender(share=1, cores=4, board=tmp_path / "not-mine")  # a board another user could have planted
    assert refused.threads() == 1 and refused.choices == [1]


def test_a_batch_decodes_on_as_many_threads_as_it_may_borrow(monkeypatch):
    """The worker's decoding pool has a thread per core a forward pass may borrow; a batch's
    pictures go to as many of them as the lender allows now, and come back in order."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from inference.worker import process

    pool = ThreadPoolExecutor(4)
    monkeypatch.setattr(process, "_decoders", pool)
    monkeypatch.setattr(process, "_decoding_threads", 4)

    def threads_used(pictures: int, threads: int | None, expected: int) -> set[str]:
        # The first `expected` pictures each start a chunk: they meet at a barrier, or it breaks.
        barrier = threading.Barrier(expected, timeout=10)

        def decode(n: int) -> tuple[int, str]:
            if n < expected and expected > 1:
                barrier.wait()
            return n, threading.current_thread().name

        decoded = process.parallel_map(decode, list(range(pictures)), threads)
        assert [n for n, _ in decoded] == list(range(pictures))  # in order
        return {thread for _, thread in decoded}

    try:
        assert len(threads_used(9, threads=2, expected=2)) == 2  # as many as the lender allows now
        assert len(threads_used(9, threads=None, expected=4)) == 4  # all of them by default
        assert len(threads_used(3, threads=None, expected=3)) == 3  # never more than the pictures
        assert threads_used(5, threads=1, expected=1) == {threading.current_thread().name}  # one: no thread hop
    finally:
        pool.shutdown()


def test_the_convert_command_names_a_model_it_does_not_know(monkeypatch, capsys, tmp_path):
    """`make models` with a typo: a usage error that lists the models, before anything converts."""
    from inference.worker import convert

    monkeypatch.setattr("sys.argv", ["convert", "squeezenet", "resnet-18", "--cache-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as stopped:
        convert.main()
    assert stopped.value.code == 2 and "unknown model resnet-18; known models: mobilenet, resnet18" in capsys.readouterr().err
    monkeypatch.setattr("sys.argv", ["convert", "--missing", "squeezenet"])  # its models are the worker configs'
    with pytest.raises(SystemExit) as stopped:
        convert.main()
    assert stopped.value.code == 2 and "name no models" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_make_run_converts_first_what_its_workers_would_convert(tmp_path):
    """`make run` runs `convert --missing` before its workers start: each worker config's model
    that would run on OpenVINO and is not cached, with that config's settings, in one process; a
    model that cannot convert, or a config that does not load, is left to its worker, which says
    why. With everything cached: no torch, nothing done."""
    import subprocess
    import sys

    from inference.core.registry import MODELS as SPECS
    from inference.worker.openvino_runtime import cached

    configs, cache = tmp_path / "worker_configs", tmp_path / "models"
    configs.mkdir()
    setting = f'model_cache_dir = "{cache}"\n'
    (configs / "squeezenet.toml").write_text(f'worker_model = "squeezenet"\nmodel_weights = "random"\nrandom_weights_seed = 3\n{setting}')
    (configs / "resnet18.toml").write_text(f'worker_model = "resnet18"\nworker_runtime = "torch"\n{setting}')  # PyTorch: nothing to convert
    (configs / "mobilenet.toml").write_text(f'worker_model = "mobilenet"\nmodel_weights = "pretrained"\n{setting}')  # not on this disk
    (configs / "efficientnet.toml").write_text('worker_model = "efficientnet"\nmax_batch_sise = 8\n')  # a typo: its worker says so
    probe = ("import sys; from pathlib import Path; from inference.worker.convert import convert_missing\n"
             "convert_missing(Path(sys.argv[1])); print('torch imported:', 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_WEIGHTS", "MODEL_CACHE_DIR", "RANDOM_WEIGHTS_SEED", "WORKER_RUNTIME")}
    env["TORCH_HOME"] = str(tmp_path / "torch")  # no checkpoints there

    def convert_missing() -> list[str]:
        done = subprocess.run([sys.executable, "-c", probe, str(configs)], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.splitlines()

    first = convert_missing()
    assert first[0].startswith("efficientnet.toml does not load, nothing converted for it:") and "max_batch_sise" in first[0], first
    assert first[1] == "converting mobilenet, squeezenet to OpenVINO once (MODEL_CACHE_DIR)", first
    assert first[2].startswith("mobilenet did not convert (WeightsUnavailable") and first[-1] == "torch imported: True", first
    assert cached(SPECS["squeezenet"], "random", 3, cache, allow_download=False) is not None  # the config's seed, not the default
    assert [xml.name.split("-openvino-")[0] for xml in cache.glob("*.xml")] == ["squeezenet1_1-random-seed" + str(3 + SPECS["squeezenet"].seed_offset)]
    (configs / "mobilenet.toml").unlink()
    (configs / "efficientnet.toml").unlink()
    assert convert_missing() == ["torch imported: False"]  # a warm start pays a second at most


@pytest.mark.e2e
def test_the_suite_workers_load_what_the_convert_command_wrote(api, worker_ids):
    """`python -m inference.worker.convert` (`make models`, and the suite's own setup) converts
    every model with the weights, seed and cache the workers load with: none converted again."""
    from inference.worker.runtime_choice import resolve_runtime

    workers = api.get(f"{api.base_url}/workers/status", timeout=10).json()["workers"]
    processes = [p for w in workers if w["worker_id"] in worker_ids.values() for p in w["processes"]]
    on_openvino = [p for p in processes if resolve_runtime("auto", p["device"], warn=False) == "openvino"]
    assert len(processes) == len(MODELS)
    if not on_openvino:
        pytest.skip("the suite's workers run PyTorch on CUDA here: nothing was converted")
    assert all(p["runtime"] == "openvino" and p["converted"] is False for p in on_openvino), on_openvino


@pytest.mark.e2e
def test_an_openvino_worker_serves_and_says_what_ran(api, redis_client, worker_ids, tmp_path, pictures):
    """A squeezenet worker with WORKER_RUNTIME=openvino: its answers are the in-process OpenVINO
    model's, the result and /workers/status say runtime and precision, and no torch is loaded."""
    from inference.submit import submission, waiting

    # HOST_WORKERS=4, as under `make run`: a share of 1 core, and more borrowed when the rest are idle.
    env = {**os.environ, "WORKER_RUNTIME": "openvino", "MODEL_CACHE_DIR": str(tmp_path), "HOST_WORKERS": "4", "TORCH_THREADS": "0"}
    name = start_worker(suite_processes, "squeezenet", env, name=f"squeezenet-ov-{os.getpid()}@%h")
    try:
        worker = wait_until(lambda: next((w for w in api.get(f"{api.base_url}/workers/status", timeout=5).json()["workers"]
                                          if w["worker_id"].startswith("squeezenet-ov") and w.get("ready_processes")), None),
                            120, interval=0.5, what="the OpenVINO worker")
        process, = worker["processes"]
        assert process["runtime"] == "openvino" and process["precision"] in ("bf16", "fp32") and process["optimize"] == "openvino"
        if process["precision_timing"]:  # WORKER_PRECISION=auto on a CPU with bf16: timed at its start
            from inference.worker.openvino_runtime import faster_precision

            assert process["precision"] == faster_precision(process["precision_timing"]["ms_a_pass"])
        # Converted in a child process (the cache was empty): the pool process never loaded torch.
        maps = Path(f"/proc/{process['pid']}/maps").read_text()
        assert process["converted"] is True and "openvino" in maps and "libtorch" not in maps
        cores = os.cpu_count() or 1
        assert process["openvino_threads"] == sorted({max(1, cores // busy) for busy in range(1, cores + 1)})
        assert process["decoding_threads"] == cores  # a batch's pictures decode on the cores its forward pass may borrow
        pss_mb = int(re.search(r"^Pss:\s+(\d+) kB", Path(f"/proc/{process['pid']}/smaps_rollup").read_text(), re.M)[1]) / 1024
        print(f"OpenVINO squeezenet pool process: {pss_mb:.0f} MB PSS")
        assert pss_mb < 400  # a PyTorch one held ~900 MB
        queues = ("squeezenet.high", "squeezenet.normal", "squeezenet.low")
        with paused(worker_ids["squeezenet"], *queues):
            ids = [submission.submit(redis_client, image_b64=image_b64(picture), model="squeezenet", priority="normal", top_k=5)
                   .job["request_id"] for picture in IMAGES]
            results = [waiting.wait_for(redis_client, request_id, 60)["result"] for request_id in ids]
        # The Celery consumer in front of the model's process, having served them, loaded neither
        # openvino nor numpy (inference/worker/runtime_choice.py).
        consumer = int(Path(f"/proc/{process['pid']}/stat").read_text().rsplit(")", 1)[1].split()[1])
        consumer_maps = Path(f"/proc/{consumer}/maps").read_text()
        assert "celery" in Path(f"/proc/{consumer}/cmdline").read_text()
        assert not [lib for lib in ("openvino", "numpy", "libtorch") if lib in consumer_maps]
    finally:
        suite_processes.stop(f"worker-{name}")
    reference = load("squeezenet", tmp_path, runtime="openvino", precision=process["precision"])
    for result, picture in zip(results, pictures):
        assert result["worker_id"].startswith("squeezenet-ov")
        assert (result["runtime"], result["precision"]) == ("openvino", process["precision"])
        expected = reference.classify([picture], 5)[0]
        assert [p["class_id"] for p in result["predictions"]] == [p["class_id"] for p in expected]
        assert all(abs(p["confidence"] - e["confidence"]) <= 1e-4 for p, e in zip(result["predictions"], expected))
