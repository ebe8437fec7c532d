"""Static checks of the deployment files: docker-compose.yml, deploy/Dockerfile and deploy/k8s/.

No Docker, no cluster, no network: the files are parsed and held against shared/settings.py, so a
renamed setting, a wrong port or a literal secret fails here before it fails in production.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from shared.settings import APPS, SERVICES, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"
README = ROOT / "deploy" / "README.md"

# Read by the image's CMD to choose the service, not by Settings.
IMAGE_ONLY_VARIABLES = {"MKR_SERVICE"}
SECRET_VARIABLES = {"MKR_DATABASE_URL", "MKR_ENCRYPTION_KEY", "MKR_INDEX_KEY", "MKR_JWT_PUBLIC_KEY", "MKR_JWT_JWKS_URL"}
SECRET_NAME = "mkr-secrets"
# Any variable whose name says it holds a credential must come from the Secret.
SECRET_LOOKING = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|_USERNAME$|DATABASE_URL")
MKR_NAME = re.compile(r"\bMKR_[A-Z0-9_]+\b")
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?([^}]*)\}")


def default_port(service: str) -> int:
    # The declared default, not Settings(): the test's own environment must not move it.
    return int(Settings.model_fields[f"{service}_port"].default)


def _prefix(model: type[BaseSettings]) -> str:
    return str(model.model_config.get("env_prefix", "")).upper()


@cache
def known_variables() -> frozenset[str]:
    """Every MKR_* environment variable the code reads: Settings plus each service's config class."""
    names = {f"{_prefix(Settings)}{field.upper()}" for field in Settings.model_fields}
    for service in SERVICES:
        try:
            module = importlib.import_module(f"services.{service}.config")
        except ImportError:
            continue
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseSettings)
                and value is not Settings
                and _prefix(value).startswith("MKR_")
            ):
                names |= {f"{_prefix(value)}{field.upper()}" for field in value.model_fields}
    return frozenset(names | IMAGE_ONLY_VARIABLES)


@cache
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict), "docker-compose.yml is not a mapping"
    return document


def compose_env(service: str) -> dict[str, str]:
    environment = compose()["services"][service].get("environment", {})
    if isinstance(environment, list):  # the `- KEY=value` form
        environment = dict(item.split("=", 1) for item in environment)
    return {str(key): str(value) for key, value in environment.items()}


@cache
def kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load((K8S / "kustomization.yaml").read_text()))


@cache
def k8s_objects() -> tuple[dict[str, Any], ...]:
    objects: list[dict[str, Any]] = []
    for name in kustomization()["resources"]:
        objects.extend(doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc)
    return tuple(objects)


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [obj for obj in k8s_objects() if obj["kind"] == kind]


def by_name(kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in of_kind(kind)}


def deployment_service(deployment: dict[str, Any]) -> str:
    """The MKR service a Deployment runs, from its MKR_SERVICE env."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    values = [env["value"] for env in container.get("env", []) if env["name"] == "MKR_SERVICE"]
    assert len(values) == 1, f"{deployment['metadata']['name']}: exactly one literal MKR_SERVICE expected"
    return str(values[0])


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def walk_strings(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from walk_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_strings(item)
    elif node is not None:
        yield str(node)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in joined]


# --- docker-compose.yml -----------------------------------------------------------------------------


def test_compose_runs_postgres_kafka_and_the_four_services() -> None:
    services = compose()["services"]
    assert {"postgres", "kafka", *SERVICES} <= set(services)
    assert str(services["postgres"]["image"]).startswith("postgres:16")
    assert "healthcheck" in services["postgres"]
    assert not any("zookeeper" in name.lower() for name in services)


def test_compose_kafka_is_a_single_kraft_node_without_zookeeper() -> None:
    kafka = compose()["services"]["kafka"]
    env = compose_env("kafka")
    assert str(kafka["image"]).startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_NODE_ID"] == "1"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith("1@")
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert "9092" in env["KAFKA_LISTENERS"] and "9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() == "false"
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
        assert env[key] == "1", key
    assert not any("ZOOKEEPER" in key for key in env)
    probe = " ".join(kafka["healthcheck"]["test"])
    assert "kafka-broker-api-versions.sh" in probe or "kafka-topics.sh" in probe


@pytest.mark.parametrize("service", SERVICES)
def test_compose_service_runs_the_image_in_production_mode(service: str) -> None:
    spec = compose()["services"][service]
    env = compose_env(service)
    assert spec["build"]["dockerfile"] == "deploy/Dockerfile"
    assert env["MKR_SERVICE"] == service
    assert env["MKR_ENVIRONMENT"] == "production"
    assert env["MKR_HOST"] == "0.0.0.0"
    assert env["MKR_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["MKR_KAFKA_ENABLE_IDEMPOTENCE"] == "true"
    assert re.fullmatch(r"postgresql://mkr:\$\{[A-Z_]+:\?[^}]+\}@postgres:5432/postgres", env["MKR_DATABASE_URL"])
    assert {"MKR_JWT_PUBLIC_KEY", "MKR_JWT_JWKS_URL", "MKR_JWT_ISSUER", "MKR_JWT_AUDIENCE"} <= set(env)
    for dependency in ("postgres", "kafka"):
        assert spec["depends_on"][dependency]["condition"] == "service_healthy"


@pytest.mark.parametrize("service", SERVICES)
def test_compose_service_port_matches_settings_and_binds_loopback(service: str) -> None:
    port = default_port(service)
    assert compose()["services"][service]["ports"] == [f"127.0.0.1:{port}:{port}"]
    probe = " ".join(compose()["services"][service]["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/readyz" in probe


def test_compose_publishes_nothing_beyond_loopback() -> None:
    for name, spec in compose()["services"].items():
        for mapping in spec.get("ports", []):
            if isinstance(mapping, dict):
                assert mapping.get("host_ip") == "127.0.0.1", f"{name}: {mapping}"
            else:
                assert str(mapping).startswith("127.0.0.1:"), f"{name}: {mapping}"


def test_compose_required_secrets_come_from_the_environment_or_refuse_to_start() -> None:
    for service in SERVICES:
        env = compose_env(service)
        for key in ("MKR_ENCRYPTION_KEY", "MKR_INDEX_KEY"):
            match = INTERPOLATION.fullmatch(env[key])
            assert match and match.group(2) == ":?", f"{service}.{key} must be ${{VAR:?message}}, got {env[key]!r}"
        for key in ("MKR_JWT_PUBLIC_KEY", "MKR_JWT_JWKS_URL"):
            match = INTERPOLATION.fullmatch(env[key])
            assert match and not match.group(3), f"{service}.{key}: no key or URL may be baked in"
    password = compose_env("postgres")["POSTGRES_PASSWORD"]
    match = INTERPOLATION.fullmatch(password)
    assert match and match.group(2) == ":?", "POSTGRES_PASSWORD must be required from the environment"


def test_compose_names_only_real_settings() -> None:
    named = set(MKR_NAME.findall(COMPOSE.read_text()))
    assert named, "no MKR_* variable found: the check would prove nothing"
    assert named - known_variables() == set(), "not settings in shared/settings.py or services/*/config.py"


# --- deploy/Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_is_slim_non_root_and_installs_without_dev_extras() -> None:
    instructions = dockerfile_instructions()
    bases = [args.split()[0] for op, args in instructions if op == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases), bases
    users = [args.strip() for op, args in instructions if op == "USER"]
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    runs = " ".join(args for op, args in instructions if op == "RUN")
    assert re.search(r"pip install (\S+ )*\.(\s|$)", runs), "the image installs the project with `pip install .`"
    assert "[dev]" not in runs and " -e " not in runs


def test_dockerfile_serves_the_service_named_by_mkr_service() -> None:
    instructions = dict(dockerfile_instructions()[::-1])  # the last of each instruction wins
    assert "mkr serve --service" in instructions["CMD"] and "MKR_SERVICE" in instructions["CMD"]
    assert "/healthz" in instructions["HEALTHCHECK"] and "curl" not in instructions["HEALTHCHECK"]
    exposed = {int(port.split("/")[0]) for port in instructions["EXPOSE"].split()}
    assert exposed == {default_port(service) for service in APPS}
    assert "MKR_HOST" not in instructions.get("ENV", ""), "MKR_HOST belongs to compose/k8s, not the image"


# --- deploy/k8s -------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    assert [obj["metadata"]["name"] for obj in of_kind("Namespace")] == ["mkr"]
    assert not of_kind("Secret"), "the Secret is created out of band, never committed"


def test_one_deployment_per_service_with_two_replicas() -> None:
    deployments = of_kind("Deployment")
    assert sorted(deployment_service(d) for d in deployments) == sorted(APPS)
    for deployment in deployments:
        assert deployment["spec"]["replicas"] == 2


@pytest.mark.parametrize("service", APPS)
def test_deployment_probes_hit_the_service_port(service: str) -> None:
    (deployment,) = [d for d in of_kind("Deployment") if deployment_service(d) == service]
    container = container_of(deployment)
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    assert list(ports.values()) == [default_port(service)]
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        port = ports.get(get["port"], get["port"])  # a named port resolves to its number
        assert port == default_port(service), probe


@pytest.mark.parametrize("service", APPS)
def test_deployment_runs_non_root_read_only_with_resources(service: str) -> None:
    (deployment,) = [d for d in of_kind("Deployment") if deployment_service(d) == service]
    pod = deployment["spec"]["template"]["spec"]
    container = container_of(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]]
    for kind in ("requests", "limits"):
        assert container["resources"][kind]["memory"], kind
    assert container["resources"]["requests"]["cpu"], "the HPA's CPU target needs a CPU request"
    # Service links would put MKR_<SVC>_PORT=tcp://... into the pod, which the settings read as the port.
    assert pod["enableServiceLinks"] is False


@pytest.mark.parametrize("service", SERVICES)
def test_deployment_takes_secrets_only_by_secret_key_ref(service: str) -> None:
    (deployment,) = [d for d in of_kind("Deployment") if deployment_service(d) == service]
    container = container_of(deployment)
    env = {e["name"]: e for e in container["env"]}
    assert SECRET_VARIABLES <= set(env)
    for name, entry in env.items():
        if name in SECRET_VARIABLES or SECRET_LOOKING.search(name):
            assert "value" not in entry, f"{name} must not be a literal"
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] == SECRET_NAME and ref["key"] == name
    required = {name for name in SECRET_VARIABLES if not env[name]["valueFrom"]["secretKeyRef"].get("optional")}
    assert required == {"MKR_DATABASE_URL", "MKR_ENCRYPTION_KEY", "MKR_INDEX_KEY"}
    config_maps = {ref["configMapRef"]["name"] for ref in container["envFrom"]}
    assert config_maps <= set(by_name("ConfigMap"))


def test_config_map_holds_no_secret_and_listens_on_all_interfaces() -> None:
    (config,) = of_kind("ConfigMap")
    data = config["data"]
    assert not SECRET_VARIABLES & set(data)
    assert not [key for key in data if SECRET_LOOKING.search(key)]
    assert data["MKR_HOST"] == "0.0.0.0"
    assert data["MKR_ENVIRONMENT"] == "production"


def test_k8s_names_only_real_settings() -> None:
    named = {name for obj in k8s_objects() for text in walk_strings(obj) for name in MKR_NAME.findall(text)}
    assert "MKR_DATABASE_URL" in named and "MKR_HOST" in named
    # Comments and the operator notes too: an example there gets copied.
    for path in [*(K8S / name for name in kustomization()["resources"]), README]:
        named |= set(MKR_NAME.findall(path.read_text()))
    assert named - known_variables() == set(), "not settings in shared/settings.py or services/*/config.py"


@pytest.mark.parametrize("service", APPS)
def test_each_deployment_has_a_matching_service_hpa_and_pdb(service: str) -> None:
    (deployment,) = [d for d in of_kind("Deployment") if deployment_service(d) == service]
    name = deployment["metadata"]["name"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items(), "the Deployment's selector must match its pods"

    (svc,) = [s for s in of_kind("Service") if s["spec"]["selector"] == selector]
    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    container_ports = {p.get("name"): p["containerPort"] for p in container_of(deployment)["ports"]}
    for port in svc["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        assert container_ports.get(target, target) == default_port(service)

    (hpa,) = [h for h in of_kind("HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == name]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}

    (pdb,) = [p for p in of_kind("PodDisruptionBudget") if p["spec"]["selector"]["matchLabels"] == selector]
    assert pdb["apiVersion"] == "policy/v1"


def test_every_object_lives_in_the_mkr_namespace() -> None:
    assert kustomization()["namespace"] == "mkr"
    for obj in k8s_objects():
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "mkr", obj["metadata"]["name"]


# --- the console (services/console): no database, its own session key --------------------------------


def test_compose_runs_the_console_on_loopback_with_a_required_session_key() -> None:
    spec = compose()["services"]["console"]
    env = compose_env("console")
    assert spec["build"]["dockerfile"] == "deploy/Dockerfile"
    assert env["MKR_SERVICE"] == "console" and env["MKR_ENVIRONMENT"] == "production"
    assert env["MKR_HOST"] == "0.0.0.0"
    port = default_port("console")
    assert spec["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert f"127.0.0.1:{port}/" in " ".join(spec["healthcheck"]["test"])
    match = INTERPOLATION.fullmatch(env["MKR_CONSOLE_SESSION_KEY"])
    assert match and match.group(2) == ":?"
    assert "MKR_DATABASE_URL" not in env and "MKR_ENCRYPTION_KEY" not in env, "the console keeps no case data"
    for service in SERVICES:
        assert env[f"MKR_CONSOLE_{service.upper()}_URL"] == f"http://{service}:{default_port(service)}"
    secret = INTERPOLATION.fullmatch(env["MKR_CONSOLE_OIDC_CLIENT_SECRET"])
    assert secret and not secret.group(3), "no client secret may be baked in"


def test_k8s_console_takes_its_secrets_by_secret_key_ref_and_no_database() -> None:
    (deployment,) = [d for d in of_kind("Deployment") if deployment_service(d) == "console"]
    env = {e["name"]: e for e in container_of(deployment)["env"]}
    assert "MKR_DATABASE_URL" not in env and "MKR_ENCRYPTION_KEY" not in env
    for name, entry in env.items():
        if SECRET_LOOKING.search(name) or name in SECRET_VARIABLES:
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] == SECRET_NAME and ref["key"] == name
    assert not env["MKR_CONSOLE_SESSION_KEY"]["valueFrom"]["secretKeyRef"].get("optional")
