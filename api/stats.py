"""Request statistics in JSON, from the Redis-held counters (inference/core/metrics.py): the
body of `/metrics` for JSON clients (the seed's dashboard) and `/v1/stats`, and `/health`'s
`stats`. Latencies: `*_latency` in seconds, the seed's `latency_*` in milliseconds;
percentiles over the requests that finished in the last METRICS_WINDOW seconds."""

from __future__ import annotations

from datetime import UTC, datetime

from inference.core import metrics


def request_counts(redis) -> dict:
    """Requests by outcome and their average latency (all time): a few small hashes, cheap enough
    for every health check."""
    by_outcome: dict[str, int] = {}
    for (_, _, outcome), count in metrics.read_requests(redis).items():
        by_outcome[outcome] = by_outcome.get(outcome, 0) + count
    total = sum(by_outcome.values())
    latency = metrics.read_histogram(redis, "latency_seconds")
    latency_sum = sum(h["sum"] for h in latency.values())
    latency_count = sum(h["count"] for h in latency.values())
    return {
        "requests_total": total,
        "requests_success": by_outcome.get("success", 0),
        "requests_failed": by_outcome.get("failed", 0),
        "requests_by_outcome": by_outcome,
        "success_rate": round(by_outcome.get("success", 0) / total, 6) if total else 0.0,
        "avg_latency": round(latency_sum / latency_count, 6) if latency_count else None,
    }


def request_stats(redis, window: float) -> dict:
    """The counts, and latency percentiles over the requests that finished in the last `window` s."""
    recent = metrics.recent_latencies(redis, window)
    p50, p99 = metrics.percentile(recent, 50), metrics.percentile(recent, 99)
    stats: dict = {**request_counts(redis), "p50_latency": p50, "p95_latency": metrics.percentile(recent, 95),
                   "p99_latency": p99, "metrics_window": window}
    if p50 is not None and p99 is not None:  # the seed's clients draw these only when present (in ms)
        stats.update({"latency_p50": round(1000 * p50, 3), "latency_p99": round(1000 * p99, 3),
                      "latency_avg": round(1000 * sum(recent) / len(recent), 3)})
    return stats


def iso_utc(epoch: float) -> str:
    """An epoch time as the seed shows times: ISO-8601, UTC ("2024-01-01T10:00:00.123Z")."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
