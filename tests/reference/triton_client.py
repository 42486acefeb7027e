"""NVIDIA's tritonclient.grpc, unchanged, against inferd's KServe v2 service: liveness, readiness,
metadata, configuration, and `recon` inference on k-space made with NumPy's FFT in the documented
convention (centred, orthonormal), with and without gzip compression.

Usage: python3 triton_client.py HOST:PORT
"""
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

url = sys.argv[1]
client = grpcclient.InferenceServerClient(url=url)

assert client.is_server_live()
assert client.is_server_ready()
assert client.is_model_ready("recon")
assert not client.is_model_ready("no-such-model")
meta = client.get_server_metadata(as_json=True)
assert meta["name"] == "inferd", meta

md = client.get_model_metadata("recon", as_json=True)
inputs = {t["name"]: (t["datatype"], [int(s) for s in t["shape"]]) for t in md["inputs"]}
assert inputs == {"kspace": ("FP32", [-1, -1, -1, -1, 2]), "mask": ("FP32", [-1, -1, -1])}, inputs
outputs = {t["name"]: t["datatype"] for t in md["outputs"]}
assert outputs == {"image": "FP32"}, outputs
cfg = client.get_model_config("recon", as_json=True)["config"]
assert int(cfg["max_batch_size"]) >= 1, cfg

# Two head-like test images: ellipses of different intensity, smooth phase.
n = 96
y, x = np.mgrid[-1:1:n * 1j, -1:1:n * 1j]
def ellipse(cx, cy, a, b):
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1
images = []
for shift in (0.0, 0.08):
    img = 1.0 * ellipse(shift, 0, 0.7, 0.9) - 0.6 * ellipse(shift, 0, 0.62, 0.82)
    img += 0.4 * ellipse(shift - 0.2, 0.1, 0.15, 0.3) + 0.3 * ellipse(shift + 0.25, -0.2, 0.12, 0.12)
    images.append(img * np.exp(1j * 0.5 * (x + y)))
images = np.stack(images)

def fft2c(im):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(im, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))

def ifft2c(k):
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))

rng = np.random.default_rng(0)
mask = np.zeros((2, n, n), np.float32)
for b in range(2):
    rows = rng.random(n) < 0.2
    rows[n // 2 - 4 : n // 2 + 4] = True
    mask[b, rows, :] = 1
kspace = fft2c(images) * mask
kspace_ri = np.stack([kspace.real, kspace.imag], axis=-1)[:, None].astype(np.float32)  # [B, C=1, H, W, 2]

def nmse(gt, pred):
    return float(np.sum((gt - pred) ** 2) / np.sum(gt ** 2))

truth = np.abs(images)
zero_filled = np.abs(ifft2c(kspace))
results = []
for compression in (None, "gzip"):
    k_in = grpcclient.InferInput("kspace", list(kspace_ri.shape), "FP32")
    k_in.set_data_from_numpy(kspace_ri)
    m_in = grpcclient.InferInput("mask", list(mask.shape), "FP32")
    m_in.set_data_from_numpy(mask)
    res = client.infer(
        "recon",
        [k_in, m_in],
        outputs=[grpcclient.InferRequestedOutput("image")],
        request_id="triton-test",
        compression_algorithm=compression,
    )
    out = res.as_numpy("image")
    assert out.shape == (2, n, n) and out.dtype == np.float32, (out.shape, out.dtype)
    assert res.get_response().id == "triton-test"
    results.append(out)
assert np.array_equal(results[0], results[1])
out = results[0]
for b in range(2):
    e_net, e_zf = nmse(truth[b], out[b]), nmse(truth[b], zero_filled[b])
    print(f"slice {b}: NMSE zero-filled {e_zf:.4f}, inferd {e_net:.4f}")
    assert e_net < 0.8 * e_zf, (b, e_net, e_zf)
    # the image comes back in the input's intensity scale
    assert 0.7 < out[b].max() / truth[b].max() < 1.3, (out[b].max(), truth[b].max())

# A wrong request is refused with a clear status, and the server keeps serving.
try:
    bad = grpcclient.InferInput("kspace", [1, 1, n, n], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 1, n, n), np.float32))
    client.infer("recon", [bad, m_in])
    raise AssertionError("a 4-D kspace was accepted")
except InferenceServerException as e:
    assert "INVALID_ARGUMENT" in str(e.status()), e
    assert "kspace" in e.message(), e.message()
try:
    client.infer("no-such-model", [k_in, m_in])
    raise AssertionError("an unknown model was accepted")
except InferenceServerException as e:
    assert "NOT_FOUND" in str(e.status()), e
assert client.is_server_ready()

# Statistics (Triton's extension) agree with what was sent to `recon`: two requests of two slices
# each answered, one refused; every slice queued and computed once; the batches add up.
assert "statistics" in client.get_server_metadata().extensions
stats = client.get_inference_statistics("recon").model_stats
assert len(stats) == 1, stats
s = stats[0]
i = s.inference_stats
assert (i.success.count, i.fail.count) == (2, 1), i
assert i.success.ns > 0 and i.fail.ns > 0, i
assert s.inference_count == 4 and i.queue.count == 4 and i.compute_infer.count == 4, s
assert 1 <= s.execution_count <= 4, s
assert sum(b.compute_infer.count for b in s.batch_stats) == s.execution_count, s
assert sum(b.batch_size * b.compute_infer.count for b in s.batch_stats) == s.inference_count, s
assert s.last_inference > 0
everything = client.get_inference_statistics().model_stats
assert {m.name for m in everything} >= {s.name, "lightsb"}, [m.name for m in everything]
try:
    client.get_inference_statistics("no-such-model")
    raise AssertionError("statistics of an unknown model")
except InferenceServerException as e:
    assert "NOT_FOUND" in str(e.status()), e
print(f"statistics: {s.name}: {s.execution_count} executions, batch sizes {[b.batch_size for b in s.batch_stats]}")
print("ok: tritonclient live, ready, metadata, config, infer, statistics")
