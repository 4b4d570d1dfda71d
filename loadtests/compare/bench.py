"""Side-by-side HTTP benchmark of one endpoint: BentoML service, plain FastAPI, MLServer.

    BENTOML_HOME=/path/to/store /work/venv/bin/python loadtests/compare/bench.py --out results.md
    BENTOML_HOME=... DATA_DIR=../shared/data .../bench.py --model kobe --out kobe.md

--model picks the endpoint (iris, digits, kobe, malaria). MLServer serves the sklearn
models: iris and digits from one FP32 tensor, kobe from one tensor per column decoded to
a DataFrame (content type "pd"; its pipeline imports service.preprocessing, so MLServer
runs with the project on PYTHONPATH and needs pillow in its venv). The Keras CNN runs
without MLServer. Request bodies are built from the data at run time.

In each of --rounds interleaved rounds (the order reversed every other round), starts each
server in turn on 127.0.0.1, waits until it answers, checks one response, warms it up,
runs wrk at every concurrency and stops it; then writes a markdown report (--out): the
medians over the rounds, this service's throughput over each other server's per round
(ratios of runs minutes apart, so the machine's drift cancels), and every run, with how
busy the machine was outside the servers and wrk; a CSV goes beside it. The FastAPI
comparator is what a competent engineer would write (fastapi_app.py). See README.md here.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENV_BIN = Path(sys.executable).parent
LUA = HERE / "post.lua"
JSON_BODY = HERE / "request.json"
V2_BODY = HERE / "mlserver" / "request.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"


@dataclass
class Variant:
    key: str
    server: str
    batching: str  # "on", "off" or "n/a"
    port: int = 0
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = ""
    predict_path: str = ""
    body: Path = JSON_BODY


ALL_KEYS = ["bentoml-batch", "bentoml-nobatch", "bentoml-v2", "fastapi", "mlserver-batch", "mlserver-nobatch"]


@dataclass(frozen=True)
class Endpoint:
    route: str
    """The typed route, the same on the service and the FastAPI app."""
    mlserver: bool
    """MLServer's sklearn runtime can serve the same model from one FP32 tensor."""


ENDPOINTS = {
    "iris": Endpoint("/iris", True),
    "digits": Endpoint("/digits/pixels", True),
    "kobe": Endpoint("/kobe", True),
    "malaria": Endpoint("/malaria/base64", False),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="markdown output; the CSV goes beside it")
    p.add_argument("--model", default="iris", choices=sorted(ENDPOINTS), help="the endpoint (default iris)")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", REPO / "data")),
                   help="for the kobe and malaria request bodies (default $DATA_DIR)")
    p.add_argument("--servers", default="all",
                   help="comma list of servers (bentoml, fastapi, mlserver) or variants "
                        f"({', '.join(ALL_KEYS)}); default all")
    p.add_argument("--duration", type=int, default=15, help="seconds of wrk per concurrency (default 15)")
    p.add_argument("--concurrency", default="1,8,32,128", help="comma list (default 1,8,32,128)")
    p.add_argument("--rounds", type=int, default=3,
                   help="interleaved rounds: every server once per round, the order reversed every other round")
    p.add_argument("--warmup", type=int, default=3, help="seconds of warm-up load per server (default 3)")
    p.add_argument("--wrk-timeout", default="10s", help="wrk --timeout (default 10s; wrk's own is 2s)")
    p.add_argument("--port-base", type=int, default=18300, help="ports base..base+4 on 127.0.0.1")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/bench"), help="logs and MLServer model repo")
    p.add_argument("--mlserver-venv", type=Path, default=Path("/tmp/bench/mlserver-venv"))
    p.add_argument("--startup-timeout", type=float, default=300.0)
    return p.parse_args()


def select(spec: str) -> list[str]:
    if spec == "all":
        return list(ALL_KEYS)
    chosen: list[str] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        matches = [k for k in ALL_KEYS if k == item or k.split("-")[0] == item]
        if not matches:
            sys.exit(f"unknown server {item!r}; choose from bentoml, fastapi, mlserver, {', '.join(ALL_KEYS)}")
        chosen += [m for m in matches if m not in chosen]
    return [k for k in ALL_KEYS if k in chosen]  # always in the same order


# --- process and CPU accounting ---------------------------------------------------------------

def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += children.get(pid, [])
    return pids


def tree_cpu_seconds(root: int) -> float:
    """utime+stime of the live process tree, plus what its reaped children used (cutime+cstime)."""
    ticks = 0
    for pid in tree_pids(root):
        fields = _stat_fields(pid)
        if fields:
            ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return ticks / CLK_TCK


def machine_busy_seconds() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK  # guest time is already in user/nice


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


# --- servers ------------------------------------------------------------------------------------

def build_variants(keys: list[str], args: argparse.Namespace, base_env: dict[str, str],
                   bodies: dict[str, Path]) -> list[Variant]:
    variants = []
    route = ENDPOINTS[args.model].route
    for key in keys:
        server, _, mode = key.partition("-")
        batching = {"batch": "on", "nobatch": "off", "v2": "on", "": "n/a"}[mode]
        v = Variant(key, server, batching, env=dict(base_env))
        if server == "bentoml":
            v.port = args.port_base
            v.command = [str(VENV_BIN / "bentoml"), "serve", "service.service:ModelServing",
                         "--host", HOST, "--port", str(v.port)]
            v.env["ADAPTIVE_BATCHING"] = batching
            v.ready_path, v.predict_path, v.body = "/readyz", route, bodies["typed"]
            if mode == "v2":  # the same service, its Open Inference Protocol route
                v.predict_path, v.body = f"/v2/models/{args.model}/infer", bodies["v2-ours"]
        elif server == "fastapi":
            v.port = args.port_base + 1
            v.command = [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--app-dir", str(HERE),
                         "--loop", "uvloop", "--http", "httptools",
                         "--host", HOST, "--port", str(v.port), "--workers", "1", "--no-access-log"]
            v.ready_path, v.predict_path, v.body = "/readyz", route, bodies["typed"]
        else:
            v.port = args.port_base + 2
            v.command = [str(args.mlserver_venv / "bin" / "mlserver"), "start", str(args.work_dir / "mlserver-models")]
            # The pipeline was fitted on a DataFrame; a bare FP32 tensor makes sklearn warn
            # "X does not have valid feature names" on every call: keep that out of the log.
            v.env["PYTHONWARNINGS"] = "ignore::UserWarning"
            v.env["PYTHONPATH"] = str(REPO)  # kobe's pipeline calls service.preprocessing
            v.ready_path = f"/v2/models/{args.model}/ready"
            v.predict_path, v.body = f"/v2/models/{args.model}/infer", bodies["v2"]
        variants.append(v)
    return variants


def model_tag(name: str) -> str:
    import bentoml

    from service.versions import served_tag

    return str(bentoml.models.get(served_tag(name)).tag)


def v2_request(model: str, typed: dict[str, Any]) -> dict[str, Any] | None:
    """This service's V2 request for the same record: one FP32 [1, F] tensor `input` for the
    all-numeric models, one tensor per feature for kobe; None for malaria (image bytes)."""
    outputs = [{"name": "probabilities"}]
    if model == "iris":
        row = [typed["records"][0][k] for k in ("sepal_length", "sepal_width", "petal_length", "petal_width")]
        return {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [row]}], "outputs": outputs}
    if model == "digits":
        pixels = typed["pixels"][0]
        return {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [pixels]}],
                "outputs": outputs}
    if model == "kobe":
        sys.path.insert(0, str(REPO))
        from service.specs import KOBE, CategoricalFeature

        record = typed["records"][0]
        inputs = [{"name": f.name, "shape": [1], "data": [record[f.name]],
                   "datatype": "BYTES" if isinstance(f, CategoricalFeature) else ("INT64" if f.integer else "FP64")}
                  for f in KOBE.features]
        return {"inputs": inputs, "outputs": outputs}
    return None


def request_bodies(model: str, data_dir: Path, folder: Path) -> dict[str, Path]:
    """One-record request bodies for the typed route ("typed") and for V2 ("v2"), from the data."""
    folder.mkdir(parents=True, exist_ok=True)
    if model == "iris":
        paths = {"typed": JSON_BODY, "v2": V2_BODY, "v2-ours": folder / "iris-v2-ours.json"}
        paths["v2-ours"].write_text(json.dumps(v2_request("iris", json.loads(JSON_BODY.read_text()))))
        return paths
    v2 = None
    if model == "digits":
        from sklearn.datasets import load_digits

        pixels = load_digits().data[0].tolist()
        typed = {"pixels": [pixels]}
        v2 = {"inputs": [{"name": "input-0", "shape": [1, 64], "datatype": "FP32", "data": [pixels]}],
              "outputs": [{"name": "predict_proba"}]}
    elif model == "kobe":
        import pandas as pd

        sys.path.insert(0, str(REPO))  # the project's specs, run as a script from anywhere
        from service.specs import KOBE, CategoricalFeature

        row = pd.read_parquet(data_dir / "kobe" / "dataset_kobe_dev.parquet").head(1)
        typed = {"records": json.loads(row.to_json(orient="records"))}  # a raw Kaggle row, every column
        record = typed["records"][0]
        columns = []
        for feature in KOBE.features:  # one tensor per column, decoded by MLServer's pandas codec
            if isinstance(feature, CategoricalFeature):
                columns.append({"name": feature.name, "shape": [1], "datatype": "BYTES",
                                "parameters": {"content_type": "str"}, "data": [record[feature.name]]})
            else:
                columns.append({"name": feature.name, "shape": [1],
                                "datatype": "INT64" if feature.integer else "FP64", "data": [record[feature.name]]})
        v2 = {"parameters": {"content_type": "pd"}, "inputs": columns, "outputs": [{"name": "predict_proba"}]}
    else:
        import base64

        image = sorted((data_dir / "malaria" / "cell_images" / "Parasitized").glob("*.png"))[0]
        typed = {"images": [base64.b64encode(image.read_bytes()).decode()]}
    paths = {"typed": folder / f"{model}.json"}
    paths["typed"].write_text(json.dumps(typed))
    ours = v2_request(model, typed)
    if ours is not None:
        paths["v2-ours"] = folder / f"{model}-v2-ours.json"
        paths["v2-ours"].write_text(json.dumps(ours))
    if v2 is not None:
        paths["v2"] = folder / f"{model}-v2.json"
        paths["v2"].write_text(json.dumps(v2))
    return paths


def export_for_mlserver(args: argparse.Namespace) -> None:
    """The served version of NAME (service/versions.py) -> <work>/mlserver-models/NAME/model.joblib."""
    import bentoml
    import joblib

    from service.versions import served_tag

    model = bentoml.sklearn.load_model(served_tag(args.model))
    folder = args.work_dir / "mlserver-models" / args.model
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.joblib")


def write_mlserver_settings(v: Variant, args: argparse.Namespace) -> None:
    """The templates in mlserver/, with this run's ports and batching limits."""
    root = args.work_dir / "mlserver-models"
    settings = json.loads((HERE / "mlserver" / "settings.json").read_text())
    settings.update(http_port=v.port, grpc_port=args.port_base + 3, metrics_port=args.port_base + 4, host=HOST)
    (root / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    model = json.loads((HERE / "mlserver" / "model-settings.json").read_text())
    model["name"] = args.model
    if v.batching == "on":
        model.update(max_batch_size=64, max_batch_time=0.01)
    else:
        model.update(max_batch_size=0, max_batch_time=0.0)
    for stale in root.glob("*/model-settings.json"):  # one model per run
        stale.unlink()
    (root / args.model / "model-settings.json").write_text(json.dumps(model, indent=2) + "\n")


def http(method: str, url: str, body: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def start(v: Variant, log: Path, timeout: float, ports: list[int]) -> subprocess.Popen:
    for port in ports:
        if port_open(port):
            raise RuntimeError(f"port {port} is already in use on {HOST}; pick another --port-base")
    handle = log.open("wb")
    proc = subprocess.Popen(v.command, cwd=REPO, env=v.env, stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group, stopped as one
    handle.close()
    deadline = time.monotonic() + timeout
    url = f"http://{HOST}:{v.port}{v.ready_path}"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{v.key} exited with {proc.returncode}; see {log}")
        try:
            if http("GET", url, timeout=2)[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(1)
    stop(proc)
    raise RuntimeError(f"{v.key} not ready after {timeout:.0f}s; see {log}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group, SIGKILL after 30 s; waits for the leader."""
    if proc.poll() is None:
        pids = tree_pids(proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # anything of the tree that left the group (should be none)
        time.sleep(1)
        for pid in pids:
            if _stat_fields(pid) and pid != proc.pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def probabilities(v: Variant, payload: dict[str, Any]) -> list[float]:
    if v.server == "mlserver" or v.key == "bentoml-v2":
        return [float(x) for x in payload["outputs"][0]["data"]]
    return [float(x) for x in payload["predictions"][0]["probabilities"].values()]


def check_response(v: Variant) -> tuple[list[float], str]:
    status, body = http("POST", f"http://{HOST}:{v.port}{v.predict_path}", v.body.read_bytes(), timeout=30)
    if status != 200:
        raise RuntimeError(f"{v.key}: POST {v.predict_path} answered {status}: {body[:300]!r}")
    return probabilities(v, json.loads(body)), body.decode()[:400]


# --- load ---------------------------------------------------------------------------------------

def run_wrk(v: Variant, concurrency: int, seconds: int, timeout: str, raw: Path | None) -> dict[str, Any]:
    return wrk(f"http://{HOST}:{v.port}{v.predict_path}", v.body, concurrency, seconds, timeout, raw)


def wrk(url: str, body: Path, concurrency: int, seconds: int, timeout: str = "10s",
        raw: Path | None = None) -> dict[str, Any]:
    """POST body to url for `seconds` at `concurrency`: post.lua's WRK_RESULT (counts, latency in us)."""
    threads = 1 if concurrency == 1 else 2
    cmd = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "--latency", "--timeout", timeout,
           "-s", str(LUA), url]
    env = {**os.environ, "WRK_BODY_FILE": str(body)}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 120)
    if raw is not None:
        raw.write_text("$ " + shlex.join(cmd) + "\n" + out.stdout + out.stderr)
    match = re.search(r"^WRK_RESULT (\{.*\})$", out.stdout, re.M)
    if out.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    return json.loads(match.group(1))


def measure(v: Variant, proc: subprocess.Popen, concurrency: int, args: argparse.Namespace) -> dict[str, Any]:
    server0, machine0, children0 = tree_cpu_seconds(proc.pid), machine_busy_seconds(), children_cpu_seconds()
    raw = args.work_dir / "logs" / f"wrk-{v.key}-c{concurrency}.txt"
    result = run_wrk(v, concurrency, args.duration, args.wrk_timeout, raw)
    server_cpu = tree_cpu_seconds(proc.pid) - server0
    machine = machine_busy_seconds() - machine0
    wrk_cpu = children_cpu_seconds() - children0
    seconds = result["duration_us"] / 1e6
    requests = result["requests"]
    socket_errors = result["connect"] + result["read"] + result["write"] + result["timeout"]
    return {
        "variant": v.key, "server": v.server, "batching": v.batching, "concurrency": concurrency,
        "requests": requests, "seconds": round(seconds, 2),
        "req_per_s": round(requests / seconds, 1),
        "p50_ms": round(result["p50_us"] / 1000, 2), "p90_ms": round(result["p90_us"] / 1000, 2),
        "p99_ms": round(result["p99_us"] / 1000, 2), "max_ms": round(result["max_us"] / 1000, 1),
        "non2xx": result["non2xx"], "socket_errors": socket_errors,
        "socket_detail": f"connect {result['connect']} read {result['read']} write {result['write']} "
                         f"timeout {result['timeout']}",
        "server_cpu_s": round(server_cpu, 2),
        "cpu_ms_per_req": round(1000 * server_cpu / requests, 3) if requests else None,
        "server_cores": round(server_cpu / seconds, 2),
        "wrk_cores": round(wrk_cpu / seconds, 2),
        "other_cores": round(max(0.0, machine - server_cpu - wrk_cpu) / seconds, 2),
    }


# --- report -------------------------------------------------------------------------------------

def versions(python: Path, packages: list[str]) -> str:
    code = ("import importlib.metadata as m, sys\n"
            "for p in sys.argv[1:]:\n"
            "    try: print(f'{p}=={m.version(p)}')\n"
            "    except m.PackageNotFoundError: print(f'{p}: not installed')")
    out = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True)
    return ", ".join(out.stdout.splitlines())


def machine_summary() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    return f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, Python {platform.python_version()}"


def variant_key(row: dict[str, Any]) -> str:
    return row["variant"]


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Medians over the rounds, and this service's throughput over each other server's, per round."""
    if not rows:
        return []
    keys = list(dict.fromkeys(variant_key(r) for r in rows))
    levels = sorted({r["concurrency"] for r in rows})
    rounds = sorted({r["round"] for r in rows})
    find = {(variant_key(r), r["concurrency"], r["round"]): r for r in rows}
    lines = ["| server | concurrency | req/s (median) | CPU ms/request (median) | p99 ms (median) "
             "| worst other load (cores) |", "|---|---:|---:|---:|---:|---:|"]
    for key in keys:
        for c in levels:
            runs = [find[k] for k in ((key, c, n) for n in rounds) if k in find]
            if runs:
                lines.append(f"| {key} | {c} | {statistics.median(r['req_per_s'] for r in runs):,.0f} "
                             f"| {statistics.median(r['cpu_ms_per_req'] or 0 for r in runs):.3f} "
                             f"| {statistics.median(r['p99_ms'] for r in runs):.1f} "
                             f"| {max(r['other_cores'] for r in runs):.2f} |")
    ours = "bentoml-batch" if "bentoml-batch" in keys else keys[0]
    others = [k for k in keys if k != ours]
    if others:
        lines += ["", f"Throughput of {ours} over each other server, per round (same round, same machine state):",
                  "", "| concurrency | " + " | ".join(f"/ {k}" for k in others) + " |",
                  "|---:|" + "---|" * len(others)]
        for c in levels:
            cells = []
            for other in others:
                ratios = [find[(ours, c, n)]["req_per_s"] / find[(other, c, n)]["req_per_s"]
                          for n in rounds if (ours, c, n) in find and (other, c, n) in find]
                cells.append(f"**{statistics.median(ratios):.2f}** ({', '.join(f'{x:.2f}' for x in ratios)})"
                             if ratios else "n/a")
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return lines


def write_report(args: argparse.Namespace, rows: list[dict[str, Any]], info: dict[str, Any]) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    csv_path = args.out.with_suffix(".csv")
    if rows:
        with csv_path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    lines = [
        f"# {args.model} endpoint ({ENDPOINTS[args.model].route}): BentoML vs plain FastAPI"
        + (" vs MLServer" if ENDPOINTS[args.model].mlserver else ""),
        "",
        f"Run {info['started']} to {info['finished']} UTC on {machine_summary()}.",
        "",
        "```",
        info["command"],
        "```",
        "",
        *summary(rows),
        "",
        "Every run:",
        "",
        "| round | server | batching | concurrency | req/s | p50 ms | p99 ms | non-2xx | socket errors "
        "| CPU ms/request | server cores | other load (cores) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['round']} | {r['server']} | {r['batching']} | {r['concurrency']} | {r['req_per_s']:.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['non2xx']} | {r['socket_errors']} | {r['cpu_ms_per_req']} "
            f"| {r['server_cores']} | {r['other_cores']} |")
    lines += [
        "",
        f"CSV: `{csv_path}` (also p90, max, wrk's own CPU, socket error detail).",
        "",
        "- **CPU ms/request**: utime+stime (+ reaped children) of the server's whole process tree",
        "  from /proc, over the wrk run, divided by the requests wrk completed.",
        "- **server cores / other load**: server CPU per second of the run, and the machine's busy",
        "  CPU minus the server and wrk (other work on the box; anything above ~0.1 taints the row).",
        f"- wrk: `wrk -t2 -cN -d{args.duration}s --latency --timeout {args.wrk_timeout} -s {LUA} URL`"
        " (`-t1` at concurrency 1), one record (or image) per request, built by `request_bodies`,"
        f" after {args.warmup} s of warm-up at concurrency 8.",
        "",
        "## Servers",
        "",
    ]
    for key, detail in info["servers"].items():
        lines += [f"- **{key}**: `{detail['command']}`", f"  - sample response: `{detail['sample']}`"]
    lines += [
        "",
        f"Model: `{info['model_tag']}` from `BENTOML_HOME={os.environ.get('BENTOML_HOME')}`.",
        f"Max |difference| of the sample's probabilities across servers: {info.get('max_diff', 'n/a')}.",
        "",
        f"- /work/venv: {info['versions_main']}",
        f"- MLServer venv: {info.get('versions_mlserver', 'not used')}",
    ]
    if info.get("errors"):
        lines += ["", "## Problems", ""] + [f"- {e}" for e in info["errors"]]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out} and {csv_path}")


def main() -> int:
    args = parse_args()
    if not os.environ.get("BENTOML_HOME"):
        sys.exit("set BENTOML_HOME to the BentoML store that holds the models")
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"
    keys = select(args.servers)
    if not ENDPOINTS[args.model].mlserver:
        keys = [k for k in keys if not k.startswith("mlserver")]
    levels = [int(c) for c in args.concurrency.split(",")]
    (args.work_dir / "logs").mkdir(parents=True, exist_ok=True)
    base_env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True"}
    variants = build_variants(keys, args, base_env, request_bodies(args.model, args.data_dir, args.work_dir / "bodies"))
    info: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "command": f"BENTOML_HOME={os.environ['BENTOML_HOME']} {shlex.join([sys.executable, *sys.argv])}",
        "servers": {}, "errors": [], "model_tag": model_tag(args.model),
        "versions_main": versions(Path(sys.executable), ["bentoml", "fastapi", "uvicorn", "starlette", "pydantic",
                                                         "scikit-learn", "pandas", "numpy", "uvloop",
                                                         "httptools"]),
    }
    if any(v.server == "mlserver" for v in variants):
        info["versions_mlserver"] = versions(args.mlserver_venv / "bin" / "python",
                                             ["mlserver", "mlserver-sklearn", "scikit-learn", "uvloop", "httptools",
                                              "fastapi", "uvicorn", "numpy", "pandas"])
        export_for_mlserver(args)
    rows: list[dict[str, Any]] = []
    samples: dict[str, list[float]] = {}
    current: subprocess.Popen | None = None
    try:
        for number, v in ((n, v) for n in range(1, args.rounds + 1)
                          for v in (variants if n % 2 else variants[::-1])):
            print(f"== round {number}/{args.rounds}, {v.key}: starting", flush=True)
            if v.server == "mlserver":
                write_mlserver_settings(v, args)
            env_note = " ".join(f"{k}={v.env[k]}" for k in ("ADAPTIVE_BATCHING", "PYTHONWARNINGS") if k in v.env)
            try:
                ports = [v.port] + ([args.port_base + 3, args.port_base + 4] if v.server == "mlserver" else [])
                current = start(v, args.work_dir / "logs" / f"{v.key}.log", args.startup_timeout, ports)
                samples[v.key], sample = check_response(v)
            except RuntimeError as exc:
                info["errors"].append(str(exc))
                print(f"!! {exc}", flush=True)
                if current is not None:
                    stop(current)
                    current = None
                continue
            info["servers"][v.key] = {"command": f"{env_note} {shlex.join(v.command)}".strip(), "sample": sample}
            run_wrk(v, 8, args.warmup, args.wrk_timeout, None)  # warm-up
            time.sleep(1)
            for c in levels:
                row = {"round": number, **measure(v, current, c, args)}
                rows.append(row)
                print(f"   c={c:<4} {row['req_per_s']:>8.1f} req/s  p50 {row['p50_ms']:.2f} ms  "
                      f"p99 {row['p99_ms']:.2f} ms  non2xx {row['non2xx']}  sock {row['socket_errors']}  "
                      f"cpu {row['cpu_ms_per_req']} ms/req  other {row['other_cores']}", flush=True)
                time.sleep(2)
            stop(current)
            current = None
            time.sleep(2)
    finally:
        if current is not None:
            stop(current)
    if samples:
        reference = next(iter(samples.values()))
        info["max_diff"] = f"{max(abs(a - b) for s in samples.values() for a, b in zip(s, reference, strict=True)):.2e}"
    info["finished"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    write_report(args, rows, info)
    return 1 if info["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
