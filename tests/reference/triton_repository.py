"""NVIDIA's tritonclient.grpc, unchanged, driving inferd's model repository (explicit model control):
repository index, load (with a JSON configuration override), unload, readiness per version,
version-specific inference and statistics per version.

The server's repository holds `mri` (versions 1 and 2, reconstruction) and `bridge` (version 1,
LightSB); it starts with nothing loaded.

Usage: python3 triton_repository.py HOST:PORT
"""
import json
import sys
import time

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

client = grpcclient.InferenceServerClient(url=sys.argv[1])


def states():
    index = client.get_model_repository_index(as_json=True).get("models", [])
    return {(m["name"], m.get("version", "")): m.get("state", "") for m in index}


def wait(name, version, state):
    for _ in range(600):
        if states().get((name, version)) == state:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} {version} never became {state}: {states()}")


assert client.is_server_ready()
assert not client.is_model_ready("bridge"), "explicit control loads nothing by itself"

client.load_model("bridge")
assert client.is_model_ready("bridge")
assert states()[("bridge", "1")] == "READY", states()

# both versions of mri, then inference on each
client.load_model("mri", config=json.dumps({"version_policy": {"all": {}}}))
assert client.is_model_ready("mri", "1") and client.is_model_ready("mri", "2")
n = 64
k = np.zeros((1, 1, n, n, 2), np.float32)
k[0, 0, ::2, :, 0] = np.linspace(-1, 1, n, dtype=np.float32)[None, :]
mask = np.zeros((1, n, n), np.float32)
mask[0, ::2, :] = 1
inputs = [grpcclient.InferInput("kspace", list(k.shape), "FP32"), grpcclient.InferInput("mask", list(mask.shape), "FP32")]
inputs[0].set_data_from_numpy(k)
inputs[1].set_data_from_numpy(mask)
images = {}
for version in ("1", "2", "1"):
    r = client.infer("mri", inputs, model_version=version)
    assert r.get_response().model_version == version, r.get_response()
    images[version] = r.as_numpy("image")
assert images["1"].shape == (1, n, n), images["1"].shape
assert np.abs(images["1"] - images["2"]).max() > 1e-3, "the versions answered alike"
try:
    client.infer("mri", inputs, model_version="9")
    raise AssertionError("version 9 answered")
except InferenceServerException as e:
    assert "StatusCode.NOT_FOUND" in str(e.status()), e

stats = client.get_inference_statistics(model_name="mri", model_version="1", as_json=True)["model_stats"]
assert len(stats) == 1 and stats[0]["version"] == "1", stats
assert int(stats[0]["inference_stats"]["success"]["count"]) == 2, stats
assert int(stats[0]["inference_count"]) == 2, stats
stats = client.get_inference_statistics(model_name="mri", as_json=True)["model_stats"]
assert sorted(s["version"] for s in stats) == ["1", "2"], stats

client.unload_model("mri")
wait("mri", "1", "UNAVAILABLE")
wait("mri", "2", "UNAVAILABLE")
assert not client.is_model_ready("mri")
assert client.is_model_ready("bridge")
client.unload_model("bridge")
wait("bridge", "1", "UNAVAILABLE")
try:
    client.load_model("not-in-the-repository")
    raise AssertionError("an unknown model loaded")
except InferenceServerException as e:
    assert "StatusCode.NOT_FOUND" in str(e.status()), e
print("ok: tritonclient repository index, load, unload, versions and statistics")
