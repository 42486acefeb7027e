"""Hostile requests at a low rate during the soak (bench/soak.sh), through NVIDIA's tritonclient.

Every request is malformed or over a limit: unknown models, wrong datatypes and shapes, NaN and
infinity, empty and overflowing shapes, radial image sizes far over the limit, graph batches that
point outside the node list. Each must end in a clean gRPC status
(INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED); anything else, or a dropped connection, is
counted as unexpected. Writes the counts by status as JSON.

    python3 bench/soak_hostile.py ADDR SECONDS RATE_PER_S OUT.json
"""
import json
import sys
import time

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

EXPECTED = {"StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND", "StatusCode.RESOURCE_EXHAUSTED"}


def tensor(name, array, datatype=None):
    t = grpcclient.InferInput(name, list(array.shape), datatype or "FP32")
    t.set_data_from_numpy(array)
    return t


def cases():
    """(label, model, inputs, parameters) of every hostile request, cycled through."""
    k = np.zeros((1, 1, 64, 64, 2), np.float32)
    mask = np.ones((1, 64, 64), np.float32)
    nan_k = k.copy()
    nan_k[0, 0, 3, 5, 1] = np.nan
    inf_x = np.zeros((4, 2), np.float32)
    inf_x[2, 1] = np.inf
    traj = np.zeros((1, 2, 4, 2), np.float32)
    radial_k = np.zeros((1, 128, 2, 4, 2), np.float32)
    x = np.zeros((8, 1), np.float32)
    yield "unknown model", "no-such-model", [tensor("x", inf_x)], {}
    yield "NaN in k-space", "recon", [tensor("kspace", nan_k), tensor("mask", mask)], {}
    yield "infinity in x", "lightsb", [tensor("x", inf_x)], {}
    yield "mask of the wrong shape", "recon", [tensor("kspace", k), tensor("mask", mask[:, :32])], {}
    yield "k-space of rank 3", "recon", [tensor("kspace", k[0, 0]), tensor("mask", mask)], {}
    yield "empty k-space", "recon", [tensor("kspace", k[:, :, :0]), tensor("mask", mask[:, :0])], {}
    yield "radial 128 coils at 1024²", "recon-radial", [tensor("kspace", radial_k), tensor("traj", traj)], {"image_size": 1024}
    yield "radial image size 2^40", "recon-radial", [tensor("kspace", radial_k[:, :1]), tensor("traj", traj)], {"image_size": 1 << 40}
    yield "samples x steps too large", "lightsb", [tensor("x", np.zeros((4, 2), np.float32))], {"num_samples": 1 << 31}
    yield "graph batch out of range", "lcm", [tensor("x", x), tensor("batch", np.array([0, 0, 1, 1, 2, 2, 3, 1 << 40], np.int64), "INT64")], {}
    yield "graph batch of the wrong length", "lcm", [tensor("x", x), tensor("batch", np.zeros(3, np.int64), "INT64")], {}
    yield "wrong datatype", "lightsb", [tensor("x", np.zeros((4, 2), np.int64), "INT64")], {}


def main():
    addr, seconds, rate, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    client = grpcclient.InferenceServerClient(addr)
    all_cases = list(cases())
    counts, unexpected = {}, []
    end, i = time.time() + seconds, 0
    while time.time() < end:
        label, model, inputs, params = all_cases[i % len(all_cases)]
        i += 1
        try:
            client.infer(model, inputs, parameters=params or None, client_timeout=30)
            status = "OK"
        except InferenceServerException as e:
            status = str(e.status())
        except Exception as e:  # a dropped connection or anything the client did not expect
            status = f"client error: {type(e).__name__}"
        counts[status] = counts.get(status, 0) + 1
        if status not in EXPECTED:
            unexpected.append(f"{label}: {status}")
        time.sleep(1.0 / rate)
    json.dump({"requests": i, "by_status": counts, "unexpected": unexpected}, open(out, "w"), indent=1)
    print(f"hostile: {i} requests, {counts}, unexpected {len(unexpected)}")


if __name__ == "__main__":
    main()
