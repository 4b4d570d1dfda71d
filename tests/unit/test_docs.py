"""The files the docs' commands upload exist (`curl -F images=@PATH`, run from the project root)."""

from __future__ import annotations

import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
DOCS = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md")), *sorted(PROJECT.glob("*/README.md"))]


def test_every_file_a_documented_command_uploads_exists():
    uploads = {(doc.name, path) for doc in DOCS for path in re.findall(r"=@([^\s'\"]+)", doc.read_text())}
    assert ("README.md", "examples/cells/cell1.png") in uploads
    missing = sorted((doc, path) for doc, path in uploads if not (PROJECT / path).is_file())
    assert not missing, missing


def test_the_offline_bentofile_snippet_runs_as_written(tmp_path):
    """docker/README.md's by-hand command (it failed with KeyError: 'docker'), run from the
    project root with its output path moved into tmp_path."""
    import subprocess
    import sys

    import yaml

    text = (PROJECT / "docker" / "README.md").read_text()
    (command,) = re.findall(r"^\s*(\.venv/bin/python -c '.*bentofile\.offline\.yaml.*')$", text, re.MULTILINE)
    program = command.split("-c ", 1)[1].strip("'").replace("/tmp/bentofile.offline.yaml",
                                                              str(tmp_path / "offline.yaml"))
    subprocess.run([sys.executable, "-c", program], cwd=PROJECT, check=True)
    written = yaml.safe_load((tmp_path / "offline.yaml").read_text())
    original = yaml.safe_load((PROJECT / "bentofile.yaml").read_text())
    assert written["docker"]["base_image"] == "local/python-base:bookworm"
    assert {k: v for k, v in written.items() if k != "docker"} == {k: v for k, v in original.items() if k != "docker"}


def test_make_run_serves_this_machine_only_unless_told():
    import subprocess

    def serve_line(*args: str) -> str:
        printed = subprocess.run(["make", "-n", "run", *args], cwd=PROJECT, capture_output=True, text=True).stdout
        return [line for line in printed.splitlines() if "bentoml serve" in line][-1]

    assert serve_line().endswith("bentoml serve --host 127.0.0.1")
    assert serve_line("SERVE_HOST=0.0.0.0").endswith("bentoml serve --host 0.0.0.0")


# --- every documented command has a check (tests/documented.py) ------------------------------

def test_every_documented_command_has_a_rule_and_every_rule_a_command():
    from tests.documented import RULES, all_commands, rule_for

    found = all_commands()
    assert len(found) > 40, "the extraction lost the docs' commands"
    unmatched = [(c.document, c.text) for c in found if rule_for(c) is None]
    assert not unmatched, f"documented commands with no check: add a rule in tests/documented.py: {unmatched}"
    used = {rule_for(c) for c in found}
    assert not [r.pattern for r in RULES if r not in used], "rules for commands the docs no longer have"
    assert sum(rule_for(c).kind == "run" for c in found) >= 25


def test_commands_run_elsewhere_are_in_the_file_that_runs_them():
    from tests.documented import all_commands, rule_for

    for command in all_commands():
        rule = rule_for(command)
        if rule.kind == "elsewhere":
            path, text = rule.detail.split("|", 1)
            assert text in (PROJECT / path).read_text(), f"{command.text!r}: {path} no longer holds {text!r}"


def test_long_jobs_take_every_option_the_docs_write():
    import subprocess
    import sys

    from tests.documented import all_commands, rule_for

    for command in [c for c in all_commands() if rule_for(c).kind == "options"]:
        words = command.text.split()
        start = next(i for i, w in enumerate(words) if w.endswith("/python"))
        program = words[start + 1:start + 3] if words[start + 1] == "-m" else words[start + 1:start + 2]
        shown = subprocess.run([sys.executable, *program, "--help"], cwd=PROJECT, capture_output=True, text=True,
                               timeout=120)
        assert shown.returncode == 0, shown.stderr
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", command.text):
            assert option in shown.stdout, f"{command.text!r}: {option} is not an option of {program}"
        for choice in re.findall(r"\{([^}]*)\}", command.text):  # a synopsis: {digits,iris,...}
            assert "{" + choice + "}" in shown.stdout, f"{command.text!r}: the choices are not {choice}"


def test_cluster_commands_parse_and_name_what_the_manifests_define():
    import subprocess

    from tests.deploy.test_k8s import K8S, load, render
    from tests.documented import all_commands, rule_for

    manifests = {(doc["kind"], doc["metadata"]["name"]): doc for doc in render()}
    cluster = [c for c in all_commands() if rule_for(c).kind == "cluster"]
    for command in cluster:
        parsed = subprocess.run(["bash", "-n", "-c", command.text], capture_output=True, text=True)
        assert parsed.returncode == 0, f"{command.text!r}: {parsed.stderr}"
        for name in re.findall(r"\bdeploy/([\w-]+)", command.text):
            assert ("Deployment", name) in manifests, command.text
        for name, _local, remote in re.findall(r"\bsvc/([\w-]+) (\d+):(\d+)", command.text):
            ports = manifests[("Service", name)]["spec"]["ports"]
            assert int(remote) in [p["port"] for p in ports], command.text
        for path in re.findall(r"kubectl apply -f (\S+)", command.text):
            assert (PROJECT / path).is_file(), command.text
        for path in re.findall(r"kubectl apply -k (\S+)", command.text):
            assert (PROJECT / path / "kustomization.yaml").is_file(), command.text

    (docker_run,) = [c.text for c in cluster if c.text.startswith("docker run")]
    deployment = manifests[("Deployment", "model-serving")]["spec"]["template"]["spec"]
    (container,) = deployment["containers"]
    limits = container["resources"]["limits"]
    assert f"--memory {limits['memory'].removesuffix('Gi')}g" in docker_run, "docker run like the Deployment: its limit"
    assert f"--cpus {limits['cpu']}" in docker_run
    context = deployment["securityContext"]
    assert f"--user {context['runAsUser']}:{context['runAsGroup']}" in docker_run
    settings = load(K8S / "configmap.yaml")["data"]
    for mount in container["volumeMounts"]:
        if mount.get("readOnly"):  # the keys Secret: the file API_KEYS_FILE names, read-only
            assert f":{settings['API_KEYS_FILE']}:ro\"" in docker_run, mount
            assert settings["API_KEYS_FILE"].startswith(mount["mountPath"] + "/"), mount
        else:
            assert f"--tmpfs {mount['mountPath']}" in docker_run, mount
    settings = load(K8S / "configmap.yaml")["data"]
    for key, value in re.findall(r"-e (\w+)=(\S+)", docker_run):
        assert key == "PORT" or key == "BENTOML_HOME" or settings.get(key) == value, (key, value)
