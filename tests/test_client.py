"""The Python client and its CLI against the running system."""

from __future__ import annotations

import pytest

from inference.submit.client import InferenceClient, InferenceError, image_files, main
from tests.system import TESTDATA

pytestmark = pytest.mark.e2e
CAT = TESTDATA / "chelsea.jpg"


def test_classify_submit_wait_cancel_and_batch(api):
    client = InferenceClient(api.base_url, timeout=30)
    result = client.classify(CAT, model="resnet18", top_k=3)
    assert result["model"] == "resnet18" and len(result["predictions"]) == 3

    request_id = client.submit(CAT.read_bytes(), model="squeezenet", priority="low")
    assert client.wait(request_id)["status"] == "success"
    with pytest.raises(InferenceError) as refused:
        client.cancel(request_id)
    assert refused.value.code == "already_started" and refused.value.http_status == 409

    many = client.classify([CAT, TESTDATA / "astronaut.jpg"], model="resnet18", top_k=3)  # one request
    assert many["images"] == 2 and many["results"][0]["predictions"] == result["predictions"]

    batch = client.submit_batch([CAT, TESTDATA / "astronaut.jpg"], model="mobilenet")
    report = client.batch_status(batch["batch_id"], wait=30)
    assert report["counts"]["success"] == 2

    with pytest.raises(InferenceError) as bad:
        client.classify(b"not an image", model="resnet18")
    assert bad.value.code == "invalid_image"
    assert client.health()["status"] == "healthy"


def test_retries_503_then_gives_up(start_extra_api, redis_url):
    api = start_extra_api(REDIS_URL=redis_url.rsplit("/", 1)[0] + "/6", RETRY_AFTER=0)  # no worker there
    client = InferenceClient(api.base_url, retries=2, backoff=0.05)
    with pytest.raises(InferenceError) as refused:
        client.submit(CAT, model="resnet18")
    assert refused.value.code == "no_worker" and refused.value.http_status == 503
    assert client.attempts == 3  # the first try and two retries


def test_cli_classifies_a_folder(api, capsys):
    assert [p.name for p in image_files([str(TESTDATA)])] == ["astronaut.jpg", "chelsea.jpg"]
    code = main(["classify", str(TESTDATA), "--url", api.base_url, "--model", "efficientnet"])
    out = capsys.readouterr().out
    assert code == 0 and "2 images" in out and "astronaut" in out and "chelsea" in out and "efficientnet" in out


def test_quick_demo_runs_against_the_system(api, capsys):
    import demo

    assert demo.main(["--url", api.base_url, "--quick"]) == 0
    out = capsys.readouterr().out
    assert "system is healthy" in out and "served by" in out and "requests/s" in out
    assert "CHAOS_ENABLED=true" in out  # the crash step says why it was skipped here
