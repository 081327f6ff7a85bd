"""Open Inference (V2) REST bodies, JSON or binary tensor extension, parsed strictly.

KServe's own V2 route (``kserve.protocol.rest.v2_endpoints.V2Endpoints.infer``, kserve 0.21)
refuses a plain JSON body with BYTES data ("inference-header-content-length header is
missing": the pydantic model does not take it, so it falls back to raw bytes), turns raw
BYTES elements of the binary extension into UTF-8 text (a PNG is answered "500 Failed to
encode") and answers a missing ``inputs`` key with a 500. This module is what the request
guard (:mod:`pairflow.serve.guard`) uses in its place, following the extension as
``tritonclient.http`` writes it (``tritonclient/http/_utils.py``: the JSON head is
``Inference-Header-Content-Length`` bytes long, each input with ``parameters.binary_data_size``
takes that many bytes of the tail in order; BYTES elements are 4-byte little-endian length
prefixed). Every malformed body is a :class:`RequestError` naming the field (HTTP 400).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

from pairflow.serve.limits import RequestError

HEADER = "inference-header-content-length"
DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": None,
}


def split_bytes_tensor(data: bytes, where: str) -> list[bytes]:
    """Elements of a serialized BYTES tensor (each: uint32 LE length, then its bytes)."""
    out: list[bytes] = []
    offset = 0
    view = memoryview(data)
    while offset < len(data):
        if offset + 4 > len(data):
            raise RequestError(f"{where}: truncated BYTES element length at byte {offset}")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise RequestError(
                f"{where}: BYTES element of {length} bytes runs past the end of its data"
            )
        out.append(bytes(view[offset : offset + length]))
        offset += length
    return out


def _flatten(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _shape(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise RequestError(f"{where}.shape: expected a list of non-negative integers")
    return list(value)


def _input(item: Any, i: int, tail: memoryview, offset: int) -> tuple[InferInput, int]:
    where = f"inputs[{i}]"
    if not isinstance(item, Mapping):
        raise RequestError(f"{where}: expected an object with name, datatype, shape, data")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise RequestError(f"{where}.name: expected a non-empty string")
    where = f"inputs.{name}"
    datatype = item.get("datatype")
    if datatype not in DTYPES:
        raise RequestError(f"{where}.datatype: {datatype!r} is not a V2 datatype")
    shape = _shape(item.get("shape"), where)
    count = math.prod(shape)
    params = item.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise RequestError(f"{where}.parameters: expected an object")
    size = params.get("binary_data_size")
    if "data" in item:
        if size is not None:
            raise RequestError(f"{where}: both data and parameters.binary_data_size given")
        values = _flatten(item["data"], where)
        for value in values:
            ok = (
                isinstance(value, str)
                if datatype == "BYTES"
                else (
                    isinstance(value, int | float)
                    and (datatype == "BOOL") == isinstance(value, bool)
                )
            )
            if not ok:
                want = "strings" if datatype == "BYTES" else f"{datatype} numbers"
                raise RequestError(f"{where}.data: expected {want}, got {type(value).__name__}")
    elif size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RequestError(f"{where}.parameters.binary_data_size: expected an integer >= 0")
        if offset + size > len(tail):
            raise RequestError(
                f"{where}.parameters.binary_data_size: {size} bytes, but only "
                f"{len(tail) - offset} binary bytes are left in the body"
            )
        chunk = bytes(tail[offset : offset + size])
        offset += size
        if datatype == "BYTES":
            values = list(split_bytes_tensor(chunk, f"{where} binary data"))
        else:
            dtype = np.dtype(DTYPES[datatype])
            if size != count * dtype.itemsize:
                raise RequestError(
                    f"{where}: {size} binary bytes do not hold shape {shape} of {datatype}"
                )
            values = np.frombuffer(chunk, dtype=dtype).tolist()
    else:
        raise RequestError(f"{where}: missing data (or parameters.binary_data_size)")
    if len(values) != count:
        raise RequestError(f"{where}: shape {shape} needs {count} values, got {len(values)}")
    extra = {k: v for k, v in params.items() if k != "binary_data_size"}
    return InferInput(name, shape, datatype, values, extra or None), offset


def parse_infer_body(body: bytes, header_length: str | None, model_name: str) -> InferRequest:
    """A V2 REST inference body (JSON, or JSON head + binary tail) → ``InferRequest``."""
    head, tail = body, b""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError as exc:
            raise RequestError(f"{HEADER}: {header_length!r} is not an integer") from exc
        if not 0 <= n <= len(body):
            raise RequestError(f"{HEADER}: {n} is outside the body's {len(body)} bytes")
        head, tail = body[:n], body[n:]
    try:
        doc = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"request body: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise RequestError("request body: expected a JSON object with 'inputs'")
    params = doc.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise RequestError("parameters: expected an object")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError("id: expected a string")
    items = doc.get("inputs")
    if not isinstance(items, list):
        raise RequestError("inputs: missing or not a list")
    view = memoryview(tail)
    offset = 0
    inputs = []
    for i, item in enumerate(items):
        infer_input, offset = _input(item, i, view, offset)
        inputs.append(infer_input)
    if offset != len(tail):
        raise RequestError(
            f"request body: {len(tail) - offset} binary bytes after the JSON are not claimed "
            "by any input's binary_data_size"
        )
    return InferRequest(
        model_name,
        inputs,
        request_id=request_id,
        parameters=params,
        request_outputs=_outputs(doc.get("outputs")),
    )


def _outputs(value: Any) -> list[RequestedOutput] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise RequestError("outputs: expected a list")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise RequestError(f"outputs[{i}]: expected an object with a name")
        params = item.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise RequestError(f"outputs[{i}].parameters: expected an object")
        out.append(RequestedOutput(item["name"], params))
    return out or None


def input_values(infer_input: InferInput) -> list[Any]:
    """The flat values of an input however it arrived: a list (JSON, gRPC ``contents``) or
    serialized raw bytes (gRPC ``raw_input_contents``)."""
    raw = getattr(infer_input, "_raw_data", None)
    where = f"inputs.{infer_input.name}"
    if raw is not None:
        if infer_input.datatype == "BYTES":
            return split_bytes_tensor(bytes(raw), f"{where} raw contents")
        dtype = DTYPES.get(infer_input.datatype)
        if dtype is None:
            raise RequestError(f"{where}.datatype: {infer_input.datatype!r} is not a V2 datatype")
        if len(raw) % np.dtype(dtype).itemsize:
            raise RequestError(
                f"{where}: {len(raw)} raw bytes are not whole {infer_input.datatype}"
            )
        values: list[Any] = np.frombuffer(bytes(raw), dtype=dtype).tolist()
        return values
    data = infer_input.data
    if data is None:
        raise RequestError(f"{where}: no data")
    if hasattr(data, "tolist"):
        data = data.tolist()
    return _flatten(list(data), where)
