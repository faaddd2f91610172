"""The system's answer equals the same model (same weights mode and seed) run in-process."""

from __future__ import annotations

import pytest

from tests.helpers import MODELS, image_b64, image_bytes, large_photo

pytestmark = pytest.mark.e2e

IMAGES = ("chelsea.jpg", "astronaut.jpg")


@pytest.fixture(scope="module")
def reference_models():
    from inference.core.registry import MODELS as SPECS
    from inference.core.settings import get_settings
    from inference.worker import model_runtime

    seed = get_settings().random_weights_seed
    return {name: model_runtime.load(SPECS[name], "random", seed, warmup=False) for name in MODELS}


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("model", MODELS)
def test_top5_matches_in_process_model(api, reference_models, model, image):
    from inference.core.imaging import load_rgb

    response = api.post(f"{api.base_url}/v1/inference", params={"wait": 30}, timeout=60,
                        json={"data": image_b64(image), "model_type": model, "top_k": 5})
    assert response.status_code == 200, response.text
    got = response.json()["result"]["predictions"]

    reference = reference_models[model]
    expected = reference.classify([load_rgb(image_bytes(image), 10**8)], 1000)[0]
    expected_conf = {p["class_id"]: p["confidence"] for p in expected}

    assert len(got) == 5
    for position, prediction in enumerate(got):
        # Same confidence at each rank, and the class has it in the reference too: classes whose
        # confidences tie (a random model's tail rounds to 0.0) may come in any order.
        assert abs(prediction["confidence"] - expected[position]["confidence"]) <= 1e-4
        assert abs(prediction["confidence"] - expected_conf[prediction["class_id"]]) <= 1e-4
        assert prediction["class"] == reference.categories[prediction["class_id"]]
    # Not a degenerate model: the top class clearly beats the fifth one.
    assert got[0]["confidence"] > got[4]["confidence"]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("model", MODELS)
def test_optimized_model_matches_eager(reference_models, model, channels_last):
    """MODEL_OPTIMIZE=jit and WORKER_CHANNELS_LAST change speed, not answers, at any batch size."""
    import torch

    from inference.core.registry import MODELS as SPECS
    from inference.core.settings import get_settings
    from inference.worker import model_runtime

    optimized = model_runtime.load(SPECS[model], "random", get_settings().random_weights_seed, optimize="jit",
                                   channels_last=channels_last)
    assert isinstance(optimized.model, torch.jit.ScriptModule) and optimized.info["optimize"] == "jit"
    eager = reference_models[model]
    for size in (1, 3):
        batch = torch.rand(size, 3, 224, 224, generator=torch.Generator().manual_seed(size))
        expected = eager.forward(batch)
        got = optimized.forward(batch.to(memory_format=optimized.memory_format))
        assert torch.allclose(got, expected, atol=1e-6), float((got - expected).abs().max())


def test_fp16_is_for_cuda_only(caplog):
    from inference.core.registry import MODELS as SPECS
    from inference.worker import model_runtime

    loaded = model_runtime.load(SPECS["squeezenet"], "random", 0, device="cpu", fp16=True, warmup=False)
    assert loaded.info["precision"] == "fp32" and loaded.dtype.is_floating_point and loaded.dtype.itemsize == 4
    assert "fp16 asked for on cpu: ignored" in caplog.text


@pytest.mark.parametrize("model", MODELS)
def test_a_photo_decoded_at_reduced_scale_gets_the_full_decodes_answer(reference_models, model):
    """A 12-megapixel photo decoded at 1/4 (as workers do) against decoded in full: the same top
    class, and every confidence within 1e-3 (random efficientnet's fifth place is a tie, which
    either decode may break its own way)."""
    from inference.core.imaging import model_input

    reference = reference_models[model]
    reduced, full = ([reference.transforms(model_input(large_photo(), 10**8, resize_to))] for resize_to in (reference.resize_to, 0))
    got, want = reference.forward(reference.batch_of(reduced))[0], reference.forward(reference.batch_of(full))[0]
    assert int(got.argmax()) == int(want.argmax())
    assert float((got.topk(5).values - want.topk(5).values).abs().max()) <= 1e-3
    assert float((got - want).abs().max()) <= 1e-3
