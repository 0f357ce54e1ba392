"""Prediction requests: the size limit, reading the body, parsing {"instances": …}, the 4xx for client mistakes."""

from __future__ import annotations

import json

import orjson

from trainer import predictor as predictor_mod

# Vertex AI public endpoints refuse requests over 1.5 MB; refuse them here too, before parsing.
MAX_BODY_BYTES = 1_572_864


class RequestError(Exception):
    """A client mistake: answered with ``status`` and a JSON body, never a 5xx."""

    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None, **extra):
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **extra}
        self.headers = headers or []


async def read_body(scope, receive) -> bytes:
    """The whole body of an ASGI request; 413 past MAX_BODY_BYTES, declared or sent."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise RequestError(400, "Content-Length is not a number") from None
            if length > MAX_BODY_BYTES:
                raise RequestError(413, f"request body of {length} bytes exceeds the limit of {MAX_BODY_BYTES} bytes")
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestError(400, "client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(413, f"request body exceeds the limit of {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_request(body: bytes) -> list:
    """The ``instances`` of a prediction request body, or a RequestError saying what is wrong."""
    if not body:
        raise RequestError(400, 'empty body; expected JSON {"instances": [...]}')
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson refuses NaN/Infinity literals and integers beyond 64 bits; the standard parser
        # accepts them, so such bodies get the precise per-field message below.
        try:
            request = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise RequestError(400, f"body is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise RequestError(400, 'body must be a JSON object {"instances": [...]}')
    if "instances" not in request:
        raise RequestError(400, 'body has no "instances" list')
    unknown = sorted(set(request) - {"instances", "parameters", "signature_name"})
    if unknown:
        raise RequestError(400, f"unknown top-level keys {unknown}; expected instances and parameters")
    # TF-Serving clients may name the signature; there is only one.
    signature_name = request.get("signature_name", predictor_mod.SIGNATURE_NAME)
    if signature_name != predictor_mod.SIGNATURE_NAME:
        raise RequestError(
            400, f"unknown signature_name {signature_name!r}; the model has {predictor_mod.SIGNATURE_NAME!r}"
        )
    parameters = request.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise RequestError(400, '"parameters" must be a JSON object')
    instances = request["instances"]
    if not isinstance(instances, list):
        raise RequestError(400, f'"instances" must be a list, got {predictor_mod.json_type(instances)}')
    if not instances:
        raise RequestError(400, '"instances" is empty; send at least one instance')
    return instances
