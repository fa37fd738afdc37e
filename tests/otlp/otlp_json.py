"""OTLP/JSON over HTTP for the SDK's own encodings: the SDK's protobuf message for a batch, written with
protobuf's JSON printer (integer enums, 64-bit integers as strings), trace and span ids turned from base64
into hex as OTLP/JSON requires, POSTed as application/json. Used by the export_*.py scripts for their
json+http:// endpoints."""
import base64
import json
import urllib.request

ID_KEYS = ("traceId", "spanId", "parentSpanId")


def hexify(node):
    """OTLP/JSON writes trace and span ids as hex, where proto3's JSON mapping writes base64."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ID_KEYS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                hexify(value)
    elif isinstance(node, list):
        for item in node:
            hexify(item)


def post(url, message):
    """POSTs a protobuf message as OTLP/JSON; True on 200."""
    from google.protobuf import json_format

    body = json_format.MessageToDict(message, use_integers_for_enums=True)
    hexify(body)
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status == 200
