"""A small load client for resilience tests: submit over HTTP, then collect every outcome."""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests


@dataclass
class LoadReport:
    sent: int = 0
    accepted: list[str] = field(default_factory=list)
    refused: int = 0  # 429/503: the client knows it was not taken
    refusals: list[str] = field(default_factory=list)  # why, for the report
    outcomes: dict[str, str] = field(default_factory=dict)
    results: dict[str, dict] = field(default_factory=dict)  # of the successes: times, worker
    duplicated: int = 0
    recovery_seconds: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def succeeded(self) -> int:
        return sum(1 for s in self.outcomes.values() if s == "success")

    @property
    def lost(self) -> int:
        return sum(1 for rid in self.accepted if self.outcomes.get(rid) != "success")

    @property
    def errors(self) -> list[str]:
        """Refusals that were not a polite 429/503: a 500, a hang, a dropped connection."""
        return [reason for reason in self.refusals if not reason.startswith(("429", "503"))]

    def not_succeeded(self, base_url: str) -> list[dict]:
        """The final word on each accepted request that did not succeed (for assertion messages)."""
        lost = [rid for rid in self.accepted if self.outcomes.get(rid) != "success"]
        return [requests.get(f"{base_url}/v1/inference/{rid}", timeout=10).json() for rid in lost]

    def summary(self, scenario: str) -> str:
        recovery = f"{self.recovery_seconds:.1f} s" if self.recovery_seconds is not None else "-"
        return (f"[{scenario}] sent {self.sent}, accepted {len(self.accepted)}, refused {self.refused}, "
                f"succeeded {self.succeeded}, lost {self.lost}, duplicated {self.duplicated}, recovery {recovery}")


def submit(base_url: str, report: LoadReport, payload: dict, attempts: int = 5) -> None:
    """Submit once, retrying 429/503 after Retry-After (at most 1 s here) as a client should."""
    with report.lock:
        report.sent += 1
    reason = ""
    for _ in range(attempts):
        try:
            response = requests.post(f"{base_url}/v1/inference", json=payload, timeout=10)
        except requests.RequestException as exc:
            reason = type(exc).__name__
            time.sleep(0.5)
            continue
        if response.status_code == 202:
            with report.lock:
                report.accepted.append(response.json()["request_id"])
            return
        reason = f"{response.status_code} {response.text[:200]}"
        if response.status_code not in (429, 503):
            break
        time.sleep(min(1.0, float(response.headers.get("Retry-After", 1))))
    with report.lock:
        report.refused += 1
        report.refusals.append(reason)


def send(base_url: str, payload: dict | list[dict], count: int, interval: float = 0.0, concurrency: int = 4,
         report: LoadReport | None = None) -> LoadReport:
    """`count` submissions, one every `interval` seconds (a list of payloads: each in turn)."""
    report = report or LoadReport()
    payloads = itertools.cycle([payload] if isinstance(payload, dict) else payload)
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        for n in range(count):
            pool.submit(submit, base_url, report, next(payloads))
            time.sleep(max(0.0, started + (n + 1) * interval - time.monotonic()))  # on schedule, not drifting
    return report


def collect(base_url: str, report: LoadReport, timeout: float) -> LoadReport:
    """Poll every accepted request until it is final or `timeout` passes (503s are retried)."""
    deadline = time.monotonic() + timeout
    pending = list(report.accepted)
    while pending and time.monotonic() < deadline:
        request_id = pending[0]
        try:
            response = requests.get(f"{base_url}/v1/inference/{request_id}", params={"wait": 2}, timeout=10)
            body = response.json() if response.status_code in (200, 202) else {}
            status = body.get("status")
        except (requests.RequestException, ValueError):
            status = None
        if status in ("success", "failed", "expired", "cancelled"):
            report.outcomes[request_id] = status
            if status == "success":
                report.results[request_id] = body["result"]
            pending.pop(0)
        elif status is None:
            time.sleep(0.2)
    return report
