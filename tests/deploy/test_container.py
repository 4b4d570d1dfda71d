"""The shipped image: built from the bento, run like the Kubernetes Deployment runs it.

Finds or starts a Docker engine (docker/engine.sh; the test is skipped, loudly, only when
none can be had), builds the base image offline when no registry answers
(docker/offline-base.sh), builds the bento from the session's quick models and
containerizes it (docker/containerize.sh), then runs the image with the ConfigMap's
environment, a read-only root file system, uid 1034 and the two writable mounts of
k8s/deployment.yaml. Every endpoint is compared with the stored models called in-process,
and a SIGTERM with requests in flight must let them all finish within the grace period.

Times and the image size go to /tmp/container_metrics.json (see docker/README.md).
About 6-8 minutes on 2 cores; CONTAINER_TESTS=0 skips it (loudly).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from urllib3.filepost import encode_multipart_formdata

from service import release
from service.keys import line_for
from service.schemas import validated_frame
from service.specs import IRIS, KOBE, MALARIA, SPECS
from service.versions import served_tag
from tests.servers import free_port
from tests.service.test_endpoints import check, direct_probabilities
from tools.lock import SERVING, exact_pins

if os.environ.get("CONTAINER_TESTS", "1") == "0":
    pytest.skip("CONTAINER TESTS OFF (CONTAINER_TESTS=0): the image was not built or run", allow_module_level=True)

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
DOCKER_DIR = PROJECT / "docker"
METRICS_FILE = Path(os.environ.get("CONTAINER_METRICS_FILE", "/tmp/container_metrics.json"))
DEFAULT_BASE = "python:3.11-slim"  # BentoML's default for docker.distro debian, python 3.11
OFFLINE_BASE = os.environ.get("OFFLINE_BASE_IMAGE", "local/python-base:bookworm")
IN_FLIGHT = 8  # requests in flight when SIGTERM arrives


def docker_cli() -> str:
    # BentoML builds with BuildKit; Debian's CLI has it, a CLI without buildx fails.
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def deployment() -> dict:
    return yaml.safe_load((PROJECT / "k8s" / "deployment.yaml").read_text())


def configmap_env() -> dict[str, str]:
    return {k: str(v) for k, v in yaml.safe_load((PROJECT / "k8s" / "configmap.yaml").read_text())["data"].items()}


class Docker:
    def __init__(self, host: str) -> None:
        self.ours = False  # started by this test: stopped, and its whole build cache pruned, at the end
        self.env = {**os.environ, "DOCKER_HOST": host, "PATH": "/usr/bin:" + os.environ.get("PATH", "")}

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([docker_cli(), *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done

    def has_image(self, image: str) -> bool:
        return self.run("image", "inspect", image, check=False, timeout=60).returncode == 0

    def pull(self, image: str) -> bool:
        """True if a registry gave us the image (machines without one: False, quickly or after 2 min)."""
        try:
            return self.run("pull", image, check=False, timeout=120).returncode == 0
        except subprocess.TimeoutExpired:
            return False


def script(name: str, *args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DOCKER_DIR / name), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=PROJECT)


@pytest.fixture(scope="module")
def metrics():
    values: dict[str, object] = {}
    yield values
    METRICS_FILE.write_text(json.dumps(values, indent=2) + "\n")
    print(f"\ncontainer metrics ({METRICS_FILE}):\n{json.dumps(values, indent=2)}", file=sys.stderr)


@pytest.fixture(scope="module")
def docker(metrics):
    """A Docker engine: the one that answers, or one started for this test (stopped after it)."""
    try:
        done = subprocess.run([str(DOCKER_DIR / "engine.sh")], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"NO DOCKER ENGINE: docker/engine.sh did not run: {exc}")
    if done.returncode != 0:
        reason = " | ".join(done.stderr.strip().splitlines()[-5:])
        print(f"\n*** NO DOCKER ENGINE: {reason}", file=sys.stderr)
        pytest.skip(f"NO DOCKER ENGINE: {reason}")
    lines = done.stdout.split()
    host = done.stdout.splitlines()[0].strip()
    started = int(lines[-1]) if "started" in done.stdout else None
    engine = Docker(host)
    engine.ours = started is not None
    metrics["docker_server_version"] = engine.run("version", "-f", "{{.Server.Version}}").stdout.strip()
    metrics["docker_storage_driver"] = engine.run("info", "-f", "{{.Driver}}").stdout.strip()
    try:
        yield engine
    finally:
        if started is not None:
            os.kill(started, 15)


@pytest.fixture(scope="module")
def base_image(docker, metrics) -> str | None:
    """None: BentoML's default base (a registry answers); else the offline base image's tag."""
    if "OFFLINE_BASE_IMAGE" not in os.environ:
        if docker.has_image(DEFAULT_BASE) or docker.pull(DEFAULT_BASE):
            metrics["base_image"] = DEFAULT_BASE
            return None
    metrics["base_image"] = OFFLINE_BASE
    if not docker.has_image(OFFLINE_BASE):
        started = time.monotonic()
        done = script("offline-base.sh", env={**docker.env, "OFFLINE_BASE_IMAGE": OFFLINE_BASE}, timeout=1800)
        assert done.returncode == 0, f"docker/offline-base.sh failed:\n{done.stderr[-4000:]}"
        metrics["offline_base_build_seconds"] = round(time.monotonic() - started, 1)
    metrics["offline_base_size_bytes"] = int(docker.run("image", "inspect", "-f", "{{.Size}}", OFFLINE_BASE).stdout)
    return OFFLINE_BASE


@pytest.fixture(scope="module")
def image(docker, base_image, quick_models, challengers, metrics):
    """The bento of the session's models, iris shadowed by its challenger, containerized
    under its default tag (the bento's: a new one per build); image, bento and build cache
    removed after."""
    env = {**docker.env, "BENTOML": str(Path(sys.executable).with_name("bentoml")), **shadowed_iris(challengers)}
    if base_image is not None:
        env["OFFLINE_BASE_IMAGE"] = base_image
    done = script("containerize.sh", env=env, timeout=3600)
    outputs = dict(re.findall(r"^(\w+)=(.*)$", done.stdout, re.M))
    tag = outputs.get("image", "")
    try:
        assert done.returncode == 0, f"docker/containerize.sh failed:\n{done.stderr[-6000:]}"
        assert tag == outputs["bento"] and re.fullmatch(r"model-serving:[a-z0-9]{16}", tag), outputs
        metrics["bento"] = outputs["bento"]
        metrics["build_seconds"] = round(float(outputs["build_seconds"]), 1)
        metrics["containerize_seconds"] = round(float(outputs["containerize_seconds"]), 1)
        metrics["image_size_bytes"] = int(outputs["image_size_bytes"])
        metrics["image_size_mb"] = round(int(outputs["image_size_bytes"]) / 1e6)
        yield tag
    finally:
        if tag:
            docker.run("rmi", "-f", tag, check=False)
        if "bento" in outputs:
            subprocess.run([env["BENTOML"], "delete", "-y", outputs["bento"]], capture_output=True, timeout=120)
        # vfs keeps a full copy per layer: drop the build cache (all of it only on our own engine).
        docker.run("builder", "prune", "-f", *(["-a"] if docker.ours else []), check=False, timeout=600)


def shadowed_iris(challengers) -> dict[str, str]:
    return {"IRIS_SHADOW_VERSION": challengers["iris"].tag.split(":", 1)[1]}


class Container:
    def __init__(self, docker: Docker, image: str, extra_env: dict[str, str] | None = None) -> None:
        self.docker = docker
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = f"model-serving-test-{self.port}"
        pod = deployment()["spec"]["template"]["spec"]
        self.grace = pod["terminationGracePeriodSeconds"]
        (container,) = pod["containers"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        env = {**configmap_env(), **{e["name"]: e["value"] for e in container["env"]}, "PORT": str(self.port),
               **(extra_env or {})}
        self.probes = {kind: container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
        limits = container["resources"]["limits"]
        args = ["run", "-d", "--name", self.name, "--network", "host",
                "--cpus", str(limits["cpu"]), "--memory", limits["memory"].replace("Gi", "g").replace("Mi", "m"),
                "--user", f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}",
                "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
        self.keys_folder = Path(tempfile.mkdtemp(prefix="container-keys-"))
        key = f"container-test-{os.urandom(8).hex()}"
        self.http = requests.Session()  # what a client with a key of every scope sends
        self.http.headers["Authorization"] = f"Bearer {key}"
        for mount in container["volumeMounts"]:
            if "secret" in volumes[mount["name"]]:  # the API keys Secret -> a read-only file, as mounted
                keys_file = Path(env["API_KEYS_FILE"])
                assert keys_file.parent == Path(mount["mountPath"]) and mount["readOnly"]
                local = self.keys_folder / keys_file.name
                local.write_text(line_for("container-test", ["predict", "read", "metrics"], key) + "\n")
                local.chmod(0o644)
                args += ["-v", f"{local}:{keys_file}:ro"]
                continue
            # emptyDir volumes -> tmpfs of the same size
            size = volumes[mount["name"]]["emptyDir"]["sizeLimit"].replace("Gi", "g").replace("Mi", "m")
            args += ["--tmpfs", f"{mount['mountPath']}:rw,exec,size={size}"]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        self.started = time.monotonic()
        try:
            docker.run(*args, image)  # no command or args: the image's entrypoint, as in the Deployment
        except AssertionError:
            self.remove()  # created but not started
            raise
        self.create_seconds = time.monotonic() - self.started  # vfs copies the whole image here

    def state(self) -> dict:
        return json.loads(self.docker.run("inspect", "-f", "{{json .State}}", self.name).stdout)

    def logs(self) -> str:
        done = self.docker.run("logs", "--tail", "80", self.name, check=False)
        return done.stdout + done.stderr

    def wait_ready(self, timeout: float = 600) -> float:
        """Seconds from `docker run` to /readyz 200; also records when /livez first answered."""
        deadline = time.monotonic() + timeout
        self.live_seconds: float | None = None
        while time.monotonic() < deadline:
            if not self.state()["Running"]:
                raise AssertionError(f"container exited: {self.state()}\n{self.logs()}")
            try:
                if self.live_seconds is None and requests.get(self.url + "/livez", timeout=2).status_code == 200:
                    self.live_seconds = time.monotonic() - self.started
                if requests.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - self.started
            except requests.RequestException:
                pass
            time.sleep(0.25)
        raise AssertionError(f"/readyz not 200 after {timeout} s:\n{self.logs()}")

    def remove(self) -> None:
        self.docker.run("rm", "-f", self.name, check=False)
        shutil.rmtree(self.keys_folder, ignore_errors=True)


@pytest.fixture(scope="module")
def container(docker, image, challengers, metrics):
    running = Container(docker, image, shadowed_iris(challengers))  # as the ConfigMap would set it
    try:
        metrics["ready_seconds"] = round(running.wait_ready(), 1)
        metrics["live_seconds"] = round(running.live_seconds or 0, 1)
        metrics["container_create_seconds"] = round(running.create_seconds, 1)
        yield running
    finally:
        running.remove()


def test_the_deployments_probes_pass_on_the_running_image(container, metrics):
    """The kubelet's view: every probe of k8s/deployment.yaml, its path and its timeout."""
    startup = container.probes["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert container.live_seconds is not None and container.live_seconds < budget, (
        f"/livez first answered after {container.live_seconds} s; the startup probe gives up after {budget} s")
    assert metrics["ready_seconds"] < budget, "not ready within the startup probe's budget"
    for kind, probe in container.probes.items():
        timeout = probe.get("timeoutSeconds", 1)  # the kubelet's default
        for _ in range(probe.get("failureThreshold", 3)):  # as many tries as the kubelet allows
            started = time.monotonic()
            response = container.http.get(container.url + probe["httpGet"]["path"], timeout=timeout)
            assert 200 <= response.status_code < 400, f"{kind} {probe['httpGet']['path']}: {response.status_code}"
            assert time.monotonic() - started < timeout


def test_the_build_version_is_the_image_tag_everywhere(container, image):
    """/metrics' service_version and /docs.json's x-build name the bento (= the image tag);
    info.version is the API's (pyproject's)."""
    bento_version = image.split(":")[1]
    document = container.http.get(container.url + "/docs.json", timeout=10).json()
    assert document["info"]["x-build"] == bento_version
    assert document["info"]["version"] == release.project_version()
    container.http.get(container.url + "/models", timeout=10)
    assert f'service_version="{bento_version}"' in container.http.get(container.url + "/metrics", timeout=10).text


def test_the_image_holds_the_challenger_only_of_the_shadowed_model_and_shadows_it(container, image, challengers,
                                                                                 quick_models):
    import bentoml

    held: dict[str, list[str]] = {}
    for model in bentoml.get(image).info.all_models:  # what the build packaged, every service
        held.setdefault(model.tag.name, []).append(str(model.tag.version))
    assert held, "the bento lists no model"
    assert {name: sorted(found) for name, found in held.items()} == {name: sorted([result.tag.split(":")[1]]
                                 + ([challengers[name].tag.split(":")[1]] if name == "iris" else []))
                    for name, result in quick_models.items()}
    report = container.http.get(f"{container.url}/models/iris/shadow", timeout=10).json()
    assert (report["champion"], report["challenger"]) == (quick_models["iris"].tag, challengers["iris"].tag)
    assert container.http.get(f"{container.url}/models/kobe/shadow", timeout=10).status_code == 404


def test_image_holds_the_pinned_stack(docker, container):
    """The image installed exactly serving-requirements.txt's versions, the venv's
    (tests/unit/test_stack.py checks the venv)."""
    pins = exact_pins(SERVING)
    program = ("import importlib.metadata as m, json, sys; "
               f"print(json.dumps({{n: m.version(n) for n in {sorted(pins)!r}}})); print(sys.version.split()[0])")
    done = docker.run("exec", container.name, "/app/.venv/bin/python", "-c", program)
    versions, python = done.stdout.strip().splitlines()[-2:]
    assert json.loads(versions) == pins
    assert python.startswith("3.11.")


def test_image_carries_no_tensorflow_keras_or_scikit_learn(docker, container):
    """The serving stack runs the CNN with LiteRT and the other models from their arrays:
    TensorFlow (1.3 GB), scikit-learn and SciPy stay training extras."""
    program = ("import importlib.metadata as m; "
               "print(sorted(d.metadata['Name'].lower() for d in m.distributions()))")
    installed = docker.run("exec", container.name, "/app/.venv/bin/python", "-c", program).stdout
    assert "'ai-edge-litert'" in installed
    for package in ("tensorflow", "tensorflow-cpu", "keras", "tf-keras", "mlflow", "scikit-learn", "scipy"):
        assert f"'{package}'" not in installed, f"{package} is in the image"


def test_image_carries_no_build_tools(docker, container):
    """Every package installs from a wheel: compilers would only add size (bentofile.yaml)."""
    done = docker.run("exec", container.name, "sh", "-c",
                      "for tool in gcc cc c++ make git curl; do command -v $tool; done; true")
    assert done.stdout.strip() == "", f"build tools in the image: {done.stdout.split()}"


def test_every_endpoint_matches_the_stored_models(container, settings, malaria_image_paths):
    import bentoml
    from sklearn.datasets import load_digits, load_iris

    url, http = container.url, container.http
    assert requests.get(url + "/models").status_code == 401, "keys are on, as in the Deployment"
    page = requests.get(url + "/ui")  # the page's files travel in the bento (open, like the probes)
    assert page.status_code == 200 and "/ui/ui.js" in page.text
    assert requests.get(url + "/ui/ui.js").status_code == 200
    assert http.get(url + "/livez").status_code == 200
    models = {m["name"]: m for m in http.get(url + "/models").json()["models"]}
    assert {name: m["tag"] for name, m in models.items()} == {
        name: str(bentoml.models.get(served_tag(name)).tag) for name in SPECS}

    iris = pd.DataFrame(load_iris().data[::10], columns=IRIS.feature_names)
    tag, probabilities = check(http.post(url + "/iris", json={"records": iris.to_dict("records")}), len(iris))
    expected = direct_probabilities(tag, validated_frame(iris.to_dict("records"), IRIS))
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6, atol=1e-9)

    raw = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_prod.parquet").head(20)
    rows = json.loads(raw.to_json(orient="records"))  # real Kaggle rows, every column
    tag, probabilities = check(http.post(url + "/kobe", json={"records": rows}), len(rows))
    np.testing.assert_allclose(probabilities, direct_probabilities(tag, validated_frame(rows, KOBE)),
                               rtol=1e-6, atol=1e-9)

    pixels = load_digits().data[:20]
    tag, probabilities = check(http.post(url + "/digits/pixels", json={"pixels": pixels.tolist()}), 20)
    np.testing.assert_allclose(probabilities, direct_probabilities(tag, pixels), rtol=1e-6, atol=1e-9)

    from service.preprocessing import encoded_image_to_array

    paths = malaria_image_paths["Parasitized"][:3] + malaria_image_paths["Uninfected"][:3]
    images = [p.read_bytes() for p in paths]
    files = [("images", (p.name, b, "image/png")) for p, b in zip(paths, images, strict=True)]
    response = http.post(url + "/malaria", files=files)
    tag, probabilities = check(response, len(images))
    arrays = np.stack([encoded_image_to_array(b, MALARIA.image) for b in images])
    np.testing.assert_allclose(probabilities, direct_probabilities(tag, arrays), rtol=1e-4, atol=1e-5)
    _, from_base64 = check(http.post(url + "/malaria/base64",
                                         json={"images": [base64.b64encode(b).decode() for b in images]}), len(images))
    np.testing.assert_allclose(from_base64, probabilities, rtol=1e-6, atol=1e-7)

    body = {"inputs": [{"name": "input", "shape": [len(iris), 4], "datatype": "FP32",
                        "data": iris.to_numpy(np.float32).tolist()}]}
    answer = http.post(url + "/v2/models/iris/infer", json=body)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    as_float32 = pd.DataFrame(iris.to_numpy(np.float32).astype(np.float64), columns=IRIS.feature_names)
    expected = direct_probabilities(models["iris"]["tag"], validated_frame(as_float32.to_dict("records"), IRIS))
    np.testing.assert_allclose(np.reshape(outputs["probabilities"]["data"], expected.shape), expected,
                               rtol=1e-6, atol=1e-9)
    assert outputs["label"]["data"] == [IRIS.class_names[i] for i in expected.argmax(axis=1)]

    assert "model_batch_requests" in http.get(url + "/metrics").text


def in_progress(container: Container, endpoint: str) -> float:
    try:
        text = container.http.get(container.url + "/metrics", timeout=2).text
    except requests.RequestException:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if "request_in_progress{" in line and f'endpoint="{endpoint}"' in line)


def test_the_container_fits_its_memory_request_after_serving(docker, container, metrics):
    """Resident memory of the container's processes (arbiter and worker) after every endpoint
    answered (the test above), against the Deployment's memory request."""
    pids = docker.run("top", container.name, "-eo", "pid").stdout.split()[1:]
    rss_kb = 0
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()  # the host sees the container's processes
        rss_kb += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    metrics["rss_mb_after_requests"] = round(rss_kb / 1024)
    request = deployment()["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"]
    assert request.endswith("Mi")
    assert rss_kb / 1024 < int(request[:-2]), f"{rss_kb / 1024:.0f} MB resident, above the {request} request"


def test_sigterm_lets_requests_in_flight_finish_within_the_grace_period(container, malaria_image_paths, metrics):
    """`docker kill --signal TERM` (what the kubelet sends) while 8 malaria uploads are mid-way."""
    paths = (malaria_image_paths["Parasitized"] + malaria_image_paths["Uninfected"])[:MALARIA.max_records_per_call]
    body, content_type = encode_multipart_formdata([("images", (p.name, p.read_bytes(), "image/png")) for p in paths])
    terminated = threading.Event()
    results: list[object] = [None] * IN_FLIGHT

    def upload():  # half the body now, the rest only once SIGTERM has been sent: surely in flight
        yield body[: len(body) // 2]
        terminated.wait(60)
        time.sleep(0.5)
        yield body[len(body) // 2:]

    def call(i: int) -> None:
        try:
            results[i] = container.http.post(container.url + "/malaria", data=upload(),
                                       headers={"Content-Type": content_type}, timeout=120)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(IN_FLIGHT)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 15
    while in_progress(container, "/malaria") < IN_FLIGHT and time.monotonic() < deadline:
        time.sleep(0.1)
    seen = in_progress(container, "/malaria")
    killed = time.monotonic()
    container.docker.run("kill", "--signal", "TERM", container.name)
    terminated.set()
    for thread in threads:
        thread.join(120)
    finished = time.monotonic() - killed

    exit_code = int(container.docker.run("wait", container.name, timeout=container.grace + 30).stdout.strip())
    stopped = time.monotonic() - killed
    metrics.update(shutdown_seconds=round(stopped, 1), shutdown_exit_code=exit_code,
                   in_flight_at_sigterm=seen, requests_finished_seconds=round(finished, 1))
    failures = [r if isinstance(r, Exception) else f"{r.status_code} {r.text[:200]}"
                for r in results if not (isinstance(r, requests.Response) and r.status_code == 200)]
    assert not failures, f"requests in flight at SIGTERM failed: {failures}\n{container.logs()}"
    for response in results:
        assert len(response.json()["predictions"]) == len(paths)
    assert seen >= IN_FLIGHT, f"only {seen} requests were in flight at SIGTERM"
    assert stopped < container.grace, f"container took {stopped:.1f} s to stop (grace {container.grace} s)"
    assert exit_code == 0, f"exit code {exit_code} after SIGTERM:\n{container.logs()}"
