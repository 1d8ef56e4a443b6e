"""A grpcio echo service and client for end-to-end tests, runnable as a pod's command.

``python grpc_echo.py serve HOST PORT`` serves ``mesh.test.Echo`` (Unary, ServerStream, NotFound) with
generic handlers — no protoc step. ``python grpc_echo.py call TARGET`` makes one call of each and prints
what came back as one JSON line (messages, status codes, initial and trailing metadata), so a test can
run it inside a pod with ``meshctl exec`` and judge the result.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc  # type: ignore[import-untyped]  # grpcio ships no stubs

SERVICE = "mesh.test.Echo"


def _unary(request: bytes, context: Any) -> bytes:
    context.set_trailing_metadata((("x-served-by", "grpcio"),))
    return b"echo:" + request


def _server_stream(request: bytes, context: Any) -> Iterator[bytes]:
    for index in range(int(request)):
        yield b"item-%d" % index


def _not_found(request: bytes, context: Any) -> bytes:
    context.abort(grpc.StatusCode.NOT_FOUND, f"no such thing: {request.decode()}")
    raise AssertionError("abort returns only by raising")


def serve(host: str, port: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
        "NotFound": grpc.unary_unary_rpc_method_handler(_not_found),
    }),))
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    print(f"serving {SERVICE} on {host}:{port}", file=sys.stderr, flush=True)
    server.wait_for_termination()


def call(target: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        unary = channel.unary_unary(f"/{SERVICE}/Unary")
        reply, details = unary.with_call(b"hello", timeout=10)
        out["unary"] = reply.decode()
        out["initial_metadata"] = dict(details.initial_metadata())
        out["trailing_metadata"] = dict(details.trailing_metadata())
        stream = channel.unary_stream(f"/{SERVICE}/ServerStream")
        out["stream"] = [item.decode() for item in stream(b"5", timeout=10)]
        try:
            channel.unary_unary(f"/{SERVICE}/NotFound")(b"x", timeout=10)
            out["not_found"] = "no error"
        except grpc.RpcError as exc:
            out["not_found"] = exc.code().name
            out["not_found_details"] = exc.details()
    return out


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        print(json.dumps(call(sys.argv[2])), flush=True)
