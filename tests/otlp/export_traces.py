"""Records a multi-service trace with the OpenTelemetry SDK, exports it over OTLP, and prints what the SDK
recorded (its own in-memory copy of every span) as JSON, for the test to compare against Vigil's APIs.

usage: export_traces.py ENDPOINT [SPANS]

ENDPOINT forms:
  grpc://host:port                  OTLP/gRPC (the SDK's gRPC exporter)
  http://host:port/v1/traces        OTLP/HTTP protobuf (the SDK's HTTP exporter)
  json+http://host:port/v1/traces   OTLP/HTTP JSON: the SDK's own encoding of the spans as OTLP/JSON
                                    (otlp_json.py)

With SPANS, the trace is one root with SPANS - 1 children instead of the shop trace."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import otlp_json  # noqa: E402

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

endpoint = sys.argv[1]
big = int(sys.argv[2]) if len(sys.argv) > 2 else 0


class JsonExporter(SpanExporter):
    """OTLP/JSON over HTTP built from the SDK's protobuf encoder (see otlp_json.py)."""

    def __init__(self, url):
        self.url = url

    def export(self, spans):
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        return SpanExportResult.SUCCESS if otlp_json.post(self.url, encode_spans(spans)) else SpanExportResult.FAILURE

    def shutdown(self):
        pass


def exporter():
    if endpoint.startswith("grpc://"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter(endpoint=endpoint.removeprefix("grpc://"), insecure=True)
    if endpoint.startswith("json+"):
        return JsonExporter(endpoint.removeprefix("json+"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter(endpoint=endpoint)


recorded = InMemorySpanExporter()
providers = {}


def tracer(service):
    if service not in providers:
        provider = TracerProvider(resource=Resource.create({"service.name": service, "k8s.namespace.name": "shop"}))
        provider.add_span_processor(SimpleSpanProcessor(recorded))
        provider.add_span_processor(BatchSpanProcessor(exporter(), max_queue_size=20_000, max_export_batch_size=512))
        providers[service] = provider
    return providers[service].get_tracer("shop.instrumentation", "1.2.3")


def shop_trace():
    frontend, cart, payments = tracer("frontend"), tracer("cart"), tracer("payments")
    with frontend.start_as_current_span("GET /checkout", kind=SpanKind.SERVER,
                                        attributes={"http.method": "GET", "http.status_code": 500}) as root:
        with frontend.start_as_current_span("call cart", kind=SpanKind.CLIENT, attributes={"peer.service": "cart"}):
            with cart.start_as_current_span("load cart", kind=SpanKind.SERVER, attributes={"cart.items": 3}) as load:
                load.add_event("cache miss", {"key": "cart:42"})
                with cart.start_as_current_span("SELECT carts", kind=SpanKind.CLIENT,
                                                attributes={"db.system": "postgresql", "db.name": "carts"}):
                    pass
        earlier = root.get_span_context()
        with frontend.start_as_current_span("call payments", kind=SpanKind.CLIENT) as call:
            call.set_status(Status(StatusCode.ERROR, "payment declined"))
            with payments.start_as_current_span("charge", kind=SpanKind.SERVER, links=[Link(earlier, {"why": "retry"})],
                                                attributes={"amount": 12.5, "retried": True}) as charge:
                charge.record_exception(ValueError("card declined"))
                charge.set_status(Status(StatusCode.ERROR, "card declined"))
        with frontend.start_as_current_span("render", kind=SpanKind.INTERNAL):
            pass


def big_trace(count):
    worker = tracer("bulk")
    with worker.start_as_current_span("batch job", kind=SpanKind.SERVER):
        for i in range(count - 1):
            with worker.start_as_current_span(f"item {i % 50}", attributes={"item": i}):
                pass


if big:
    big_trace(big)
else:
    shop_trace()
for provider in providers.values():
    provider.force_flush()
    provider.shutdown()


def hex_id(value, width):
    return format(value, f"0{width}x")


def attribute_json(attributes):
    return {key: (list(value) if isinstance(value, tuple) else value) for key, value in (attributes or {}).items()}


print(json.dumps([{
    "trace_id": hex_id(span.context.trace_id, 32),
    "span_id": hex_id(span.context.span_id, 16),
    "parent_id": hex_id(span.parent.span_id, 16) if span.parent else None,
    "name": span.name,
    "service": span.resource.attributes["service.name"],
    "kind": span.kind.name.lower(),
    "status": span.status.status_code.name.lower(),
    "status_message": span.status.description or "",
    "start_ns": span.start_time,
    "end_ns": span.end_time,
    "attributes": attribute_json(span.attributes),
    "events": [event.name for event in span.events],
    "links": [hex_id(link.context.span_id, 16) for link in span.links],
} for span in recorded.get_finished_spans()]))
