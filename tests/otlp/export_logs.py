"""Emits log records through Python's logging into the OpenTelemetry SDK and exports them over OTLP, then exits.

usage: export_logs.py ENDPOINT SERVICE_NAME

An ENDPOINT starting with grpc:// exports over OTLP/gRPC (host:port), one starting with json+http:// as
OTLP/JSON over HTTP (otlp_json.py), anything else over OTLP/HTTP protobuf."""
import logging
import os
import sys

endpoint, service = sys.argv[1], sys.argv[2]
if endpoint.startswith("grpc://"):
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    exporter = OTLPLogExporter(endpoint=endpoint.removeprefix("grpc://"), insecure=True)
elif endpoint.startswith("json+"):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import otlp_json
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

    class JsonLogExporter(LogRecordExporter):
        """OTLP/JSON over HTTP of the SDK's own log encoding (otlp_json.py)."""

        def export(self, batch):
            ok = otlp_json.post(endpoint.removeprefix("json+"), encode_logs(batch))
            return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

        def force_flush(self, timeout_millis=30_000):
            return True

        def shutdown(self):
            pass

    exporter = JsonLogExporter()
else:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    exporter = OTLPLogExporter(endpoint=endpoint)
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

resource = Resource.create({"service.name": service, "k8s.namespace.name": "shop", "host.arch": "amd64"})
provider = LoggerProvider(resource=resource)
provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
logger = logging.getLogger("vigil-e2e")
logger.setLevel(logging.INFO)
logger.addHandler(LoggingHandler(level=logging.INFO, logger_provider=provider))

logger.info("order placed", extra={"order_id": "A-17"})
logger.warning("payment slow: 1800ms")
logger.error("payment failed: card declined", extra={"order_id": "A-18"})
provider.force_flush()
provider.shutdown()
