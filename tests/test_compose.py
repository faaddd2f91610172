"""docker-compose.yml: valid against the Compose schema, and everything it names exists here."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from inference.registry import MODELS
from inference.settings import Settings
from tests.conftest import repo_root
from tests.system import TESTDATA

SCHEMA = TESTDATA / "compose-spec.json"
# Variables read by something other than Settings: torch, the Redis container.
EXTERNAL_VARIABLES = {"TORCH_HOME", "REDIS_PASSWORD"}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((repo_root() / "docker-compose.yml").read_text())


def test_compose_file_matches_the_schema(compose):
    jsonschema.validate(compose, json.loads(SCHEMA.read_text()))


def test_one_worker_service_per_model(compose):
    workers = {name.removeprefix("worker-") for name in compose["services"] if name.startswith("worker-")}
    assert workers == set(MODELS)
    for model in MODELS:
        command = compose["services"][f"worker-{model}"]["command"]
        assert command[:4] == ["python", "-m", "inference.launch", model]
        assert (repo_root() / "worker_configs" / f"{model}.toml").exists()


def test_commands_name_existing_files_and_modules(compose):
    text = json.dumps([service.get("command") for service in compose["services"].values()])
    for path in re.findall(r"[\w/]+\.py", text):
        assert (repo_root() / path).exists(), path
    for module in re.findall(r"\b(api\.\w+|inference\.\w+)\b", text):
        assert (repo_root() / (module.replace(".", "/") + ".py")).exists(), module


def test_environment_variables_are_known(compose):
    known = {name.upper() for name in Settings.model_fields} | EXTERNAL_VARIABLES
    for name, service in compose["services"].items():
        for variable in service.get("environment", {}):
            assert variable in known, f"{name} sets {variable}, which nothing reads"


def test_redis_keeps_an_append_only_file(compose):
    command = compose["services"]["redis"]["command"]
    assert "--appendonly yes" in command and "--appendfsync everysec" in command and "noeviction" in command
