"""deploy/: the Kubernetes manifests of the workers (and of the callbacks worker), generated from their configs, checked
offline against the schemas of Kubernetes (apps/v1 Deployment) and KEDA (ScaledObject), which
tests/schemas/ holds (SOURCES.md says where from, which version)."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
import yaml

from inference.cli import manifests
from inference.core.queues import model_queues
from tests.system import ROOT

SCHEMAS = ROOT / "tests" / "schemas"
SCHEMA_OF = {("apps/v1", "Deployment"): "kubernetes-1.34-deployment-apps-v1.json",
             ("keda.sh/v1alpha1", "ScaledObject"): "keda-2.20-scaledobject-v1alpha1.json"}


def validator(document: dict) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / SCHEMA_OF[(document["apiVersion"], document["kind"])]).read_text())
    return jsonschema.Draft202012Validator(schema)


def documents(config: str) -> list[dict]:
    return list(yaml.safe_load_all((manifests.DEPLOY_DIR / f"{config}.yaml").read_text()))


def test_the_manifests_are_what_the_configs_give():
    assert manifests.configs() == ["efficientnet", "mobilenet", "resnet18", "squeezenet"]
    assert manifests.main(["--check"]) == 0, "deploy/ is out of date: run `python -m inference.cli.manifests`"


@pytest.mark.parametrize("config", manifests.configs())
def test_each_manifest_is_valid_and_scales_its_own_worker(config):
    deployment, scaled = documents(config)
    for document in (deployment, scaled):
        errors = sorted(validator(document).iter_errors(document), key=str)
        assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
    model = deployment["metadata"]["labels"]["inference/model"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    triggers = scaled["spec"]["triggers"]
    assert f'model="{model}"' in triggers[0]["metadata"]["query"]
    assert [t["metadata"]["listName"] for t in triggers if t["type"] == "redis"] == model_queues(model)
    container, = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"][:4] == ["python", "-m", "inference.cli.launch", config]
    # Its converted model outlives a restart of its container: MODEL_CACHE_DIR on a pod volume.
    cache_dir, = [variable["value"] for variable in container["env"] if variable["name"] == "MODEL_CACHE_DIR"]
    mounted, = [mount["name"] for mount in container["volumeMounts"] if mount["mountPath"] == cache_dir]
    assert mounted in [volume["name"] for volume in deployment["spec"]["template"]["spec"]["volumes"]]


def test_the_callbacks_worker_has_its_manifest_scaled_on_its_queue():
    """deploy/callbacks.yaml: valid, runs `python -m inference.callbacks` with the callers'
    allowed hosts and signing key, scaled on the `callbacks` list (its probe is run against a real
    worker in tests/test_callbacks.py)."""
    from inference.core.keys import CALLBACK_QUEUE
    from inference.core.settings import Settings

    deployment, scaled = documents(manifests.CALLBACKS)
    for document in (deployment, scaled):
        errors = sorted(validator(document).iter_errors(document), key=str)
        assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
    container, = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "inference.callbacks", "callbacks@$(POD_NAME)"]
    assert {"REDIS_URL", "CALLBACK_ALLOWED_HOSTS", "CALLBACK_SIGNING_KEY"} <= {variable["name"] for variable in container["env"]}
    trigger, = scaled["spec"]["triggers"]
    assert (trigger["metadata"]["listName"], trigger["metadata"]["listLength"]) == (CALLBACK_QUEUE, str(Settings.model_fields["callback_concurrency"].default))
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"] and scaled["spec"]["minReplicaCount"] >= 1


def test_the_schemas_catch_a_broken_manifest():
    deployment, scaled = documents("resnet18")
    for document, break_it in ((deployment, lambda d: d["spec"].update(replicas="two")),
                               (deployment, lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imagePullPolicy=1)),
                               (deployment, lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriod=30)),  # a typo
                               (scaled, lambda d: d["spec"]["triggers"][0]["metadata"].update(threshold=32)),  # not a string
                               (scaled, lambda d: d["spec"].pop("scaleTargetRef"))):
        broken = copy.deepcopy(document)
        break_it(broken)
        assert list(validator(broken).iter_errors(broken)), f"{document['kind']}: a broken manifest passed"
