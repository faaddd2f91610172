"""OpenTelemetry: an API and a worker with traces on (the standard OTEL_* variables), exporting
over OTLP/HTTP to a collector here; one request is one trace whose spans cross the processes
with the right parents."""

from __future__ import annotations

import os
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse

from tests.helpers import image_b64, paused, suite_processes
from tests.receiver import Receiver
from tests.system import free_port, start_api, start_worker, wait_for_ready_workers, wait_until

pytestmark = pytest.mark.e2e


class Collector:
    """OTLP over HTTP (protobuf), as an OpenTelemetry Collector receives it: every span, by trace."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                for resource_spans in request.resource_spans:
                    service = next(a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name")
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            collector.spans.append({
                                "service": service, "name": span.name, "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(), "parent_id": span.parent_span_id.hex(),
                                "start": span.start_time_unix_nano / 1e9, "end": span.end_time_unix_nano / 1e9,
                                "attributes": {a.key: a.value for a in span.attributes}})
                body = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def trace(self, trace_id: str) -> list[dict]:
        return [s for s in self.spans if s["trace_id"] == trace_id]


@pytest.fixture(scope="module")
def traced(system, worker_ids):
    """A collector, and an API, a squeezenet worker and the callbacks worker exporting to it (the
    suite's squeezenet worker paused meanwhile, so that the traced one serves)."""
    from inference.core.celery_app import app

    collector = Collector()
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100", "API_WORKERS": "1"}
    queues = [f"squeezenet.{p}" for p in ("high", "normal", "low")]
    callbacks = f"callbacks-traced-{os.getpid()}@{os.uname().nodename}"
    with paused(worker_ids["squeezenet"], *queues):
        name = start_worker(suite_processes, "squeezenet", env, name=f"squeezenet-traced-{os.getpid()}@%h")
        suite_processes.start("callbacks-traced", [sys.executable, "-m", "inference.callbacks", callbacks], env)
        api = start_api(suite_processes, env, name="api-traced")
        wait_for_ready_workers(api, len(worker_ids) + 1)
        wait_until(lambda: app.control.ping(destination=[callbacks], timeout=1), 60, what="the callbacks worker")
        yield collector, api
        for process in ("api-traced", f"worker-{name}", "callbacks-traced"):
            suite_processes.stop(process)
    collector.server.shutdown()


def test_one_request_is_one_trace_across_the_processes(traced):
    import requests

    collector, api = traced
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    response = requests.post(f"{api}/v1/inference", params={"wait": 30}, timeout=60, headers={"traceparent": f"00-{trace_id}-{client_span}-01"},
                             json={"data": image_b64(), "model_type": "squeezenet", "priority": "high"})
    assert response.status_code == 200 and response.json()["status"] == "success", response.text
    wanted = {"POST /v1/inference", "submit", "queue", "run/inference.classify", "batch", "decode", "forward"}
    spans = wait_until(lambda: collector.trace(trace_id) if wanted <= {s["name"] for s in collector.trace(trace_id)} else None,
                       30, interval=0.2, what="every span of the request")
    by_name = {s["name"]: s for s in spans}
    parent = {s["name"]: next((p["name"] for p in spans if p["span_id"] == s["parent_id"]), s["parent_id"]) for s in spans}
    print("\n" + tree(spans), file=sys.stderr)
    assert parent["POST /v1/inference"] == client_span  # the client's span is the root
    assert parent["submit"] == "POST /v1/inference"
    assert parent["run/inference.classify"] == "submit" and parent["queue"] == "submit"
    assert parent["batch"] == "run/inference.classify" and parent["decode"] == "batch" and parent["forward"] == "batch"
    assert by_name["POST /v1/inference"]["service"] == by_name["submit"]["service"] == "celery-inference-api"
    assert {by_name[n]["service"] for n in ("queue", "run/inference.classify", "batch", "decode", "forward")} == {"celery-inference-worker"}
    # In order: queued after the submission began, run after the queue, the forward pass after decoding.
    assert by_name["submit"]["start"] <= by_name["queue"]["start"] <= by_name["queue"]["end"] <= by_name["run/inference.classify"]["end"]
    assert by_name["decode"]["end"] <= by_name["forward"]["start"] + 1e-3 and by_name["batch"]["attributes"]["batch_size"].int_value >= 1
    assert sorted(s["name"] for s in spans) == sorted(wanted)  # each once: one submission, one run, one batch


def test_a_callback_delivery_joins_its_requests_trace(traced):
    """The delivery message is made inside the submission's span: the callbacks worker's run is
    its child, in the same trace."""
    import requests

    collector, api = traced
    receiver = Receiver()
    try:
        trace_id, url = secrets.token_hex(16), receiver.url("ok")
        response = requests.post(f"{api}/v1/inference", timeout=30, headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
                                 json={"data": image_b64(), "model_type": "squeezenet", "callback_url": url})
        assert response.status_code == 202
        receiver.wait_for(url)
        spans = wait_until(lambda: collector.trace(trace_id) if any(s["name"] == "run/inference.deliver_callback" for s in collector.trace(trace_id))
                           else None, 30, interval=0.2, what="the delivery's span")
    finally:
        receiver.close()
    delivery = next(s for s in spans if s["name"] == "run/inference.deliver_callback")
    submit = next(s for s in spans if s["name"] == "submit")
    assert delivery["service"] == "celery-inference-callbacks" and delivery["parent_id"] == submit["span_id"]


def tree(spans: list[dict]) -> str:
    """The trace as an indented tree, with each span's service and duration."""
    children: dict[str, list[dict]] = {}
    for span in spans:
        children.setdefault(span["parent_id"], []).append(span)
    ids = {s["span_id"] for s in spans}
    lines: list[str] = []

    def walk(span: dict, depth: int) -> None:
        lines.append(f"{'  ' * depth}{span['name']}  [{span['service']}]  {1000 * (span['end'] - span['start']):.1f} ms")
        for child in sorted(children.get(span["span_id"], []), key=lambda s: s["start"]):
            walk(child, depth + 1)

    for root in sorted((s for s in spans if s["parent_id"] not in ids), key=lambda s: s["start"]):
        walk(root, 0)
    return "\n".join(lines)
