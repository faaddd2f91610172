"""The system's answer equals the same model (same weights mode and seed) run in-process."""

from __future__ import annotations

import pytest

from tests.conftest import MODELS, image_b64, image_bytes

pytestmark = pytest.mark.e2e

IMAGES = ("chelsea.jpg", "astronaut.jpg")


@pytest.fixture(scope="module")
def reference_models():
    from inference import model_runtime
    from inference.registry import MODELS as SPECS
    from inference.settings import get_settings

    seed = get_settings().random_weights_seed
    return {name: model_runtime.load(SPECS[name], "random", seed, warmup=False) for name in MODELS}


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("model", MODELS)
def test_top5_matches_in_process_model(api, reference_models, model, image):
    from inference.imaging import load_rgb

    response = api.post(f"{api.base_url}/v1/inference", params={"wait": 30}, timeout=60,
                        json={"data": image_b64(image), "model_type": model, "top_k": 5})
    assert response.status_code == 200, response.text
    got = response.json()["result"]["predictions"]

    reference = reference_models[model]
    expected = reference.classify([load_rgb(image_bytes(image), 10**8)], 10)[0]
    expected_conf = {p["class_id"]: p["confidence"] for p in expected}

    assert len(got) == 5
    for position, prediction in enumerate(got):
        # Same confidence at each rank, and the class is the reference's (exact ties may swap).
        assert abs(prediction["confidence"] - expected[position]["confidence"]) <= 1e-4
        assert prediction["class_id"] in expected_conf
        assert abs(prediction["confidence"] - expected_conf[prediction["class_id"]]) <= 1e-4
        assert prediction["class"] == reference.categories[prediction["class_id"]]
    # Not a degenerate model: the top class clearly beats the fifth one.
    assert got[0]["confidence"] > got[4]["confidence"]
