"""Every shell command of the docs, and how CI checks it.

The commands are read from the ```bash blocks of DOCUMENTS (continuation lines joined,
comments dropped). Each must match a rule; the first that matches says how it is checked:

- "run": run exactly as written, from the project root, against a server on
  127.0.0.1:3000 (tests/service/test_documented_commands.py);
- "background": a server of its own (mlflow ui): started, must answer, stopped;
- "options": a long job (benchmarks, soak): its `--help` must list every option written;
- "cluster": needs a Kubernetes cluster or a registry: checked for syntax, and the names
  it uses against the manifests (tests/unit/test_docs.py);
- "elsewhere": another test runs it; `detail` names the file, and a text that file must hold;
- "setup": installs a system package or a venv; `detail` says why it is not run.

A command no rule matches fails tests/unit/test_docs.py: a new command needs a rule (and
a reason when it is not "run").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "k8s/README.md", "docker/README.md", "loadtests/compare/README.md",
             "docs/adding-a-model.md")


@dataclass(frozen=True)
class Command:
    document: str
    block: int
    text: str


@dataclass(frozen=True)
class Rule:
    pattern: str
    kind: str
    detail: str = ""
    document: str = r".*"
    """Only commands of the documents this matches."""

    def matches(self, command: Command) -> bool:
        return bool(re.fullmatch(self.document, command.document) and re.match(self.pattern, command.text))


def commands(document: str) -> list[Command]:
    """The commands of the document's bash blocks, in order."""
    text = (PROJECT / document).read_text()
    found = []
    for number, block in enumerate(re.findall(r"^\s*```bash\n(.*?)^\s*```", text, re.M | re.S)):
        joined = re.sub(r"\\\n\s*", "", block)
        for line in joined.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                found.append(Command(document, number, line))
    return found


def python_examples(document: str) -> list[str]:
    """The document's ```python blocks (README's are requests to run as written)."""
    return re.findall(r"^```python\n(.*?)^```", (PROJECT / document).read_text(), re.M | re.S)


def all_commands() -> list[Command]:
    return [command for document in DOCUMENTS for command in commands(document)]


CONTAINER_TEST = "tests/deploy/test_container.py"
RULES = (
    # --- the wine guide: tests/service/test_fifth_model.py applies it to a copy of the project
    Rule(r".", "elsewhere", "tests/service/test_fifth_model.py|guide_blocks", document=r"docs/adding-a-model\.md"),
    # --- run as written, against the server
    Rule(r"curl -s localhost:3000/", "run"),
    Rule(r"export DATA_DIR=\$\{DATA_DIR:-\.\./shared/data\}$", "run"),
    Rule(r"\.venv/bin/python -m loadtests\.drift_plot ", "run"),
    Rule(r"\.venv/bin/python -m service\.batch ", "run"),
    Rule(r"\.venv/bin/python -m loadtests\.shadow_replay ", "run"),
    Rule(r"\.venv/bin/locust ", "run"),
    Rule(r"\.venv/bin/bentoml models (list$|get )", "run"),
    Rule(r"\.venv/bin/python -m training status", "run"),
    Rule(r"\.venv/bin/python -m training (promote|rollback) ", "elsewhere",
         "tests/training/test_roles.py|run_cli(\"promote\", \"iris\""),
    Rule(r"\.venv/bin/mlflow ui ", "background"),
    # --- API keys and tracing: files of their own, and servers started with them
    Rule(r"(\w+=\$\()?\.venv/bin/python -m service\.keys ", "elsewhere",
         "tests/unit/test_keys.py|def test_the_documented_key_commands_run_as_written"),
    Rule(r"API_KEYS_FILE=api-keys\.txt REQUIRE_API_KEYS=1 \.venv/bin/bentoml serve$", "elsewhere",
         "tests/conftest.py|\"API_KEYS_FILE\": str(self.keys_file), \"REQUIRE_API_KEYS\": \"1\""),
    Rule(r"OTEL_EXPORTER_OTLP_ENDPOINT=\S+ (OTEL_\w+=\S+ )*\.venv/bin/bentoml serve$",
         "elsewhere", "tests/service/test_tracing.py|\"OTEL_EXPORTER_OTLP_ENDPOINT\": receiver.url"),
    # --- the two set-up commands
    Rule(r"make run$", "elsewhere", "tests/unit/test_docs.py|make\", \"-n\", \"run\""),
    Rule(r"make test$", "elsewhere", ".ci/run|make test"),
    # --- long jobs: the options written must exist
    Rule(r"\.venv/bin/python -m training \{", "options", "the synopsis: every model and option in --help"),
    Rule(r"\.venv/bin/python loadtests/(sweep|soak)\.py ", "options", "minutes of load"),
    Rule(r"(DATA_DIR=\S+ )?\.venv/bin/python loadtests/compare/(bench|malaria_ceiling)\.py ", "options",
         "minutes of load, and MLServer's own venv"),
    # --- images: the container test runs the same scripts
    Rule(r"(IMAGE=\$\()?(OFFLINE_BASE_IMAGE=\S+ )?docker/containerize\.sh", "elsewhere",
         f"{CONTAINER_TEST}|script(\"containerize.sh\", env=env"),
    Rule(r"export DOCKER_HOST=\$\(docker/engine\.sh", "elsewhere", f"{CONTAINER_TEST}|engine.sh"),
    Rule(r"docker/offline-base\.sh$", "elsewhere", f"{CONTAINER_TEST}|offline-base.sh"),
    Rule(r"\.venv/bin/python -c 'import yaml", "elsewhere", "tests/unit/test_docs.py|bentofile.offline.yaml"),
    Rule(r"\.venv/bin/bentoml build -f ", "elsewhere", "docker/containerize.sh|build -f \"$bentofile\""),
    Rule(r"PATH=/usr/bin:\$PATH \.venv/bin/bentoml containerize ", "elsewhere",
         "docker/containerize.sh|containerize \"$bento\""),
    Rule(r"docker run --rm --network host -e PORT=3000 \"\$IMAGE\"$", "elsewhere",
         f"{CONTAINER_TEST}|\"--network\", \"host\""),
    Rule(r"docker run --network host --read-only ", "cluster", "the Deployment's settings, checked against it"),
    Rule(r"DATA_DIR=\S+ \.venv/bin/python -m pytest tests/deploy/test_container\.py", "elsewhere",
         ".ci/run|make test"),
    # --- a cluster or a registry
    Rule(r"(kind|minikube) ", "cluster", "loads an image into a local cluster"),
    Rule(r"docker tag \"\$IMAGE\" \"REGISTRY/", "cluster", "pushes to your registry"),
    Rule(r"k8s/set-image\.sh \"\$IMAGE\"$", "elsewhere", "tests/deploy/test_k8s.py|set-image.sh"),
    Rule(r"kubectl ", "cluster", "talks to a cluster"),
    # --- benchmark machines
    Rule(r"apt-get update && apt-get install -y wrk$", "setup", "a Debian package, as root"),
    Rule(r"(python3 -m venv|/tmp/bench/mlserver-venv/bin/pip install) ", "setup",
         "MLServer's venv for the benchmark (its pins clash with the service's)"),
)


def rule_for(command: Command) -> Rule | None:
    return next((rule for rule in RULES if rule.matches(command)), None)
