"""Checks on deploy/k8s/: every manifest is valid against the Kubernetes schemas, and the
manifests agree with each other and with the code (selectors, ports, secrets, settings, probes)
and allow exactly the calls the services make."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from gateway.settings import GatewaySettings
from orchestrator.settings import OrchestratorSettings
from section_worker.settings import WorkerSettings
from storage_svc.settings import StorageSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes minor the manifests are written for (gRPC probes, autoscaling/v2,
# policy/v1 are all GA there); kubernetes-validate ships its schemas, so this runs offline.
KUBERNETES_VERSION = "1.30"

# Deployment name -> the module its container runs and the settings that module reads.
SERVICES: dict[str, tuple[str, type[BaseSettings]]] = {
    "gateway": ("gateway", GatewaySettings),
    "orchestrator": ("orchestrator", OrchestratorSettings),
    "section-worker": ("section_worker", WorkerSettings),
    "storage-svc": ("storage_svc", StorageSettings),
}
# Deployments of what the services use rather than of the platform's own code: name -> the
# container port name its callers reach.
BACKING = {"redis": "redis"}
GRPC_SERVICES = ["orchestrator", "section-worker", "storage-svc"]
AUTOSCALED = {"orchestrator", "section-worker"}
# The calls the architecture makes between the workloads (caller, callee, the callee's
# container port name). The orchestrator calls itself: a replica forwards to a task's owner.
CALLS = {
    ("gateway", "orchestrator", "grpc"),
    ("gateway", "storage-svc", "grpc"),
    ("orchestrator", "orchestrator", "grpc"),
    ("orchestrator", "storage-svc", "grpc"),
    ("orchestrator", "section-worker", "grpc"),
    ("section-worker", "storage-svc", "grpc"),
    ("section-worker", "redis", "redis"),
}
# Calls leaving the cluster: the workers to the AI platform, storage_svc to S3, both HTTPS.
EXTERNAL_CALLS = {("section-worker", 443), ("storage-svc", 443)}
# Where Prometheus runs: it alone may reach the pods' metrics ports.
MONITORING_NAMESPACE = "monitoring"

# Environment variables a container may set besides its settings: inputs of $(VAR) expansion,
# the AWS chain's own variables, and the *_FILE variables the image's entry point reads.
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
_FILE_SECRETS = re.search(r"^for name in (.+); do$", ENTRYPOINT.read_text(), re.M)
assert _FILE_SECRETS, "deploy/entrypoint.sh lists the secrets it reads from files"
ENTRYPOINT_FILE_VARS = {f"{name}_FILE" for name in _FILE_SECRETS.group(1).split()}
NON_SETTINGS_ENV = {"POD_IP", "AWS_SHARED_CREDENTIALS_FILE", *ENTRYPOINT_FILE_VARS}

Manifest = dict[str, Any]


def _load() -> tuple[Manifest, list[tuple[str, Manifest]]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = [
        (name, doc)
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((K8S / name).read_text())
        if doc
    ]
    return kustomization, docs


KUSTOMIZATION, MANIFESTS = _load()


def _of_kind(kind: str) -> dict[str, Manifest]:
    found = [doc for _, doc in MANIFESTS if doc["kind"] == kind]
    by_name = {doc["metadata"]["name"]: doc for doc in found}
    assert len(by_name) == len(found), f"two {kind}s share a name"
    return by_name


DEPLOYMENTS = _of_kind("Deployment")
SERVICE_OBJECTS = _of_kind("Service")
NETWORK_POLICIES = _of_kind("NetworkPolicy")


def _pod_labels(name: str) -> dict[str, str]:
    labels: dict[str, str] = DEPLOYMENTS[name]["spec"]["template"]["metadata"]["labels"]
    return labels


def _container(name: str) -> Manifest:
    containers = DEPLOYMENTS[name]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{name}: one container per pod"
    container: Manifest = containers[0]
    return container


def _container_ports(name: str) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in _container(name)["ports"]}


def _env(name: str) -> dict[str, Manifest]:
    return {e["name"]: e for e in _container(name).get("env", [])}


def _selected(selector: Manifest) -> set[str]:
    """The Deployments whose pods a label selector (matchLabels only) selects."""
    assert "matchExpressions" not in selector, "use matchLabels, which this test understands"
    wanted = selector.get("matchLabels", {})
    return {
        name
        for name in DEPLOYMENTS
        if all(_pod_labels(name).get(k) == v for k, v in wanted.items())
    }


def _resolve_port(name: str, port: int | str) -> int:
    ports = _container_ports(name)
    if isinstance(port, str):
        assert port in ports, f"{name} has no container port named {port!r}"
        return ports[port]
    assert port in ports.values(), f"{name} has no container port {port}"
    return port


# --- the manifests themselves


def test_kustomization_lists_every_manifest() -> None:
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(KUSTOMIZATION["resources"]) == on_disk


@pytest.mark.parametrize(
    "doc",
    [doc for _, doc in MANIFESTS],
    ids=[f"{file}:{doc['kind']}/{doc['metadata']['name']}" for file, doc in MANIFESTS],
)
def test_manifest_is_valid_against_the_kubernetes_schema(doc: Manifest) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (requirements-dev.lock)"
    )
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_schema_validation_rejects_a_misspelt_field() -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (requirements-dev.lock)"
    )
    doc = yaml.safe_load(yaml.safe_dump(DEPLOYMENTS["orchestrator"]))
    probe = doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["grcp"] = probe.pop("grpc")
    with pytest.raises(kubernetes_validate.ValidationError, match="grcp"):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_namespace_enforces_the_restricted_pod_security_standard() -> None:
    namespace = _of_kind("Namespace")[KUSTOMIZATION["namespace"]]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# --- workloads


def test_one_deployment_and_service_per_service_running_its_module() -> None:
    assert set(DEPLOYMENTS) == set(SERVICES) | set(BACKING)
    assert set(SERVICE_OBJECTS) == set(SERVICES) | set(BACKING)
    for name, (module, _) in SERVICES.items():
        container = _container(name)
        # args, not command: command would replace the entry point that reads *_FILE secrets.
        assert "command" not in container, name
        assert container["args"] == ["python", "-m", module], name


def test_deployment_selectors_match_their_pod_templates() -> None:
    for name, deployment in DEPLOYMENTS.items():
        assert _selected(deployment["spec"]["selector"]) == {name}, name


def test_services_select_their_deployment_and_target_its_ports() -> None:
    for name, service in SERVICE_OBJECTS.items():
        assert _selected({"matchLabels": service["spec"]["selector"]}) == {name}, name
        for port in service["spec"]["ports"]:
            assert _resolve_port(name, port["targetPort"]) == port["port"], name


def test_services_the_code_resolves_to_pod_addresses_are_headless() -> None:
    # The orchestrator counts one worker per address the name resolves to; the gRPC clients
    # balance over every address. A ClusterIP would hide the pods behind one address.
    for name in GRPC_SERVICES:
        assert SERVICE_OBJECTS[name]["spec"].get("clusterIP") == "None", name


def test_env_sets_only_settings_the_service_reads() -> None:
    for name, (_, settings) in SERVICES.items():
        prefix = str(settings.model_config.get("env_prefix", ""))
        known = {f"{prefix}{field}".upper() for field in settings.model_fields}
        unknown = set(_env(name)) - known - NON_SETTINGS_ENV
        assert not unknown, f"{name} sets {unknown}, which its settings do not read"
        defined: set[str] = set()
        for var in _container(name).get("env", []):
            for ref in re.findall(r"\$\((\w+)\)", var.get("value", "")):
                assert ref in defined, f"{name}: {var['name']} uses $({ref}) before it is set"
            defined.add(var["name"])


def test_targets_name_the_services_and_their_ports() -> None:
    targets = {
        ("gateway", "GATEWAY_ORCHESTRATOR_TARGET"): "orchestrator",
        ("orchestrator", "ORCH_STORAGE_TARGET"): "storage-svc",
        ("orchestrator", "ORCH_WORKER_TARGETS"): "section-worker",
        ("section-worker", "WORKER_STORAGE_TARGET"): "storage-svc",
    }
    for (name, var), callee in targets.items():
        value = _env(name)[var]["value"]
        host, _, port = value.removeprefix("dns:///").rpartition(":")
        assert host == callee, f"{name}: {var}={value} does not name the {callee} Service"
        assert [p["port"] for p in SERVICE_OBJECTS[callee]["spec"]["ports"]] == [int(port)]


def test_services_listen_on_all_interfaces_at_their_container_port() -> None:
    for name, (_, settings) in SERVICES.items():
        prefix = str(settings.model_config.get("env_prefix", "")).upper()
        env = _env(name)
        assert env[f"{prefix}HOST"]["value"] == "0.0.0.0", name
        assert int(env[f"{prefix}PORT"]["value"]) in _container_ports(name).values(), name


def test_every_pod_serves_metrics_where_its_annotations_say() -> None:
    for name, (_, settings) in SERVICES.items():
        prefix = str(settings.model_config.get("env_prefix", "")).upper()
        env = _env(name)
        port = _container_ports(name)["metrics"]
        assert env[f"{prefix}METRICS_HOST"]["value"] == "0.0.0.0", name
        assert int(env[f"{prefix}METRICS_PORT"]["value"]) == port, name
        annotations = DEPLOYMENTS[name]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/port"] == str(port), name
        assert annotations["prometheus.io/path"] == "/metrics", name


def test_orchestrator_advertises_its_pod_ip() -> None:
    env = _env("orchestrator")
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    port = _container_ports("orchestrator")["grpc"]
    assert env["ORCH_ADVERTISE_ADDRESS"]["value"] == f"$(POD_IP):{port}"


def test_grpc_services_are_probed_through_the_grpc_health_protocol() -> None:
    for name in GRPC_SERVICES:
        container = _container(name)
        port = _container_ports(name)["grpc"]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[kind]["grpc"]["port"] == port, f"{name} {kind}"


def test_gateway_is_probed_over_http_on_its_port() -> None:
    container = _container("gateway")
    for kind in ("readinessProbe", "livenessProbe"):
        probe = container[kind]
        handler = probe.get("httpGet") or probe.get("tcpSocket")
        assert handler is not None, kind
        assert _resolve_port("gateway", handler["port"]) == 8000, kind


def test_containers_run_non_root_read_only_with_bounded_resources() -> None:
    for name, deployment in DEPLOYMENTS.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["automountServiceAccountToken"] is False, name
        container = _container(name)
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) >= {"cpu", "memory"}, f"{name} {bound}"


def test_service_accounts_exist() -> None:
    accounts = set(_of_kind("ServiceAccount"))
    for name, deployment in DEPLOYMENTS.items():
        account = deployment["spec"]["template"]["spec"].get("serviceAccountName")
        assert account is None or account in accounts, name


# --- secrets


def _generated(kind: str) -> dict[str, set[str]]:
    """Secrets or ConfigMaps the kustomization generates, with the file names each holds."""
    return {
        gen["name"]: {entry.split("=", 1)[0] for entry in gen.get("files", [])}
        for gen in KUSTOMIZATION.get(f"{kind}Generator", [])
    }


def test_referenced_secrets_are_generated_or_optional() -> None:
    secrets, config_maps = _generated("secret"), _generated("configMap")
    for name, deployment in DEPLOYMENTS.items():
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounted = {m["name"] for m in _container(name).get("volumeMounts", [])}
        assert mounted == set(volumes), f"{name}: mounts and volumes differ"
        for volume in volumes.values():
            for key, generated, ref in (
                ("secret", secrets, "secretName"),
                ("configMap", config_maps, "name"),
            ):
                if key in volume and not volume[key].get("optional", False):
                    assert volume[key][ref] in generated, f"{name}: {volume[key][ref]} missing"
        for var in _container(name).get("env", []):
            source = var.get("valueFrom", {})
            assert "secretKeyRef" not in source, f"{name}: {var['name']} secret as env value"
            assert "configMapKeyRef" not in source or (
                source["configMapKeyRef"]["name"] in config_maps
            )


def test_secret_files_the_services_read_are_mounted() -> None:
    secrets = _generated("secret")
    for name in SERVICES:
        pod = DEPLOYMENTS[name]["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in _container(name)["volumeMounts"]}
        for var, spec in _env(name).items():
            if not var.endswith("_FILE"):
                continue
            folder, _, file = spec["value"].rpartition("/")
            assert folder in mounts, f"{name}: {var}={spec['value']} is not on a mounted volume"
            secret = mounts[folder]["secret"]["secretName"]
            assert file in secrets[secret], f"{name}: secret {secret} holds no {file}"


def test_workers_share_their_limits_through_the_redis_service() -> None:
    env = _env("section-worker")
    port = SERVICE_OBJECTS["redis"]["spec"]["ports"][0]["port"]
    assert env["WORKER_LIMITS_URL"]["value"] == f"redis://redis:{port}/0"
    # Redis and the workers read one generated password; it is never an environment value.
    assert env["WORKER_LIMITS_PASSWORD_FILE"]["value"] == "/run/secrets/redis-auth/password"
    redis = _container("redis")
    assert "/run/secrets/redis-auth/password" in " ".join(redis["args"])
    assert "requirepass" in " ".join(redis["args"])
    assert not redis.get("env")


def test_orchestrator_gets_its_credential_key_from_a_file() -> None:
    assert "ORCH_CREDENTIAL_KEY" not in _env("orchestrator")
    assert "ORCH_CREDENTIAL_KEY_FILE" in _env("orchestrator")


# --- scaling and disruption


def test_autoscalers_target_the_workers_and_orchestrators() -> None:
    autoscalers = _of_kind("HorizontalPodAutoscaler")
    targets = set()
    for hpa in autoscalers.values():
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["name"] in DEPLOYMENTS, ref
        assert hpa["spec"]["minReplicas"] >= 2, ref["name"]
        targets.add(ref["name"])
    assert targets == AUTOSCALED
    for name in AUTOSCALED:
        # A replica count in the Deployment would fight the autoscaler on every apply.
        assert "replicas" not in DEPLOYMENTS[name]["spec"], name


def test_every_deployment_has_a_disruption_budget_selecting_it() -> None:
    covered = []
    for pdb in _of_kind("PodDisruptionBudget").values():
        selected = _selected(pdb["spec"]["selector"])
        assert len(selected) == 1, f"PDB {pdb['metadata']['name']} selects {selected}"
        covered.extend(selected)
    assert sorted(covered) == sorted(DEPLOYMENTS)


# --- network policies


def _policy_edges() -> tuple[set[tuple[str, str, int]], set[tuple[str, str, int]]]:
    """(ingress, egress) edges as (from, to, port); "outside" stands for any address."""
    ingress, egress = set(), set()
    for policy in NETWORK_POLICIES.values():
        spec = policy["spec"]
        if not spec["podSelector"]:
            continue  # the namespace-wide ones, checked below
        owners = _selected(spec["podSelector"])
        assert owners, f"NetworkPolicy {policy['metadata']['name']} selects no workload"
        for rule in spec.get("ingress", []):
            peers = [_peer(p) for p in rule.get("from", [{}])]
            for owner in owners:
                for port in rule["ports"]:
                    number = _resolve_port(owner, port["port"])
                    ingress |= {(peer, owner, number) for group in peers for peer in group}
        for rule in spec.get("egress", []):
            peers = [_peer(p) for p in rule["to"]]
            for owner in owners:
                for port in rule["ports"]:
                    egress |= {(owner, peer, port["port"]) for group in peers for peer in group}
    return ingress, egress


def _peer(peer: Manifest) -> set[str]:
    if "podSelector" in peer and "namespaceSelector" not in peer:
        selected = _selected(peer["podSelector"])
        assert selected, f"NetworkPolicy peer {peer} matches no workload"
        return selected
    namespace = peer.get("namespaceSelector", {}).get("matchLabels", {})
    if (
        namespace == {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}
        and "podSelector" not in peer
    ):
        return {MONITORING_NAMESPACE}
    return {"outside"}


def _expected_edges() -> set[tuple[str, str, int]]:
    return {(src, dst, _container_ports(dst)[port]) for src, dst, port in CALLS}


def test_everything_not_allowed_is_denied() -> None:
    deny = [
        p["spec"]
        for p in NETWORK_POLICIES.values()
        if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")
    ]
    assert any(set(s["policyTypes"]) == {"Ingress", "Egress"} and not s.get("egress") for s in deny)


def test_every_pod_may_resolve_names() -> None:
    dns = [
        rule
        for p in NETWORK_POLICIES.values()
        if p["spec"]["podSelector"] == {}
        for rule in p["spec"].get("egress", [])
    ]
    assert [sorted((x["protocol"], x["port"]) for x in r["ports"]) for r in dns] == [
        [("TCP", 53), ("UDP", 53)]
    ]
    assert dns[0]["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


def test_ingress_allows_exactly_the_calls_the_services_make() -> None:
    ingress, _ = _policy_edges()
    gateway_port = _container_ports("gateway")["http"]
    scrapes = {(MONITORING_NAMESPACE, name, _container_ports(name)["metrics"]) for name in SERVICES}
    assert ingress == _expected_edges() | {("outside", "gateway", gateway_port)} | scrapes


def test_egress_allows_exactly_the_calls_the_services_make() -> None:
    _, egress = _policy_edges()
    internal = {edge for edge in egress if edge[1] != "outside"}
    external = {(src, port) for src, dst, port in egress if dst == "outside"}
    # Every call allowed out of its caller is allowed into its callee, and the reverse.
    assert internal == _expected_edges()
    assert external == EXTERNAL_CALLS


def test_every_workload_has_its_own_ingress_and_egress_policy() -> None:
    owned = {
        name
        for p in NETWORK_POLICIES.values()
        if p["spec"]["podSelector"] and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        for name in _selected(p["spec"]["podSelector"])
    }
    assert owned == set(DEPLOYMENTS)


ROLES = {"gateway": "gateway", "orchestrator": "orchestrator", "section-worker": "worker"}
ROLES["storage-svc"] = "storage"


@pytest.mark.parametrize("name", sorted(ROLES))
def test_each_service_mounts_the_ca_and_its_own_certificate_where_it_reads_them(
    name: str,
) -> None:
    role = ROLES[name]
    secrets = _generated("secret")
    pod = DEPLOYMENTS[name]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in _container(name)["volumeMounts"]}
    prefix = SERVICES[name][1].model_config.get("env_prefix", "")
    folder = _env(name).get(f"{prefix}TLS_DIR", {}).get("value", "/run/secrets/tls")
    volume = mounts[folder]["secret"]
    assert not volume.get("optional", False), f"{name}: its certificates are optional"
    assert secrets[volume["secretName"]] == {"ca.pem", f"{role}.pem", f"{role}-key.pem"}
