"""Dynamic batching: a batch forms, results stay per request, a bad image fails alone."""

from __future__ import annotations

import base64
import os
import signal
import time

import pytest

from inference.worker.batching import MicroBatcher
from tests.helpers import image_b64, image_bytes, paused, suite_processes, wait_for_pictures_deleted
from tests.system import start_worker, wait_until


def test_batch_closes_when_full():
    seen = []
    batcher = MicroBatcher(lambda items: seen.append(list(items)) or [i * 10 for i in items], max_batch_size=3, max_delay=5.0)
    for _ in range(7):
        batcher.expect()
    futures = [batcher.submit(i, expected=True) for i in range(7)]
    outcomes = [f.result(timeout=20) for f in futures[:6]]
    assert [o.output for o in outcomes] == [0, 10, 20, 30, 40, 50]
    assert seen[:2] == [[0, 1, 2], [3, 4, 5]] and outcomes[0].batch_size == 3
    assert futures[6].result(timeout=1).batch_size == 1  # the leftover: nothing else expected, no wait


def test_a_request_of_several_items_is_split_into_full_batches_in_order():
    batcher = MicroBatcher(lambda items: [i * 10 for i in items], max_batch_size=3, max_delay=5.0, instances=2)
    batcher.wait_ready(5)
    batcher.expect(5)
    outcomes = batcher.submit_many([1, 2, 3, 4, 5], expected=True).outcomes(timeout=5)
    assert [o.output for o in outcomes] == [10, 20, 30, 40, 50]
    assert [o.batch_size for o in outcomes] == [3, 3, 3, 2, 2]  # the leftover does not wait: nothing else expected
    assert len({o.batch_number for o in outcomes}) == 2


def test_a_submission_gives_each_item_its_outcome_or_its_own_error():
    import threading

    gate = threading.Event()

    def odd_ones_fail(items):
        gate.wait(5)
        return [ValueError(f"item {i}") if i % 2 else i * 10 for i in items]

    batcher = MicroBatcher(odd_ones_fail, max_batch_size=2, max_delay=0)
    submitted = batcher.submit_many([0, 1, 2, 3, 4])
    with pytest.raises(TimeoutError):
        submitted.outcomes(timeout=0.1)  # still running: the caller's wait is bounded
    assert not submitted.done()
    gate.set()
    got = submitted.outcomes(timeout=5)
    assert [str(o) if isinstance(o, ValueError) else o.output for o in got] == [0, "item 1", 20, "item 3", 40]
    with pytest.raises(ValueError, match="item 5"):
        batcher.submit(5).result(timeout=5)
    assert batcher.submit_many([]).outcomes(timeout=0) == []


def test_batch_waits_for_expected_requests_up_to_the_delay_from_the_first():
    batcher = MicroBatcher(lambda items: list(items), max_batch_size=100, max_delay=0.3)
    for _ in range(3):
        batcher.expect()  # three tasks decoding
    started = time.monotonic()
    first = batcher.submit("a", expected=True)
    time.sleep(0.05)
    second = batcher.submit("b", expected=True)  # the third never comes: the delay closes the batch
    assert first.result(timeout=5).batch_size == 2 and second.result(timeout=5).output == "b"
    assert 0.25 <= time.monotonic() - started < 2


def test_batch_closes_as_soon_as_nothing_else_is_expected():
    batcher = MicroBatcher(lambda items: list(items), max_batch_size=100, max_delay=10)
    batcher.expect()
    batcher.expect()
    started = time.monotonic()
    first = batcher.submit("a", expected=True)
    time.sleep(0.05)
    batcher.forget()  # the other one failed while decoding
    assert first.result(timeout=5).batch_size == 1
    assert time.monotonic() - started < 1  # not the 10 s delay
    assert batcher.run("alone", timeout=1).batch_size == 1  # nothing announced: runs at once


def test_instances_run_batches_side_by_side():
    import threading

    running, most = set(), []

    def slow(items):
        running.add(threading.current_thread().name)
        most.append(len(running))
        time.sleep(0.2)
        running.discard(threading.current_thread().name)
        return list(items)

    warmed = []
    batcher = MicroBatcher(slow, max_batch_size=1, max_delay=0, initializer=lambda: warmed.append("first"), instances=3,
                           instance_initializer=lambda: warmed.append(threading.current_thread().name))
    batcher.wait_ready(5)
    assert sorted(warmed) == ["first", "micro-batcher-1", "micro-batcher-2"]
    started = time.monotonic()
    assert [f.result(timeout=5).output for f in [batcher.submit(i) for i in range(3)]] == [0, 1, 2]
    assert max(most) == 3 and time.monotonic() - started < 0.5  # three at once, not 0.6 s in a row


def test_a_lone_batch_takes_every_core_and_side_by_side_batches_share_them():
    """`share_cores(n)` before each batch, in the instance's thread: 1 when the batch runs alone
    (one request at a time always runs on the first instance, whose threads stay warm), n when
    n instances run batches at once."""
    import threading

    shares, gate = [], threading.Event()

    def wait_for_gate(items):
        gate.wait(5)
        return list(items)

    batcher = MicroBatcher(wait_for_gate, max_batch_size=1, max_delay=0, instances=2,
                           share_cores=lambda n: shares.append((threading.current_thread().name, n)))
    batcher.wait_ready(5)
    gate.set()
    for i in range(5):
        assert batcher.run(i, timeout=5).output == i
    assert shares == [("micro-batcher-0", 1)] * 5
    shares.clear()
    gate.clear()
    submitted = batcher.submit_many([0, 1])  # both waiting at once
    wait_until(lambda: len(shares) == 2, 5, interval=0.01, what="two batches started")
    gate.set()
    assert [o.output for o in submitted.outcomes(timeout=5)] == [0, 1]
    assert sorted(shares) == [("micro-batcher-0", 2), ("micro-batcher-1", 2)]


def test_a_suspect_submission_runs_alone_while_no_other_batch_runs():
    """A request whose process died while it ran (tasks.py) runs in a batch of its own pictures,
    with no other batch running beside it: a second crash can be held against it alone."""
    import threading

    batches, running, most_beside_alone, gate = [], [0], [], threading.Event()
    lock = threading.Lock()

    def record(items):
        with lock:
            running[0] += 1
            if any(str(i).startswith("alone") for i in items):
                most_beside_alone.append(running[0])
        gate.wait(5)
        time.sleep(0.05)
        with lock:
            batches.append(list(items))
            running[0] -= 1
        return list(items)

    batcher = MicroBatcher(record, max_batch_size=4, max_delay=0, instances=2)
    batcher.wait_ready(5)
    first = batcher.submit_many([1, 2])
    suspect = batcher.submit_many(["alone-a", "alone-b"], alone=True)
    after = batcher.submit_many([3, 4])
    gate.set()
    for submission in (first, suspect, after):
        submission.outcomes(timeout=5)
    assert ["alone-a", "alone-b"] in batches  # its pictures together, nothing else with them
    assert most_beside_alone == [1]  # and no other batch ran meanwhile
    assert [1, 2] in batches and [3, 4] in batches


def test_waiting_items_run_by_rank_then_arrival():
    """A request's priority orders the batcher's queue: a high request that reaches a busy worker
    runs in its next batch, ahead of the lows that were waiting before it."""
    import threading

    gate, batches = threading.Event(), []
    batcher = MicroBatcher(lambda items: gate.wait(5) and batches.append(list(items)) or list(items), max_batch_size=2, max_delay=0)
    batcher.wait_ready(5)
    running = batcher.submit("low 0", rank=2)
    wait_until(lambda: not batcher._pending, 5, interval=0.01, what="the first batch running")
    waiting = [batcher.submit(f"low {n}", rank=2) for n in (1, 2, 3)] + [batcher.submit("normal", rank=1), batcher.submit("high", rank=0)]
    gate.set()
    for submission in (running, *waiting):
        submission.result(timeout=5)
    assert batches == [["low 0"], ["high", "normal"], ["low 1", "low 2"], ["low 3"]]


def test_a_submission_whose_task_stopped_waiting_is_not_run():
    import threading

    gate, ran = threading.Event(), []
    batcher = MicroBatcher(lambda items: gate.wait(5) and ran.extend(items) or list(items), max_batch_size=1, max_delay=0)
    batcher.wait_ready(5)
    blocker = batcher.submit("blocker")
    given_up = batcher.submit("given up")
    with pytest.raises(TimeoutError):
        given_up.result(timeout=0.1, abandon=True)  # its task's time limit
    gate.set()
    assert batcher.run("next", timeout=5).output == "next"
    assert blocker.result(timeout=5).output == "blocker" and ran == ["blocker", "next"]


def test_a_batch_whose_runner_died_runs_again_each_request_alone_and_a_poison_fails_alone():
    """RunnerDied (the model process died running the batch): every submission in it runs again
    by itself; one that kills its runner `max_crashes` times, the last time alone, fails with
    `give_up`; the others succeed."""
    from inference.worker.batching import RunnerDied

    batches = []

    def dies_on_poison(items):
        batches.append(list(items))
        if "poison" in items:
            raise RunnerDied("the model process died")
        return [f"ok {i}" for i in items]

    batcher = MicroBatcher(dies_on_poison, max_batch_size=8, max_delay=0.2, max_crashes=3,
                           give_up=lambda crashes: ValueError(f"poison after {crashes}"))
    batcher.wait_ready(5)
    batcher.expect(3)
    innocent, poison, other = (batcher.submit(item, expected=True) for item in ("a", "poison", "b"))
    assert innocent.result(timeout=5).output == "ok a" and other.result(timeout=5).output == "ok b"
    with pytest.raises(ValueError, match="poison after 3"):
        poison.result(timeout=5)
    assert batches[0] == ["a", "poison", "b"]  # together, until the first death
    assert batches[1:] == [["a"], ["poison"], ["b"], ["poison"]]  # then each alone, ahead of any other request
    assert batcher.run("c", timeout=5).output == "ok c"  # and the batcher goes on


@pytest.fixture()
def model_host(monkeypatch, tmp_path, model_cache):
    """A real model process for squeezenet (random weights, OpenVINO where installed), fed directly."""
    from inference.core.settings import Settings, use_settings
    from inference.worker.model_host import ModelHost

    use_settings(Settings(worker_model="squeezenet", worker_pool="threads", max_batch_size=4, model_cache_dir=str(model_cache),
                          chaos_crash_marker="chaos-poison-unit", worker_timeout=3))
    host = ModelHost(1, str(tmp_path), hang_seconds=1.0, start_timeout=120)
    host.start()
    yield host
    host._child.kill()
    use_settings(None)


def test_a_model_host_classifies_and_comes_back_after_its_process_dies(model_host):
    from inference.worker.model_host import ModelProcessDied

    picture = image_bytes("chelsea.jpg")
    first_pid = model_host.pid
    (predictions,) = model_host.run([(picture, 3)])
    assert len(predictions) == 3 and model_host.info["model"] == "squeezenet"
    os.kill(first_pid, signal.SIGKILL)  # an out-of-memory kill, say
    with pytest.raises(ModelProcessDied):
        model_host.run([(picture, 3)])
    assert model_host.pid != first_pid and model_host.run([(picture, 3)]) == [predictions]  # a new one, same answers
    poisoned = picture.replace(b"\xff\xd9", b"chaos-poison-unit\xff\xd9")
    with pytest.raises(ModelProcessDied, match="died running this batch"):
        model_host.run([(poisoned, 3)])  # CHAOS_CRASH_MARKER: the process kills itself
    assert model_host.run([(picture, 3)]) == [predictions] and model_host.starts == 3


def test_an_openvino_model_process_runs_each_batch_in_the_thread_that_received_it(tmp_path, model_cache):
    """No hand-off to the child's own batcher and back (two thread switches, ~0.5 ms of a lone
    request); with two instances, two threads, and still no torch in the process."""
    import subprocess
    import sys
    import textwrap

    probe = textwrap.dedent("""
        import sys, threading
        from multiprocessing.connection import Pipe
        from inference.core.settings import Settings
        from inference.worker import model_host, process
        ran_in, classify = [], process.decode_and_classify
        process.decode_and_classify = lambda items: ran_in.append(threading.current_thread().name) or classify(items)
        ours, theirs = zip(*(Pipe() for _ in range(2)))
        threading.Thread(target=model_host.serve, args=(list(theirs),), daemon=True).start()
        settings = Settings(worker_model="squeezenet", worker_pool="threads", model_instances=2, model_cache_dir=sys.argv[1])
        ours[0].send((settings, None))
        outcome, info = ours[0].recv()
        print(outcome, info["runtime"], info["instances"])
        for connection in ours:
            connection.send([(open(sys.argv[2], "rb").read(), 3)])
            print(len(connection.recv()[0]))
        print(*ran_in, "torch" in sys.modules)
    """)
    picture = tmp_path / "chelsea.jpg"
    picture.write_bytes(image_bytes("chelsea.jpg"))
    answer = subprocess.run([sys.executable, "-c", probe, str(model_cache), str(picture)], capture_output=True, text=True,
                            timeout=180)
    assert answer.stdout.split() == ["ready", "openvino", "2", "3", "3", "channel-0", "channel-1", "False"], answer.stdout + answer.stderr[-3000:]


def test_a_batch_past_its_hard_limit_kills_the_model_process(model_host, monkeypatch):
    """The threads pool cannot stop a task; past twice WORKER_TIMEOUT (here 1 s) the model's process is killed."""
    from inference.worker.model_host import ModelProcessDied

    stuck_pid = model_host.pid
    os.kill(stuck_pid, signal.SIGSTOP)  # a forward pass that never returns
    started = time.monotonic()
    with pytest.raises(ModelProcessDied, match="ran past"):
        model_host.run([(image_bytes("chelsea.jpg"), 1)])
    assert 1.0 <= time.monotonic() - started < 60
    assert model_host.pid != stuck_pid and len(model_host.run([(image_bytes("chelsea.jpg"), 1)])[0]) == 1


def test_a_failing_instance_initializer_fails_the_start():
    def broken():
        raise RuntimeError("no memory for a second copy")

    batcher = MicroBatcher(lambda items: items, max_batch_size=1, max_delay=0, instances=2, instance_initializer=broken)
    with pytest.raises(RuntimeError, match="second copy"):
        batcher.wait_ready(5)


def test_batch_size_one_runs_at_once_and_errors_reach_every_request():
    def explode(items):
        raise RuntimeError("boom")

    batcher = MicroBatcher(explode, max_batch_size=1, max_delay=10)
    with pytest.raises(RuntimeError, match="boom"):
        batcher.run("x", timeout=2)  # would time out if size 1 waited for the delay


def ready_resnet18_worker(api, prefix: str, env: dict) -> tuple[str, dict]:
    """Start a resnet18 worker named <prefix>-<pid>@host with `env`; once its model is ready, its
    process name (to stop it) and its entry in /workers/status."""
    name = start_worker(suite_processes, "resnet18", env, name=f"{prefix}-{os.getpid()}@%h")
    try:
        worker = wait_until(lambda: next((w for w in api.get(f"{api.base_url}/workers/status", timeout=5).json()["workers"]
                                          if w["worker_id"].startswith(prefix) and w.get("ready_processes")), None),
                            120, interval=0.5, what=prefix)
    except BaseException:
        suite_processes.stop(f"worker-{name}")
        raise
    return f"worker-{name}", worker


@pytest.fixture(scope="module")
def batching_worker(api):
    """A second resnet18 worker with MAX_BATCH_SIZE=8; tests pause the first one's queues."""
    # Its own thread budget (TORCH_THREADS unset: the cores), so MODEL_INSTANCES auto picks 2 here;
    # on PyTorch, whose instances these tests are about (an OpenVINO worker runs one).
    env = {**os.environ, "MAX_BATCH_SIZE": "8", "MAX_BATCH_DELAY_MS": "300", "TORCH_THREADS": "0", "WORKER_RUNTIME": "torch"}
    process_name, worker = ready_resnet18_worker(api, "resnet18-batch", env)
    try:
        yield worker["worker_id"]
    finally:
        suite_processes.stop(process_name)


def expected_predictions(image_name: str, top_k: int) -> list[dict]:
    from inference.core.imaging import load_rgb
    from inference.core.registry import MODELS as SPECS
    from inference.worker import model_runtime

    reference = model_runtime.load(SPECS["resnet18"], "random", 0, warmup=False)
    return reference.classify([load_rgb(image_bytes(image_name), 10**8)], top_k)[0]


def assert_same_predictions(got: list[dict], want: list[dict]) -> None:
    assert [p["class_id"] for p in got] == [p["class_id"] for p in want]
    for g, w in zip(got, want):
        assert abs(g["confidence"] - w["confidence"]) <= 1e-4


@pytest.mark.e2e
def test_batching_worker_batches_real_requests(batching_worker, redis_client, worker_ids):
    from inference.submit import submission, waiting

    with paused(worker_ids["resnet18"], "resnet18.high", "resnet18.normal", "resnet18.low"):
        truncated = base64.b64encode(image_bytes("chelsea.jpg")[:2500]).decode()
        images = [image_b64("chelsea.jpg"), image_b64("astronaut.jpg")] * 3 + [truncated]
        ids = [submission.submit(redis_client, image_b64=img, model="resnet18", priority="normal", top_k=k).job["request_id"]
               for img, k in zip(images, [1, 2, 3, 4, 5, 6, 5])]
        statuses = [waiting.wait_for(redis_client, rid, 60) for rid in ids]

    good, bad = statuses[:6], statuses[6]
    assert bad["status"] == "failed" and bad["error"]["code"] == "invalid_image"  # fails alone
    assert all(s["status"] == "success" for s in good)
    assert all(s["result"]["worker_id"].startswith("resnet18-batch") for s in good)
    assert max(s["result"]["batch_size"] for s in good) > 1, "no batch formed"
    assert [len(s["result"]["predictions"]) for s in good] == [1, 2, 3, 4, 5, 6]  # each its own top_k
    for status, image_name in zip(good, ["chelsea.jpg", "astronaut.jpg"] * 3):
        assert_same_predictions(status["result"]["predictions"], expected_predictions(image_name, 6)[: len(status["result"]["predictions"])])


@pytest.mark.e2e
def test_a_batching_worker_on_this_cpu_runs_two_instances_with_adaptive_threads(api, batching_worker):
    """MODEL_INSTANCES auto on a machine of 2 cores or more (one instance on a single core); the worker reports it."""
    from inference.core.settings import Settings, cpu_count

    workers = api.get(f"{api.base_url}/workers/status", timeout=5).json()["workers"]
    process, = next(w for w in workers if w["worker_id"] == batching_worker)["processes"]
    two = cpu_count() >= 2
    assert process["instances"] == (2 if two else 1) and process["adaptive_threads"] is two
    # Its model runs in a process of its own, killed if a batch runs past twice WORKER_TIMEOUT.
    assert process["model_process"] == "host" and process["batch_hang_seconds"] == 2 * Settings().worker_timeout
    # Its torch threads spin briefly when idle (GOMP_SPINCOUNT exported before torch loaded).
    if "OMP_WAIT_POLICY" not in os.environ:
        assert process["gomp_spincount"] == os.environ.get("GOMP_SPINCOUNT", str(Settings.model_fields["gomp_spincount"].default))


@pytest.mark.e2e
def test_batch_size_one_on_the_threads_pool_runs_two_instances(api, batching_worker, redis_client, worker_ids):
    """`pool = "threads"` at batch size 1 (what `make benchmark` runs when the plain script's best
    batch is 1): the launcher gives the pool a task thread for each instance and one waiting
    beside it, and every request still runs alone in its forward pass."""
    from inference.core.settings import cpu_count
    from inference.submit import submission, waiting

    env = {**os.environ, "WORKER_POOL": "threads", "MAX_BATCH_SIZE": "1", "TORCH_THREADS": "0", "WORKER_RUNTIME": "torch"}
    process_name, worker = ready_resnet18_worker(api, "resnet18-side", env)
    try:
        process, = worker["processes"]
        instances = 2 if cpu_count() >= 2 else 1
        assert process["pool"] == "threads" and process["instances"] == instances and process["max_batch_size"] == 1
        assert worker["concurrency"] == 2 * instances
        queues = ("resnet18.high", "resnet18.normal", "resnet18.low")
        with paused(worker_ids["resnet18"], *queues), paused(batching_worker, *queues):
            ids = [submission.submit(redis_client, image_b64=image_b64(), model="resnet18", priority="normal").job["request_id"]
                   for _ in range(4)]
            statuses = [waiting.wait_for(redis_client, rid, 60) for rid in ids]
        assert [s["status"] for s in statuses] == ["success"] * 4
        assert all(s["result"]["worker_id"].startswith("resnet18-side") and s["result"]["batch_size"] == 1 for s in statuses)
    finally:
        suite_processes.stop(process_name)


@pytest.mark.e2e
def test_pictures_by_reference_are_read_once_and_deleted(batching_worker, redis_client, worker_ids):
    """submission.submit(images=...): the message carries keys; a picture gone from Redis fails alone."""
    from inference.submit import submission, waiting

    queues = ("resnet18.high", "resnet18.normal", "resnet18.low")
    with paused(worker_ids["resnet18"], *queues):
        with paused(batching_worker, *queues):
            submitted = submission.submit(redis_client, model="resnet18", priority="normal", top_k=2,
                                    images=[image_bytes("astronaut.jpg"), image_bytes("chelsea.jpg")])
            request_id = submitted.job["request_id"]
            # (a worker's BRPOP issued before the pause may take it first and hand it back: wait)
            queued = wait_until(lambda: redis_client.lrange("resnet18.normal", 0, -1), 10, what="the queued message")
            assert len(queued) == 1 and len(queued[0]) < 4000  # keys, not two pictures of 68 and 35 KB
            second, = (key for key in redis_client.keys(f"inference:image:{request_id}:*") if key.endswith(b":1"))
            redis_client.delete(second)  # as if it had expired
        status = waiting.wait_for(redis_client, request_id, 60)
    result = status["result"]
    assert status["status"] == "success" and result["failed_images"] == 1
    assert_same_predictions(result["results"][0]["predictions"], expected_predictions("astronaut.jpg", 2))
    assert result["results"][1]["error"]["code"] == "image_missing"
    wait_for_pictures_deleted(redis_client, request_id)


@pytest.mark.e2e
def test_one_picture_by_reference_and_a_repeated_id(batching_worker, redis_client, worker_ids):
    """submission.submit(image=...), what the API sends: one picture by reference, a one-image result.
    Submitting the id again leaves the first request's picture alone; a picture gone fails its request."""
    from inference.submit import submission, waiting

    queues = ("resnet18.high", "resnet18.normal", "resnet18.low")
    with paused(worker_ids["resnet18"], *queues):
        with paused(batching_worker, *queues):
            first = submission.submit(redis_client, model="resnet18", priority="normal", top_k=2, image=image_bytes("astronaut.jpg"))
            request_id = first.job["request_id"]
            again = submission.submit(redis_client, model="resnet18", priority="normal", image=image_bytes("chelsea.jpg"), request_id=request_id)
            assert not again.created and len(redis_client.keys(f"inference:image:{request_id}:*")) == 1
            gone = submission.submit(redis_client, model="resnet18", priority="normal", image=image_bytes("chelsea.jpg")).job["request_id"]
            redis_client.delete(*redis_client.keys(f"inference:image:{gone}:*"))  # as if it had expired
        status, missing = waiting.wait_for(redis_client, request_id, 60), waiting.wait_for(redis_client, gone, 60)
    assert status["status"] == "success"
    assert_same_predictions(status["result"]["predictions"], expected_predictions("astronaut.jpg", 2))
    assert missing["status"] == "failed" and missing["error"]["code"] == "image_missing"
    wait_for_pictures_deleted(redis_client, request_id)


@pytest.mark.e2e
def test_one_task_of_several_images(batching_worker, celery_client, worker_ids):
    """`images`: one task; its good pictures share one forward pass, each broken one fails alone."""
    truncated = base64.b64encode(image_bytes("chelsea.jpg")[:2500]).decode()
    images = [image_b64("chelsea.jpg"), image_b64("astronaut.jpg"), truncated, "%%% not base64", image_b64("chelsea.jpg")]
    with paused(worker_ids["resnet18"], "resnet18.high", "resnet18.normal", "resnet18.low"):
        result = celery_client.send_task("inference.classify", queue="resnet18.normal",
                                         kwargs={"images": images, "model": "resnet18", "top_k": 3}).get(timeout=60)
    assert result["worker_id"].startswith("resnet18-batch")
    assert result["images"] == 5 and result["failed_images"] == 2 and len(result["results"]) == 5
    assert result["results"][2]["error"]["code"] == "invalid_image"
    assert result["results"][3]["error"]["code"] == "invalid_base64"
    assert result["batch_size"] == 4  # one batch: the three good pictures, and the truncated one that failed there
    for entry, image_name in zip([result["results"][n] for n in (0, 1, 4)], ["chelsea.jpg", "astronaut.jpg", "chelsea.jpg"]):
        assert_same_predictions(entry["predictions"], expected_predictions(image_name, 3))
