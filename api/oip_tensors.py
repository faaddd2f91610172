"""The Open Inference Protocol's tensors over HTTP, in JSON and in Triton's binary tensor data
extension: pictures in (a BYTES tensor of encoded images), probabilities or classifications out.

Pure functions on the request's JSON header and binary tail; api/routes_v2.py does the HTTP.
In the binary extension the body is the JSON header (its length in the
`Inference-Header-Content-Length` header) followed by each binary tensor in the order of the
tensors that name a `binary_data_size`; a BYTES tensor's elements are each a 4-byte
little-endian length and the bytes. In JSON a BYTES element is a string: here the base64 of a
picture (a picture's bytes are not UTF-8 text).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

import pybase64

from inference.core.errors import BatchTooLarge, InvalidRequest
from inference.core.queues import DEFAULT_PRIORITY, PRIORITIES

HEADER_LENGTH = "Inference-Header-Content-Length"
INPUT = "image"  # BYTES [N]: N encoded pictures, one request (one task)
OUTPUT = "probabilities"  # FP32 [N, classes]; with the classification extension BYTES [N, k]
# Triton's request priority: 1 is the highest level, 0 the server's default.
PRIORITY_OF_LEVEL = {0: DEFAULT_PRIORITY, 1: "high", 2: "normal"}


@dataclass
class RequestedOutput:
    classification: int = 0  # k > 0: the k best classes as "score:index:label" strings
    binary: bool = False


@dataclass
class InferRequest:
    id: str | None
    pictures: list[bytes]
    priority: str = DEFAULT_PRIORITY
    timeout_ms: int | None = None  # Triton's `timeout` (µs): the time it may wait to start
    outputs: list[RequestedOutput] = field(default_factory=list)

    @property
    def top_k(self) -> int | None:
        return max((o.classification for o in self.outputs), default=0) or None

    @property
    def probabilities(self) -> bool:
        return any(not o.classification for o in self.outputs)


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tail of an inference request."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise InvalidRequest(f"{HEADER_LENGTH} must be a number of bytes, not {header_length!r}") from None
    if not 0 < length <= len(body):
        raise InvalidRequest(f"{HEADER_LENGTH} is {length}, but the body holds {len(body)} bytes")
    return body[:length], body[length:]


def parse_infer_request(header: object, binary: bytes, classes: int, most: int) -> InferRequest:
    """The request of an inference header (the JSON object) and its binary tail, of at most
    `most` pictures (MAX_ITEMS_PER_REQUEST: counted as they are read, so that a body of a
    million empty elements costs no more than one of too many pictures)."""
    if not isinstance(header, dict):
        raise InvalidRequest("the inference request must be a JSON object")
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InvalidRequest(f"expected one input, {INPUT!r} (BYTES, shape [N]: N encoded pictures)")
    pictures, used = read_pictures(inputs[0], binary, most)
    if used != len(binary):
        raise InvalidRequest(f"the body holds {len(binary) - used} bytes of binary data that no input claims")
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidRequest("parameters must be a JSON object")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequest("id must be a string")
    return InferRequest(
        id=request_id,
        pictures=pictures,
        priority=priority_of(parameters.get("priority", 0)),
        timeout_ms=timeout_ms_of(parameters.get("timeout")),
        outputs=requested_outputs(header.get("outputs"), bool(parameters.get("binary_data_output", False)), classes),
    )


def read_pictures(tensor: dict, binary: bytes, most: int) -> tuple[list[bytes], int]:
    """The pictures of the input tensor, and how many bytes of the binary tail it took."""
    if tensor.get("name") != INPUT:
        raise InvalidRequest(f"unexpected input {tensor.get('name')!r}; the input is {INPUT!r}")
    if tensor.get("datatype") != "BYTES":
        raise InvalidRequest(f"input {INPUT!r} is BYTES (encoded pictures), not {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 2 or not all(isinstance(d, int) and d >= 0 for d in shape)
            or shape[1:] not in ([], [1])):
        raise InvalidRequest(f"input {INPUT!r} has shape [N] (or [N, 1]), not {shape!r}")
    if shape[0] > most:
        raise BatchTooLarge(f"a request holds at most {most} pictures (MAX_ITEMS_PER_REQUEST), not {shape[0]}")
    parameters = tensor.get("parameters") or {}
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is not None:
        if not isinstance(size, int) or not 0 <= size <= len(binary):
            raise InvalidRequest(f"binary_data_size {size!r} does not fit the {len(binary)} bytes of binary data")
        elements, used = unpack_bytes(binary[:size], most=shape[0]), size
    else:
        data = tensor.get("data")
        if not isinstance(data, list):
            raise InvalidRequest(f"input {INPUT!r} carries `data` (base64 pictures) or binary_data_size")
        elements, used = flatten(data, most=shape[0]), 0
    if len(elements) != shape[0]:  # counted before any base64 is decoded
        raise InvalidRequest(f"input {INPUT!r} has shape {shape} but holds {len(elements)} elements")
    pictures = elements if size is not None else [_base64_picture(element) for element in elements]
    if not pictures:
        raise InvalidRequest(f"input {INPUT!r} holds no picture")
    if not all(pictures):
        raise InvalidRequest(f"input {INPUT!r} holds an empty element")
    return pictures, used


def _base64_picture(element: object) -> bytes:
    if not isinstance(element, str):
        raise InvalidRequest(f"in JSON, each element of {INPUT!r} is a picture in base64 (a string)")
    try:
        return pybase64.b64decode(element, validate=True)
    except ValueError:
        raise InvalidRequest(f"an element of {INPUT!r} is not valid base64 (binary pictures go in the binary data extension)") from None


def flatten(data: list, most: int | None = None) -> list:
    """A tensor's elements in row-major order, whether given nested or flat; with `most`, stops
    after one more than that (the caller says too many)."""
    flat: list = []
    stack = [iter(data)]
    while stack:  # no recursion: a hostile nesting depth costs no stack
        for element in stack[-1]:
            if isinstance(element, list):
                stack.append(iter(element))
                break
            flat.append(element)
            if most is not None and len(flat) > most:
                return flat
        else:
            stack.pop()
    return flat


def unpack_bytes(raw: bytes, most: int | None = None) -> list[bytes]:
    """The elements of a binary BYTES tensor: each a 4-byte little-endian length, then its bytes
    (with `most`, more than that many is an error)."""
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if most is not None and len(elements) >= most:
            raise InvalidRequest(f"the binary BYTES tensor holds more than the {most} elements its shape says")
        if offset + 4 > len(raw):
            raise InvalidRequest("the binary BYTES tensor ends inside an element's length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidRequest("the binary BYTES tensor ends inside an element")
        elements.append(raw[offset:offset + length])
        offset += length
    return elements


def pack_bytes(elements: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def priority_of(value: object) -> str:
    """Our priority of a request's `priority`: one of ours by name, or Triton's level (1 highest,
    0 the default; 3 and below are `low`)."""
    if isinstance(value, str) and value in PRIORITIES:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return PRIORITY_OF_LEVEL.get(value, "low")
    raise InvalidRequest(f"priority is one of {', '.join(PRIORITIES)} or a level (1 highest, 0 default), not {value!r}")


def timeout_ms_of(value: object) -> int | None:
    """Triton's `timeout` (microseconds a request may wait before it starts) in milliseconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidRequest(f"timeout is a positive number of microseconds, not {value!r}")
    return math.ceil(value / 1000)


def requested_outputs(outputs: object, binary_default: bool, classes: int) -> list[RequestedOutput]:
    if outputs is None:
        return [RequestedOutput(binary=binary_default)]
    if not isinstance(outputs, list) or len(outputs) != 1 or not isinstance(outputs[0], dict):
        raise InvalidRequest(f"the model has one output, {OUTPUT!r}")
    if outputs[0].get("name") != OUTPUT:
        raise InvalidRequest(f"unknown output {outputs[0].get('name')!r}; the output is {OUTPUT!r}")
    parameters = outputs[0].get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidRequest("an output's parameters must be a JSON object")
    k = parameters.get("classification", 0)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= classes:
        raise InvalidRequest(f"classification is a number of classes, 1 to {classes}, not {k!r}")
    return [RequestedOutput(classification=k, binary=bool(parameters.get("binary_data", binary_default)))]


@dataclass
class OutputTensor:
    json: dict
    binary: bytes | None


def output_tensor(requested: RequestedOutput, pictures: list[dict], classes: int) -> OutputTensor:
    """The output for each picture's answer (`predictions`, and `probabilities` when asked for)."""
    if requested.classification:
        k = requested.classification
        rows = [[f"{p['confidence']:f}:{p['class_id']}:{p['class']}" for p in picture["predictions"][:k]] for picture in pictures]
        strings = [s.encode() for row in rows for s in row]
        tensor = {"name": OUTPUT, "datatype": "BYTES", "shape": [len(pictures), k]}
        if requested.binary:
            return OutputTensor(tensor, pack_bytes(strings))
        return OutputTensor({**tensor, "data": [s.decode() for s in strings]}, None)
    # FP32 by struct, not numpy: importing numpy for this alone cost each API process ~7 MB (PSS).
    flat = [p for picture in pictures for p in picture["probabilities"]]
    if len(flat) != len(pictures) * classes:
        raise ValueError(f"{len(flat)} probabilities for {len(pictures)} pictures of {classes} classes")
    packed = struct.pack(f"<{len(flat)}f", *flat)
    tensor = {"name": OUTPUT, "datatype": "FP32", "shape": [len(pictures), classes]}
    if requested.binary:
        return OutputTensor(tensor, packed)
    return OutputTensor({**tensor, "data": list(struct.unpack(f"<{len(flat)}f", packed))}, None)  # as float32 rounds them


def response_body(header: dict, tensors: list[OutputTensor]) -> tuple[bytes, int | None]:
    """The response: its JSON alone, or (binary extension) the JSON then each binary tensor, with
    the JSON's length for the `Inference-Header-Content-Length` header."""
    outputs = []
    for tensor in tensors:
        if tensor.binary is not None:
            outputs.append({**tensor.json, "parameters": {"binary_data_size": len(tensor.binary)}})
        else:
            outputs.append(tensor.json)
    head = json.dumps({**header, "outputs": outputs}, separators=(",", ":")).encode()
    tails = [t.binary for t in tensors if t.binary is not None]
    if not tails:
        return head, None
    return head + b"".join(tails), len(head)
