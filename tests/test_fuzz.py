"""Fuzzing, bounded in time: schemathesis against /openapi.json (no input makes a server error),
and hypothesis-made random bytes and corrupted images through the decoder and through a real
worker (a clean error or a result, never a crash)."""

from __future__ import annotations

import base64
import io

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from inference.core.errors import InvalidBase64, InvalidRequest
from inference.core.imaging import ALLOWED_FORMATS, decode_base64, load_rgb, probe_image
from tests.helpers import image_bytes, pool_pids

FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL")  # PIL warns about the corruption it survives


def sample_images() -> list[bytes]:
    """The cat, small, in every allowed format: seeds for corruption."""
    cat = Image.open(io.BytesIO(image_bytes("chelsea.jpg"))).convert("RGB").resize((48, 32))
    samples = []
    for fmt in ALLOWED_FORMATS:
        out = io.BytesIO()
        cat.save(out, format=fmt)
        samples.append(out.getvalue())
    return samples


@st.composite
def corrupted_images(draw) -> bytes:
    raw = bytearray(draw(st.sampled_from(sample_images())))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(raw) - 1)) if raw else 0
        change = draw(st.sampled_from(["overwrite", "truncate", "insert"]))
        if change == "overwrite" and raw:
            raw[at] = draw(st.integers(0, 255))
        elif change == "truncate":
            del raw[at:]
        else:
            raw[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(raw)


hostile_bytes = st.one_of(st.binary(max_size=2048), corrupted_images())


@settings(FUZZ, max_examples=300)
@given(hostile_bytes)
def test_decoder_gives_an_rgb_picture_or_a_clean_error(raw):
    try:
        probe_image(raw, 1_000_000)
        picture = load_rgb(raw, 1_000_000)
    except InvalidRequest:
        return
    assert picture.mode == "RGB" and picture.width > 0 and picture.height > 0


@settings(FUZZ, max_examples=300)
@given(st.one_of(st.text(max_size=200), st.text(alphabet="ABCDabcd0123+/=\n ", max_size=200)))
def test_base64_decoder_gives_bytes_or_a_clean_error(text):
    try:
        assert decode_base64(text)
    except InvalidBase64:
        pass


@pytest.mark.e2e
def test_hostile_images_never_crash_a_worker(api, celery_client):
    """Straight to the worker (no API probe in front): every task ends, and no process dies."""
    pids = pool_pids(api, "squeezenet")
    outcomes = set()

    @settings(FUZZ, max_examples=40)
    @given(hostile_bytes)
    def one_task(raw):
        result = celery_client.send_task("inference.classify", queue="squeezenet.normal",
                                  kwargs={"image": base64.b64encode(raw).decode(), "model": "squeezenet"})
        result.get(timeout=30, propagate=False)
        outcome = result.state if result.state == "SUCCESS" else type(result.result).__name__
        assert outcome in {"SUCCESS", "InvalidImage", "ImageTooLarge", "InvalidBase64"}, repr(result.result)
        outcomes.add(outcome)

    one_task()
    assert "InvalidImage" in outcomes  # the corruption did reach the decoder
    assert pool_pids(api, "squeezenet") == pids


@pytest.fixture(scope="session")
def api_schema(system):
    return schemathesis.openapi.from_url(f"{system}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.e2e
@schema.parametrize()
@settings(FUZZ, max_examples=25)
def test_no_request_makes_a_server_error(case):
    response = case.call(timeout=60)
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"


@st.composite
def extreme_pictures(draw) -> bytes:
    """Pictures of any size the formats allow, most of them far from square: a side of 1 to
    65,500 (WEBP 16,383), within twice the API's pixel limit (so some are over it)."""
    from tests.hostile import LONGEST_SIDE

    fmt = draw(st.sampled_from(list(LONGEST_SIDE)))
    longest = draw(st.integers(1, LONGEST_SIDE[fmt]))
    shortest = draw(st.integers(1, max(1, min(longest, 80_000_000 // longest))))
    width, height = (longest, shortest) if draw(st.booleans()) else (shortest, longest)
    colour = draw(st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)))
    mode = draw(st.sampled_from(["RGB", "L", "P"] if fmt in ("PNG", "GIF", "TIFF") else ["RGB", "L"]))
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).convert(mode).save(out, format=fmt)
    return out.getvalue()


@pytest.mark.e2e
def test_pictures_of_extreme_sizes_get_a_result_or_a_coded_4xx_in_bounded_time(api):
    """Through the API to a real worker: a result within a few seconds, or a 4xx whose code is in
    the vocabulary; the worker's pool process survives every one."""
    import time

    from inference.core.errors import vocabulary

    pids = pool_pids(api, "mobilenet")
    seen = set()

    @settings(FUZZ, max_examples=25)
    @given(extreme_pictures())
    def one_request(raw):
        started = time.perf_counter()
        response = api.post(f"{api.base_url}/v1/inference", params={"wait": 30}, timeout=60,
                            json={"data": base64.b64encode(raw).decode(), "model_type": "mobilenet"})
        body = response.json()
        if response.status_code == 200:
            assert body["status"] == "success", body
            assert time.perf_counter() - started < 5, f"{time.perf_counter() - started:.1f} s"
            seen.add("success")
        else:
            assert 400 <= response.status_code < 500 and body["error"]["code"] in vocabulary(), body
            seen.add(body["error"]["code"])

    one_request()
    assert "success" in seen
    assert pool_pids(api, "mobilenet") == pids
