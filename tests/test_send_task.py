"""Other services call the task by name, without this project's code."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import image_b64, repo_root

pytestmark = pytest.mark.e2e

CLIENT = textwrap.dedent(
    """
    import json, sys
    from celery import Celery

    broker, image = sys.argv[1], sys.stdin.read()
    client = Celery(broker=broker, backend=broker)
    result = client.send_task("inference.classify", queue="resnet18.normal",
                              kwargs={"image": image, "model": "resnet18", "top_k": 3, "request_id": "svc-1"})
    body = result.get(timeout=60)
    routed = client.send_task("inference.classify", kwargs={"image": image, "model": "squeezenet"},
                              queue="squeezenet.high").get(timeout=60)
    print(json.dumps({"result": body, "routed": routed,
                      "imported_project": any(m.split(".")[0] in ("inference", "api") for m in sys.modules)}))
    """
)


def test_send_task_from_a_foreign_process(api, redis_url, tmp_path):
    # -I: isolated mode, so neither the repository nor PYTHONPATH is importable.
    out = subprocess.run([sys.executable, "-I", "-c", CLIENT, redis_url], input=image_b64("chelsea.jpg"),
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["imported_project"] is False
    assert body["result"]["model"] == "resnet18" and body["result"]["request_id"] == "svc-1"
    assert len(body["result"]["predictions"]) == 3
    assert body["routed"]["model"] == "squeezenet" and len(body["routed"]["predictions"]) == 5


def test_inspect_model_info_from_the_celery_cli(api, redis_url):
    out = subprocess.run([sys.executable, "-m", "celery", "-A", "inference", "inspect", "model_info", "--json"],
                         capture_output=True, text=True, timeout=60, cwd=repo_root(),
                         env={**__import__("os").environ, "REDIS_URL": redis_url})
    assert out.returncode == 0, out.stderr
    replies = json.loads(out.stdout)
    models = {info["model"]: info for reply in replies for info in reply.values()} if isinstance(replies, list) else \
        {info["model"]: info for info in replies.values()}
    assert {"mobilenet", "resnet18", "efficientnet", "squeezenet"} <= set(models)
    assert models["resnet18"]["weights"] == "random"
    assert models["resnet18"]["processes"][0]["warmup_seconds"] > 0
