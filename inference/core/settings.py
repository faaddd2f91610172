"""Every setting of the system, one line each: one model, read the same way by every process.

A setting comes from, in this order: the process's environment (upper-case name), then the
worker config named by WORKER_CONFIG (`worker_configs/<name>.toml`, lower-case names, only what
differs from the defaults), then the default here. The launcher and the worker read the same
model; `celeryconfig.py` and the API read it too (`create_app(settings)` takes one).
`make config-table` prints the configuration table of docs/configuration.md.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

CONFIG_DIR = Path(__file__).resolve().parents[2] / "worker_configs"
# Renamed settings: the old environment variable still works, with a warning.
RENAMED = {"QUEUE_SIZE": "QUEUE_LIMIT", "BATCH_SIZE": "MAX_ITEMS_PER_REQUEST"}


def worker_config_path(name_or_path: str) -> Path:
    """`resnet18` -> worker_configs/resnet18.toml; a path stays a path."""
    path = Path(name_or_path)
    return path if path.suffix else CONFIG_DIR / f"{name_or_path}.toml"


class WorkerConfigSource(TomlConfigSettingsSource):
    """A worker config file: it must exist, and name only settings that exist (a typo in a file
    would otherwise be ignored without a word)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path):
        if not path.is_file():
            raise ValueError(f"worker config {path} does not exist (WORKER_CONFIG)")
        super().__init__(settings_cls, toml_file=path)
        unknown = set(self.toml_data) - set(settings_cls.model_fields)
        if unknown:
            raise ValueError(f"{path} names no such setting: {', '.join(sorted(unknown))} (see docs/configuration.md)")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", populate_by_name=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        kwargs: dict[str, Any] = getattr(init_settings, "init_kwargs", {})
        config = kwargs.get("worker_config") or next((v for k, v in os.environ.items() if k.upper() == "WORKER_CONFIG"), "")
        if not config:
            return init_settings, env_settings
        return init_settings, env_settings, WorkerConfigSource(settings_cls, worker_config_path(config))

    # Broker and results
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis used as Celery broker and result backend (a password goes in the URL: redis://:pw@host:6379/0).")
    redis_sentinels: str = Field("", description="`host:port,host:port` of Redis Sentinels: then every part (broker, result backend, the API's and the workers' own clients, Flower) finds the primary through them (REDIS_MASTER_NAME), and REDIS_URL gives only the password and the database number. Empty: REDIS_URL's host, no Sentinel.")
    redis_master_name: str = Field("inference", description="The name under which the Sentinels (REDIS_SENTINELS) monitor the primary.")
    redis_wait_replicas: int | None = Field(None, ge=0, description="Replicas that must hold a submission before the API answers 202 (Redis `WAIT` in the submission's own round trip), so that a primary lost right after cannot take an accepted request with it. Short of them within REDIS_WAIT_TIMEOUT_MS, the request is cancelled and the answer is 503 `not_replicated` with Retry-After. Unset: 1 with REDIS_SENTINELS (keep two replicas, so that one lost or resyncing refuses nothing), 0 without (a plain Redis has no replicas). Its cost in submission latency: docs/scale-out.md.")
    redis_wait_timeout_ms: int = Field(500, ge=1, description="How long a submission waits for REDIS_WAIT_REPLICAS replicas before it is refused as `not_replicated`.")
    redis_maxmemory: str = Field("1gb", description="`maxmemory` of the embedded Valkey (`make run`, the tests) and of Compose's Redis, with `noeviction`: a full Redis refuses writes rather than drop queued work. `0`: no bound.")
    redis_memory_high_water: float = Field(0.8, gt=0, le=1, description="Share of Redis's `maxmemory` above which the API admits no new pictures (503 `memory_full` with Retry-After); the rest is room for the results of what was accepted. Not applied to a Redis without `maxmemory`.")
    redis_data_dir: str = Field("var/redis", description="Data directory (append-only file) of the embedded Valkey that `make run` starts when REDIS_URL does not answer.")
    result_expires: int = Field(86400, gt=0, description="Seconds a result (and the request's job record) is kept in Redis.")
    visibility_timeout: int = Field(0, ge=0, description="Seconds before an unacknowledged task (its worker died) is delivered again; must exceed WORKER_TIMEOUT + RETRY_BACKOFF_MAX. 0: WORKER_TIMEOUT + RETRY_BACKOFF_MAX + 5 (20 with the defaults; 40 with the seed's WORKER_TIMEOUT=30).")
    restore_interval: float = Field(1.0, description="Seconds between a worker's sweeps for unacknowledged tasks older than VISIBILITY_TIMEOUT (kombu's default sweep is about 100 s).")

    # Models and workers
    model_weights: Literal["auto", "pretrained", "random"] = Field("auto", description="`pretrained`: torchvision ImageNet weights from TORCH_HOME (fail if missing); `auto`: pretrained if available, else random with a loud warning; `random`: seeded random weights.")
    random_weights_seed: int = Field(0, description="Base seed for random weights; each model adds a fixed offset so every worker of a model answers identically.")
    weights_download: bool = Field(False, description="Let `auto`/`pretrained` download missing weights into TORCH_HOME (needs internet).")
    worker_config: str = Field("", description="The worker config a worker reads after the environment: a name in worker_configs/ (`resnet18`) or a TOML file's path; its keys are these settings' lower-case names. Set by `python -m inference.cli.launch NAME`.")
    worker_model: str = Field("", description="Model a worker serves when `--model` is not given (its worker config says it).")
    worker_concurrency: int = Field(1, description="Worker processes per model worker (each loads its own copy of the model).")
    worker_task_events: bool = Field(False, description="Workers send task events from the start (Flower's task list and task metrics, `celery events`). Off, as Celery has it, a monitor turns them on while it watches: Flower with FLOWER_ENABLE_EVENTS sends `enable_events` every 5 s, and `celery -A inference control enable_events` does it for `celery events`. Each request with events costs the worker three Redis publishes (~0.5 ms of latency one at a time on the 2-core machine); heartbeats go either way (Flower and /workers/status still see the workers).")
    worker_priorities: str = Field("high,normal,low", description="Priorities a worker consumes, comma-separated (always in high, normal, low order).")
    worker_device: str = Field("auto", description="Where a worker runs its model: `auto` (CUDA when available), `cpu`, `cuda`, `cuda:1`...")
    worker_runtime: Literal["auto", "torch", "openvino"] = Field("auto", description="What runs a worker's model: `torch` (PyTorch, MODEL_OPTIMIZE), or `openvino`: the same torchvision model and weights converted to OpenVINO once (cached in MODEL_CACHE_DIR) and compiled for this CPU, served without torch (on the 2-core build machine resnet18's forward pass ran 2.5x PyTorch's in bf16, the whole system 1.3x: docs/workers.md). `auto`: OpenVINO on a CPU where the openvino package is installed, PyTorch elsewhere (CUDA). `openvino` where it cannot run falls back to PyTorch with a warning.")
    worker_precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="OpenVINO's precision: `auto` (what the CPU does best: where it computes in bf16, a pass in each precision is timed at the first start, kept beside the model for that CPU, and bf16 serves if it is at least 10 % faster; else f32), `fp32` (PyTorch's answers to 1e-5), `bf16` (fp32, with a warning, on a CPU without bf16). The result and `/workers/status` say which served.")
    model_cache_dir: str = Field("var/models", description="Where converted OpenVINO models are kept (keyed by architecture, weights and OpenVINO version): a worker converts a model once, later starts load it.")
    model_optimize: Literal["auto", "jit", "none"] = Field("auto", description="`jit`: TorchScript-trace each model and optimise it for inference (batch norm folded, oneDNN on CPU; the forward pass runs without holding the GIL); `none`: plain eager PyTorch; `auto`: jit on CPU, eager on CUDA (where TorchScript was no faster and re-specialises for every new batch size).")
    worker_channels_last: bool = Field(True, description="Run models in channels_last memory format (faster convolutions on CPUs with oneDNN and on recent GPUs).")
    image_decoder: Literal["auto", "pil", "torchvision"] = Field("auto", description="How a worker decodes pictures: `pil`; `torchvision`: JPEGs in batches on the model's device (nvJPEG on CUDA), other formats with PIL; `auto`: torchvision when the model runs on CUDA, else PIL. OpenVINO workers always use PIL (no torch in them).")
    worker_fp16: bool = Field(False, description="Half precision on CUDA devices (ignored, with a warning, on CPU).")
    worker_pool: Literal["prefork", "threads", "solo"] = Field("prefork", description="Celery pool of a model worker. `prefork` with MAX_BATCH_SIZE > 1 (the default) runs `threads`: task threads whose pictures the worker batches, its model in a child process of its own that a crash or a batch past twice WORKER_TIMEOUT ends alone (docs/workers.md). `prefork` with MAX_BATCH_SIZE=1: a pool process per request, no batching.")
    max_batch_size: int = Field(8, ge=1, description="Dynamic batching: most requests in one forward pass (1 = no batching). Under `make run` on the 2-core build machine, 8 served resnet18 1.33x the requests/s of 1 (docs/performance.md).")
    model_instances: int = Field(0, ge=0, description="Batches one batching worker process runs side by side (Triton's instance count), each on its own share of the cores; on a CPU a batch that runs alone takes every instance's threads (adaptive threads). 0 = auto: 2 on a CPU with 2 cores or more for the worker (on 2 cores, ~0.89x of the plain script at saturation against ~0.82x for 1 instance of 2 threads; one request at a time within a ms of it), 1 on a GPU or where TORCH_THREADS is set.")
    max_batch_delay_ms: float = Field(5.0, ge=0, description="Dynamic batching: a batch closes this long after its first request at the latest; sooner when full or when no other request is on its way. The seed's BATCH_TIMEOUT (seconds), when set and this is not, sets it (x 1000).")
    gomp_spincount: int = Field(30000, ge=0, description="How long an idle torch thread of a worker busy-waits (OpenMP spins, ~0.3 ms) before it sleeps; exported to the worker's torch unless GOMP_SPINCOUNT or OMP_WAIT_POLICY is already set. libgomp's own default (300,000) kept a worker's second torch thread spinning after each forward pass, on a core the result write, Redis and the API needed next: one request at a time took ~2 ms longer. Below ~10,000 the threads slept between the steps of a forward pass (+3 ms).")
    torch_threads: int = Field(0, description="torch intra-op threads per model copy; 0 = CPU cores / (HOST_WORKERS x the worker's pool processes or MODEL_INSTANCES). A batch running alone in a process of several instances on a CPU uses all of theirs.")
    worker_replicas: int = Field(1, ge=1, description="Celery workers `inference.cli.launch` runs for one worker config (nodes <name>-1@host, <name>-2@host...), each with its own GIL, model copy and batcher, all on the config's device; supervised as one. For a GPU that one process cannot keep busy: with requests of 128 pictures one H100 took 3,376-4,200 images/s from one worker process, 6,355-7,679 from two. Their torch threads share the cores as HOST_WORKERS x this many workers.")
    lend_idle_cores: bool = Field(True, description="OpenVINO workers on a CPU: a batch may use the cores the other model workers on the machine leave idle (all of them when no other is busy, cores / (k + 1) beside k busy ones, never less than its HOST_WORKERS share); the thread counts are compiled at start-up. Off, or with TORCH_THREADS set: the share only (inference/worker/core_lending.py).")
    host_workers: int = Field(1, ge=1, description="Model workers sharing this machine's cores (`make run` starts 4 and says so in the Procfile), so that their torch threads together do not outnumber the cores.")
    worker_timeout: int = Field(10, description="Hard time limit of one inference task in seconds (the soft limit is 1 s less); also caps `timeout_ms`. Keep it well above 5: the pool may take up to 5 s to notice a killed child, and a limit that fires first fails the request instead of requeueing it. A batching worker (threads or solo pool) enforces it in the task: the request stops waiting for its batch and fails `timeout`; a batch still running at twice this gets the worker's model process killed and restarted.")
    heap_trim_seconds: float = Field(5.0, ge=0, description="Every this many seconds, the API's and the workers' processes hand the memory they freed back to the system (glibc's `malloc_trim`): after 12-MP photos or a burst of concurrent requests they otherwise keep ~100 MB more than they use. 0: never.")
    malloc_arena_max: int = Field(2, ge=0, description="glibc's own variable, applied by the API's and the workers' processes at start as well (`mallopt`): the most malloc arenas a process keeps. glibc's default (0 here) is 8 per core, one per thread until then, and each thread's arena keeps what it freed in between its live blocks: the resnet18 worker's Celery consumer held 114 MB after `make_run`'s load against 81 with 2 (the whole system 1,502 against 1,457 MB), no slower (docs/performance.md).")
    worker_proc_alive_timeout: float = Field(120.0, description="Seconds a worker process may spend loading and warming up its model before Celery kills it (Celery's default of 4 s is too short).")
    max_retries: int = Field(3, description="Retries of a task that failed for a transient reason.")
    max_deliveries: int = Field(3, ge=1, description="Runs of one request whose worker process died each time (a crash, an out-of-memory kill) before the request fails with `poison_message` instead of running again.")
    retry_delay: int = Field(1, description="First retry countdown in seconds; doubles each retry (exponential backoff with jitter).")
    retry_backoff_max: int = Field(5, description="Cap of the retry countdown in seconds.")

    # Chaos (off unless set): for resilience tests and demos
    chaos_enabled: bool = Field(False, description="Allow `POST /simulate/crash` in the API (404 otherwise; with API_KEYS, a key is needed too), and the `simulate_crash` control command on a worker (ignored otherwise).")
    chaos_failure_rate: float = Field(0.0, ge=0.0, le=1.0, description="Share of tasks a worker fails with a transient (retried) error.")
    chaos_latency_ms: int = Field(0, ge=0, description="Latency a worker adds to every task, in ms.")
    chaos_crash_after: int = Field(0, ge=0, description="A worker's model process kills itself (SIGKILL) during its Nth batch; 0 = never.")
    chaos_crash_marker: str = Field("", description="A worker's model process kills itself (SIGKILL) during a batch holding a picture with these bytes in it (a poison message among innocent ones); empty = never.")

    # HTTP API
    api_host: str = Field("127.0.0.1", description="Address the API's server (granian, api/serve.py) binds to.")
    api_port: int = Field(8000, description="Port of the API.")
    api_workers: int = Field(2, description="Processes of the API's server (granian), each running the app in up to API_THREADS threads.")
    api_threads: int = Field(256, description="Threads running the app in each API process: a request being served holds one, a long poll (`?wait`) too; connections being read or written, slow or idle ones hold none (the server reads them in Rust). 150 long polls beside 200 slow connections left /health/live answering (tests/test_hostile.py); under gunicorn, whose threads also read the connections, 64 had not. Waiting threads cost little (no CPU, a small stack); their Redis connections are pooled (twice this many at most).")
    api_thread_idle_seconds: int = Field(5, ge=5, le=600, description="Seconds an API thread waits for another request before it ends (the next burst starts new ones; granian takes 5 to 600): the threads a burst of long polls or 12-MP photos started held ~20 MB per API process after it, with granian's default of 30 s.")
    api_keepalive: int = Field(75, description="Seconds the API keeps an idle keep-alive connection open, and gives a client to send a request's headers; longer than the idle time of clients' and load balancers' connection pools, so the API is never the side that closes a connection a request is being sent on.")
    load_balance_strategy: Literal["least_loaded", "round_robin", "random"] = Field("least_loaded", description="How `model_type: any` picks among models with live workers: fewest queued + running per ready process, in turn, or at random.")
    queue_limit: int = Field(1000, validation_alias=AliasChoices("queue_limit", "queue_size"), description="Requests one model's queues may hold; beyond it submissions get 429 `queue_full` with Retry-After and nothing is enqueued. (Was QUEUE_SIZE, still read.)")
    no_worker_policy: Literal["reject", "queue"] = Field("reject", description="A request for a model with no live worker: `reject` (503 with Retry-After) or `queue` it until a worker comes.")
    retry_after: int = Field(2, description="Seconds in the Retry-After header of 429 and 503 answers.")
    default_model: str = Field("resnet18", description="Model used for `model_type: any` when no live worker decides otherwise.")
    default_top_k: int = Field(5, description="Predictions returned when a request names no top_k.")
    max_top_k: int = Field(100, description="Largest top_k a request may ask for.")
    max_wait_seconds: float = Field(30.0, description="Upper bound of `?wait=S` on submit and poll.")
    sync_timeout: float = Field(30.0, description="Seconds the synchronous `POST /inference` and `POST /batch_inference` wait for results.")
    max_content_length: int = Field(10 * 1024 * 1024, description="Largest request body in bytes (413 above).")
    max_image_pixels: int = Field(40_000_000, description="Largest decoded image in pixels (width x height); bigger images are rejected as decompression bombs.")
    max_request_pixels: int = Field(80_000_000, description="Most pixels all the pictures of one request may hold together (a request of `images`): bounds the decoding one task costs its worker (~1.2 s per 40 million pixels on the 2-core machine). Over it, 413 `too_many_pixels`.")
    max_jpeg_scans: int = Field(32, ge=1, description="Most scans a JPEG may have (a progressive one has ~10): each scan is a decoding pass over the whole picture, and a 270 KB JPEG of 1,000 scans took 38 s to decode. Over it, 400 `image_too_complex`.")
    max_items_per_request: int = Field(32, validation_alias=AliasChoices("max_items_per_request", "batch_size"), description="Most items one submission may carry: requests in a batch request, or images in one request (`images`). (Was BATCH_SIZE, still read; not MAX_BATCH_SIZE, the worker's dynamic batches.)")
    worker_cache_seconds: float = Field(2.0, validation_alias=AliasChoices("worker_cache_seconds", "health_check_interval"), description="Seconds between the API's checks of which workers are live (its cached view): one `model_info` broadcast a turn, shared through Redis by every API process. The seed's HEALTH_CHECK_INTERVAL is read as this.")
    metrics_window: float = Field(60.0, gt=0, description="Seconds of finished requests the JSON metrics' latency percentiles cover (`/metrics` as JSON, `/v1/stats`), as the seed's METRICS_WINDOW; at most the last 5,000 requests.")

    # Security
    api_keys: str = Field("", description="Comma-separated API keys; when set, every endpoint except /health/live requires one (Bearer or X-API-Key). Each key is a tenant: its request and batch ids are its own.")
    rate_limit_per_minute: int = Field(0, ge=0, description="Requests per minute allowed to each API key, or without API_KEYS to each client address (counted in Redis, shared by all API processes); 0 = no limit.")
    max_in_flight_per_key: int = Field(200, ge=0, description="Requests one API key may have queued or running at once (with API_KEYS), so that one tenant cannot fill a model's queue for everyone; over it, 429 `too_many_in_flight` with Retry-After. 0 = no limit.")
    auth_failures_per_minute: int = Field(20, ge=0, description="Failed authentications a client address may make in a minute (with API_KEYS); over it, every request from that address gets 429 `too_many_auth_failures` until the minute ends. 0 = no limit.")

    # Completion callbacks (inference/callbacks/)
    callback_allowed_hosts: str = Field("", description="Hosts a `callback_url` may name, comma-separated: exact names or addresses, or `*.example.com` for its subdomains. Empty: callbacks are off (a `callback_url` gets 400 `callback_not_allowed`). A host that resolves to an internal address (loopback, private, link-local) is called only when listed by its exact name.")
    callback_signing_key: str = Field("", description="Key from which each API key's callback secret is derived (HMAC-SHA256; `GET /v1/callbacks/secret` gives a key its own). Empty: one is made at random on first use and kept in Redis for every process.")
    callback_timeout: float = Field(5.0, gt=0, description="Seconds a callback receiver has to answer before the delivery counts as failed and is retried.")
    callback_max_retries: int = Field(8, ge=0, description="Retries of a callback whose receiver failed (no answer, or not 2xx), with exponential backoff from CALLBACK_RETRY_DELAY up to CALLBACK_RETRY_BACKOFF_MAX seconds; then it is given up (logged).")
    callback_retry_delay: float = Field(1.0, gt=0, description="First retry countdown of a failed callback in seconds; doubles each retry (with jitter).")
    callback_retry_backoff_max: float = Field(10.0, gt=0, description="Cap of a callback's retry countdown in seconds, and never more than VISIBILITY_TIMEOUT - CALLBACK_TIMEOUT - 1 (a message waiting out a longer countdown would be delivered again meanwhile).")
    callback_concurrency: int = Field(16, ge=1, description="Deliveries the callbacks worker (`python -m inference.callbacks`) makes at once (threads): a receiver that hangs holds one for CALLBACK_TIMEOUT.")

    # Operations
    log_level: str = Field("INFO", description="Log level of API and workers.")
    api_access_log: bool = Field(False, description="One access line per HTTP request from the API's server (at LOG_LEVEL INFO or DEBUG). Off, as in gunicorn and granian: the workers already write a line per request, and under `make run` each line costs the API and honcho's relay CPU (docs/performance.md).")
    log_format: Literal["text", "json"] = Field("text", description="`json`: one JSON object per log line (with `request_id` where known).")
    flower_address: str = Field("127.0.0.1", description="Address Flower binds to.")
    flower_port: int = Field(5555, description="Port of Flower.")
    flower_basic_auth: str = Field("", description="Flower login as user:password[,user2:password2]; empty = a random password made on first start, kept beside FLOWER_DB (mode 600). Flower never runs open.")
    flower_max_tasks: int = Field(2000, ge=1, description="Tasks Flower keeps in memory for its task list (the oldest go first; Flower's own default is 100,000). Flower's memory still grew ~26 KB per request under `make run` with this at 2,000 (75 -> 269 MB over 6,300 requests), as without it: see docs/performance.md.")
    flower_enable_events: bool = Field(False, description="Flower turns the workers' task events on (it sends `enable_events` every 5 s) for its task list and task charts. Off (unlike Flower's own default), Flower still shows each worker online, its heartbeats, pool and queues, and the API's /metrics counts every request; with events on, each request costs three more Redis publishes in the worker, their relay in Redis and their handling in Flower: ~3 ms of CPU per request under `make run` on a 2-core AMD EPYC (Zen 3), ~8 % of its throughput (docs/operations.md#monitoring).")
    flower_db: str = Field("var/flower.db", description="Flower's database of task history (and the generated login beside it).")

    @model_validator(mode="after")
    def renamed_variables(self) -> Settings:
        for old, new in RENAMED.items():
            if old in os.environ:
                warnings.warn(f"{old} is deprecated and will go: set {new}" + (" (it wins over it)" if new in os.environ else ""),
                              FutureWarning, stacklevel=2)
        return self

    @model_validator(mode="before")
    @classmethod
    def seed_batch_timeout(cls, values: Any) -> Any:
        """The seed's BATCH_TIMEOUT (seconds a batch waits to form) as MAX_BATCH_DELAY_MS."""
        if isinstance(values, dict) and "BATCH_TIMEOUT" in os.environ and "MAX_BATCH_DELAY_MS" not in os.environ \
                and "max_batch_delay_ms" not in values:
            values = {**values, "max_batch_delay_ms": float(os.environ["BATCH_TIMEOUT"]) * 1000}
        return values

    @model_validator(mode="after")
    def replicas_to_wait_for(self) -> Settings:
        if self.redis_wait_replicas is None:
            self.redis_wait_replicas = 1 if self.redis_sentinels else 0
        return self

    @model_validator(mode="after")
    def redelivery_after_time_limit(self) -> Settings:
        # A task still running (or waiting for a retry) when the timeout ends would run twice.
        if not self.visibility_timeout:
            self.visibility_timeout = self.worker_timeout + self.retry_backoff_max + 5
        if self.visibility_timeout <= self.worker_timeout + self.retry_backoff_max:
            raise ValueError(f"VISIBILITY_TIMEOUT ({self.visibility_timeout}) must exceed WORKER_TIMEOUT + RETRY_BACKOFF_MAX "
                             f"({self.worker_timeout} + {self.retry_backoff_max})")
        return self


_current: Settings | None = None


def get_settings() -> Settings:
    """This process's settings, read once."""
    global _current
    if _current is None:
        _current = Settings()
    return _current


def use_settings(settings: Settings | None) -> None:
    """This process's settings from now on: a worker's, once pinned to its model (its pool
    processes, forked after, inherit them); None reads them again."""
    global _current
    _current = settings


def markdown_table() -> str:
    """The configuration table of docs/configuration.md, generated so it cannot drift from the code."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "(empty)" if default == "" else "(unset)" if default is None else f"`{str(default).lower() if isinstance(default, bool) else default}`"
        rows.append(f"| `{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
