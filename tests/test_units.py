"""Pure functions: queue naming and routing, registry, settings, schemas, error codes."""

from __future__ import annotations

import contextlib
import os
import re

import pytest
from pydantic import ValidationError

from api.schemas import InferenceRequest
from inference.core.errors import http_status_of
from inference.core.queues import model_queues, queue_name, route_task
from inference.core.registry import MODELS, get_spec
from inference.core.settings import Settings, markdown_table, use_settings
from tests.helpers import repo_root

WORKER_SHARE_VARIABLES = ("TORCH_THREADS", "HOST_WORKERS", "WORKER_POOL", "WORKER_CONCURRENCY", "MODEL_INSTANCES")


@contextlib.contextmanager
def settings_from(monkeypatch, env: dict):
    """Settings read with `env` set, for the block only."""
    with monkeypatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        use_settings(None)
        yield
    use_settings(None)


def test_queue_names_and_order():
    assert queue_name("resnet18", "high") == "resnet18.high"
    assert model_queues("mobilenet") == ["mobilenet.high", "mobilenet.normal", "mobilenet.low"]
    with pytest.raises(ValueError):
        queue_name("resnet18", "urgent")


def test_router_sends_unrouted_calls_to_the_models_queue():
    assert route_task("inference.classify", (), {"model": "squeezenet"}, {}) == {"queue": "squeezenet.normal"}
    assert route_task("inference.classify", (), {"model": "squeezenet", "priority": "low"}, {}) == {"queue": "squeezenet.low"}
    assert route_task("inference.classify", (), {"model": "squeezenet"}, {"queue": "x"}) is None
    assert route_task("other.task", (), {"model": "squeezenet"}, {}) is None


def test_registry_names_and_stable_seeds():
    assert list(MODELS) == ["mobilenet", "resnet18", "efficientnet", "squeezenet"]
    assert get_spec("resnet18").seed_offset == get_spec("resnet18").seed_offset
    assert len({spec.seed_offset for spec in MODELS.values()}) == len(MODELS)
    with pytest.raises(KeyError, match="known models"):
        get_spec("vgg16")


def test_every_model_has_a_worker_config_that_says_only_its_model():
    for name in MODELS:
        settings = Settings(worker_config=name)
        assert settings.worker_model == name
        assert settings.model_dump(exclude={"worker_config", "worker_model"}) == Settings().model_dump(exclude={"worker_config", "worker_model"})


def test_launcher_builds_a_pinned_worker_command(monkeypatch):
    from inference.cli.launch import celery_argv

    for variable in ("WORKER_MODEL", "WORKER_CONCURRENCY", "MAX_BATCH_SIZE", "MODEL_INSTANCES", "WORKER_POOL"):
        monkeypatch.delenv(variable, raising=False)
    argv = celery_argv(Settings(worker_model="resnet18", worker_concurrency=2, worker_pool="prefork", max_batch_size=1))
    assert argv[argv.index("--model") + 1] == "resnet18"
    assert argv[argv.index("--concurrency") + 1] == "2"
    assert argv[argv.index("--hostname") + 1] == "resnet18@%h"
    assert not {"-E", "--task-events"} & set(argv)  # WORKER_TASK_EVENTS decides (celeryconfig), not the command line
    batching = celery_argv(Settings(worker_model="resnet18", max_batch_size=4, model_instances=2))
    # Batching needs threads; twice what the instances hold keeps the next batches ready.
    assert batching[batching.index("--pool") + 1] == "threads"
    assert batching[batching.index("--concurrency") + 1] == "16"
    auto = celery_argv(Settings(worker_model="resnet18", max_batch_size=4, model_instances=0))
    assert auto[auto.index("--concurrency") + 1] == "16"  # auto: room for the two instances it may pick
    solo = celery_argv(Settings(worker_model="resnet18", worker_pool="solo", max_batch_size=4))
    assert solo[solo.index("--pool") + 1] == "solo"  # asked for: one request at a time, batches of one
    side_by_side = celery_argv(Settings(worker_model="resnet18", worker_pool="threads", max_batch_size=1))
    assert side_by_side[side_by_side.index("--concurrency") + 1] == "4"  # batch 1 on threads: the instances run side by side


def test_a_worker_reads_the_environment_then_its_config_file_then_the_defaults(monkeypatch, tmp_path):
    config = tmp_path / "fast.toml"
    config.write_text('worker_model = "squeezenet"\nmax_batch_size = 8\nworker_priorities = "high"\n')
    for variable in ("MAX_BATCH_SIZE", "WORKER_PRIORITIES", "WORKER_MODEL", "MAX_BATCH_DELAY_MS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("WORKER_PRIORITIES", "high,normal")
    settings = Settings(worker_config=str(config))
    assert (settings.worker_model, settings.max_batch_size) == ("squeezenet", 8)  # the file
    assert settings.worker_priorities == "high,normal"  # the environment wins over it
    assert settings.max_batch_delay_ms == 5.0  # the default
    monkeypatch.setenv("WORKER_CONFIG", str(config))  # as the launcher hands it to the worker
    assert Settings().max_batch_size == 8
    config.write_text('worker_model = "squeezenet"\nbatch_size = 8\n')  # a typo, or an old name
    with pytest.raises(ValueError, match="batch_size"):
        Settings()
    monkeypatch.setenv("WORKER_CONFIG", "no-such-worker")
    with pytest.raises(ValueError, match="does not exist"):
        Settings()


def test_renamed_settings_still_read_their_old_variables_with_a_warning(monkeypatch):
    for variable in ("QUEUE_LIMIT", "MAX_ITEMS_PER_REQUEST"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("QUEUE_SIZE", "12")
    monkeypatch.setenv("BATCH_SIZE", "7")
    with pytest.warns(FutureWarning, match="QUEUE_SIZE is deprecated"):
        settings = Settings()
    assert (settings.queue_limit, settings.max_items_per_request) == (12, 7)
    monkeypatch.setenv("QUEUE_LIMIT", "30")
    with pytest.warns(FutureWarning):
        assert Settings().queue_limit == 30  # the new name wins


def test_the_configuration_page_lists_every_setting():
    page = (repo_root() / "docs" / "configuration.md").read_text()
    assert markdown_table() in page, "docs/configuration.md's table differs from the settings; paste `make config-table`"
    assert markdown_table().count("\n") == len(Settings.model_fields) + 1


def test_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("MAX_TOP_K", "7")
    monkeypatch.setenv("MODEL_WEIGHTS", "pretrained")
    settings = Settings()
    assert settings.max_top_k == 7 and settings.model_weights == "pretrained"
    monkeypatch.setenv("MODEL_WEIGHTS", "bogus")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.setenv("MODEL_WEIGHTS", "random")
    monkeypatch.setenv("RESULT_EXPIRES", "0")  # Redis refuses EX 0: every submission would fail
    with pytest.raises(ValidationError):
        Settings()


def test_request_schema():
    item = InferenceRequest.model_validate({"data": "abc"})
    assert item.model_type == "any" and item.priority == "normal"
    for bad in ({"data": "abc", "model_type": "vgg"}, {"data": "abc", "priority": "now"},
                {"data": "abc", "request_id": "a b"}, {"data": "abc", "request_id": "x" * 200}, {}):
        with pytest.raises(ValidationError):
            InferenceRequest.model_validate(bad)


def test_error_codes_map_to_statuses():
    assert http_status_of("invalid_image") == 400
    assert http_status_of("image_too_large") == 413
    assert http_status_of("timeout") == 504
    assert http_status_of("unknown-to-us") == 502


def test_a_failed_request_reports_a_code_of_the_vocabulary_never_a_class_name():
    from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError

    from inference.core.errors import InvalidImage
    from inference.submit.tracking import _error_of

    assert _error_of(SoftTimeLimitExceeded())["code"] == "timeout"
    assert _error_of(TimeLimitExceeded(10))["code"] == "timeout"
    assert "WORKER_TIMEOUT" in _error_of(TimeLimitExceeded(10))["message"]
    assert _error_of(WorkerLostError("gone"))["code"] == "worker_crashed"
    assert _error_of(KeyError("x"))["code"] == "internal_error"
    assert _error_of(InvalidImage("broken")) == {"code": "invalid_image", "message": "broken"}
    # As the API reads it back: Celery rebuilds an exception it cannot import under its class name.
    from celery.utils.serialization import create_exception_cls

    assert _error_of(create_exception_cls("SoftTimeLimitExceeded", "billiard.exceptions")("x"))["code"] == "timeout"


def test_every_error_code_is_documented_with_its_status_and_none_is_written_by_hand():
    import re

    from inference.core.errors import HttpError, error_classes

    documented = dict(re.findall(r"^\| `(\w+)` \| (\w+) \|", (repo_root() / "docs" / "security.md").read_text(), re.M))
    for code, cls in error_classes().items():
        assert code in documented, f"docs/security.md lacks {code}"
        # A failure with no better code (500) is answered as the worker's, 502, by the synchronous endpoints.
        assert documented[code] in ("any" if cls is HttpError else str(cls.http_status), "502" if cls.http_status == 500 else ""), code
    assert not set(documented) - set(error_classes()), "docs/security.md lists codes no error has"
    # The API answers only with the hierarchy's errors: no code or status written out in api/.
    for path in (repo_root() / "api").glob("*.py"):
        assert not re.search(r'"code":\s*"|\b(?:abort|ApiError)\(', path.read_text()), path


def printed_in_a_fresh_python(code: str, **env: str) -> tuple[str, str]:
    """What `code` prints (and its stderr) in a new interpreter at the repository's root with
    `env` added: settings are read once, at import."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo_root(),
                         env={**os.environ, **env}, timeout=60)
    return out.stdout.strip(), out.stderr


def test_api_never_imports_torch():
    printed, errors = printed_in_a_fresh_python("import sys, api; api.create_app(); print('torch' in sys.modules)")
    assert printed == "False", errors


def test_no_pickle_anywhere():
    config = (repo_root() / "celeryconfig.py").read_text()
    assert re.search(r'accept_content = \["json"\]', config)
    import celeryconfig

    assert celeryconfig.task_serializer == celeryconfig.result_serializer == "json"
    assert celeryconfig.task_acks_late and celeryconfig.task_reject_on_worker_lost
    assert celeryconfig.worker_prefetch_multiplier == 1
    assert celeryconfig.broker_transport_options["queue_order_strategy"] == "priority"
    assert celeryconfig.worker_proc_alive_timeout > 4


def test_redis_replies_are_parsed_in_c():
    """hiredis (requirements.txt): redis-py's pure-Python parser cost the worker ~1 ms of CPU
    per request more at saturation."""
    import redis
    from redis.utils import HIREDIS_AVAILABLE

    assert HIREDIS_AVAILABLE
    assert "Hiredis" in type(redis.Connection()._parser).__name__


def test_task_events_follow_their_setting():
    code = "import celeryconfig; print(celeryconfig.worker_send_task_events)"
    for value, expected in (("false", "False"), ("true", "True")):
        printed, errors = printed_in_a_fresh_python(code, WORKER_TASK_EVENTS=value)
        assert printed == expected, errors


def test_flower_turns_task_events_on_only_when_told(monkeypatch, tmp_path):
    """Off by default (each request would cost CPU in the worker, Redis and Flower); FLOWER_ENABLE_EVENTS turns it on."""
    from inference.cli.flower import flower_argv

    monkeypatch.delenv("FLOWER_ENABLE_EVENTS", raising=False)
    for env, expected in (({}, "--enable_events=False"), ({"FLOWER_ENABLE_EVENTS": "true"}, "--enable_events=True"),
                          ({"FLOWER_ENABLE_EVENTS": "0"}, "--enable_events=False")):
        with settings_from(monkeypatch, {"FLOWER_DB": str(tmp_path / "flower.db"), **env}):
            assert expected in flower_argv()


def test_the_access_log_is_asked_for_and_follows_the_log_level():
    code = "from api.serve import server; print(server().log_access)"
    for level, expected in (("INFO", "True"), ("debug", "True"), ("WARNING", "False"), ("ERROR", "False")):
        printed, errors = printed_in_a_fresh_python(code, LOG_LEVEL=level, API_ACCESS_LOG="true")
        assert printed == expected, errors
    for level in ("INFO", "DEBUG"):
        printed, errors = printed_in_a_fresh_python(code, LOG_LEVEL=level)  # off unless asked for
        assert printed == "False", errors


def test_worker_consumes_the_configured_priorities_in_order(monkeypatch):
    from inference.worker.bootstep import worker_queues

    monkeypatch.setenv("WORKER_PRIORITIES", "low, high")
    use_settings(None)
    try:
        assert worker_queues("resnet18") == ["resnet18.high", "resnet18.low"]
        monkeypatch.setenv("WORKER_PRIORITIES", "urgent")
        use_settings(None)
        with pytest.raises(SystemExit, match="WORKER_PRIORITIES"):
            worker_queues("resnet18")
    finally:
        monkeypatch.delenv("WORKER_PRIORITIES")
        use_settings(None)


def test_the_launcher_hands_its_worker_the_config_and_nothing_else(monkeypatch):
    import os

    from inference.cli import launch

    ran = {}
    monkeypatch.delenv("WORKER_MODEL", raising=False)
    monkeypatch.setattr(os, "execve", lambda path, argv, env: ran.update(argv=argv, env=env))
    launch.main(["resnet18"])
    assert ran["argv"][ran["argv"].index("--model") + 1] == "resnet18"
    added = {k: v for k, v in ran["env"].items() if os.environ.get(k) != v}
    assert set(added) <= {"WORKER_CONFIG", "HOST_WORKERS"} and added["WORKER_CONFIG"] == "resnet18"
    assert "WORKER_CONFIG" not in os.environ  # its own environment is untouched


def test_a_supervising_launcher_becomes_a_supervisor_without_the_settings(monkeypatch):
    """`--restart` (the Procfile's way): the launcher execs `inference.cli.supervise` with the
    worker's command, and that module imports nothing of the project's (it stays resident)."""
    import json
    import os
    import subprocess
    import sys

    from inference.cli import launch

    def execve(path, argv, env):
        ran.update(argv=argv, env=env)
        raise SystemExit(0)  # exec does not return

    ran: dict = {}
    monkeypatch.delenv("WORKER_MODEL", raising=False)
    monkeypatch.setattr(os, "execve", execve)
    with pytest.raises(SystemExit):
        launch.main(["resnet18", "--restart"])
    assert ran["argv"][1:4] == ["-m", "inference.cli.supervise", "--restart"]
    worker, = json.loads(ran["argv"][4])
    assert worker[worker.index("--model") + 1] == "resnet18" and ran["env"]["WORKER_CONFIG"] == "resnet18"
    probe = "import sys, inference.cli.supervise; print(sorted(m for m in sys.modules if m.startswith(('inference.core', 'pydantic'))))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"



def test_the_launcher_refuses_a_config_that_names_no_model(monkeypatch, tmp_path):
    from inference.cli import launch

    monkeypatch.delenv("WORKER_MODEL", raising=False)
    config = tmp_path / "nameless.toml"
    config.write_text("max_batch_size = 4\n")
    with pytest.raises(SystemExit, match="names no worker_model"):
        launch.main([str(config)])


def test_a_client_reads_back_the_error_class_of_each_code():
    from inference.core.errors import InferenceError, NoWorker, QueueFull, error_classes, error_for

    assert type(error_for("queue_full", "full")) is QueueFull and error_for("queue_full", "full").retryable
    assert isinstance(error_for("no_worker", "none"), NoWorker) and error_for("no_worker", "none").http_status == 503
    unknown = error_for("from_a_newer_server", "?")
    assert type(unknown) is InferenceError and unknown.code == "from_a_newer_server" and InferenceError.code == "inference_error"
    assert all(type(error_for(code, "m")) is cls for code, cls in error_classes().items() if code != "http_error")


def test_torch_threads_share_the_cores_among_every_model_copy(monkeypatch):
    from inference.worker import sizing

    monkeypatch.setattr(sizing, "cpu_count", lambda: 16)
    for variable in WORKER_SHARE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    cases = [({}, 16), ({"HOST_WORKERS": "4"}, 4), ({"HOST_WORKERS": "4", "WORKER_CONCURRENCY": "2"}, 2),
             ({"WORKER_POOL": "threads", "MODEL_INSTANCES": "2", "HOST_WORKERS": "2"}, 4),
             ({"WORKER_POOL": "threads", "MODEL_INSTANCES": "4"}, 4),
             ({"WORKER_POOL": "threads"}, 8),  # auto: two instances on a CPU
             ({"HOST_WORKERS": "32"}, 1), ({"HOST_WORKERS": "4", "TORCH_THREADS": "3"}, 3)]
    for env, threads in cases:
        with settings_from(monkeypatch, {"WORKER_RUNTIME": "torch", **env}):
            assert sizing.torch_threads() == threads, env
            assert sizing.torch_threads("cuda:0") == (3 if "TORCH_THREADS" in env else 1), env  # GPU models: CPU work is small


def test_adaptive_threads_set_torch_threads_of_the_calling_thread_only():
    """What model instances rely on: OpenMP's thread count is per thread, so an instance that
    shares the cores does not change what another one (or the main thread) runs with."""
    import threading

    import torch

    from inference.worker.sizing import adaptive_threads

    share_cores, seen, before = adaptive_threads(4), {}, torch.get_num_threads()

    def instance(side_by_side: int) -> None:
        share_cores(side_by_side)
        seen[side_by_side] = torch.get_num_threads()

    for side_by_side in (1, 2, 8):
        thread = threading.Thread(target=instance, args=(side_by_side,))
        thread.start()
        thread.join()
    assert seen == {1: 4, 2: 2, 8: 1} and torch.get_num_threads() == before


def test_a_lone_batch_takes_every_instances_threads_within_the_cores(monkeypatch):
    from inference.worker import sizing

    for variable in WORKER_SHARE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(sizing, "cpu_count", lambda: 2)
    cases = [({"MODEL_INSTANCES": "2"}, 2, 2), ({"MODEL_INSTANCES": "3"}, 3, 2),  # never more threads than cores
             ({"MODEL_INSTANCES": "2", "TORCH_THREADS": "4"}, 2, 4)]  # as pinned, at least
    for env, instances, threads in cases:
        with settings_from(monkeypatch, {"WORKER_POOL": "threads", **env}):
            assert sizing.lone_batch_threads(instances) == threads, env


def test_model_instances_auto_two_on_a_cpu_with_cores_to_share(monkeypatch):
    from inference.worker import sizing

    for variable in WORKER_SHARE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(sizing, "cpu_count", lambda: 2)
    cases = [({"WORKER_POOL": "threads"}, "cpu", 2), ({"WORKER_POOL": "threads"}, "cuda", 1),
             ({"WORKER_POOL": "threads", "HOST_WORKERS": "2"}, "cpu", 1),  # one core each: nothing to share
             ({"WORKER_POOL": "threads", "TORCH_THREADS": "2"}, "cpu", 1),  # threads pinned per copy: not doubled
             ({"WORKER_POOL": "threads", "MODEL_INSTANCES": "3"}, "cuda", 3),
             ({"WORKER_POOL": "prefork", "MODEL_INSTANCES": "3"}, "cpu", 1),  # one model copy per pool process
             # OpenVINO runs one batch at a time on all the process's threads (auto: OpenVINO on a CPU).
             ({"WORKER_POOL": "threads", "WORKER_RUNTIME": "openvino"}, "cpu", 1),
             ({"WORKER_POOL": "threads", "WORKER_RUNTIME": "auto"}, "cpu", 1),
             ({"WORKER_POOL": "threads", "WORKER_RUNTIME": "auto"}, "cuda", 1),
             ({"WORKER_POOL": "threads", "WORKER_RUNTIME": "openvino", "MODEL_INSTANCES": "2"}, "cpu", 2)]
    for env, device, instances in cases:
        with settings_from(monkeypatch, {"WORKER_RUNTIME": "torch", **env}):
            assert sizing.model_instances(device) == instances, (env, device)


def test_procfile_tells_workers_how_many_share_the_machine():
    lines = [line for line in (repo_root() / "Procfile").read_text().splitlines() if line.startswith("worker_")]
    assert lines and all(f"HOST_WORKERS=${{HOST_WORKERS:-{len(lines)}}}" in line for line in lines)


def test_optimize_auto_is_torchscript_on_cpu_and_eager_on_cuda():
    from inference.worker.model_runtime import resolve_optimize

    assert resolve_optimize("auto", "cpu") == "jit" and resolve_optimize("auto", "cuda:0") == "none"
    assert resolve_optimize("jit", "cuda") == "jit" and resolve_optimize("none", "cpu") == "none"


def test_sustained_throughput_leaves_out_ramp_up_and_drain():
    from benchmarks.benchmark import sustained_rps

    steady = [0.1 * n for n in range(60)]  # an answer every 0.1 s
    assert sustained_rps(steady, concurrency=10) == pytest.approx(10.0)
    # A slow start and a slow drain (each within the first and last `concurrency` answers) do not count...
    edges = [-5.0 + 0.1 * n for n in range(9)] + steady[9:50] + [100.0 + n for n in range(10)]
    assert sustained_rps(edges, concurrency=10) == pytest.approx(10.0)
    # ...but a slow middle does, and a run too short to have a middle has no sustained rate.
    assert sustained_rps(steady[:30] + [t + 3.0 for t in steady[30:]], concurrency=10) < 9.0
    assert sustained_rps(steady[:29], concurrency=10) is None


def test_workers_torch_threads_spin_briefly_unless_the_environment_says_otherwise(monkeypatch):
    from inference.worker.sizing import openmp_wait_policy

    for variable in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY"):
        monkeypatch.setenv(variable, "")  # recorded, so that the test leaves the environment as it was
        monkeypatch.delenv(variable)
    with settings_from(monkeypatch, {}):  # read again without them
        openmp_wait_policy()
    assert os.environ["GOMP_SPINCOUNT"] == str(Settings.model_fields["gomp_spincount"].default)
    monkeypatch.setenv("GOMP_SPINCOUNT", "5")
    openmp_wait_policy()
    assert os.environ["GOMP_SPINCOUNT"] == "5"  # the user's own value stands
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    openmp_wait_policy()
    assert "GOMP_SPINCOUNT" not in os.environ  # it would override the user's wait policy


def test_the_client_and_the_api_load_no_torch_and_no_worker_code():
    """The layout's promise (inference/__init__.py): submitting needs neither torch nor the worker
    (nor numpy: ~7 MB in each API process)."""
    import subprocess
    import sys

    probe = ("import sys, inference.submit.client, api; api.create_app(); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy') or m.startswith(('inference.worker', 'inference.cli'))))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]", loaded
    # `celery -A inference` still finds the app with the worker's `--model` bootstep registered, torch-free.
    probe = "import sys, inference; from inference.worker.bootstep import PinToModel; assert PinToModel in inference.app.steps['worker']; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_an_api_worker_about_to_serve_takes_a_second_stop_signal():
    """An API worker whose stop handlers are in place but which does not serve yet: Ctrl-C's
    SIGINT and the main process's SIGTERM both reach it. granian's own handler passed both on,
    and the second blocked its main thread for good (api/serve.py, set_sync_signals_once): the
    probe then times out, and is killed."""
    probe = ("import os, signal\nimport api.serve\nfrom granian._signals import set_sync_signals\n"
             "set_sync_signals()\nos.kill(os.getpid(), signal.SIGINT); os.kill(os.getpid(), signal.SIGTERM)\n"
             "print('handled both', flush=True); os._exit(0)")
    printed, errors = printed_in_a_fresh_python(probe)
    assert printed == "handled both", errors


def test_the_stop_signal_relay_leaves_another_wakeup_fd_alone():
    """api/stop_signals.py sets itself up once per process, from its main thread, and not where
    something else (an asyncio loop) already listens for signals on a wakeup fd."""
    probe = ("import os, signal, threading\nfrom api import stop_signals\n"
             "r, w = os.pipe(); os.set_blocking(w, False); signal.set_wakeup_fd(w)\n"
             "kept = stop_signals.relay_to_main_thread() is False and signal.set_wakeup_fd(-1) == w\n"
             "off_main = []\nt = threading.Thread(target=lambda: off_main.append(stop_signals.relay_to_main_thread())); t.start(); t.join()\n"
             "print(kept, off_main == [False], stop_signals.relay_to_main_thread())")
    printed, errors = printed_in_a_fresh_python(probe)
    assert printed.split() == ["True", "True", "True"], printed + errors
