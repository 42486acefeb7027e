"""An OTLP/gRPC trace receiver built on the OpenTelemetry project's own protocol definitions
(PyPI `opentelemetry-proto`, the generated code of opentelemetry-proto's collector service) and
grpcio: the end an inferd started with --otlp-endpoint exports to, as an OpenTelemetry Collector's
`otlp` receiver would be.

usage: otlp_collector.py PORT_FILE OUT.jsonl

Listens on 127.0.0.1 (a free port, written to PORT_FILE once it serves) and appends every span of
every TraceService/Export call to OUT.jsonl, one JSON object per line:
{"service", "trace_id", "span_id", "parent_span_id", "name", "kind", "attributes", "events",
"links"} with
ids in lowercase hex (parent "" for a root span) and attribute values as strings, numbers or
booleans. Runs until killed.
"""
import json
import os
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

PORT_FILE, OUT = sys.argv[1:3]
lock = threading.Lock()


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "bytes_value":
        return v.bytes_value.hex()
    if kind is None:
        return None
    return getattr(v, kind)


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        lines = []
        for rs in request.resource_spans:
            service = attributes(rs.resource.attributes).get("service.name")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    lines.append(
                        json.dumps(
                            {
                                "service": service,
                                "trace_id": s.trace_id.hex(),
                                "span_id": s.span_id.hex(),
                                "parent_span_id": s.parent_span_id.hex(),
                                "name": s.name,
                                "kind": trace_pb2.Span.SpanKind.Name(s.kind),
                                "attributes": attributes(s.attributes),
                                "events": [
                                    {"name": e.name, "attributes": attributes(e.attributes)}
                                    for e in s.events
                                ],
                                "links": [
                                    {"trace_id": l.trace_id.hex(), "span_id": l.span_id.hex()}
                                    for l in s.links
                                ],
                            }
                        )
                    )
        with lock, open(OUT, "a") as f:
            f.write("".join(line + "\n" for line in lines))
        return trace_service_pb2.ExportTraceServiceResponse()


server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(port))
os.replace(PORT_FILE + ".tmp", PORT_FILE)
server.wait_for_termination()
