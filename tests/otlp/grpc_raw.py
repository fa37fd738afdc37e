"""Sends raw bytes as one OTLP/gRPC Export call with grpcio and prints the status code name.

usage: grpc_raw.py HOST:PORT SERVICE (metrics|traces|logs) HEX_BYTES|zeros:N"""
import sys

import grpc

target, service, payload = sys.argv[1:4]
body = bytes(int(payload[6:])) if payload.startswith("zeros:") else bytes.fromhex(payload)
path = f"/opentelemetry.proto.collector.{service}.v1.{service.capitalize()}Service/Export"
with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
    call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    try:
        call(body, timeout=10)
        print("OK")
    except grpc.RpcError as error:
        print(error.code().name, error.details())
