"""Queue naming and routing: one function decides every queue name."""

from __future__ import annotations

PRIORITIES = ("high", "normal", "low")  # consumed in this order
DEFAULT_PRIORITY = "normal"
TASK_NAME = "inference.classify"
CALLBACK_TASK = "inference.deliver_callback"  # inference/callbacks/delivery.py


def queue_name(model: str, priority: str = DEFAULT_PRIORITY) -> str:
    if priority not in PRIORITIES:
        raise ValueError(f"unknown priority {priority!r}; expected one of {', '.join(PRIORITIES)}")
    return f"{model}.{priority}"


def priority_rank(queue: str | None, priority: str | None = None) -> int:
    """0 for high, 1 normal, 2 low: from the queue a message came from (`<model>.<priority>`),
    else the priority it names, else normal."""
    named = queue.rpartition(".")[2] if queue else priority
    return PRIORITIES.index(named if named in PRIORITIES else DEFAULT_PRIORITY)


def model_queues(model: str) -> list[str]:
    """A model's queues in the order a worker must consume them (high first)."""
    return [queue_name(model, p) for p in PRIORITIES]


def route_task(name, args, kwargs, options, task=None, **kw):
    """Celery router: a classify call sent without a queue goes to its model's normal queue.

    Lets other services call `send_task("inference.classify", kwargs={...})` with just the model.
    """
    if name == TASK_NAME and "queue" not in options and kwargs and kwargs.get("model"):
        return {"queue": queue_name(kwargs["model"], kwargs.get("priority") or DEFAULT_PRIORITY)}
    return None
