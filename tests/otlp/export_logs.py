"""Emits log records through Python's logging into the OpenTelemetry SDK and exports them over OTLP, then exits.

usage: export_logs.py ENDPOINT SERVICE_NAME

An ENDPOINT starting with grpc:// exports over OTLP/gRPC (host:port), anything else over OTLP/HTTP."""
import logging
import sys

endpoint, service = sys.argv[1], sys.argv[2]
if endpoint.startswith("grpc://"):
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    exporter = OTLPLogExporter(endpoint=endpoint.removeprefix("grpc://"), insecure=True)
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
