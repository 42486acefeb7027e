"""Calls grpc.health.v1 Check from 8 threads over one grpcio channel for a few seconds and reports
successes and failures. Used against a server with a short max connection age: a standard gRPC
client must ride through the server's GOAWAYs (it reconnects and retries refused streams itself).

    python3 connection_age.py HOST:PORT SECONDS
"""
import sys
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

target, seconds = sys.argv[1], float(sys.argv[2])
stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(target))
counts = {"ok": 0, "errors": 0}
lock = threading.Lock()


def caller():
    end = time.time() + seconds
    while time.time() < end:
        try:
            stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            key = "ok"
        except grpc.RpcError as e:
            print("error:", e.code(), e.details(), flush=True)
            key = "errors"
        with lock:
            counts[key] += 1


threads = [threading.Thread(target=caller) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"ok={counts['ok']} errors={counts['errors']}")
