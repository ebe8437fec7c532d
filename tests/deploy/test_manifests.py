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

from mkr import registry
from mkr.registry import APPS, SERVICES
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"
README = ROOT / "deploy" / "README.md"

# Read by the image's CMD to choose the service, not by Settings.
IMAGE_ONLY_VARIABLES = {"MKR_SERVICE"}
KEY_VARIABLES = {"MKR_ENCRYPTION_KEY", "MKR_INDEX_KEY"}
# What every service's own Secret holds (its database role, its Kafka user, the token key); keys come on top.
SERVICE_SECRETS = {"MKR_DATABASE_URL", "MKR_KAFKA_SASL_USERNAME", "MKR_KAFKA_SASL_PASSWORD"}
SECRET_VARIABLES = SERVICE_SECRETS | KEY_VARIABLES | {"MKR_JWT_PUBLIC_KEY", "MKR_JWT_JWKS_URL"}
# Any variable whose name says it holds a credential must come from the Secret.
SECRET_LOOKING = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|_USERNAME$|DATABASE_URL")
MKR_NAME = re.compile(r"\bMKR_[A-Z0-9_]+\b")
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?([^}]*)\}")


def secret_name(service: str) -> str:
    """Each service has a Secret of its own: a breach of one pod's secrets is not a breach of all."""
    return f"mkr-{service}-secrets"


@cache
def keys_used_by(service: str) -> frozenset[str]:
    """The keys a service's code uses (its cipher, its search index): the only keys it may be given."""
    code = " ".join(path.read_text() for path in (ROOT / "services" / service).rglob("*.py"))
    used = set()
    if re.search(r"\b(FieldCipher|TextSealer)\b", code):
        used.add("MKR_ENCRYPTION_KEY")
    if re.search(r"\bSearchIndexer\b", code):
        used.add("MKR_INDEX_KEY")
    return frozenset(used)


def default_port(service: str) -> int:
    # The registry's default, not Settings(): the test's own environment must not move it.
    return registry.spec(service).default_port


def _prefix(model: type[BaseSettings]) -> str:
    return str(model.model_config.get("env_prefix", "")).upper()


@cache
def known_variables() -> frozenset[str]:
    """Every MKR_* environment variable the code reads: Settings plus each service's config class."""
    names = {f"{_prefix(Settings)}{field.upper()}" for field in Settings.model_fields}
    # The per-process variables Settings gathers into `ports` and `console_urls`, one per registry entry.
    names |= {f"MKR_{app.upper()}_PORT" for app in APPS}
    names |= {f"MKR_CONSOLE_{service.upper()}_URL" for service in SERVICES}
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
    # Its own role on its own database, with a password of its own (never the administrator's).
    url = re.fullmatch(
        rf"postgresql://mkr_{service}:\$\{{([A-Z_]+):\?[^}}]+\}}@postgres:5432/mkr_{service}", env["MKR_DATABASE_URL"]
    )
    assert url, env["MKR_DATABASE_URL"]
    assert url.group(1) == f"DB_PASSWORD_{service.upper()}"
    assert env["MKR_KAFKA_SECURITY_PROTOCOL"].startswith("SASL_")
    assert env["MKR_KAFKA_SASL_USERNAME"] == f"mkr-{service}"
    kafka_password = INTERPOLATION.fullmatch(env["MKR_KAFKA_SASL_PASSWORD"])
    assert kafka_password and kafka_password.group(1) == f"KAFKA_PASSWORD_{service.upper()}"
    assert kafka_password.group(2) == ":?"
    assert {"MKR_JWT_PUBLIC_KEY", "MKR_JWT_JWKS_URL", "MKR_JWT_ISSUER", "MKR_JWT_AUDIENCE"} <= set(env)
    for dependency in ("postgres", "kafka"):
        assert spec["depends_on"][dependency]["condition"] == "service_healthy"
    assert spec["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"


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
        for key in keys_used_by(service):
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
    expected = (SECRET_VARIABLES - KEY_VARIABLES) | keys_used_by(service)
    assert expected <= set(env)
    assert not (KEY_VARIABLES - keys_used_by(service)) & set(env), f"{service} is given a key it does not use"
    for name, entry in env.items():
        if name in SECRET_VARIABLES or SECRET_LOOKING.search(name):
            assert "value" not in entry, f"{name} must not be a literal"
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret_name(service) and ref["key"] == name, f"{name} from {ref['name']}"
    required = {name for name in expected if not env[name]["valueFrom"]["secretKeyRef"].get("optional")}
    assert required == SERVICE_SECRETS | keys_used_by(service)
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


# --- a breach of one service is not a breach of all (SECURITY.md) --------------------------------------

POSTGRES_INIT = ROOT / "deploy" / "compose" / "postgres-init.sh"
KAFKA_INIT = ROOT / "deploy" / "compose" / "kafka-init.sh"


def consumed_topics(service: str) -> set[str]:
    """The contract topics a service's consumers read, from its code."""
    if service == "intake":
        text = (ROOT / "services" / "intake" / "main.py").read_text()
        names = set(re.findall(r"ConsumerSpec\([^)]*\[([A-Z_, ]+)\]", text)[0].replace(" ", "").split(","))
    else:
        # The module that assembles the consumer: `consumer.py` where a service has one (referral), else `events.py`.
        package = ROOT / "services" / service
        module = importlib.import_module(
            f"services.{service}.{'consumer' if (package / 'consumer.py').is_file() else 'events'}"
        )
        return set(module.CONSUMED_TOPICS)
    events = importlib.import_module("shared.events")
    return {getattr(events, name) for name in names if name}


def test_keys_in_the_code_match_the_services_that_use_them() -> None:
    """The check below would prove nothing if no service used a key."""
    assert keys_used_by("intake") == KEY_VARIABLES
    assert "MKR_ENCRYPTION_KEY" in keys_used_by("shelter")


@pytest.mark.parametrize("service", SERVICES)
def test_compose_gives_keys_only_to_the_services_that_use_them(service: str) -> None:
    env = compose_env(service)
    assert KEY_VARIABLES & set(env) == keys_used_by(service)
    assert not KEY_VARIABLES & set(compose()["x-mkr-env"]), "keys in the shared block reach every service"


def test_compose_postgres_creates_one_role_per_service_with_its_own_password() -> None:
    postgres = compose()["services"]["postgres"]
    env = compose_env("postgres")
    assert "./deploy/compose/postgres-init.sh:/docker-entrypoint-initdb.d/10-mkr-roles.sh:ro" in postgres["volumes"]
    passwords = {}
    for service in SERVICES:
        match = INTERPOLATION.fullmatch(env[f"DB_PASSWORD_{service.upper()}"])
        assert match and match.group(2) == ":?", service
        passwords[service] = match.group(1)
    assert len(set(passwords.values())) == len(SERVICES), "each role has a password of its own"
    admin = INTERPOLATION.fullmatch(env["POSTGRES_PASSWORD"])
    assert admin and admin.group(1) not in passwords.values()
    for service in SERVICES:
        assert "POSTGRES_PASSWORD" not in compose_env(service)["MKR_DATABASE_URL"]
    script = POSTGRES_INIT.read_text()
    for clause in ("NOSUPERUSER", "NOCREATEDB", "NOCREATEROLE", "NOBYPASSRLS", "REVOKE ALL ON DATABASE"):
        assert clause in script, clause


def test_compose_kafka_authenticates_every_listener_and_denies_what_no_acl_allows() -> None:
    env = compose_env("kafka")
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = {item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")}
    assert listeners == set(protocols), "every listener has a protocol"
    assert all(p.startswith("SASL_") for p in protocols.values()), protocols
    client = next(item for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",") if item.endswith(":9092"))
    assert env["KAFKA_LISTENER_NAME_" + client.split("://")[0] + "_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert env["KAFKA_SUPER_USERS"] == "User:admin"
    assert "${KAFKA_ADMIN_PASSWORD:?" in env["KAFKA_LISTENER_NAME_BROKER_PLAIN_SASL_JAAS_CONFIG"]
    init = compose()["services"]["kafka-init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert "./deploy/compose/kafka-init.sh:/mkr/kafka-init.sh:ro" in init["volumes"]
    init_env = compose_env("kafka-init")
    for service in SERVICES:
        match = INTERPOLATION.fullmatch(init_env[f"KAFKA_PASSWORD_{service.upper()}"])
        assert match and match.group(1) == f"KAFKA_PASSWORD_{service.upper()}" and match.group(2) == ":?"


def test_kafka_init_lets_each_service_write_only_its_own_topic_and_read_what_it_consumes() -> None:
    script = KAFKA_INIT.read_text()
    writes = [line for line in script.splitlines() if "--operation Write" in line]
    assert len(writes) == 1 and '--topic "mkr.${service}.events"' in writes[0], writes
    assert "--operation All" not in script and "--operation Create" not in script
    assert 'SCRAM-SHA-512=[iterations=8192,password=${password}]' in script
    consumes = dict(re.findall(r"\[(\w+)\]=\"([a-z ]*)\"", script.split("declare -A consumes=(")[1].split(")")[0]))
    assert set(consumes) == set(SERVICES)
    for service in SERVICES:
        granted = {f"mkr.{name}.events" for name in consumes[service].split()} | {f"mkr.{service}.events"}
        assert consumed_topics(service) <= granted, f"{service} consumes more than kafka-init lets it read"
    # Consumer groups: only the service's own (EventConsumer: mkr-<service>.<consumer>).
    assert '--group "mkr-${service}." --resource-pattern-type prefixed' in script


@pytest.mark.parametrize("service", SERVICES)
def test_deployment_gets_no_key_it_does_not_use_and_its_kafka_user(service: str) -> None:
    (deployment,) = [d for d in of_kind("Deployment") if deployment_service(d) == service]
    env = {e["name"]: e for e in container_of(deployment)["env"]}
    assert KEY_VARIABLES & set(env) == keys_used_by(service)
    (config,) = of_kind("ConfigMap")
    assert config["data"]["MKR_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert not KEY_VARIABLES & set(config["data"])


def _policies_for(labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        p for p in of_kind("NetworkPolicy") if p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
    ]


def test_network_policies_deny_by_default() -> None:
    (deny,) = [p for p in of_kind("NetworkPolicy") if p["metadata"]["name"] == "mkr-default-deny"]
    assert deny["spec"]["podSelector"] == {}
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]


@pytest.mark.parametrize("service", SERVICES)
def test_network_policy_lets_a_service_reach_only_its_database_kafka_and_public_https(service: str) -> None:
    (deployment,) = [d for d in of_kind("Deployment") if deployment_service(d) == service]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    policies = _policies_for(labels)
    own = [p for p in policies if p["spec"]["podSelector"]]
    assert len(own) == 1, f"{service}: exactly one policy of its own"
    ingress_ports = {port["port"] for rule in own[0]["spec"]["ingress"] for port in rule["ports"]}
    assert ingress_ports == {default_port(service)}
    egress_ports: set[int] = set()
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            ports = {port["port"] for port in rule["ports"]}
            egress_ports |= ports
            for peer in rule["to"]:
                # No rule reaches another MKR pod: the services do not call each other.
                assert "podSelector" not in peer or "namespaceSelector" in peer, peer
                if "ipBlock" in peer and peer["ipBlock"]["cidr"] == "0.0.0.0/0":
                    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(
                        peer["ipBlock"]["except"]
                    ), "public addresses only (no cluster, no cloud metadata)"
    allowed = {53, 5432, 9092, 9093, 443} | ({80, 25, 465, 587} if service == "notifications" else set())
    assert egress_ports == allowed, f"{service}: {sorted(egress_ports)}"
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
            assert ref["name"] == secret_name("console") and ref["key"] == name
    assert not env["MKR_CONSOLE_SESSION_KEY"]["valueFrom"]["secretKeyRef"].get("optional")


def test_network_policy_lets_the_console_reach_only_the_four_services_and_public_https() -> None:
    (deployment,) = [d for d in of_kind("Deployment") if deployment_service(d) == "console"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (own,) = [p for p in _policies_for(labels) if p["spec"]["podSelector"]]
    assert {port["port"] for rule in own["spec"]["ingress"] for port in rule["ports"]} == {default_port("console")}
    reached: dict[str, set[int]] = {}
    for rule in own["spec"]["egress"]:
        for peer in rule["to"]:
            name = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name", "public")
            if name == "public":
                assert "169.254.0.0/16" in peer["ipBlock"]["except"]
            reached.setdefault(name, set()).update(port["port"] for port in rule["ports"])
    assert reached == {**{f"mkr-{s}": {default_port(s)} for s in SERVICES}, "public": {443}}
    for service in SERVICES:
        (policy,) = [p for p in of_kind("NetworkPolicy") if p["metadata"]["name"] == f"mkr-{service}"]
        sources = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
        assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mkr-console"}}} in sources, service
