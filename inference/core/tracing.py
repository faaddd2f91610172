"""OpenTelemetry traces: one trace per request, from the HTTP handler to the model and back.

Off unless the standard variables ask for it: OTEL_TRACES_EXPORTER (`otlp`, `console`) or an
OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); OTEL_SDK_DISABLED
wins. The exporter reads its own OTEL_EXPORTER_OTLP_* variables (OTLP over HTTP, protobuf), the
batch processor OTEL_BSP_*, and OTEL_SERVICE_NAME names the service (default: `celery-inference-`
api, -worker, -callbacks). Spans:

    POST /v1/inference              the API (Flask instrumentation; a client's traceparent is its parent)
      submit                        the submission's Redis round trip (inference/submit/submission.py)
        queue                       submitted -> a worker took it (the worker, from the request's times)
        run/inference.classify      the task (Celery instrumentation: the message's headers carry
                                    the context, the hand-built message as send_task's would)
          batch                     the forward pass it ran in, with its size
            decode, forward         timed in the model's process
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

_enabled: bool | None = None


def wanted() -> bool:
    """Whether the environment asks for traces."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def enabled() -> bool:
    return bool(_enabled)


def setup(service: str) -> bool:
    """This process's tracer provider and exporter, once, if traces are wanted; True if so."""
    global _enabled
    if _enabled is not None:
        return _enabled
    _enabled = wanted()
    if not _enabled:
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or f"celery-inference-{service}"}))
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "console":
        exporter: Any = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))  # re-made in a forked child (the SDK's at-fork hook)
    trace.set_tracer_provider(provider)
    return True


def instrument_celery() -> None:
    """The Celery instrumentation's signal handlers in this (worker) process."""
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    if enabled() and not CeleryInstrumentor().is_instrumented_by_opentelemetry:
        CeleryInstrumentor().instrument()


def span(name: str, **attributes: Any) -> AbstractContextManager:
    """A span around a block, child of the current one (nothing at all with traces off)."""
    if not enabled():
        return nullcontext()
    from opentelemetry import trace

    return trace.get_tracer("inference").start_as_current_span(name, attributes=attributes)


def context_headers() -> dict[str, str]:
    """The current trace context as message headers (`traceparent`), for a message built by hand."""
    if not enabled():
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def record_span(name: str, start: float, end: float, parent: Any = None, **attributes: Any) -> Any:
    """A span of what already happened (epoch seconds), child of `parent` (a span; the current
    one by default). Returns it, to be the parent of others."""
    from opentelemetry import trace

    context = trace.set_span_in_context(parent) if parent is not None else None
    recorded = trace.get_tracer("inference").start_span(name, context=context, start_time=int(start * 1e9), attributes=attributes)
    recorded.end(end_time=int(max(end, start) * 1e9))
    return recorded


def record_request(result: dict, outcomes: list) -> None:
    """In the task, once its pictures ran: the request's time in queue (beside the task, under the
    submission) and each batch it ran in, with the decode and forward timings the model's process
    reported (on each picture's predictions: inference/worker/process.py)."""
    if not enabled():
        return
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan

    run = trace.get_current_span()
    parent = getattr(run, "parent", None)  # the submission's span, in the API process
    if result.get("submitted_at") and result.get("started_at") and parent is not None:
        record_span("queue", result["submitted_at"], result["started_at"], NonRecordingSpan(parent), priority=result.get("priority") or "")
    batches: dict[int, tuple[dict, int]] = {}
    for outcome in outcomes:
        timing = getattr(getattr(outcome, "output", None), "timing", None)
        if timing:
            batches.setdefault(outcome.batch_number, (timing, outcome.batch_size))
    for number, (timing, size) in sorted(batches.items()):
        batch = record_span("batch", timing["decode"][0], timing["forward"][1], run, batch_size=size, batch_number=number)
        for step in ("decode", "forward"):
            start, end = timing[step]
            record_span(step, start, end, batch)
