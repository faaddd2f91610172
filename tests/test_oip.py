"""The Open Inference Protocol (/v2) as Triton's own HTTP client (tritonclient from PyPI) speaks
it, against the running system; the answers equal /v1's for the same picture and model."""

from __future__ import annotations

import json
import struct
import sys
import time

import numpy as np
import pybase64
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from api import oip_tensors
from inference.core.errors import InvalidRequest
from tests.helpers import image_bytes

PICTURES = ("chelsea.jpg", "astronaut.jpg", "chelsea.jpg")


@pytest.fixture(scope="module")
def triton(api) -> httpclient.InferenceServerClient:
    client = httpclient.InferenceServerClient(url=api.base_url.removeprefix("http://"), network_timeout=60)
    yield client
    client.close()


def pictures_input(names, binary: bool = True) -> httpclient.InferInput:
    raws = [image_bytes(name) for name in names]
    tensor = httpclient.InferInput("image", [len(raws)], "BYTES")
    if binary:
        tensor.set_data_from_numpy(np.array(raws, dtype=np.object_), binary_data=True)
    else:  # in JSON, a picture is a base64 string
        tensor.set_data_from_numpy(np.array([pybase64.b64encode(r) for r in raws], dtype=np.object_), binary_data=False)
    return tensor


def v1_top(api, name: str, model: str, k: int) -> list[dict]:
    response = api.post(f"{api.base_url}/v1/inference", params={"wait": 60}, timeout=90,
                        json={"data": pybase64.b64encode(image_bytes(name)).decode(), "model_type": model, "top_k": k})
    assert response.status_code == 200, response.text
    return response.json()["result"]["predictions"]


def classifications(result: httpclient.InferResult) -> list[list[tuple[float, int, str]]]:
    rows = result.as_numpy("probabilities")
    return [[(float(s.split(b":")[0]), int(s.split(b":")[1]), s.split(b":", 2)[2].decode()) for s in row] for row in rows]


@pytest.mark.e2e
def test_health_and_metadata_through_the_triton_client(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    server = triton.get_server_metadata()
    assert server["name"] == "celery-inference" and {"classification", "binary_tensor_data"} <= set(server["extensions"])
    meta = triton.get_model_metadata("resnet18")
    assert meta["name"] == "resnet18" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 1000]}]
    assert meta["platform"] in ("pytorch_libtorch", "openvino_ir")
    assert triton.is_model_ready("resnet18") and triton.is_model_ready("squeezenet", model_version="1")
    assert triton.get_model_metadata("resnet18", model_version="1")["name"] == "resnet18"
    with pytest.raises(InferenceServerException) as unknown:
        triton.get_model_metadata("alexnet")
    assert unknown.value.status() == "404" and "unknown model 'alexnet'" in unknown.value.message()
    with pytest.raises(InferenceServerException) as no_version:
        triton.get_model_metadata("resnet18", model_version="7")
    assert no_version.value.status() == "404"
    assert not triton.is_model_ready("alexnet")


@pytest.mark.e2e
def test_classification_extension_with_binary_data_equals_v1(api, triton):
    """Three pictures, one request (one task), binary in and out; each row is /v1's top 5."""
    result = triton.infer("resnet18", [pictures_input(PICTURES)],
                          outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=True, class_count=5)],
                          request_id="my-42", priority=1)
    response = result.get_response()
    assert response["model_name"] == "resnet18" and response["id"] == "my-42"
    assert response["outputs"][0]["parameters"]["binary_data_size"] > 0  # it came as binary
    assert response["parameters"]["priority"] == "high"  # Triton's level 1
    assert response["parameters"]["weights"] in ("random", "pretrained")
    rows = classifications(result)
    print(f"\ntritonclient: live={triton.is_server_live()} ready={triton.is_server_ready()} "
          f"model={json.dumps(triton.get_model_metadata('resnet18'))}\ninfer resnet18 x3, class_count=5, priority=1 -> "
          f"{json.dumps({k: v for k, v in response.items() if k != 'outputs'})}\n" +
          "\n".join(f"  {name}: {[s.decode() for s in row[:3]]}" for name, row in zip(PICTURES, result.as_numpy("probabilities"))),
          file=sys.stderr)
    assert result.as_numpy("probabilities").shape == (3, 5)
    for name, row in zip(PICTURES, rows):
        expected = v1_top(api, name, "resnet18", 5)
        assert [index for _, index, _ in row] == [p["class_id"] for p in expected]
        assert [label for _, _, label in row] == [p["class"] for p in expected]
        assert np.allclose([score for score, _, _ in row], [p["confidence"] for p in expected], atol=1e-6)


@pytest.mark.e2e
def test_probabilities_in_json_equal_v1(api, triton):
    """No binary data either way: base64 pictures in, every class's probability out as JSON."""
    result = triton.infer("squeezenet", [pictures_input(PICTURES[:1], binary=False)],
                          outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=False)])
    assert "binary_data_size" not in (result.get_response()["outputs"][0].get("parameters") or {})
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (1, 1000) and probabilities.dtype == np.float32
    assert abs(float(probabilities.sum()) - 1.0) < 1e-3
    expected = v1_top(api, PICTURES[0], "squeezenet", 5)
    # The same classes with the same probabilities; two requests may run in different batches,
    # whose numbers differ in the last digits, so classes within 1e-5 of each other may swap.
    ids = [p["class_id"] for p in expected]
    assert np.allclose(probabilities[0][ids], [p["confidence"] for p in expected], atol=1e-5)
    assert probabilities[0][ids].min() >= np.sort(probabilities[0])[-5] - 1e-5


@pytest.mark.e2e
def test_all_outputs_by_default_in_binary(triton):
    """No outputs named: all of them, binary (what the client asks for then)."""
    result = triton.infer("mobilenet", [pictures_input(PICTURES[:2])])
    assert result.as_numpy("probabilities").shape == (2, 1000)
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 2 * 1000 * 4


@pytest.mark.e2e
def test_refusals_in_the_protocols_shape(api, triton, redis_client):
    """Each bad request: a 4xx with `{"error": "<message>"}` (and our code), nothing queued."""
    queued_before = sum(redis_client.llen(key) for key in redis_client.keys("resnet18.*"))
    url = f"{api.base_url}/v2/models/resnet18/infer"
    good = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [pybase64.b64encode(image_bytes("chelsea.jpg")).decode()]}
    cases = {
        "wrong input": ({"inputs": [{**good, "name": "pixels"}]}, {}, 400, "invalid_request"),
        "wrong type": ({"inputs": [{**good, "datatype": "FP32"}]}, {}, 400, "invalid_request"),
        "shape lies": ({"inputs": [{**good, "shape": [2]}]}, {}, 400, "invalid_request"),
        "not base64": ({"inputs": [{**good, "data": ["%%%"]}]}, {}, 400, "invalid_request"),
        "not a picture": ({"inputs": [{**good, "data": [pybase64.b64encode(b"hello").decode()]}]}, {}, 400, "invalid_image"),
        "unknown output": ({"inputs": [good], "outputs": [{"name": "logits"}]}, {}, 400, "invalid_request"),
        "too many classes": ({"inputs": [good], "outputs": [{"name": "probabilities", "parameters": {"classification": 1001}}]},
                             {}, 400, "invalid_request"),
        "bad priority": ({"inputs": [good], "parameters": {"priority": "urgent"}}, {}, 400, "invalid_request"),
        "bad timeout": ({"inputs": [good], "parameters": {"timeout": -5}}, {}, 400, "invalid_request"),
        "header too long": ({"inputs": [good]}, {"Inference-Header-Content-Length": "999999"}, 400, "invalid_request"),
        "too many pictures": ({"inputs": [{**good, "shape": [33], "data": good["data"] * 33}]}, {}, 413, "batch_too_large"),
        "a million of nothing": ({"inputs": [{**good, "shape": [1], "data": [[]] * 1_000_000 + good["data"] * 2}]}, {}, 400, "invalid_request"),
    }
    for name, (body, headers, status, code) in cases.items():
        response = requests.post(url, data=json.dumps(body), headers=headers, timeout=30)
        assert response.status_code == status, (name, response.text)
        assert isinstance(response.json()["error"], str) and response.json()["code"] == code, (name, response.text)
    broken = [b"{not json", b"[]", b'{"inputs": [[[[[[[[[[]]]]]]]]]]}']
    for body in broken:
        response = requests.post(url, data=body, timeout=30)
        assert response.status_code == 400 and isinstance(response.json()["error"], str), response.text
    # Binary: the size the header names is more than the body holds; bytes no input claims.
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 500}}]}).encode()
    short = requests.post(url, data=header + b"\x05\x00\x00\x00abc", timeout=30,
                          headers={"Inference-Header-Content-Length": str(len(header))})
    assert short.status_code == 400 and "binary_data_size" in short.json()["error"]
    # More elements in the binary tensor than its shape says: refused when counted, not after.
    many = oip_tensors.pack_bytes([b""] * 100_000)
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(many)}}]}).encode()
    counted = requests.post(url, data=header + many, timeout=30, headers={"Inference-Header-Content-Length": str(len(header))})
    assert counted.status_code == 400 and "more than the 2 elements" in counted.json()["error"]
    extra = requests.post(url, data=json.dumps({"inputs": [good]}).encode() + b"tail", timeout=30,
                          headers={"Inference-Header-Content-Length": str(len(json.dumps({"inputs": [good]})))})
    assert extra.status_code == 400 and "no input claims" in extra.json()["error"]
    missing = requests.post(f"{api.base_url}/v2/models/alexnet/infer", json={"inputs": [good]}, timeout=30)
    assert missing.status_code == 404 and missing.json() == {"error": missing.json()["error"], "code": "not_found"}
    with pytest.raises(InferenceServerException) as refused:
        tensor = httpclient.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"not a picture"], dtype=np.object_))
        triton.infer("resnet18", [tensor])
    assert refused.value.status() == "400" and "image" in refused.value.message()
    assert sum(redis_client.llen(key) for key in redis_client.keys("resnet18.*")) == queued_before


def test_bytes_tensor_codec_round_trip_and_truncation():
    elements = [b"", b"\x00\x01", b"x" * 70_000]
    packed = oip_tensors.pack_bytes(elements)
    assert oip_tensors.unpack_bytes(packed) == elements == oip_tensors.unpack_bytes(packed, most=3)
    with pytest.raises(InvalidRequest):
        oip_tensors.unpack_bytes(packed, most=2)
    for cut in (1, 3, 5, len(packed) - 1):
        with pytest.raises(InvalidRequest):
            oip_tensors.unpack_bytes(packed[:cut])
    assert oip_tensors.unpack_bytes(struct.pack("<I", 0)) == [b""]


def test_priority_and_timeout_parameters():
    assert [oip_tensors.priority_of(v) for v in (0, 1, 2, 3, 9, "low", "high")] == ["normal", "high", "normal", "low", "low", "low", "high"]
    for bad in (-1, True, "urgent", 1.5, None):
        with pytest.raises(InvalidRequest):
            oip_tensors.priority_of(bad)
    assert oip_tensors.timeout_ms_of(None) is None and oip_tensors.timeout_ms_of(1) == 1 and oip_tensors.timeout_ms_of(2_500_000) == 2500
    for bad in (0, -3, True, "5"):
        with pytest.raises(InvalidRequest):
            oip_tensors.timeout_ms_of(bad)


def test_nested_tensor_data_flattens_without_recursion():
    deep: list = ["a"]
    for _ in range(100_000):
        deep = [deep]
    assert oip_tensors.flatten(deep) == ["a"]
    assert oip_tensors.flatten([["a", "b"], ["c"], []]) == ["a", "b", "c"]
    assert oip_tensors.flatten([["a", "b"], ["c"], ["d"]], most=2) == ["a", "b", "c"]  # stops at one too many


@pytest.mark.e2e
def test_hostile_pictures_through_v2_cost_what_they_cost_through_v1(triton):
    """The attacks tests/test_hostile.py makes on /v1, through Triton's client: a 65,500 x 1 sliver
    is classified quickly (cropped before it is resized), a JPEG of 1,000 scans and a picture over
    the pixel limit are refused with /v1's codes before anything is queued."""
    from tests import hostile

    def infer(raw: bytes) -> httpclient.InferResult:
        tensor = httpclient.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([raw], dtype=np.object_))
        return triton.infer("squeezenet", [tensor], outputs=[httpclient.InferRequestedOutput("probabilities", class_count=1)])

    started = time.monotonic()
    assert infer(hostile.sliver("JPEG")).as_numpy("probabilities").shape == (1, 1)
    assert time.monotonic() - started < 10
    for raw, code in ((hostile.many_scans(2000, 1000), "image_too_complex"), (hostile.flat_jpeg(10_000, 4_001), "image_too_large")):
        with pytest.raises(InferenceServerException) as refused:
            infer(raw)
        assert refused.value.status() in ("400", "413") and refused.value.message().startswith(f"{code}: "), str(refused.value)
