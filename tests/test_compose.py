"""docker-compose.yml: valid against the Compose schema, and everything it names exists here."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from inference.core.registry import MODELS
from inference.core.settings import Settings
from tests.helpers import repo_root
from tests.system import TESTDATA

SCHEMA = TESTDATA / "compose-spec.json"
# Variables read by something other than Settings: torch, the Redis container, OpenTelemetry.
EXTERNAL_VARIABLES = {"TORCH_HOME", "REDIS_PASSWORD", "OTEL_EXPORTER_OTLP_ENDPOINT"}


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
        assert command[:4] == ["python", "-m", "inference.cli.launch", model]
        assert (repo_root() / "worker_configs" / f"{model}.toml").exists()


def test_commands_name_existing_files_and_modules(compose):
    text = json.dumps([service.get("command") for service in compose["services"].values()])
    for path in re.findall(r"[\w/]+\.py", text):
        assert (repo_root() / path).exists(), path
    for module in re.findall(r"\b(api\.\w+|inference(?:\.\w+)+)\b", text):
        path = repo_root() / module.replace(".", "/")
        assert path.with_suffix(".py").exists() or (path / "__main__.py").exists(), module


def test_environment_variables_are_known(compose):
    known = {name.upper() for name in Settings.model_fields} | EXTERNAL_VARIABLES
    for name, service in compose["services"].items():
        for variable in service.get("environment", {}):
            assert variable in known, f"{name} sets {variable}, which nothing reads"


def test_redis_keeps_an_append_only_file_and_a_memory_bound(compose):
    command = " ".join(compose["services"]["redis"]["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command and "noeviction" in command
    assert "--maxmemory" in command and compose["services"]["redis"]["environment"]["REDIS_MAXMEMORY"]


# Compose's interpolation (compose-spec, "Interpolation"): $$ escapes, ${VAR}, ${VAR:-default},
# ${VAR-default}, ${VAR:?error} and ${VAR?error}.
VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


class Refused(Exception):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    def one(match: re.Match) -> str:
        name, operator, argument = match.groups()
        if name is None:
            return "$"
        value = env.get(name)
        missing = value is None or (operator is not None and operator.startswith(":") and value == "")
        if operator and operator.endswith("?") and missing:
            raise Refused(f"{name}: {argument}")
        if operator and operator.endswith("-") and missing:
            return argument
        return value or ""

    return VARIABLE.sub(one, text)


def test_refuses_to_start_without_secrets_unless_told_to_run_open():
    text = (repo_root() / "docker-compose.yml").read_text()
    assert "change-me" not in text
    for missing in ("REDIS_PASSWORD", "API_KEYS"):
        env = {"REDIS_PASSWORD": "pw", "API_KEYS": "k1", }
        del env[missing]
        with pytest.raises(Refused, match=missing):
            interpolate(text, env)
    # Set, even empty, is an explicit choice: an empty one runs that part open.
    config = yaml.safe_load(interpolate(text, {"REDIS_PASSWORD": "", "API_KEYS": ""}))
    assert config["services"]["api"]["environment"]["API_KEYS"] in ("", None)
    config = yaml.safe_load(interpolate(text, {"REDIS_PASSWORD": "s3cret-pw", "API_KEYS": "k1,k2"}))
    assert config["services"]["api"]["environment"]["API_KEYS"] == "k1,k2"
    assert config["services"]["api"]["environment"]["REDIS_URL"] == "redis://:s3cret-pw@redis:6379/0"
    # No secret on any command line (readable in /proc by anyone): the password reaches Redis
    # through its environment and a config file the container writes.
    for name, service in config["services"].items():
        assert "s3cret-pw" not in json.dumps([service.get("command"), service.get("healthcheck")]), name
    assert config["services"]["redis"]["environment"]["REDIS_PASSWORD"] == "s3cret-pw"
    assert "$REDIS_PASSWORD" in " ".join(config["services"]["redis"]["command"])


def test_workers_keep_their_converted_models_and_weights_on_volumes(compose):
    """A worker container started again (a restart, `--scale`) loads what an earlier one
    converted instead of converting again; weights fetched once stay too."""
    for model in MODELS:
        service = compose["services"][f"worker-{model}"]
        mounts = {mount.split(":")[1]: mount.split(":")[0] for mount in service["volumes"]}
        for variable in ("MODEL_CACHE_DIR", "TORCH_HOME"):
            directory = service["environment"].get(variable)
            assert directory, f"worker-{model} leaves {variable} inside the container, lost with it"
            assert mounts.get(directory) in compose["volumes"], f"worker-{model}'s {variable} ({directory}) is on no named volume"
