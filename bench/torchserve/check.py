"""Sends the same undersampled k-space to TorchServe (bench/torchserve/handler.py) and to inferd's KServe
`recon` model and compares the two reconstructions.

The test data are made here with NumPy: a smooth synthetic image (overlapping ellipses with soft edges
and a smooth phase), its centred orthonormal k-space, and a 4x 1-D variable-density mask (whole ky
lines; a fully sampled centre of 8 % of the lines, the rest drawn with a density that falls off from the
centre). Cases: single coil 128x128 and 256x256, plus 4 coils at 128x128 (coil sensitivities from the
ACS region).

TorchServe is called over its own gRPC API (proto/torchserve/inference.proto, stubs generated at run
time with grpc_tools), inferd over KServe v2 with NVIDIA's tritonclient. Reported per case: the largest
absolute difference relative to the image maximum (over the whole image, and over the pixels where the
zero-filled image holds at least 1e-3 of its maximum), and both reconstructions' errors against the true
image; then sequential per-request latencies of both servers (one request at a time, the two servers
alternating so that they share whatever else the machine is doing).

The k-space carries complex Gaussian noise (0.5 % of the image maximum by default, `--noise`), as every
acquisition does. This matters for the comparison: the pipeline restores the zero-filled image's phase
before data consistency, and where noise-free synthetic data are exactly zero (the background outside the
object) that phase is FFT round-off, different in every FFT library. The network's small background
output then gets an arbitrary phase there, and the two servers differ by up to that background level
(about 1e-3 of the image maximum) at those pixels only. With any measurement noise the phase is defined
by the data and the servers agree to about 1e-6.

  python3 bench/torchserve/check.py                       # TorchServe from run.sh's state file; starts
                                                          # an inferd from the release binary if it exists
  python3 bench/torchserve/check.py --inferd 127.0.0.1:50051 --torchserve 127.0.0.1:7070
"""
import argparse
import importlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
PROTO = os.path.join(ROOT, "proto", "torchserve", "inference.proto")
DEFAULT_BINARY = "/var/tmp/inferd-target/release/inferd"


# ---------------------------------------------------------------------------------------------------
# gRPC stubs for TorchServe


def ensure_grpc_tools():
    """grpc_tools, installed when missing at a version whose generated code runs on the installed
    protobuf and grpcio (both pinned as constraints, so neither is upgraded)."""
    try:
        import grpc_tools  # noqa: F401
        return
    except ImportError:
        pass
    import grpc
    import google.protobuf
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as c:
        c.write(f"grpcio=={grpc.__version__}\nprotobuf=={google.protobuf.__version__}\n")
    print("installing grpcio-tools (constrained to the installed grpcio and protobuf)", file=sys.stderr)
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "grpcio-tools", "-c", c.name])
    os.unlink(c.name)
    importlib.invalidate_caches()


def torchserve_stubs():
    ensure_grpc_tools()
    from grpc_tools import protoc
    import grpc_tools
    out = tempfile.mkdtemp(prefix="ts-stubs-")
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{os.path.dirname(PROTO)}", f"-I{well_known}", f"--python_out={out}",
                      f"--grpc_python_out={out}", os.path.basename(PROTO)])
    if rc != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    sys.path.insert(0, out)
    pb = importlib.import_module("inference_pb2")
    pb_grpc = importlib.import_module("inference_pb2_grpc")
    return pb, pb_grpc


# ---------------------------------------------------------------------------------------------------
# test data


def fft2c(x):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def ifft2c(k):
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def synthetic_image(n, seed):
    """A smooth head-like complex image in [0, 1]: soft-edged ellipses and a smooth phase."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[-1:1:complex(0, n), -1:1:complex(0, n)]
    soft = lambda r: 1.0 / (1.0 + np.exp((r - 1.0) * 25.0))
    img = 0.8 * soft(np.hypot(x / 0.72, y / 0.9)) + 0.2 * soft(np.hypot(x / 0.78, y / 0.96))
    for _ in range(6):
        cx, cy = rng.uniform(-0.4, 0.4, 2)
        ax, ay = rng.uniform(0.06, 0.25, 2)
        img += rng.uniform(-0.3, 0.3) * soft(np.hypot((x - cx) / ax, (y - cy) / ay))
    img = np.clip(img, 0, None)
    img /= img.max()
    phase = np.exp(1j * (0.6 * x + 0.4 * y + 0.3 * x * y))
    return (img * phase).astype(np.complex64)


def coil_profiles(n, coils):
    y, x = np.mgrid[-1:1:complex(0, n), -1:1:complex(0, n)]
    out = []
    for c in range(coils):
        a = 2 * np.pi * c / coils
        d = (x - 1.2 * np.cos(a)) ** 2 + (y - 1.2 * np.sin(a)) ** 2
        out.append(np.exp(-d / 1.5) * np.exp(1j * a))
    return np.array(out, np.complex64)


def vd_mask(n, accel, seed):
    """1-D variable-density mask over ky lines: centre 8 % fully sampled, n / accel lines in all."""
    rng = np.random.default_rng(seed)
    ncentre = max(4, int(round(n * 0.08)))
    c0 = n // 2 - ncentre // 2
    lines = set(range(c0, c0 + ncentre))
    ky = np.arange(n)
    p = np.exp(-(((ky - n / 2) / (n / 4)) ** 2))
    p[list(lines)] = 0
    p /= p.sum()
    extra = max(0, n // accel - ncentre)
    lines.update(rng.choice(n, size=extra, replace=False, p=p).tolist())
    m = np.zeros((n, n), np.float32)
    m[sorted(lines), :] = 1
    return m


def make_case(n, coils, seed, noise):
    """k-space [coils, H, W, 2], mask, true magnitude and zero-filled magnitude of one test slice.

    `noise` is the standard deviation of complex Gaussian measurement noise relative to the image
    maximum (the orthonormal FFT keeps it the same in image space)."""
    img = synthetic_image(n, seed)
    sens = coil_profiles(n, coils) if coils > 1 else np.ones((1, n, n), np.complex64)
    k = fft2c(sens * img[None]).astype(np.complex64)
    rng = np.random.default_rng(seed + 100)
    k = k + noise * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)) / np.sqrt(2)
    mask = vd_mask(n, 4, seed + 1)
    k = (k * mask[None]).astype(np.complex64)
    ks = np.stack([k.real, k.imag], -1).astype(np.float32)  # [coils, H, W, 2]
    truth = np.sqrt((np.abs(sens * img[None]) ** 2).sum(0)).astype(np.float32)
    zero_filled = np.sqrt((np.abs(ifft2c(k)) ** 2).sum(0)).astype(np.float32)
    return ks, mask, truth, zero_filled


def npy_bytes(a):
    b = io.BytesIO()
    np.save(b, a, allow_pickle=False)
    return b.getvalue()


# ---------------------------------------------------------------------------------------------------
# clients


class TorchServe:
    def __init__(self, addr, model):
        import grpc
        self.pb, pb_grpc = torchserve_stubs()
        opts = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
        self.channel = grpc.insecure_channel(addr, options=opts)
        self.stub = pb_grpc.InferenceAPIsServiceStub(self.channel)
        self.model = model
        from google.protobuf import empty_pb2
        self.health = self.stub.Ping(empty_pb2.Empty(), timeout=10).health

    def request(self, ks, mask):
        return self.pb.PredictionsRequest(model_name=self.model,
                                          input={"kspace": npy_bytes(ks), "mask": npy_bytes(mask)})

    def infer(self, req):
        r = self.stub.Predictions(req, timeout=120)
        return np.load(io.BytesIO(r.prediction))


class Inferd:
    def __init__(self, addr, model):
        import tritonclient.grpc as tg
        self.tg = tg
        self.client = tg.InferenceServerClient(addr)
        self.model = model

    def request(self, ks, mask):
        k = self.tg.InferInput("kspace", [1, *ks.shape], "FP32")
        k.set_data_from_numpy(ks[None])
        m = self.tg.InferInput("mask", [1, *mask.shape], "FP32")
        m.set_data_from_numpy(mask[None])
        return [k, m]

    def infer(self, inputs):
        return self.client.infer(self.model, inputs, client_timeout=120).as_numpy("image")[0]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_inferd(binary, weights):
    """An inferd on free loopback ports serving `weights` as its default (KServe `recon`) model."""
    port, mport = free_port(), free_port()
    cmd = [binary, "serve", "--addr", f"127.0.0.1:{port}", "--metrics-addr", f"127.0.0.1:{mport}",
           "--device", "cpu", "--model", f"recon-file={weights}", "--default-model", "recon-file"]
    fd, log_path = tempfile.mkstemp(prefix="inferd-check-", suffix=".log")
    log = os.fdopen(fd, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    import tritonclient.grpc as tg
    c = tg.InferenceServerClient(f"127.0.0.1:{port}")
    t0 = time.time()
    while time.time() - t0 < 120:
        if proc.poll() is not None:
            raise RuntimeError(f"inferd exited with {proc.returncode}; see {log_path}")
        try:
            if c.is_server_ready():
                print(f"inferd log: {log_path}")
                return proc, f"127.0.0.1:{port}", time.time() - t0
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("inferd did not become ready in 120 s")


def latencies(calls, n):
    """Sequential per-request latencies in ms of each (name, fn, request), interleaved call by call so
    that every server sees the same background load on a shared machine."""
    for _, fn, req in calls:
        fn(req)  # one untimed call each
    out = {name: [] for name, _, _ in calls}
    for _ in range(n):
        for name, fn, req in calls:
            t = time.perf_counter()
            fn(req)
            out[name].append((time.perf_counter() - t) * 1e3)
    return {k: np.array(v) for k, v in out.items()}


def torchserve_addr_default():
    env = os.path.join(os.environ.get("TS_STATE_DIR", "/tmp/inferd-torchserve"), "torchserve.env")
    if os.path.exists(env):
        for line in open(env):
            if line.startswith("TS_GRPC_PORT="):
                return f"127.0.0.1:{line.split('=', 1)[1].strip()}"
    return "127.0.0.1:7070"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--torchserve", default=torchserve_addr_default(), help="TorchServe gRPC inference address")
    ap.add_argument("--model", default="recon-lite", help="TorchServe model name")
    ap.add_argument("--inferd", help="address of a running inferd (default: start one from --binary)")
    ap.add_argument("--inferd-model", default="recon", help="inferd KServe model name")
    ap.add_argument("--binary", default=DEFAULT_BINARY, help="inferd binary to start when --inferd is not given")
    ap.add_argument("--weights", default=os.path.join(ROOT, "models", "recon-lite.safetensors"))
    ap.add_argument("--repeat", type=int, default=20, help="sequential requests per size for the latency loop")
    ap.add_argument("--noise", type=float, default=0.005,
                    help="measurement noise std relative to the image max (0: noise-free k-space)")
    ap.add_argument("--tol", type=float, default=1e-4, help="largest accepted difference relative to the image max")
    args = ap.parse_args()

    ts = TorchServe(args.torchserve, args.model)
    print(f"TorchServe at {args.torchserve}: Ping -> {' '.join(ts.health.split())}")
    proc = None
    inferd = None
    if args.inferd:
        inferd = Inferd(args.inferd, args.inferd_model)
    elif args.binary and os.path.exists(args.binary) and shutil.which(args.binary):
        proc, addr, took = start_inferd(args.binary, args.weights)
        print(f"started inferd at {addr} (ready in {took:.1f} s), weights {args.weights}")
        inferd = Inferd(addr, args.inferd_model)
    else:
        print("no inferd given and no binary found: TorchServe only")

    cases = [(128, 1, 1), (256, 1, 2), (128, 4, 3)]
    worst = 0.0
    try:
        for n, coils, seed in cases:
            ks, mask, truth, zf = make_case(n, coils, seed, args.noise)
            a = ts.infer(ts.request(ks, mask))
            assert a.shape == (n, n) and a.dtype == np.float32, (a.shape, a.dtype)
            nrmse = lambda r: np.linalg.norm(r - truth) / np.linalg.norm(truth)
            line = (f"{n}x{n} {coils} coil(s), {int(mask[:, 0].sum())}/{n} lines: "
                    f"NRMSE zero-filled {nrmse(zf):.4f}, TorchServe {nrmse(a):.4f}")
            if inferd:
                b = inferd.infer(inferd.request(ks, mask))
                d = np.abs(a - b) / np.abs(b).max()
                rel = float(d.max())
                signal = zf >= 1e-3 * zf.max()
                worst = max(worst, rel)
                line += (f", inferd {nrmse(b):.4f}; max |TorchServe - inferd| / max = {rel:.2e} "
                         f"({float(d[signal].max()):.2e} where the zero-filled image has signal)")
            print(line)
        for n in (128, 256):
            ks, mask, _, _ = make_case(n, 1, n, args.noise)
            calls = [("TorchServe", ts.infer, ts.request(ks, mask))]
            if inferd:
                calls.append(("inferd", inferd.infer, inferd.request(ks, mask)))
            for name, t in latencies(calls, args.repeat).items():
                print(f"sequential latency {n}x{n} single coil, {name:10s}: median {np.median(t):6.1f} ms, "
                      f"p90 {np.percentile(t, 90):6.1f} ms, mean {t.mean():6.1f} ms (n={len(t)})")
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=60)
    if inferd:
        ok = worst <= args.tol
        print(f"agreement: worst {worst:.2e} relative (tolerance {args.tol:.0e}) -> {'OK' if ok else 'DIFFERENT'}")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
