"""Completion callbacks against a real local receiver: delivered once the request ends, signed,
retried with backoff after failures, never to a host off CALLBACK_ALLOWED_HOSTS, and a receiver
that hangs slows no inference. The suite's workers and API allow 127.0.0.1 (conftest.py); the
callbacks worker here is the Procfile's `python -m inference.callbacks`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from inference.callbacks import signing
from inference.core import keys
from tests.helpers import image_b64, paused, suite_processes
from tests.receiver import Receiver
from tests.system import ROOT, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def callbacks_worker(system):
    """The callbacks worker, with a short receiver timeout so that a hanging receiver's retries come quickly."""
    from inference.core.celery_app import app

    name = f"callbacks@test-{os.getpid()}.{os.uname().nodename}"  # as deploy/callbacks.yaml names a pod's: callbacks@<pod>
    env = {**os.environ, "CALLBACK_TIMEOUT": "1", "CALLBACK_RETRY_DELAY": "0.5", "CALLBACK_CONCURRENCY": "4"}
    suite_processes.start("callbacks", [sys.executable, "-m", "inference.callbacks", name], env)
    wait_until(lambda: app.control.ping(destination=[name], timeout=1), 60, what="the callbacks worker")
    yield name
    suite_processes.stop("callbacks")


def submit(api, callback_url: str, **fields) -> tuple[int, dict]:
    response = api.post(f"{api.base_url}/v1/inference", timeout=30,
                        json={"data": image_b64(), "model_type": "squeezenet", "callback_url": callback_url, **fields})
    return response.status_code, response.json()


def secret(api) -> str:
    return api.get(f"{api.base_url}/v1/callbacks/secret", timeout=10).json()["secret"]


def test_the_final_status_is_delivered_signed(api, receiver, callbacks_worker, redis_client):
    url = receiver.url("ok")
    code, body = submit(api, url, request_id=f"cb-{uuid.uuid4().hex[:8]}")
    assert code == 202
    delivery = receiver.wait_for(url)[0]
    status = api.get(f"{api.base_url}/v1/inference/{body['request_id']}", timeout=10).json()
    assert json.loads(delivery["body"]) == status and status["status"] == "success"
    assert delivery["headers"]["Idempotency-Key"] == body["request_id"] and delivery["headers"]["X-Inference-Attempt"] == "1"
    header = delivery["headers"][signing.SIGNATURE_HEADER]
    assert signing.verify(secret(api), header, delivery["body"])
    assert not signing.verify(secret(api), header, delivery["body"].replace(b"success", b"failed"))  # tampered
    assert not signing.verify("whsec_wrong", header, delivery["body"])
    assert not signing.verify(secret(api), header, delivery["body"], now=time.time() + 3600)  # replayed an hour later
    assert not redis_client.exists(keys.callback_key(body["request_id"]))  # queued once, with the final state
    # A second request's delivery after it: the first was not delivered again.
    second = receiver.url("ok")
    submit(api, second)
    receiver.wait_for(second)
    assert len(receiver.at(url)) == 1


def test_a_failing_receiver_gets_it_again_with_backoff(api, receiver, callbacks_worker):
    url = receiver.url("flaky")
    code, body = submit(api, url)
    assert code == 202
    deliveries = receiver.wait_for(url, count=3)
    log = [(d["headers"]["X-Inference-Attempt"], round(d["at"] - deliveries[0]["at"], 2)) for d in deliveries]
    print(f"\ncallback delivery log for {body['request_id']}: " + ", ".join(f"attempt {a} at +{t} s" for a, t in log), file=sys.stderr)
    assert [a for a, _ in log] == ["1", "2", "3"]
    assert {d["headers"]["Idempotency-Key"] for d in deliveries} == {body["request_id"]}
    assert {json.loads(d["body"])["status"] for d in deliveries} == {"success"}
    first_gap, second_gap = log[1][1] - log[0][1], log[2][1] - log[1][1]
    assert first_gap >= 0.2 and second_gap >= 0.45  # 0.5 s, then 1 s, each with jitter (x 0.5-1)
    after = receiver.url("ok")
    submit(api, after)
    receiver.wait_for(after)
    assert len(receiver.at(url)) == 3


def test_hosts_off_the_list_are_refused_and_never_called(api, receiver, callbacks_worker, redis_client, celery_client):
    port = receiver.server.server_address[1]
    for url in (f"http://localhost:{port}/x", "http://10.0.0.7/hook", "http://169.254.169.254/latest/meta-data",
                f"ftp://127.0.0.1:{port}/x", f"http://user:pw@127.0.0.1:{port}/x", "not a url", "http://127.0.0.1:99999/x",
                "http://" + "a" * 3000):
        code, body = submit(api, url)
        assert code == 400 and body["error"]["code"] == "callback_not_allowed", (url, body)
    # Through the task contract too: a worker refuses a callback off the list before it runs anything.
    outcome = celery_client.send_task("inference.classify", queue="squeezenet.high",
                                      kwargs={"image": image_b64(), "model": "squeezenet", "callback_url": "http://10.0.0.7/hook"})
    with pytest.raises(Exception) as refused:
        outcome.get(timeout=60)
    assert "callback host '10.0.0.7' is not on CALLBACK_ALLOWED_HOSTS" in str(refused.value)
    assert not redis_client.exists(keys.callback_key(outcome.id))
    assert not [d for d in receiver.deliveries if d["path"] == "/x"]


def test_send_task_callers_get_callbacks_too(receiver, callbacks_worker, celery_client):
    url = receiver.url("ok")
    outcome = celery_client.send_task("inference.classify", queue="squeezenet.normal",
                                      kwargs={"image": image_b64(), "model": "squeezenet", "callback_url": url})
    result = outcome.get(timeout=60)
    delivered = json.loads(receiver.wait_for(url)[0]["body"])
    assert delivered["status"] == "success" and delivered["request_id"] == outcome.id
    assert delivered["result"]["predictions"] == result["predictions"]


def test_a_cancelled_request_calls_back(api, receiver, callbacks_worker, worker_ids):
    url = receiver.url("ok")
    queues = [f"efficientnet.{p}" for p in ("high", "normal", "low")]
    with paused(worker_ids["efficientnet"], *queues):
        code, body = submit(api, url, model_type="efficientnet")
        assert code == 202
        assert api.delete(f"{api.base_url}/v1/inference/{body['request_id']}", timeout=10).json()["status"] == "cancelled"
        delivered = json.loads(receiver.wait_for(url)[0]["body"])
    assert delivered["status"] == "cancelled" and delivered["request_id"] == body["request_id"]


def test_a_receiver_that_trickles_its_answer_is_cut_at_the_timeout(api, receiver, callbacks_worker):
    """Each byte in 0.5 s (a socket timeout of 1 s never fires), the answer in ~45 s: the delivery
    is cut at CALLBACK_TIMEOUT (1 s here) as a whole, and tried again."""
    url = receiver.url("trickle")
    assert submit(api, url)[0] == 202
    first, second = receiver.wait_for(url, count=2, timeout=30)[:2]
    assert second["at"] - first["at"] < 5 and second["headers"]["X-Inference-Attempt"] == "2"


def test_a_hanging_receiver_slows_no_inference(api, receiver, callbacks_worker):
    """Eight deliveries hang (more than the callbacks worker's threads); requests with and
    without callbacks still finish at once; released, every hanging one is delivered."""
    hanging = [receiver.url("hang") for _ in range(8)]
    ids = [submit(api, url)[1]["request_id"] for url in hanging]
    receiver.wait_for(hanging[0])  # the receiver is holding deliveries now
    started = time.monotonic()
    for _ in range(6):
        response = api.post(f"{api.base_url}/v1/inference", params={"wait": 20}, timeout=30,
                            json={"data": image_b64(), "model_type": "squeezenet", "callback_url": receiver.url("ok")})
        assert response.status_code == 200 and response.json()["status"] == "success"
    for request_id in ids:
        assert api.get(f"{api.base_url}/v1/inference/{request_id}", params={"wait": 20}, timeout=30).json()["status"] == "success"
    took = time.monotonic() - started
    assert took < 10, f"6 requests and 8 results took {took:.1f} s while the receiver hung"
    # Held past CALLBACK_TIMEOUT (1 s), the deliveries failed and went again.
    wait_until(lambda: any("/hang/" in d["path"] and d["headers"]["X-Inference-Attempt"] != "1" for d in receiver.deliveries),
               30, what="a hanging delivery retried")
    receiver.released.set()
    for url in hanging:  # timed out (CALLBACK_TIMEOUT=1) and retried until the receiver answers
        receiver.wait_for(url, timeout=120)


def test_each_api_key_has_its_own_secret(api_with):
    secured = api_with(api_keys="alpha-key,beta-key")
    alpha, beta = ({"Authorization": f"Bearer {key}"} for key in ("alpha-key", "beta-key"))
    secrets = [secured.get("/v1/callbacks/secret", headers=h).json["secret"] for h in (alpha, beta, alpha)]
    assert secrets[0] == secrets[2] != secrets[1] and all(s.startswith("whsec_") for s in secrets)
    assert secured.get("/v1/callbacks/secret").status_code == 401


def test_each_request_of_a_batch_calls_back(api, receiver, callbacks_worker):
    url = receiver.url("ok")
    response = api.post(f"{api.base_url}/v1/batch_inference", timeout=30,
                        json={"images": [image_b64(), image_b64("astronaut.jpg")], "model_type": "squeezenet", "callback_url": url})
    assert response.status_code == 202
    deliveries = receiver.wait_for(url, count=2)
    assert {d["headers"]["Idempotency-Key"] for d in deliveries} == set(response.json()["request_ids"])


def test_the_deploy_manifests_probe_answers_for_a_running_callbacks_worker(callbacks_worker):
    """deploy/callbacks.yaml's liveness probe, run as the kubelet would (POD_NAME set), against a
    real callbacks worker named as the manifest's command names it."""
    deployment, _ = yaml.safe_load_all((ROOT / "deploy" / "callbacks.yaml").read_text())
    container, = deployment["spec"]["template"]["spec"]["containers"]
    pod = callbacks_worker.split("@", 1)[1]
    assert container["command"][-1].replace("$(POD_NAME)", pod) == callbacks_worker
    env = {**os.environ, "POD_NAME": pod, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # the venv's celery
    probe = subprocess.run(container["livenessProbe"]["exec"]["command"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and f"{callbacks_worker}: OK" in probe.stdout, probe.stdout + probe.stderr
    env["POD_NAME"] = "no-such-pod"
    assert subprocess.run(container["livenessProbe"]["exec"]["command"], cwd=ROOT, env=env, capture_output=True, timeout=60).returncode != 0
