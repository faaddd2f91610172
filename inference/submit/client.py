"""Python client for the REST API, and a small CLI on top of it.

    from inference.submit.client import InferenceClient
    client = InferenceClient("http://127.0.0.1:8000")
    result = client.classify("cat.jpg", model="resnet18")       # submit + wait
    many = client.classify(["cat.jpg", "dog.png"])              # one request: many["results"] in order
    request_id = client.submit("cat.jpg", priority="low")        # submit-then-poll
    client.wait(request_id)                                       # final status
    client.cancel(request_id)

`429` and `503` answers (and dropped connections) are retried after Retry-After, with
exponential backoff and jitter. Every submission carries a request id made here (unless the
caller gives one), so a retry after a connection dropped once the API had accepted the
request returns that request (`duplicate`) and never queues it twice. Services on the same Redis can skip HTTP and call the task
with Celery's `send_task` (see docs/api.md).

CLI: `python -m inference.submit.client classify PATH [PATH ...] --model resnet18` (files or folders).
"""

from __future__ import annotations

import argparse
import base64
import random
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from inference.core.errors import InferenceError, error_for

__all__ = ["InferenceClient", "InferenceError"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}
FINAL = {"success", "failed", "cancelled", "expired"}


def answered(code: str, message: str, body: dict, status: int | None = None) -> InferenceError:
    """The API refused a request, or the request failed: the error of its code (inference/core/errors.py)."""
    error = error_for(code, message)
    error.body = body
    if status is not None:
        error.http_status = status
    return error


class InferenceClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, timeout: float = 60.0, retries: int = 5,
                 backoff: float = 0.5, api_key: str | None = None, session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.session = session or requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.attempts = 0  # requests sent, retries included

    # -- transport -------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, expect: Iterable[int] = (200, 202), **kwargs) -> tuple[int, dict]:
        kwargs.setdefault("timeout", self.timeout + 10)
        for attempt in range(self.retries + 1):
            self.attempts += 1
            try:
                response = self.session.request(method, self.base_url + path, **kwargs)
            except (requests.ConnectionError, requests.Timeout):
                if attempt == self.retries:
                    raise
                time.sleep(self._delay(attempt, None))
                continue
            if response.status_code in (429, 503) and attempt < self.retries:
                time.sleep(self._delay(attempt, response.headers.get("Retry-After")))
                continue
            body = response.json() if response.content else {}
            if response.status_code not in expect:
                error = body.get("error", {})
                raise answered(error.get("code", "http_error"), error.get("message", response.text), body, response.status_code)
            return response.status_code, body
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        exponential = self.backoff * 2**attempt
        floor = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else 0.0
        return max(floor, random.uniform(0, exponential))  # full jitter, never before Retry-After

    # -- requests ------------------------------------------------------------------------
    @staticmethod
    def encode(image: bytes | str | Path) -> str:
        """Image bytes or a file path, as base64."""
        raw = Path(image).read_bytes() if isinstance(image, (str, Path)) else image
        return base64.b64encode(raw).decode()

    def submit(self, image: bytes | str | Path | list, *, model: str = "any", priority: str = "normal", top_k: int | None = None,
               request_id: str | None = None, timeout_ms: int | None = None) -> str:
        """One image, or a list of them as one request (its result holds `results`, in order)."""
        pictures = {"images": [self.encode(i) for i in image]} if isinstance(image, list) else {"data": self.encode(image)}
        body: dict[str, str | int | list[str]] = {**pictures, "model_type": model, "priority": priority,
                                                  "request_id": request_id or uuid.uuid4().hex}
        body.update({k: v for k, v in (("top_k", top_k), ("timeout_ms", timeout_ms)) if v is not None})
        return self._request("POST", "/v1/inference", json=body)[1]["request_id"]

    def status(self, request_id: str, wait: float = 0) -> dict:
        return self._request("GET", f"/v1/inference/{request_id}", params={"wait": wait} if wait else None)[1]

    def wait(self, request_id: str, timeout: float | None = None) -> dict:
        """The final status, polling with the API's bounded ?wait."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            remaining = deadline - time.monotonic()
            status = self.status(request_id, wait=max(0.0, min(remaining, 30.0)))
            if status["status"] in FINAL or remaining <= 0:
                return status

    def classify(self, image: bytes | str | Path | list, **kwargs) -> dict:
        """Submit and wait; the result, or InferenceError if the request did not succeed."""
        status = self.wait(self.submit(image, **kwargs))
        if status["status"] != "success":
            error = status.get("error") or {"code": status["status"], "message": status.get("reason") or status["status"]}
            raise answered(error["code"], error["message"], status)
        return status["result"]

    def submit_batch(self, images: Iterable[bytes | str | Path], *, model: str = "any", priority: str = "normal") -> dict:
        body = {"requests": [{"data": self.encode(i), "model_type": model, "priority": priority, "request_id": uuid.uuid4().hex}
                             for i in images]}
        return self._request("POST", "/v1/batch_inference", json=body)[1]

    def batch_status(self, batch_id: str, wait: float = 0) -> dict:
        return self._request("GET", f"/v1/batch/{batch_id}", params={"wait": wait} if wait else None)[1]

    def cancel(self, request_id: str) -> dict:
        return self._request("DELETE", f"/v1/inference/{request_id}")[1]

    def health(self) -> dict:
        return self._request("GET", "/health", expect=(200, 503))[1]


def image_files(paths: Iterable[str]) -> list[Path]:
    files: list[Path] = []
    for path in map(Path, paths):
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        files += [p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return files


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    parser = argparse.ArgumentParser(prog="python -m inference.submit.client", description="Classify images through the API.")
    sub = parser.add_subparsers(dest="command", required=True)
    classify = sub.add_parser("classify", help="classify files and folders")
    classify.add_argument("paths", nargs="+", help="image files or folders")
    classify.add_argument("--url", default="http://127.0.0.1:8000")
    classify.add_argument("--model", default="any")
    classify.add_argument("--priority", default="normal", choices=["high", "normal", "low"])
    classify.add_argument("--top-k", type=int, default=1)
    classify.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)

    console = Console()
    files = image_files(args.paths)
    if not files:
        console.print("[red]no images found[/]")
        return 2
    client = InferenceClient(args.url)

    def one(path: Path):
        started = time.perf_counter()
        try:
            result = client.classify(path, model=args.model, priority=args.priority, top_k=args.top_k)
            return path, result, None, time.perf_counter() - started
        except (InferenceError, requests.RequestException) as exc:
            return path, None, str(exc), time.perf_counter() - started

    rows = []
    with Progress(console=console, transient=True) as progress, ThreadPoolExecutor(args.concurrency) as pool:
        task = progress.add_task("classifying", total=len(files))
        for row in pool.map(one, files):
            rows.append(row)
            progress.advance(task)
    table = Table(title=f"{len(files)} images")
    for column in ("file", "model", "prediction", "confidence", "weights", "ms"):
        table.add_column(column)
    for path, result, error, seconds in rows:
        if result:
            top = result["predictions"][0]
            table.add_row(path.name, result["model"], top["class"], f"{top['confidence']:.4f}", result["weights"], f"{seconds * 1000:.0f}")
        else:
            table.add_row(path.name, "", f"[red]{error}[/]", "", "", f"{seconds * 1000:.0f}")
    console.print(table)
    return 0 if all(r[1] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
