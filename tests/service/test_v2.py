"""The Open Inference Protocol (KServe V2 REST) against a real server.

Driven by hand-written requests shaped like the protocol's own examples, and by an
independent V2 client (tritonclient from PyPI) for every model.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest
import requests

from service.schemas import validated_frame
from service.specs import KOBE, SPECS
from tests.service.test_endpoints import batching_under_load, direct_probabilities

pytestmark = pytest.mark.slow

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def infer(server, model: str, body: dict, version: str | None = None) -> requests.Response:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    return requests.post(server.url + path, json=body)


def test_health_and_server_metadata(server):
    assert requests.get(f"{server.url}/v2/health/live").status_code == 200
    assert requests.get(f"{server.url}/v2/health/ready").status_code == 200
    metadata = requests.get(f"{server.url}/v2").json()
    assert metadata["name"] == "model-serving" and "version" in metadata and metadata["extensions"] == []


@pytest.mark.parametrize("name", list(SPECS))
def test_model_metadata_and_readiness(server, name):
    info = {m["name"]: m for m in requests.get(f"{server.url}/models").json()["models"]}[name]
    version = info["tag"].split(":")[1]
    for path in (f"/v2/models/{name}", f"/v2/models/{name}/versions/{version}"):
        metadata = requests.get(server.url + path).json()
        assert metadata["name"] == name and metadata["versions"] == [version]
        assert {o["name"] for o in metadata["outputs"]} == {"label", "probabilities"}
        for tensor in metadata["inputs"] + metadata["outputs"]:
            assert set(tensor) == {"name", "datatype", "shape"}
    assert requests.get(f"{server.url}/v2/models/{name}/ready").json() == {"name": name, "ready": True}
    assert requests.get(f"{server.url}/v2/models/{name}/versions/{version}/ready").status_code == 200


def test_protocol_example_request_and_response(server):
    """The shape of the protocol's own example: id, parameters, requested outputs, row-major data."""
    body = {"id": "42", "parameters": {"trace": "abc"},
            "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": IRIS_ROWS}],
            "outputs": [{"name": "probabilities"}]}
    response = infer(server, "iris", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == "iris" and answer["id"] == "42" and answer["parameters"] == {"trace": "abc"}
    assert [o["name"] for o in answer["outputs"]] == ["probabilities"]
    probabilities = answer["outputs"][0]
    assert probabilities["datatype"] == "FP64" and probabilities["shape"] == [2, 3]
    as_fp32 = np.asarray(IRIS_ROWS, dtype=np.float32).astype(np.float64).tolist()  # what FP32 data holds
    records = [dict(zip(SPECS["iris"].feature_names, r, strict=True)) for r in as_fp32]
    typed = requests.post(f"{server.url}/iris", json={"records": records}).json()
    expected = [[p["probabilities"][c] for c in SPECS["iris"].class_names] for p in typed["predictions"]]
    np.testing.assert_allclose(np.reshape(probabilities["data"], (2, 3)), expected, rtol=1e-9)
    flat = dict(body, inputs=[dict(body["inputs"][0], data=sum(IRIS_ROWS, []))])  # flat data, same answer
    assert infer(server, "iris", flat).json()["outputs"] == answer["outputs"]


def test_kobe_by_named_feature_tensors_matches_the_model(server, settings):
    rows = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_prod.parquet").head(10)
    inputs = []
    for feature in KOBE.features:
        values = rows[feature.name].tolist()
        datatype = "BYTES" if isinstance(values[0], str) else "INT64"
        inputs.append({"name": feature.name, "datatype": datatype, "shape": [len(values)], "data": values})
    answer = infer(server, "kobe", {"inputs": inputs}).json()
    outputs = {o["name"]: o for o in answer["outputs"]}
    tag = f"kobe:{answer['model_version']}"
    expected = direct_probabilities(tag, validated_frame(rows.to_dict("records"), KOBE))
    np.testing.assert_allclose(np.reshape(outputs["probabilities"]["data"], (10, 2)), expected, rtol=1e-6)
    assert outputs["label"]["data"] == [KOBE.class_names[i] for i in expected.argmax(axis=1)]


def triton_answers(server, settings, malaria_image_paths, binary: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(labels, probabilities) per model from tritonclient: with its defaults (binary inputs,
    outputs not named, so all of them come back binary) or, binary=False, plain JSON."""
    import tritonclient.http as triton
    from sklearn.datasets import load_digits

    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    outputs = None if binary else [triton.InferRequestedOutput(n, binary_data=False)
                                   for n in ("label", "probabilities")]

    def run(model: str, inputs: list) -> tuple[np.ndarray, np.ndarray]:
        assert client.is_model_ready(model)
        result = client.infer(model, inputs, outputs=outputs, request_id="t1")
        assert result.get_response()["id"] == "t1"
        labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").tolist()]
        return np.array(labels), result.as_numpy("probabilities")

    def tensor(name: str, array: np.ndarray, datatype: str):
        value = triton.InferInput(name, list(array.shape), datatype)
        if binary:
            value.set_data_from_numpy(array)  # the client's default: binary_data=True
        else:
            value.set_data_from_numpy(array, binary_data=False)
        return value

    answers = {"iris": run("iris", [tensor("input", np.array(IRIS_ROWS, dtype=np.float32), "FP32")])}
    answers["digits"] = run("digits", [tensor("input", load_digits().data[:5].astype(np.float32), "FP32")])
    shots = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_dev.parquet").head(3)
    kobe_inputs = []
    for feature in KOBE.features:
        text = isinstance(shots[feature.name].iloc[0], str)
        column = shots[feature.name].to_numpy(dtype=object if text else np.int64)
        kobe_inputs.append(tensor(feature.name, column, "BYTES" if text else "INT64"))
    answers["kobe"] = run("kobe", kobe_inputs)
    files = [p.read_bytes() for p in malaria_image_paths["Parasitized"][:3]]
    # JSON carries BYTES as text (base64); the binary extension carries the files themselves.
    images = np.array(files if binary else [base64.b64encode(f) for f in files], dtype=object)
    answers["malaria"] = run("malaria", [tensor("image", images, "BYTES")])
    return answers


@pytest.mark.parametrize("binary", [True, False], ids=["client-defaults-binary", "json"])
def test_independent_v2_client_drives_every_model(server, settings, malaria_image_paths, binary):
    from sklearn.datasets import load_digits

    answers = triton_answers(server, settings, malaria_image_paths, binary)
    assert answers["iris"][0].tolist() == ["setosa", "virginica"]
    assert (answers["digits"][1].argmax(axis=1) == load_digits().target[:5]).mean() >= 0.8
    assert answers["kobe"][1].shape == (3, 2)
    assert answers["malaria"][1].shape == (3, 2) and answers["malaria"][1].dtype == np.float32


def test_binary_and_json_requests_give_the_same_answers(server, settings, malaria_image_paths):
    """Metamorphic: the same tensors, sent binary or as JSON, give identical answers."""
    binary = triton_answers(server, settings, malaria_image_paths, binary=True)
    plain = triton_answers(server, settings, malaria_image_paths, binary=False)
    for model in binary:
        assert binary[model][0].tolist() == plain[model][0].tolist(), model
        np.testing.assert_array_equal(binary[model][1], plain[model][1], err_msg=model)


def test_fp32_data_gives_one_answer_as_json_or_binary(server):
    """JSON data is read as its declared datatype: an FP32 row whose float64 and float32
    values differ answers exactly as the same row sent binary."""
    row = [6.0, 2.9, 4.8, 1.711891369482983]
    as_json = infer(server, "iris", {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": row}]})
    header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                     "parameters": {"binary_data_size": 16}}]}).encode()
    as_binary = requests.post(f"{server.url}/v2/models/iris/infer", data=header + np.array(row, "<f4").tobytes(),
                              headers={"Inference-Header-Content-Length": str(len(header))})
    assert as_json.status_code == as_binary.status_code == 200, as_json.text + as_binary.text
    assert as_json.json()["outputs"] == as_binary.json()["outputs"]


def test_pixels_tensor_equals_the_encoded_image(server, malaria_image_paths):
    from PIL import Image

    path = malaria_image_paths["Uninfected"][0]
    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.uint8).reshape(1, 50, 50, 1)
    by_pixels = infer(server, "malaria", {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 50, 50, 1],
                                                       "data": pixels.reshape(-1).tolist()}]}).json()
    by_image = infer(server, "malaria", {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                                      "data": [base64.b64encode(path.read_bytes()).decode()]}]}).json()
    assert by_pixels["outputs"] == by_image["outputs"]


def test_v2_and_typed_calls_share_one_batcher(server, malaria_image_paths):
    """Malaria: its model runs on its own thread, so concurrent calls queue up and batch."""
    image = base64.b64encode(malaria_image_paths["Parasitized"][0].read_bytes()).decode()
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [image]}]}

    def call(i: int) -> int:
        if i % 2:
            return infer(server, "malaria", body).status_code
        return requests.post(f"{server.url}/malaria/base64", json={"images": [image]}).status_code

    merged, calls = batching_under_load(server, "malaria", call)
    assert merged == 256 and calls < 256


ERRORS = {
    "unknown model": ("resnet", None, {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                                    "data": IRIS_ROWS[0]}]}, 404, "unknown model"),
    "unknown version": ("iris", "0000", {"inputs": []}, 404, "no version"),
    "unknown input name": ("iris", None, {"inputs": [{"name": "petals", "datatype": "FP32", "shape": [1, 4],
                                                       "data": IRIS_ROWS[0]}]}, 400, "unknown input"),
    "shape does not match data": ("iris", None, {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
                                                              "data": IRIS_ROWS[0]}]}, 400, "holds 8 values"),
    "wrong datatype": ("iris", None, {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1, 4],
                                                   "data": ["a", "b", "c", "d"]}]}, 400, "numeric"),
    "strings in a numeric tensor": ("iris", None, {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                                                "data": ["5", 1, 1, 1]}]}, 400, "must be numbers"),
    "unsupported datatype": ("iris", None, {"inputs": [{"name": "input", "datatype": "FP128", "shape": [1, 4],
                                                        "data": IRIS_ROWS[0]}]}, 400, "unsupported datatype"),
    "out of range value": ("iris", None, {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                                       "data": [5.1, 3.5, 1.4, -2]}]}, 400, "petal_width"),
    "no inputs": ("iris", None, {"outputs": [{"name": "label"}]}, 400, "inputs"),
    "unknown output": ("iris", None, {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                                   "data": IRIS_ROWS[0]}], "outputs": [{"name": "logits"}]},
                       400, "unknown output"),
    "unknown category": ("kobe", None, None, 400, "action_type"),
    "bad image": ("malaria", None, {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                                "data": [base64.b64encode(b"nope").decode()]}]}, 400, "images[0]"),
    "wrong pixel shape": ("malaria", None, {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 4],
                                                        "data": [0, 0, 0, 0]}]}, 400, "pixels"),
    "input and per-feature tensors": ("iris", None, {"inputs": [
        {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": IRIS_ROWS[0]},
        {"name": "sepal_length", "datatype": "FP64", "shape": [1], "data": [9.9]}]}, 400, "not both"),
    "value outside UINT8": ("malaria", None, {"inputs": [{"name": "pixels", "datatype": "UINT8",
                                                          "shape": [1, 50, 50, 1], "data": [-5] + [0] * 2499}]},
                            400, "outside UINT8's range"),
    "value outside INT8": ("iris", None, {"inputs": [
        {"name": n, "datatype": "INT8", "shape": [1], "data": [200 if n == "sepal_length" else 1]}
        for n in ("sepal_length", "sepal_width", "petal_length", "petal_width")]}, 400, "outside INT8's range"),
    "integer too large for any float": ("iris", None, {"inputs": [{"name": "input", "datatype": "FP32",
                                                                   "shape": [1, 4], "data": [10**400, 1, 1, 1]}]},
                                        400, "outside FP32's range"),
    "ragged nesting": ("iris", None, {"inputs": [{"name": "input", "datatype": "FP64", "shape": [2, 4],
                                                  "data": [IRIS_ROWS[0], IRIS_ROWS[0][:3] + [[1.0]]]}]},
                       400, "input"),
    "nesting against the shape": ("iris", None, {"inputs": [{"name": "input", "datatype": "FP64", "shape": [2, 4],
                                                             "data": [IRIS_ROWS[0] + IRIS_ROWS[0]]}]},
                                  400, "must follow the shape"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_protocol_errors_are_4xx_with_an_error_string(server, settings, case):
    model, version, body, status, fragment = ERRORS[case]
    if body is None:  # kobe with one unknown category
        row = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_dev.parquet").head(1)
        body = {"inputs": [{"name": f.name, "datatype": "BYTES" if isinstance(row[f.name].iloc[0], str) else "INT64",
                            "shape": [1], "data": ["Moonshot" if f.name == "action_type" else row[f.name].iloc[0]]}
                           for f in KOBE.features]}
        body = json.loads(json.dumps(body, default=int))
    response = infer(server, model, body, version)
    assert response.status_code == status, response.text
    answer = response.json()
    assert set(answer) == {"error"} and isinstance(answer["error"], str) and fragment in answer["error"]


BINARY_ERRORS = {  # (JSON header, binary part, declared header length or None for the real one, fragment)
    "header length beyond the body": (b"{}", b"", "99", "within the body"),
    "header length not a number": (b"{}", b"", "-1", "byte count"),
    "header length in non-ASCII digits": (b"{}", b"", "\u00b2", "byte count"),
    "binary size beyond the data": (
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 32}}]},
        np.array(IRIS_ROWS[0], dtype="<f4").tobytes(), None, "does not fit"),
    "bytes left over": (
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}]},
        np.array(IRIS_ROWS[0], dtype="<f4").tobytes() + b"xx", None, "after the last binary input"),
    "not whole values": (
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 15}}]},
        np.array(IRIS_ROWS[0], dtype="<f4").tobytes()[:15], None, "whole number"),
    "data and binary both": (
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": IRIS_ROWS[0],
                     "parameters": {"binary_data_size": 16}}]},
        np.array(IRIS_ROWS[0], dtype="<f4").tobytes(), None, "both data and binary_data_size"),
    "NaN in binary": (
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}]},
        np.array([5.1, np.nan, 1.4, 0.2], dtype="<f4").tobytes(), None, "NaN"),
    "BYTES element cut short": (
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}]},
        b"\x10\x00\x00\x00ab", None, "runs past"),
}


def test_malformed_json_is_refused(server):
    response = requests.post(f"{server.url}/v2/models/iris/infer", data=b"{not json",
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "malformed JSON" in response.json()["error"]


@pytest.mark.parametrize("case", list(BINARY_ERRORS))
def test_malformed_binary_requests_are_400_with_the_reason(server, case):
    header, binary, declared, fragment = BINARY_ERRORS[case]
    header = header if isinstance(header, bytes) else json.dumps(header).encode()
    model = "malaria" if "BYTES" in case else "iris"
    response = requests.post(f"{server.url}/v2/models/{model}/infer", data=header + binary,
                             headers={"Inference-Header-Content-Length": declared or str(len(header))})
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]
