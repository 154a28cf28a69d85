"""The deployment files agree with the code they deploy: docker-compose.kafka.yml (a 3-node Apache
Kafka cluster on the version of infra/kafka/pom.xml, loopback-only ports, scalable workers, settings
that exist), the Dockerfile and .dockerignore. With a ``docker`` client that has the compose plugin,
``docker compose config -q`` validates the file against the Compose schema as well.

The compose file is read with PyYAML (a test dependency).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.kafka.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
POM = ROOT / "infra" / "kafka" / "pom.xml"
SOURCE_DIRS = ("streams", "api", "infra", "sinks", "processors")

# VITRINA_* variables that vitrina reads with os.environ outside infra.settings.Settings; the compose
# file and the Dockerfile may set these (each must still be read somewhere in the code, see below).
RUNTIME_ONLY = {
    "VITRINA_LOG_JSON": "infra/logs.py: 1 forces JSON log lines",
}
# Variables that only `docker compose` reads (interpolation in docker-compose.kafka.yml), never vitrina.
COMPOSE_ONLY = {
    "VITRINA_REDIS_PASSWORD": "Redis requirepass; also spliced into VITRINA_REDIS_URL",
    "VITRINA_IMAGE_TAG": "tag of the vitrina image built from ./Dockerfile",
}
ONE_SHOT_CONDITION = "service_completed_successfully"
VITRINA_VAR = re.compile(r"\bVITRINA_[A-Z0-9_]*[A-Z0-9]\b")



def load_yaml(text: str) -> object:
    return yaml.safe_load(text)


# --- fixtures and helpers -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def kafka_version() -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    return ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns).text.strip()


def settings_vars() -> set[str]:
    return {f"VITRINA_{f.name.upper()}" for f in fields(Settings)}


def is_one_shot(service: dict) -> bool:
    return str(service.get("restart", "no")) == "no"


def docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# --- Kafka cluster --------------------------------------------------------------------------------

def test_three_kafka_nodes_on_the_pom_version(services: dict) -> None:
    version = kafka_version()
    nodes = {name: s for name, s in services.items() if str(s.get("image", "")).startswith("apache/kafka:")}
    assert len(nodes) == 3, f"expected 3 Apache Kafka nodes, found {sorted(nodes)}"
    for name, node in nodes.items():
        assert node["image"] == f"apache/kafka:{version}", \
            f"{name} runs {node['image']} but infra/kafka/pom.xml has kafka.version {version}: bump both together"
    envs = [env_of(node) for node in nodes.values()]
    assert sorted(int(env["KAFKA_NODE_ID"]) for env in envs) == [1, 2, 3]
    assert len({env["CLUSTER_ID"] for env in envs}) == 1
    for env in envs:
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        assert len(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == 3
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
    advertised = [env["KAFKA_ADVERTISED_LISTENERS"] for env in envs]
    assert len(set(advertised)) == 3, "every node must advertise its own addresses"


def test_schema_registry_is_replicated_and_backward(services: dict) -> None:
    env = env_of(services["schema-registry"])
    assert env["SCHEMA_REGISTRY_SCHEMA_COMPATIBILITY_LEVEL"].upper() == "BACKWARD"
    assert env["SCHEMA_REGISTRY_KAFKASTORE_TOPIC_REPLICATION_FACTOR"] == "3"
    assert len(env["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"].split(",")) == 3


# --- ports, health, ordering ----------------------------------------------------------------------

def test_every_published_port_is_bound_to_loopback(services: dict) -> None:
    for name, service in services.items():
        assert service.get("network_mode") != "host", name
        for port in service.get("ports") or []:
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert isinstance(port, str) and port.startswith("127.0.0.1:") and port.count(":") == 2, \
                    f"{name}: publish as '127.0.0.1:HOST:CONTAINER', not {port!r}"


def test_long_running_services_have_healthchecks(services: dict) -> None:
    for name, service in services.items():
        if is_one_shot(service):
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), f"{name} has no healthcheck"


def test_depends_on_targets_exist_with_conditions(services: dict) -> None:
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions (a mapping)"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown service {target}"
            wanted = ONE_SHOT_CONDITION if is_one_shot(services[target]) else "service_healthy"
            assert spec.get("condition") == wanted, f"{name} -> {target}: condition should be {wanted}"


def test_workers_scale(services: dict) -> None:
    worker = services["vitrina-worker"]
    assert "container_name" not in worker, "a fixed container name forbids --scale"
    assert not worker.get("ports"), "a fixed published port forbids --scale"
    for volume in worker.get("volumes") or []:
        text = volume if isinstance(volume, str) else volume.get("source") or ""
        assert ":" not in text, f"named/bind volume {volume!r} would be shared by every worker replica"
    for name in ("vitrina-api", "vitrina-worker", "vitrina-topics"):
        assert name in services
    assert services["vitrina-topics"]["command"] == ["topics", "--create"]


def test_vitrina_services_build_the_root_dockerfile(services: dict) -> None:
    from streams.cli import _load_plugins, build_parser

    _load_plugins()
    parser = build_parser()
    built = {name: s for name, s in services.items() if "build" in s}
    assert set(built) >= {"vitrina-topics", "vitrina-worker", "vitrina-api"}
    for name, service in built.items():
        build = service["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (ROOT / context).resolve() == ROOT, f"{name}: build context must be the repo root"
        assert (ROOT / context / dockerfile).resolve() == DOCKERFILE, f"{name}: build must use ./Dockerfile"
        argv = [str(arg) for arg in service["command"]]
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{name}: `vitrina {' '.join(argv)}` is not a vitrina command line")


def test_redis_password_is_the_one_in_the_url(services: dict) -> None:
    command = [str(arg) for arg in services["redis"]["command"]]
    password = command[command.index("--requirepass") + 1]
    assert password
    for name, service in services.items():
        url = env_of(service).get("VITRINA_REDIS_URL")
        if url is not None:
            assert url.startswith(f"redis://:{password}@redis:"), f"{name}: {url}"


def test_replication_factor_and_bootstrap_name_every_node(services: dict) -> None:
    for name, service in services.items():
        env = env_of(service)
        if "VITRINA_KAFKA_BOOTSTRAP" in env:
            assert len(env["VITRINA_KAFKA_BOOTSTRAP"].split(",")) == 3, name
            assert env["VITRINA_REPLICATION_FACTOR"] == "3", name


# --- settings -------------------------------------------------------------------------------------

def test_vitrina_variables_are_settings_or_documented(services: dict) -> None:
    known = settings_vars() | set(RUNTIME_ONLY)
    for name, service in services.items():
        for var in env_of(service):
            if var.startswith("VITRINA_"):
                assert var in known, f"{name} sets {var}: not a field of infra.settings.Settings nor in RUNTIME_ONLY"
    interpolated = set(re.findall(r"\$\{(VITRINA_[A-Z0-9_]+)", COMPOSE.read_text()))
    unknown = interpolated - known - set(COMPOSE_ONLY)
    assert not unknown, f"docker-compose.kafka.yml interpolates unknown variables {sorted(unknown)}"
    in_dockerfile = set(VITRINA_VAR.findall(DOCKERFILE.read_text()))
    assert not in_dockerfile - known, f"Dockerfile names unknown variables {sorted(in_dockerfile - known)}"


def test_allow_lists_stay_true() -> None:
    source = "\n".join(path.read_text() for d in SOURCE_DIRS for path in (ROOT / d).rglob("*.py"))
    for var in RUNTIME_ONLY:
        assert var not in settings_vars(), f"{var} is a Settings field now: drop it from RUNTIME_ONLY"
        assert var in source, f"{var} is read nowhere in {SOURCE_DIRS}: drop it from RUNTIME_ONLY"
    for var in COMPOSE_ONLY:
        assert var not in settings_vars() and var not in source, f"{var} is read by vitrina: not compose-only"


# --- Dockerfile and .dockerignore -----------------------------------------------------------------

def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim-bookworm\b", text, re.M)
    assert "pip install -c constraints.txt ." in text, "non-editable install pinned by constraints.txt"
    assert "pip install -e" not in text
    assert re.search(r"apt-get install[^\n]*\bffmpeg\b", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert re.search(r'^ENTRYPOINT \["vitrina"\]$', text, re.M)
    assert re.search(r'^CMD \["worker"\]$', text, re.M)


def test_dockerignore_keeps_dev_data_out() -> None:
    entries = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".kafka", "var", "tests", "bench", "**/__pycache__"} <= entries
    text = DOCKERFILE.read_text()
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for src in copied.split():
            assert src not in entries, f"Dockerfile copies {src}, which .dockerignore excludes"


@pytest.mark.skipif(not docker_compose_available(), reason="no docker client with the compose plugin")
def test_docker_compose_config_is_valid() -> None:
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
