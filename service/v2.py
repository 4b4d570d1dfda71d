"""The Open Inference Protocol (KServe V2, REST/JSON): tensors <-> the batchers' rows.

Tensor choices, derived from the model specs:
- tabular models (iris, kobe): one tensor per feature, named like the feature, shape [N]
  (or [N, 1]): FP32/FP64 for numbers, INT64/INT32 for integer features, BYTES for
  categories. All-numeric models (iris, digits) also take one [N, F] tensor `input`.
- digits: `input` FP32 [N, 64] (0-16, scikit-learn's pixels), or `image` BYTES [N].
- image models: `image` BYTES [N], each element a base64 image of any size (PNG, JPEG, WebP, BMP, TIFF or GIF); or
  `pixels` UINT8/FP32 [N, H, W, C] of intensities 0-255 in the model's size and colour
  mode (the server applies the model's scaling).
Outputs: `label` BYTES [N] and `probabilities` FP32/FP64 [N, classes].

The binary tensor data extension (what tritonclient and the KServe SDK send by default):
with an `Inference-Header-Content-Length: L` header, the body's first L bytes are the JSON
request and the rest holds the inputs that carry `parameters.binary_data_size`, in order:
little-endian row-major values, BYTES as 4-byte little-endian lengths each followed by its
bytes (for images: the encoded file itself, not base64). Outputs are sent the same way
when the request asks (`parameters.binary_data_output`, or `binary_data` on an output).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydantic_core
from starlette.requests import ClientDisconnect, Request

from service.decoding import image_rows
from service.errors import CLIENT_CLOSED_REQUEST, InvalidInput, ServiceError
from service.preprocessing import decode_base64
from service.schemas import validated_records
from service.specs import CategoricalFeature, ModelSpec

NUMERIC_TYPES = {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
INTEGER_TYPES = {t for t in NUMERIC_TYPES if "INT" in t}
BINARY_DTYPES = {"FP16": "<f2", "FP32": "<f4", "FP64": "<f8", "INT8": "<i1", "INT16": "<i2", "INT32": "<i4",
                 "INT64": "<i8", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8"}
HEADER_LENGTH = "inference-header-content-length"
OUTPUTS = ("label", "probabilities")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


def input_tensors(spec: ModelSpec) -> list[TensorSpec]:
    """The inputs a model's metadata advertises (every accepted form)."""
    tensors = []
    if spec.features and all(not isinstance(f, CategoricalFeature) for f in spec.features):
        tensors.append(TensorSpec("input", "FP32", [-1, len(spec.features)]))
    if spec.task == "tabular":
        for feature in spec.features:
            if isinstance(feature, CategoricalFeature):
                datatype = "BYTES"
            else:
                datatype = "INT64" if feature.integer else "FP64"
            tensors.append(TensorSpec(feature.name, datatype, [-1]))
    if spec.image is not None:
        tensors.append(TensorSpec("image", "BYTES", [-1]))
        if not spec.features:
            image = spec.image
            tensors.append(TensorSpec("pixels", "UINT8", [-1, image.height, image.width, image.channels]))
    return tensors


def output_tensors(spec: ModelSpec, probability_type: str) -> list[TensorSpec]:
    return [TensorSpec("label", "BYTES", [-1]),
            TensorSpec("probabilities", probability_type, [-1, len(spec.class_names)])]


def _flat(tensor: dict[str, Any]) -> tuple[str, str, list[int], list[Any]]:
    """Check one request tensor's fields and that its data fills its shape."""
    name = tensor.get("name")
    datatype = tensor.get("datatype")
    shape = tensor.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
        raise InvalidInput("every input needs a string name, a string datatype and a shape list")
    if not isinstance(tensor.get("parameters", {}), dict):
        raise InvalidInput(f"input {name!r}: parameters must be an object")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput(f"input {name!r}: shape {shape} must be non-negative integers")
    if "data" not in tensor:
        raise InvalidInput(f"input {name!r}: no data (nor binary_data_size with the binary extension)")
    if not isinstance(tensor["data"], list):
        raise InvalidInput(f"input {name!r}: data must be a list")
    if datatype != "BYTES" and datatype not in NUMERIC_TYPES:
        raise InvalidInput(f"input {name!r}: unsupported datatype {datatype!r}")
    data = _row_major(name, tensor["data"], shape)
    if len(data) != math.prod(shape):
        raise InvalidInput(f"input {name!r}: shape {shape} holds {math.prod(shape)} values, "
                           f"data has {len(data)}")
    if datatype == "BYTES":
        if not all(isinstance(v, (str, bytes)) for v in data):  # bytes: from the binary extension
            raise InvalidInput(f"input {name!r}: BYTES data must be strings")
        return name, datatype, shape, data
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data):
        raise InvalidInput(f"input {name!r}: {datatype} data must be numbers")
    return name, datatype, shape, as_datatype(name, datatype, data)


def as_datatype(name: str, datatype: str, data: list[Any]) -> list[Any]:
    """Numbers as the declared datatype holds them, as Triton reads JSON data: FP32 values
    rounded to float32 (so JSON and binary data give one answer); integers and values
    outside the datatype's range refused."""
    dtype = np.dtype(BINARY_DTYPES[datatype])
    if dtype.kind in "iu":
        if not all(isinstance(v, int) or v.is_integer() for v in data):
            raise InvalidInput(f"input {name!r}: {datatype} data must be integers")
        info = np.iinfo(dtype)
        if not all(info.min <= v <= info.max for v in data):
            raise InvalidInput(f"input {name!r}: a value is outside {datatype}'s range {info.min} to {info.max}")
        return data
    try:
        values = np.asarray(data, dtype=np.float64)
    except OverflowError:
        values = np.array([math.inf])
    with np.errstate(over="ignore"):
        held = values.astype(dtype)
    if not np.isfinite(held).all():
        raise InvalidInput(f"input {name!r}: a value is outside {datatype}'s range")
    return data if dtype == np.float64 else held.tolist()


def _row_major(name: str, data: list[Any], shape: list[int]) -> list[Any]:
    """Flat data as it is, or data nested exactly as the shape says, flattened in row-major
    order; ragged nesting, or nesting that contradicts the shape, is refused.

    Iterative: a deeply nested list from a client cannot exhaust the stack.
    """
    if not any(isinstance(item, list) for item in data):
        return data
    if not shape or len(data) != shape[0]:
        raise InvalidInput(f"input {name!r}: nested data must follow the shape {shape}")
    flat: list[Any] = []
    pending = [(iter(data), 0)]
    while pending:
        items, depth = pending[-1]
        for item in items:
            if depth + 1 < len(shape):
                if not isinstance(item, list) or len(item) != shape[depth + 1]:
                    raise InvalidInput(f"input {name!r}: nested data must follow the shape {shape} "
                                       f"(at depth {depth + 1}: a list of {shape[depth + 1]})")
                pending.append((iter(item), depth + 1))
                break
            if isinstance(item, list):
                raise InvalidInput(f"input {name!r}: data nested deeper than its {len(shape)}-d shape")
            flat.append(item)
        else:
            pending.pop()
    return flat


V2_MEDIA_TYPES = frozenset({"", "application/json", "application/octet-stream"})
"""Content types of a V2 inference request. No Content-Type is taken as JSON: the KServe
and Triton clients send none with their defaults."""


async def read_request(request: Request) -> Any:
    """The request's JSON, with binary inputs (the binary tensor data extension) decoded into
    their `data`; 400 if it is not JSON, nested too deeply, or its binary part is wrong.

    pydantic-core's parser stops at a fixed depth with an error (the standard library's
    raises RecursionError, a 500, on a body nested 1,000 deep) and refuses NaN/Infinity.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in V2_MEDIA_TYPES:
        raise ServiceError(f"V2 inference takes application/json (application/octet-stream with "
                           f"{HEADER_LENGTH} for binary tensors), not {media_type}", 415)
    try:
        raw = await request.body()
    except ClientDisconnect:
        raise ServiceError("the client closed the connection", CLIENT_CLOSED_REQUEST) from None
    declared = request.headers.get(HEADER_LENGTH)
    length = len(raw) if declared is None else _header_length(declared, len(raw))
    try:
        body = pydantic_core.from_json(raw[:length], allow_inf_nan=False)
    except ValueError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
    if declared is not None:
        _attach_binary_inputs(body, memoryview(raw)[length:])
    return body


def _header_length(declared: str, body_length: int) -> int:
    if not (declared.isascii() and declared.isdigit()) or int(declared) > body_length:
        raise InvalidInput(f"{HEADER_LENGTH} must be a byte count within the body ({body_length} bytes), "
                                 f"got {declared[:40]!r}")
    return int(declared)


def _attach_binary_inputs(body: Any, binary: memoryview) -> None:
    """Give each input that names a binary_data_size its slice of the binary part, decoded."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list):
        return  # refused with its reason by rows_from_request
    offset = 0
    for tensor in inputs:
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            continue
        name = tensor.get("name")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise InvalidInput(f"input {name!r}: binary_data_size {size!r} does not fit the "
                                     f"{len(binary) - offset} binary bytes left")
        if "data" in tensor:
            raise InvalidInput(f"input {name!r}: both data and binary_data_size given")
        tensor["data"] = _decode(name, tensor.get("datatype"), binary[offset:offset + size])
        offset += size
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} binary bytes after the last binary input")


def _decode(name: Any, datatype: Any, chunk: memoryview) -> list[Any]:
    if datatype == "BYTES":
        elements, offset = [], 0
        while offset < len(chunk):
            if offset + 4 > len(chunk):
                raise InvalidInput(f"input {name!r}: BYTES element length cut short")
            (length,) = struct.unpack_from("<I", chunk, offset)
            if offset + 4 + length > len(chunk):
                raise InvalidInput(f"input {name!r}: a BYTES element runs past binary_data_size")
            elements.append(bytes(chunk[offset + 4:offset + 4 + length]))
            offset += 4 + length
        return elements
    dtype = BINARY_DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InvalidInput(f"input {name!r}: unsupported datatype {datatype!r}")
    if len(chunk) % np.dtype(dtype).itemsize:
        raise InvalidInput(f"input {name!r}: {len(chunk)} bytes is not a whole number of {datatype}")
    values = np.frombuffer(chunk, dtype=dtype)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise InvalidInput(f"input {name!r}: NaN or infinity")
    return values.tolist()


async def rows_from_request(spec: ModelSpec, body: Any) -> tuple[str, Any]:
    """(form, rows): rows in the form the model's batcher takes; form names the route used."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise InvalidInput("the request needs a non-empty 'inputs' list")
    if "id" in body and not isinstance(body["id"], str):
        raise InvalidInput("'id' must be a string")
    if "parameters" in body and not isinstance(body["parameters"], dict):
        raise InvalidInput("'parameters' must be an object")
    tensors = {}
    for tensor in body["inputs"]:
        if not isinstance(tensor, dict):
            raise InvalidInput("every input must be an object")
        name, datatype, shape, data = _flat(tensor)
        if name in tensors:
            raise InvalidInput(f"input {name!r} appears twice")
        tensors[name] = (datatype, shape, data)
    accepted = {t.name for t in input_tensors(spec)}
    unknown = sorted(set(tensors) - accepted)
    if unknown:
        raise InvalidInput(f"unknown input(s) {unknown} for model {spec.name}; it takes {sorted(accepted)}")
    if "image" in tensors or "pixels" in tensors:
        return "image", await _image_rows(spec, tensors)
    if "input" in tensors:
        if len(tensors) > 1:
            raise InvalidInput(f"send either 'input' or one tensor per feature, not both: got {sorted(tensors)}")
        return "array", _matrix_rows(spec, *tensors["input"])
    return "records", _records(spec, tensors)


def _matrix_rows(spec: ModelSpec, datatype: str, shape: list[int], data: list[Any]) -> Any:
    width = len(spec.features)
    if datatype == "BYTES" or len(shape) != 2 or shape[1] != width or shape[0] == 0:
        raise InvalidInput(f"input 'input' must be a numeric [N, {width}] tensor with N >= 1, got "
                                 f"{datatype} {shape}")
    if shape[0] > spec.max_records_per_call:
        raise InvalidInput(f"at most {spec.max_records_per_call} rows per call, got {shape[0]}")
    rows = np.asarray(data, dtype=np.float64).reshape(shape).tolist()
    records = validated_records([dict(zip(spec.feature_names, row, strict=True)) for row in rows], spec)
    if spec.task == "tabular":
        return records
    return np.asarray([[r[n] for n in spec.feature_names] for r in records], dtype=np.float64)


def _records(spec: ModelSpec, tensors: dict[str, tuple[str, list[int], list[Any]]]) -> list[dict[str, Any]]:
    missing = [name for name in spec.feature_names if name not in tensors]
    if missing:
        raise InvalidInput(f"missing input(s) {missing}")
    lengths = set()
    for name, (datatype, shape, _) in tensors.items():
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise InvalidInput(f"input {name!r}: shape must be [N] or [N, 1], got {shape}")
        categorical = isinstance(spec.features[spec.feature_names.index(name)], CategoricalFeature)
        if categorical != (datatype == "BYTES"):
            expected = "BYTES" if categorical else "a numeric datatype"
            raise InvalidInput(f"input {name!r}: datatype {datatype} given, {expected} expected")
        lengths.add(shape[0])
    if len(lengths) != 1 or 0 in lengths:
        raise InvalidInput(f"inputs must all have the same N >= 1 rows, got {sorted(lengths)}")
    (rows,) = lengths
    if rows > spec.max_records_per_call:
        raise InvalidInput(f"at most {spec.max_records_per_call} rows per call, got {rows}")
    columns = {name: _text(name, tensors[name][2]) for name in spec.feature_names}
    return validated_records([{name: columns[name][i] for name in spec.feature_names} for i in range(rows)], spec)


def _text(name: str, data: list[Any]) -> list[Any]:
    """BYTES elements of the binary extension as text (categories); other data as it is."""
    try:
        return [v.decode() if isinstance(v, bytes) else v for v in data]
    except UnicodeDecodeError:
        raise InvalidInput(f"input {name!r}: BYTES elements must be UTF-8 text") from None


async def _image_rows(spec: ModelSpec, tensors: dict[str, tuple[str, list[int], list[Any]]]) -> np.ndarray:
    if len(tensors) != 1:
        raise InvalidInput("send either 'image' or 'pixels', alone")
    assert spec.image is not None
    if "image" in tensors:
        datatype, shape, data = tensors["image"]
        if datatype != "BYTES" or len(shape) != 1 or not 1 <= shape[0] <= spec.max_records_per_call:
            raise InvalidInput(f"input 'image' must be BYTES [N], 1 <= N <= {spec.max_records_per_call}")
        # base64 text in JSON, the file itself with the binary extension
        encoded = [v if isinstance(v, bytes) else decode_base64([v])[0] for v in data]
        return await image_rows(spec, encoded)
    datatype, shape, data = tensors["pixels"]
    image = spec.image
    expected = [image.height, image.width, image.channels]
    if datatype not in ("UINT8", "FP32", "FP64") or len(shape) != 4 or shape[1:] != expected or shape[0] == 0:
        raise InvalidInput(f"input 'pixels' must be UINT8/FP32 [N, {', '.join(map(str, expected))}]")
    if shape[0] > spec.max_records_per_call:
        raise InvalidInput(f"at most {spec.max_records_per_call} images per call")
    pixels = np.asarray(data, dtype=np.float32).reshape(shape)
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
        raise InvalidInput("input 'pixels' must hold intensities from 0 to 255")
    return pixels * np.float32(image.scale)


def requested_outputs(body: dict[str, Any]) -> list[str]:
    wanted = body.get("outputs")
    if wanted is None:
        return list(OUTPUTS)
    if not isinstance(wanted, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                               and isinstance(o.get("parameters", {}), dict) for o in wanted):
        raise InvalidInput("'outputs' must be a list of objects with a name (and object parameters)")
    names = [o["name"] for o in wanted]
    if not names:
        raise InvalidInput(f"'outputs' is empty: name at least one of {list(OUTPUTS)}, or leave it out for all")
    unknown = sorted(set(names) - set(OUTPUTS))
    if unknown:
        raise InvalidInput(f"unknown output(s) {unknown}; available: {list(OUTPUTS)}")
    if len(set(names)) != len(names):
        raise InvalidInput(f"an output is requested twice: {names}")
    return names


def response(spec: ModelSpec, version: str, body: dict[str, Any], probabilities: np.ndarray,
             outputs: list[str]) -> tuple[bytes, int | None]:
    """(body, JSON header length): the length is None for a plain JSON answer, else the
    value of the answer's Inference-Header-Content-Length (binary outputs follow the JSON)."""
    datatype = "FP32" if probabilities.dtype == np.float32 else "FP64"
    binary = _binary_outputs(body)
    tensors, chunks = [], []
    for name in outputs:
        if name == "label":
            labels = [spec.class_names[i] for i in probabilities.argmax(axis=1)]
            tensor: dict[str, Any] = {"name": "label", "datatype": "BYTES", "shape": [len(labels)]}
            values: Any = labels
            encoded = b"".join(struct.pack("<I", len(t)) + t for t in (label.encode() for label in labels))
        else:
            tensor = {"name": "probabilities", "datatype": datatype, "shape": list(probabilities.shape)}
            values = probabilities.reshape(-1).tolist() if name not in binary else None
            encoded = probabilities.astype(BINARY_DTYPES[datatype]).tobytes()
        if name in binary:
            tensor["parameters"] = {"binary_data_size": len(encoded)}
            chunks.append(encoded)
        else:
            tensor["data"] = values
        tensors.append(tensor)
    answer: dict[str, Any] = {"model_name": spec.name, "model_version": version, "outputs": tensors}
    if "id" in body:
        answer["id"] = body["id"]
    if isinstance(body.get("parameters"), dict):
        answer["parameters"] = body["parameters"]
    header = pydantic_core.to_json(answer)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def _binary_outputs(body: dict[str, Any]) -> set[str]:
    """The outputs to send as binary: every one with binary_data_output, else those marked."""
    parameters = body.get("parameters")
    if isinstance(parameters, dict) and parameters.get("binary_data_output") is True:
        return set(OUTPUTS)
    chosen = set()
    for output in body.get("outputs") or []:
        marks = output.get("parameters")
        if isinstance(marks, dict) and marks.get("binary_data") is True:
            chosen.add(output["name"])
    return chosen
