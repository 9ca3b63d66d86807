"""TF Serving's REST predict API, reproduced for tests: JSON body -> signature call -> JSON body.

It follows tensorflow_serving/util/json_tensor.cc and the REST API guide:
- Row format `{"instances": [...]}`: a list of objects, one per example, each with every named
  input (all objects the same keys), or bare values when the signature has exactly one input. The
  rows of each input are stacked into one batch tensor.
- Columnar format `{"inputs": {...}}`: each named input's whole (batched) value, or a bare value
  for a one-input signature.
- Strings are JSON strings (UTF-8 bytes) or `{"b64": "..."}`; a non-string value for a string
  input is refused, as TF Serving refuses it.
- The signature's inputs must be exactly the request's: a missing or extra input is an error.
- Response: row format -> `{"predictions": [...]}`, one object {output: value} per example
  (a bare value when the signature has one output); columnar -> `{"outputs": {...}}` (or a bare
  value). String outputs are JSON strings, or `{"b64": ...}` when the output name ends in `_bytes`.
The body goes through real JSON text both ways (json.dumps / json.loads).
"""

from __future__ import annotations

import base64
import json

import numpy as np
import tensorflow as tf


class RestError(ValueError):
    """What TF Serving answers with HTTP 400 and {"error": ...}."""


def _string(value, where: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    raise RestError(f"{where}: JSON Value: {json.dumps(value)} is not of expected type: string")


def _tensor(value, spec: tf.TensorSpec, where: str) -> tf.Tensor:
    if spec.dtype == tf.string:
        def convert(v, depth):
            if isinstance(v, list):
                return [convert(x, depth + 1) for x in v]
            return _string(v, where)
        return tf.constant(convert(value, 0), tf.string)
    return tf.constant(np.asarray(value), spec.dtype)


def _is_named(obj) -> bool:
    return isinstance(obj, dict) and set(obj) != {"b64"}


def call(signature, body_text: str) -> str:
    """Answers the JSON request `body_text` with the concrete function `signature` (JSON text)."""
    body = json.loads(body_text)
    specs: dict[str, tf.TensorSpec] = signature.structured_input_signature[1]
    if ("instances" in body) == ("inputs" in body):
        raise RestError("Missing 'inputs' or 'instances' key" if "instances" not in body else
                        "Both 'instances' and 'inputs' are specified")
    row_format = "instances" in body
    if row_format:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise RestError("'instances' must be a non-empty list")
        if _is_named(instances[0]):
            keys = set(instances[0])
            for i, inst in enumerate(instances):
                if not _is_named(inst) or set(inst) != keys:
                    raise RestError(f"Failed to process element: {i} of 'instances' list. "
                                    f"Error: expecting object with keys {sorted(keys)}")
            columns = {k: [inst[k] for inst in instances] for k in keys}
        else:
            if len(specs) != 1:
                raise RestError("bare instances need a signature with one input")
            columns = {next(iter(specs)): instances}
    else:
        inputs = body["inputs"]
        if _is_named(inputs):
            columns = dict(inputs)
        else:
            if len(specs) != 1:
                raise RestError("a bare 'inputs' value needs a signature with one input")
            columns = {next(iter(specs)): inputs}
    if set(columns) != set(specs):
        raise RestError(f"input size does not match signature: {len(columns)}!={len(specs)} "
                        f"len({sorted(columns)}) != len({sorted(specs)}). Sent extra: "
                        f"{sorted(set(columns) - set(specs))}. Missing but required: "
                        f"{sorted(set(specs) - set(columns))}.")
    feed = {name: _tensor(value, specs[name], f"input {name}")
            for name, value in columns.items()}
    outputs = {name: t.numpy() for name, t in signature(**feed).items()}

    def jsonable(name: str, value):
        if isinstance(value, np.ndarray):
            return [jsonable(name, v) for v in value]
        if isinstance(value, bytes):
            if name.endswith("_bytes"):
                return {"b64": base64.b64encode(value).decode("ascii")}
            return value.decode("utf-8")
        return value.item() if isinstance(value, np.generic) else value

    if row_format:
        batch = {len(v) for v in outputs.values()}
        if len(batch) != 1:
            raise RestError(f"outputs have inconsistent batch sizes {sorted(batch)}")
        rows = []
        for i in range(batch.pop()):
            row = {name: jsonable(name, v[i]) for name, v in outputs.items()}
            rows.append(next(iter(row.values())) if len(row) == 1 else row)
        return json.dumps({"predictions": rows})
    cols = {name: jsonable(name, v) for name, v in outputs.items()}
    return json.dumps({"outputs": next(iter(cols.values())) if len(cols) == 1 else cols})
