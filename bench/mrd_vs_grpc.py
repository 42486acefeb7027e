"""MRD streaming port vs gRPC (KServe v2 `recon`, NVIDIA's tritonclient) on the same scans, side by
side in one run against one server.

usage: python3 bench/mrd_vs_grpc.py --mrd HOST:PORT --grpc HOST:PORT [--coils 1,8,32] [--size 256]
                                    [--rounds 2] [--out RESULT.json]

Scans: `ismrmrd_generate_cartesian_shepp_logan -m SIZE -c COILS -a 4 -w 24 -r 2` (2× readout
oversampling as scanners send it; 8 slices = 4 line shifts × 2 repetitions). The MRD port receives the
acquisitions as they are and removes the oversampling itself; the gRPC client sends each slice's
SIZE × SIZE k-space with the oversampling already removed (NumPy), so both reconstruct the same image. Per coil count, rounds alternate MRD and gRPC:

* latency, slices sent one at a time: MRD from the moment the slice's last acquisition is written to
  the moment its image has arrived; gRPC the whole `infer` call (the slice's k-space travels inside it);
* throughput: every slice sent at once (MRD: one session, acquisitions back to back; gRPC: one
  call per slice, each from its own thread), slices per second from the first byte to the last image;
* protocol overhead: a session of acquisitions flagged as dummy scans (read, decoded and discarded by
  the server, nothing reconstructed): seconds per acquisition message until the server's CLOSE.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import ismrmrd
import ismrmrd.serialization as ser
import ismrmrd.xsd
import numpy as np
import tritonclient.grpc as grpcclient

PARAMS = json.dumps({"pixeltype": "float"})


def scan(path, size, coils):
    subprocess.run(["ismrmrd_generate_cartesian_shepp_logan", "-m", str(size), "-c", str(coils),
                    "-a", "4", "-w", "24", "-r", "2", "-o", path], check=True, capture_output=True)
    d = ismrmrd.Dataset(path, "dataset", False)
    xml = d.read_xml_header().decode()
    acqs = [d.read_acquisition(i) for i in range(d.number_of_acquisitions())]
    d.close()
    slices = {}
    for a in acqs:
        if a.isFlagSet(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            continue
        slices.setdefault(a.idx.repetition, []).append(a)
    return xml, [slices[k] for k in sorted(slices)]


class Session:
    """One MRD connection; a thread collects the images and the time each arrived."""

    def __init__(self, host, port, xml):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.w = self.sock.makefile("wb")
        self.s = ser.ProtocolSerializer(self.w)
        self.arrivals, self.texts = [], []
        self.cv = threading.Condition()
        self.closed = None
        self.t = threading.Thread(target=self.receive, args=(self.sock.makefile("rb"),))
        self.t.start()
        self.s.serialize(ser.ConfigFile("inferd"))
        self.s.serialize(ser.ConfigText(PARAMS))
        self.s.serialize(ismrmrd.xsd.CreateFromDocument(xml))

    def receive(self, r):
        try:
            for obj in ser.ProtocolDeserializer(r).deserialize():
                with self.cv:
                    if isinstance(obj, ismrmrd.Image):
                        self.arrivals.append(time.perf_counter())
                    elif isinstance(obj, str):
                        self.texts.append(str(obj))
                    self.cv.notify_all()
        except EOFError:
            pass
        with self.cv:
            self.closed = time.perf_counter()
            self.cv.notify_all()

    def send(self, acqs):
        for a in acqs:
            self.s.serialize(a)
        self.w.flush()
        return time.perf_counter()

    def wait_images(self, n):
        with self.cv:
            self.cv.wait_for(lambda: len(self.arrivals) >= n or self.closed is not None, timeout=600)
        assert not self.texts, self.texts
        return self.arrivals[n - 1]

    def close(self):
        self.s.close()
        self.w.flush()
        self.t.join(timeout=600)
        self.sock.close()
        assert not self.texts, self.texts
        return self.closed


def kspace(acqs, size):
    """The slice's [coils, size, size] k-space for KServe: lines placed by their encoding step (the
    generator's centre line is size / 2, as inferd's) and the 2× readout oversampling removed in
    image space, as the MRD port does."""
    coils = acqs[0].active_channels
    k = np.zeros((coils, size, size), np.complex64)
    mask = np.zeros((size, size), np.float32)
    c = lambda x, f: np.fft.fftshift(f(np.fft.ifftshift(x, axes=-1), axis=-1, norm="ortho"), axes=-1)
    for a in acqs:
        row = a.idx.kspace_encode_step_1
        line = c(a.data, np.fft.ifft)[:, a.number_of_samples // 2 - size // 2:][:, :size]
        k[:, row, :] = c(line, np.fft.fft)
        mask[row] = 1.0
    return k, mask


def kserve_inputs(k, mask):
    kin = grpcclient.InferInput("kspace", [1, *k.shape, 2], "FP32")
    kin.set_data_from_numpy(np.stack([k.real, k.imag], -1)[None].astype(np.float32))
    m = grpcclient.InferInput("mask", [1, *mask.shape], "FP32")
    m.set_data_from_numpy(mask[None])
    return [kin, m]


def mrd_latency(host, port, xml, slices):
    s = Session(host, port, xml)
    out = []
    for i, acqs in enumerate(slices):
        sent = s.send(acqs)
        out.append(s.wait_images(i + 1) - sent)
    s.close()
    return out


def mrd_throughput(host, port, xml, slices):
    s = Session(host, port, xml)
    t0 = time.perf_counter()
    for acqs in slices:
        s.send(acqs)
    last = s.wait_images(len(slices))
    s.close()
    return len(slices) / (last - t0)


def grpc_latency(client, inputs):
    out = []
    for inp in inputs:
        t0 = time.perf_counter()
        client.infer("recon", inp)
        out.append(time.perf_counter() - t0)
    return out


def grpc_throughput(url, inputs):
    """Every slice at once, one gRPC call per slice from its own thread and channel."""
    clients = [grpcclient.InferenceServerClient(url=url) for _ in inputs]
    for c in clients:
        c.is_server_live()  # connect before timing
    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(inputs)) as pool:
        list(pool.map(lambda ci: ci[0].infer("recon", ci[1]), zip(clients, inputs)))
    return len(inputs) / (time.perf_counter() - t0)


def overhead(host, port, xml, acqs, repeat):
    """Seconds per acquisition message when nothing is reconstructed (dummy scans are skipped)."""
    dummies = []
    for a in acqs:
        b = ismrmrd.Acquisition.from_bytes(a.to_bytes())
        b.clearAllFlags()
        b.setFlag(ismrmrd.ACQ_IS_DUMMYSCAN_DATA)
        dummies.append(b)
    s = Session(host, port, xml)
    t0 = time.perf_counter()
    for _ in range(repeat):
        s.send(dummies)
    closed = s.close()
    return (closed - t0) / (repeat * len(dummies))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mrd", required=True)
    p.add_argument("--grpc", required=True)
    p.add_argument("--coils", default="1,8,32")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    host, port = a.mrd.rsplit(":", 1)
    port = int(port)
    client = grpcclient.InferenceServerClient(url=a.grpc)
    results = []
    with tempfile.TemporaryDirectory() as d:
        for coils in [int(c) for c in a.coils.split(",")]:
            xml, slices = scan(os.path.join(d, f"c{coils}.h5"), a.size, coils)
            inputs = [kserve_inputs(*kspace(s, a.size)) for s in slices]
            client.infer("recon", inputs[0])  # warm the connection
            r = {"coils": coils, "size": a.size, "slices": len(slices),
                 "acquisitions_per_slice": len(slices[0]),
                 "mrd_latency_s": [], "grpc_latency_s": [], "mrd_slices_per_s": [], "grpc_slices_per_s": []}
            for _ in range(a.rounds):
                r["mrd_latency_s"] += mrd_latency(host, port, xml, slices)
                r["grpc_latency_s"] += grpc_latency(client, inputs)
                r["mrd_slices_per_s"].append(mrd_throughput(host, port, xml, slices))
                r["grpc_slices_per_s"].append(grpc_throughput(a.grpc, inputs))
            r["mrd_s_per_acquisition_message"] = overhead(host, port, xml, slices[0], 8)
            for k in ("mrd_latency_s", "grpc_latency_s"):
                r[k.replace("_s", "_median_s")] = statistics.median(r[k])
            r["latency_ratio_mrd_over_grpc"] = r["mrd_latency_median_s"] / r["grpc_latency_median_s"]
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if not isinstance(v, list) or k.endswith("per_s")}),
                  flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
