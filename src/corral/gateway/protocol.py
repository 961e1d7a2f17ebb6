"""The Open Inference Protocol's infer request and response, as plain values.

Pure: no loop, no HTTP. ``parse_infer`` turns a request body into an ``InferRequest`` or
raises ``BadRequest`` naming the field and the rule; ``infer_response`` builds the answer.

A corral serving takes one array per request, so an infer request carries exactly one input
tensor, whatever its name, whose first dimension is the batch: ``shape [n, *sample]`` runs
as ``serving.run_batch`` of ``n`` samples (1 to the serving's ``batch_size``), which stay
together in one batch. The answer has one output tensor, named ``output``, of shape
``[n, *out]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

import numpy as np

from corral.gateway.problems import BadRequest
from corral.gateway.tensors import decode_tensor, encode_tensor, json_depth

__all__ = ["OUTPUT_NAME", "InferRequest", "infer_response", "parse_infer", "parse_json"]

OUTPUT_NAME: Final = "output"
"""The name of the one output tensor of every model behind the gateway."""


@dataclass(frozen=True, slots=True)
class InferRequest:
    """One parsed infer request. ``timeout``: seconds (``parameters.timeout`` is in
    microseconds, as Triton's clients send it), or None; ``binary_output``: whether the
    output goes back as raw bytes."""

    id: str | None
    input_name: str
    array: np.ndarray
    timeout: float | None
    binary_output: bool


def parse_json(body: bytes | memoryview, *, max_depth: int, what: str = "the body") -> object:
    """``body`` parsed as JSON, refusing nesting deeper than ``max_depth`` before parsing."""
    raw = bytes(body)
    # Nesting is at most the number of opening brackets (those inside strings only add to
    # it): a body with few of them (the usual request) cannot be too deep, and two C-level
    # counts say so for far less than measuring its depth.
    if raw.count(b"[") + raw.count(b"{") > max_depth:
        depth = json_depth(raw)
        if depth > max_depth:
            raise BadRequest(what, f"JSON nested at most {max_depth} deep", f"depth {depth}")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "too deep"
        raise BadRequest(what, f"valid JSON ({reason})") from None


def _split(body: bytes, header_length: str | None) -> tuple[memoryview, memoryview | None]:
    view = memoryview(body)
    if header_length is None:
        return view, None
    if not header_length.isdigit() or int(header_length) > len(body):
        raise BadRequest(
            "header Inference-Header-Content-Length",
            f"the length of the JSON header in bytes, at most the body's {len(body)}",
            header_length,
        )
    n = int(header_length)
    return view[:n], view[n:]


def parse_infer(body: bytes, header_length: str | None, *, max_depth: int) -> InferRequest:
    """The infer request in ``body``. ``header_length`` is the
    ``Inference-Header-Content-Length`` header (binary tensor data extension) or None."""
    head, binary = _split(body, header_length)
    doc = parse_json(head, max_depth=max_depth)
    if not isinstance(doc, dict):
        raise BadRequest("the body", "a JSON object with inputs", doc)
    rid = doc.get("id")
    if rid is not None and type(rid) is not str:
        raise BadRequest("id", "a str", rid)
    parameters = doc.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest("parameters", "an object", parameters)
    timeout = parameters.get("timeout")
    if timeout is not None and (type(timeout) not in (int, float) or timeout <= 0):
        raise BadRequest("parameters.timeout", "a number of microseconds > 0", timeout)
    binary_output = parameters.get("binary_data_output", False)
    if type(binary_output) is not bool:
        raise BadRequest("parameters.binary_data_output", "a bool", binary_output)
    inputs = doc.get("inputs")
    if type(inputs) is not list or len(inputs) != 1:
        got = len(inputs) if type(inputs) is list else inputs
        raise BadRequest("inputs", "a list of exactly one tensor (a serving takes one)", got)
    name, array, used = decode_tensor("inputs[0]", inputs[0], binary, 0)
    if binary is not None and used != len(binary):
        raise BadRequest(
            "binary data", f"exactly the {used} bytes the inputs declare", f"{len(binary)} bytes"
        )
    if array.ndim == 0:
        raise BadRequest("inputs[0].shape", "[n, ...]: its first dimension is the batch", [])
    binary_output = _outputs(doc.get("outputs"), binary_output)
    seconds = None if timeout is None else timeout / 1e6
    return InferRequest(rid, name, array, seconds, binary_output)


def _outputs(outputs: object, binary: bool) -> bool:
    """Check the requested outputs; return whether the output goes back binary."""
    if outputs is None:
        return binary
    if type(outputs) is not list:
        raise BadRequest("outputs", "a list of {name, parameters} objects", outputs)
    for i, item in enumerate(outputs):
        if not isinstance(item, dict) or item.get("name") != OUTPUT_NAME:
            got = item.get("name") if isinstance(item, dict) else item
            raise BadRequest(f"outputs[{i}].name", f"'{OUTPUT_NAME}' (the one output)", got)
        parameters = item.get("parameters", {})
        if not isinstance(parameters, dict):
            raise BadRequest(f"outputs[{i}].parameters", "an object", parameters)
        flag = parameters.get("binary_data", binary)
        if type(flag) is not bool:
            raise BadRequest(f"outputs[{i}].parameters.binary_data", "a bool", flag)
        binary = flag
    return binary


def infer_response(
    model: str, version: str, request: InferRequest, output: np.ndarray
) -> tuple[bytes, int | None]:
    """The response body and, for a binary output, the JSON header's length (the
    ``Inference-Header-Content-Length`` header). Raises ``TypeError`` for an output dtype the
    protocol cannot carry."""
    tensor, raw = encode_tensor(OUTPUT_NAME, np.asarray(output), binary=request.binary_output)
    doc: dict[str, object] = {"model_name": model, "model_version": version}
    if request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = [tensor]
    head = json.dumps(doc, separators=(",", ":")).encode()
    if raw is None:
        return head, None
    return head + raw, len(head)
