"""GET /metrics: the Redis-held request metrics and live state, in Prometheus' text format.

A custom collector reads what workers and API processes recorded (inference/core/metrics.py) at
scrape time, so every API process serves the same numbers without a multiprocess directory.
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from inference.core import keys, metrics
from inference.core.queues import PRIORITIES
from inference.core.registry import model_names
from inference.submit import tracking


class InferenceCollector(Collector):
    def __init__(self, redis_client, worker_directory):
        self.redis = redis_client
        self.workers = worker_directory

    def collect(self):
        requests = CounterMetricFamily("inference_requests", "Requests by model, priority and outcome.",
                                       labels=["model", "priority", "outcome"])
        for (model, priority, outcome), count in sorted(metrics.read_requests(self.redis).items()):
            requests.add_metric([model, priority, outcome], count)
        yield requests

        for name, (_, help_text) in metrics.HISTOGRAMS.items():
            family = HistogramMetricFamily(f"inference_{name}", help_text, labels=["model"])
            for model, hist in sorted(metrics.read_histogram(self.redis, name).items()):
                buckets = [(floatToGoString(bound), count) for bound, count in hist["buckets"]]
                family.add_metric([model], buckets, sum_value=hist["sum"])
            yield family

        depths = tracking.queue_depths(self.redis, model_names(), PRIORITIES)
        depth = GaugeMetricFamily("inference_queue_depth", "Requests waiting per queue.", labels=["model", "priority"])
        for model, by_priority in depths.items():
            for priority, count in by_priority.items():
                depth.add_metric([model, priority], count)
        yield depth

        ready_workers = self.workers.ready_workers_by_model()
        live = GaugeMetricFamily("inference_workers_live", "Workers with a ready model, per model.", labels=["model"])
        for model, workers in ready_workers.items():
            live.add_metric([model], len(workers))
        yield live
        yield from autoscaling_gauges(tracking.queued_by_model(self.redis, depths), ready_workers)

        retries = CounterMetricFamily("inference_task_retries", "Retries of requests that failed for a transient reason.",
                                      labels=["model"])
        for model, count in sorted(metrics.read_retries(self.redis).items()):
            retries.add_metric([model], count)
        yield retries

        images = CounterMetricFamily("inference_images_classified", "Images classified (a request of `images` counts each one).",
                                     labels=["model"])
        for model, count in sorted(metrics.read_images(self.redis).items()):
            images.add_metric([model], count)
        yield images

        duplicates = CounterMetricFamily("inference_duplicate_runs", "Requests run again after a redelivery.")
        duplicates.add_metric([], int(self.redis.get(keys.DUPLICATES_KEY) or 0))
        yield duplicates


def autoscaling_gauges(queued: dict[str, int], ready_workers: dict[str, list[dict]]):
    """What an autoscaler of a model's workers targets (deploy/, docs/operations.md#autoscaling):
    requests queued in Redis, requests its workers hold (running or waiting in their batchers:
    each holds at most its concurrency, prefetch 1 and acks_late), its ready model processes,
    and the backlog (queued + held) per ready process; with none ready, the whole backlog, so
    that a model scaled to zero comes back."""
    families = {
        "queued": GaugeMetricFamily("inference_model_queued", "Requests waiting in a model's queues (every priority).", labels=["model"]),
        "held": GaugeMetricFamily("inference_model_running", "Requests a model's workers hold: running or waiting for a batch.", labels=["model"]),
        "ready": GaugeMetricFamily("inference_model_ready_processes", "Model processes ready to serve, per model.", labels=["model"]),
        "backlog": GaugeMetricFamily("inference_model_backlog_per_ready_process",
                                     "(queued + running) / ready model processes (the whole backlog when none is ready).", labels=["model"]),
    }
    for model, waiting in sorted(queued.items()):
        workers = ready_workers.get(model, [])
        held = sum(w.get("held", w.get("active", 0)) for w in workers)
        ready = sum(w.get("ready_processes") or 0 for w in workers)
        for name, value in (("queued", waiting), ("held", held), ("ready", ready), ("backlog", (waiting + held) / max(ready, 1))):
            families[name].add_metric([model], value)
    yield from families.values()
