"""Exports a few metrics to an OTLP/HTTP endpoint with the OpenTelemetry Python SDK, then exits.

usage: export_metrics.py ENDPOINT [SERVICE_NAME]   (OTEL_EXPORTER_OTLP_COMPRESSION=gzip compresses)

An ENDPOINT starting with grpc:// exports over OTLP/gRPC (host:port), one starting with json+http:// as
OTLP/JSON over HTTP (otlp_json.py), anything else over OTLP/HTTP protobuf."""
import os
import sys

endpoint = sys.argv[1]
if endpoint.startswith("grpc://"):
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    exporter_args = {"endpoint": endpoint.removeprefix("grpc://"), "insecure": True}
elif endpoint.startswith("json+"):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import otlp_json
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter
    from opentelemetry.sdk.metrics.export import MetricExportResult

    class OTLPMetricExporter(HttpExporter):
        """The SDK's HTTP exporter (temporality, aggregation) sending OTLP/JSON instead (otlp_json.py)."""

        def export(self, metrics_data, timeout_millis=10_000, **kwargs):
            ok = otlp_json.post(self._json_url, encode_metrics(metrics_data))
            return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    OTLPMetricExporter._json_url = endpoint.removeprefix("json+")
    exporter_args = {"endpoint": endpoint.removeprefix("json+")}
else:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    exporter_args = {"endpoint": endpoint}
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

service = sys.argv[2] if len(sys.argv) > 2 else "checkout"
resource = Resource.create({
    "service.name": service,
    "service.namespace": "shop",
    "service.instance.id": "pod-1",
    "deployment.environment": "test",
})
reader = PeriodicExportingMetricReader(OTLPMetricExporter(**exporter_args), export_interval_millis=60_000)
provider = MeterProvider(resource=resource, metric_readers=[reader])
meter = provider.get_meter("vigil-e2e")

requests = meter.create_counter("http.requests", unit="1", description="Requests served")
requests.add(5, {"http.method": "GET", "http.status_code": 200})
requests.add(2, {"http.method": "POST", "http.status_code": 500})

duration = meter.create_histogram("http.server.duration", unit="ms")
for value in (5, 20, 120):
    duration.record(value, {"http.method": "GET"})

queue = meter.create_up_down_counter("queue.size")
queue.add(7)

if not provider.force_flush(10_000):
    sys.exit("export did not finish")
provider.shutdown()
