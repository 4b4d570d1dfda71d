"""The KServe Python SDK's REST client (kserve 0.21), with its default settings, against
every model: binary inputs and whatever outputs it asks for by default.

kserve 0.21 pins pandas 2, protobuf and psutil versions that differ from the service's
stack, so it runs from a venv of its own, built once under .state/ from PyPI; it gets the
server's URL and the request tensors, and its answers are compared with the V2 route's
plain-JSON answers to the same tensors.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from service.specs import KOBE

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
KSERVE = "kserve==0.21.0"
CLIENT = r'''
import asyncio, json, sys
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

async def main():
    url, cases = sys.argv[1], json.loads(sys.stdin.read())
    client = InferenceRESTClient(RESTConfig(protocol="v2"))
    answers = {}
    for model, tensors in cases.items():
        inputs = []
        for tensor in tensors:
            if tensor["datatype"] == "BYTES":
                array = np.array([bytes.fromhex(v) for v in tensor["hex"]], dtype=object)
            else:
                array = np.array(tensor["data"], dtype=tensor["numpy"])
            value = InferInput(name=tensor["name"], shape=list(array.shape), datatype=tensor["datatype"])
            value.set_data_from_numpy(array)  # the SDK's default: binary_data=True
            inputs.append(value)
        response = await client.infer(url, InferRequest(model_name=model, infer_inputs=inputs), model_name=model)
        answers[model] = {o.name: [v.decode() if isinstance(v, bytes) else v for v in o.as_numpy().reshape(-1).tolist()]
                          for o in response.outputs}
    print(json.dumps(answers))

asyncio.run(main())
'''


@pytest.fixture(scope="session")
def kserve_python() -> Path:
    venv = PROJECT / ".state" / "kserve-venv"
    python = venv / "bin" / "python"
    marker = venv / f".{KSERVE}"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", KSERVE], capture_output=True, text=True,
                              timeout=900)
        if done.returncode != 0:
            pytest.skip(f"NO KSERVE SDK: pip install {KSERVE} failed: {done.stderr[-500:]}")
        marker.touch()
    return python


def cases(settings, malaria_image_paths) -> dict[str, list[dict]]:
    """Per model, the input tensors: numbers as lists with their numpy type, BYTES as hex."""
    from sklearn.datasets import load_digits

    shots = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_dev.parquet").head(3)
    kobe = []
    for feature in KOBE.features:
        column = shots[feature.name]
        if isinstance(column.iloc[0], str):
            kobe.append({"name": feature.name, "datatype": "BYTES", "hex": [v.encode().hex() for v in column]})
        else:
            kobe.append({"name": feature.name, "datatype": "INT64", "numpy": "int64", "data": column.tolist()})
    files = [p.read_bytes() for p in malaria_image_paths["Uninfected"][:3]]
    return {
        "iris": [{"name": "input", "datatype": "FP32", "numpy": "float32",
                  "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}],
        "digits": [{"name": "input", "datatype": "FP32", "numpy": "float32",
                    "data": load_digits().data[:4].tolist()}],
        "kobe": kobe,
        "malaria": [{"name": "image", "datatype": "BYTES", "hex": [f.hex() for f in files]}],
    }


def as_json_request(tensors: list[dict]) -> dict:
    """The same tensors as a plain JSON V2 request (images as base64 text)."""
    inputs = []
    for tensor in tensors:
        if tensor["datatype"] == "BYTES":
            values = [bytes.fromhex(v) for v in tensor["hex"]]
            data = [base64.b64encode(v).decode() if tensor["name"] == "image" else v.decode() for v in values]
            inputs.append({"name": tensor["name"], "datatype": "BYTES", "shape": [len(data)], "data": data})
        else:
            array = np.array(tensor["data"], dtype=tensor["numpy"])  # the values the client sends
            inputs.append({"name": tensor["name"], "datatype": tensor["datatype"], "shape": list(array.shape),
                           "data": array.tolist()})
    return {"inputs": inputs}


def test_kserve_sdk_with_its_defaults_gets_the_same_answers_as_json(server, settings, malaria_image_paths,
                                                                     kserve_python):
    requests_by_model = cases(settings, malaria_image_paths)
    done = subprocess.run([str(kserve_python), "-c", CLIENT, server.url], input=json.dumps(requests_by_model),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(answers) == {"iris", "digits", "kobe", "malaria"}
    for model, tensors in requests_by_model.items():
        reference = requests.post(f"{server.url}/v2/models/{model}/infer", json=as_json_request(tensors), timeout=30)
        assert reference.status_code == 200, reference.text
        expected = {o["name"]: o["data"] for o in reference.json()["outputs"]}
        assert answers[model]["label"] == expected["label"], model
        np.testing.assert_allclose(answers[model]["probabilities"], expected["probabilities"], rtol=1e-6,
                                   err_msg=model)
    assert answers["iris"]["label"] == ["setosa", "virginica"]
