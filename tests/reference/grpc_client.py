"""An independent client (grpcio, no generated code): health checks, server reflection, and a
reconstruction call whose message types come from the server's own reflection descriptors.
K-space is made with NumPy's FFT in the documented convention (centred, orthonormal).

Usage: python3 grpc_client.py HOST:PORT
"""
import sys

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

target = sys.argv[1]
channel = grpc.insecure_channel(target)

# 1. health
health = health_pb2_grpc.HealthStub(channel)
for service in ["", "inferd.v1.Reconstruction", "inference.GRPCInferenceService"]:
    status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
    assert status == health_pb2.HealthCheckResponse.SERVING, (service, status)

# 2. reflection: list services, then fetch the API's descriptors
refl = reflection_pb2_grpc.ServerReflectionStub(channel)
def ask(**kw):
    return next(iter(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**kw)]))))
services = {s.name for s in ask(list_services="").list_services_response.service}
assert {"inferd.v1.Reconstruction", "inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services, services
pool = descriptor_pool.DescriptorPool()
for raw in ask(file_containing_symbol="inferd.v1.Reconstruction").file_descriptor_response.file_descriptor_proto:
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(raw))
msg = lambda name: GetMessageClass(pool.FindMessageTypeByName("inferd.v1." + name))
Req, SliceImage = msg("ReconstructSliceRequest"), msg("SliceImage")
call = channel.unary_unary("/inferd.v1.Reconstruction/ReconstructSlice",
                           request_serializer=lambda m: m.SerializeToString(),
                           response_deserializer=SliceImage.FromString)

# 3. a single-coil slice: a bright square on a dim disc, values in [0, 1]
n = 64
y, x = np.mgrid[:n, :n]
img = np.where((x - 32) ** 2 + (y - 32) ** 2 < 24 ** 2, 0.3, 0.0)
img[24:40, 20:36] = 1.0
k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(img), norm="ortho")).astype(np.complex64)
req = Req()
h = req.header
h.height, h.width, h.coils, h.slices = n, n, 1, 1
h.sampling.mask.shape.extend([n, n])
h.sampling.mask.dtype = 1  # FLOAT32
h.sampling.mask.data = np.ones((n, n), np.float32).tobytes()  # fully sampled: output must equal the image
h.return_zero_filled = True
req.slice.kspace.shape.extend([1, n, n])
req.slice.kspace.dtype = 2  # COMPLEX64
req.slice.kspace.data = k.tobytes()
out = call(req, timeout=60)
mag = np.frombuffer(out.magnitude.data, dtype="<f4").reshape(list(out.magnitude.shape))
err = np.abs(mag - img).max()
assert err < 1e-4, f"fully sampled + hard DC must reproduce the image, max error {err}"

# 4. bad input: wrong dtype
req.slice.kspace.dtype = 1
try:
    call(req, timeout=60)
    raise AssertionError("expected INVALID_ARGUMENT")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.code()
    assert "expected COMPLEX64" in e.details(), e.details()
print("ok: health, reflection, ReconstructSlice (max error %.2e), INVALID_ARGUMENT" % err)
