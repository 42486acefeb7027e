"""TorchServe handler that serves ReconResNet Cartesian MR reconstruction the way inferd's `recon` does.

Every step mirrors inferd's serving pipeline (`src/mri/recon.rs` and the functions it calls), in
PyTorch float32 / complex64, so that the same weights give the same image from either server:

1. mask the measured k-space (unsampled positions are zeroed), zero-filled coil images with the
   centred orthonormal inverse FFT `x = fftshift(ifft2(ifftshift(k), norm="ortho"))`;
2. single coil: that image; several coils: coil sensitivities from the fully sampled k-space centre (ACS
   box, Hann-windowed, normalised to unit root-sum-of-squares) and the combination `sum_c conj(S_c) x_c`;
3. the combined magnitude scaled to a peak of 0.5 (`NET_INPUT_PEAK`) through ReconResNet (inputs
   reflection-padded at the bottom/right to a multiple of 4, the output cropped back);
4. the output back in the input's scale with the zero-filled phase, expanded to the coils with the
   sensitivities, centred orthonormal FFT, data consistency per coil (hard by default: measured samples
   replace the prediction), inverse FFT, root-sum-of-squares magnitude.

Request (TorchServe gRPC `Predictions`, `input` map; the REST API's multipart form works the same):
  kspace  .npy float32 [coils, H, W, 2] or [1, coils, H, W, 2] (ky, kx, re/im); complex64 [coils, H, W]
          or [1, coils, H, W] is accepted too
  mask    .npy float32 [H, W] or [1, H, W], 1 = sampled, 0 = not sampled
  data_consistency (optional) b"hard" (default), b"soft" (with lambda) or b"off"
  lambda  (optional) the soft data-consistency weight as text, e.g. b"2.5"
Response: .npy float32 [H, W], the reconstructed magnitude in the input's scale. A malformed request
fails with HTTP 400 / gRPC INVALID_ARGUMENT and a message saying what is wrong.

The network is `ReconResNet` from `reconresnet.py` (the PyTorch module with the official
`Resnet2Dv2b14` parameter names, packed into the archive as the model file); width and number of
residual blocks are read from the weights, as inferd does. Requests that TorchServe batches together
are prepared one by one and go through the network in one call per image size.

Settings come from the archive's model-config.yaml, `handler:` section:
  intra_op_threads   torch.set_num_threads for this worker (default: all cores)
"""
import io
import logging
import math
import os
import re

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from ts.utils.util import PredictionException

from reconresnet import ReconResNet

log = logging.getLogger(__name__)

# Peak of the network's input image (the training convention inferd uses).
NET_INPUT_PEAK = 0.5
# Stride-2 stages of ReconResNet: inputs are padded to a multiple of 2**UPDOWN.
UPDOWN = 2
# Smallest ACS extent (samples per direction) accepted for sensitivity estimation.
MIN_ACS = 4
F32_MIN_POSITIVE = float(np.finfo(np.float32).tiny)


# ---------------------------------------------------------------------------------------------------
# k-space helpers (the same conventions as src/mri/fft.rs, coils.rs, dc.rs)


def fft2c(x):
    """Centred orthonormal 2-D FFT over the last two dimensions."""
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def ifft2c(k):
    """Centred orthonormal inverse 2-D FFT over the last two dimensions."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def rss(images):
    """Root-sum-of-squares over coils: [C, H, W] complex -> [H, W] real."""
    return (images.real ** 2 + images.imag ** 2).sum(0).sqrt()


def acs_region(mask):
    """The fully sampled box around the k-space centre as (y0, y1, x0, x1), half-open.

    Columns: the contiguous sampled run through the centre of the centre row; rows: the run of rows
    around the centre in which all of those columns are sampled (a 1-D mask gives its block of central
    ky lines, a 2-D mask its central square).
    """
    ny, nx = mask.shape
    cy, cx = ny // 2, nx // 2
    s = mask > 0
    if not s[cy, cx]:
        return cy, cy, cx, cx
    x0, x1 = cx, cx + 1
    while x0 > 0 and s[cy, x0 - 1]:
        x0 -= 1
    while x1 < nx and s[cy, x1]:
        x1 += 1
    row_ok = lambda y: bool(s[y, x0:x1].all())
    y0, y1 = cy, cy + 1
    while y0 > 0 and row_ok(y0 - 1):
        y0 -= 1
    while y1 < ny and row_ok(y1):
        y1 += 1
    return y0, y1, x0, x1


def _round_half_away(v):
    return int(math.floor(v + 0.5))


def estimate_sensitivities(kspace, mask_np):
    """Coil sensitivities [C, H, W] from the Hann-windowed ACS region, unit root-sum-of-squares.

    Without a usable ACS box (fewer than MIN_ACS samples in a direction) the central 8 % of k-space is
    used instead.
    """
    _, ny, nx = kspace.shape
    y0, y1, x0, x1 = acs_region(mask_np)
    if (y1 - y0) < min(MIN_ACS, ny) or (x1 - x0) < min(MIN_ACS, nx):
        h = min(max(_round_half_away(np.float32(ny) * np.float32(0.08)), MIN_ACS), ny)
        w = min(max(_round_half_away(np.float32(nx) * np.float32(0.08)), MIN_ACS), nx)
        y0, y1 = ny // 2 - h // 2, ny // 2 - h // 2 + h
        x0, x1 = nx // 2 - w // 2, nx // 2 - w // 2 + w

    def hann(n):
        t = torch.arange(n, dtype=torch.float32) + 0.5
        return 0.5 - 0.5 * torch.cos(2.0 * math.pi * t / n)

    window = hann(y1 - y0)[:, None] * hann(x1 - x0)[None, :]
    low = torch.zeros_like(kspace)
    low[:, y0:y1, x0:x1] = kspace[:, y0:y1, x0:x1] * window
    low = ifft2c(low)
    norm = rss(low)
    floor = max(float(norm.max()) * 1e-6, F32_MIN_POSITIVE)
    return low / norm.clamp_min(floor)


def apply_dc(predicted, measured, sampled, mode, lam):
    """Data consistency on [C, H, W] k-space: hard replaces sampled points by the measurement, soft
    moves them to (F(x) + lambda y) / (1 + lambda), off leaves the prediction as is."""
    if mode == "hard":
        return torch.where(sampled, measured, predicted)
    if mode == "soft":
        return torch.where(sampled, (predicted + measured * lam) * (1.0 / (1.0 + lam)), predicted)
    return predicted


# ---------------------------------------------------------------------------------------------------
# the pipeline


class Prepared:
    """One slice ready for the network (the fields of inferd's `Prepared`)."""

    def __init__(self, kspace, mask, mode, lam):
        ny, nx = mask.shape
        self.ny, self.nx = ny, nx
        self.mode, self.lam = mode, lam
        self.sampled = mask > 0
        measured = torch.where(self.sampled, kspace, torch.zeros((), dtype=kspace.dtype))
        self.measured = measured
        images = ifft2c(measured)
        if kspace.shape[0] == 1:
            self.sens = None
            combined = images[0]
        else:
            self.sens = estimate_sensitivities(measured, mask.numpy())
            combined = (self.sens.conj() * images).sum(0)
        magnitude = combined.abs()
        peak = float(magnitude.max())
        self.empty = peak == 0.0
        self.scale = np.float32(peak) / np.float32(NET_INPUT_PEAK) if peak > 0.0 else np.float32(1.0)
        self.net_input = magnitude / float(self.scale)
        self.phase = torch.where(
            magnitude > 0,
            combined / torch.where(magnitude > 0, magnitude, torch.ones_like(magnitude)),
            torch.ones((), dtype=combined.dtype),
        )

    def finish(self, net_output):
        """The reconstructed magnitude [H, W] from the network's [H, W] output."""
        if self.empty:
            predicted = torch.zeros((self.ny, self.nx), dtype=torch.complex64)
        else:
            predicted = self.phase * (net_output * float(self.scale))
        if self.mode == "off":
            return predicted.abs()
        coil = predicted[None] if self.sens is None else self.sens * predicted
        k = apply_dc(fft2c(coil), self.measured, self.sampled, self.mode, self.lam)
        return rss(ifft2c(k))


def run_network(net, images):
    """ReconResNet on a batch of [H, W] images of one size (padded to a multiple of 4 like inferd)."""
    x = torch.stack(images)[:, None]
    h, w = x.shape[-2:]
    m = 1 << UPDOWN
    ph, pw = (m - h % m) % m, (m - w % m) % m
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect")
    y = net(x)[:, 0, :h, :w]
    return list(y)


def load_network(path):
    """ReconResNet with width and depth read from the state dict (as inferd reads them)."""
    state = load_file(path)
    width = state["model.1.weight"].shape[0]
    blocks = len({m.group(1) for k in state if (m := re.match(r"model\.(\d+)\.conv_block\.1\.weight$", k))})
    net = ReconResNet(width, blocks, UPDOWN)
    net.load_state_dict(state)
    net.eval()
    return net, width, blocks


# ---------------------------------------------------------------------------------------------------
# request decoding


def _npy(value, name):
    if isinstance(value, str):
        value = value.encode("latin-1")
    try:
        return np.load(io.BytesIO(bytes(value)), allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - reported to the client
        raise ValueError(f"input {name} is not a .npy array: {e}") from e


def _text(value):
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8").strip()
    return str(value).strip()


def decode_request(req):
    if "kspace" not in req or "mask" not in req:
        raise ValueError(f"expected inputs kspace and mask, got {sorted(req)}")
    k = _npy(req["kspace"], "kspace")
    m = _npy(req["mask"], "mask")
    if np.iscomplexobj(k):
        if k.ndim == 4 and k.shape[0] == 1:
            k = k[0]
        if k.ndim != 3:
            raise ValueError(f"complex kspace has shape {k.shape}, expected [coils, H, W] or [1, coils, H, W]")
        kspace = torch.from_numpy(np.ascontiguousarray(k, dtype=np.complex64))
    else:
        if k.ndim == 5 and k.shape[0] == 1:
            k = k[0]
        if k.ndim != 4 or k.shape[-1] != 2:
            raise ValueError(f"kspace has shape {k.shape}, expected [coils, H, W, 2] or [1, coils, H, W, 2]")
        kspace = torch.view_as_complex(torch.from_numpy(np.ascontiguousarray(k, dtype=np.float32)))
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    coils, ny, nx = kspace.shape
    if m.shape != (ny, nx):
        raise ValueError(f"mask has shape {m.shape}, expected [{ny}, {nx}] to match kspace")
    if coils < 1 or ny < 4 or nx < 4:
        raise ValueError(f"kspace has shape {tuple(k.shape)}; expected at least 1 coil and H, W >= 4")
    m = np.ascontiguousarray(m, dtype=np.float32)
    if not np.isin(m, (0.0, 1.0)).all():
        raise ValueError("mask must hold only 0 (not sampled) and 1 (sampled)")
    if not (m == 1.0).any():
        raise ValueError("mask samples no k-space point")
    mode = _text(req.get("data_consistency")) or "hard"
    lam = 0.0
    if mode == "soft":
        lam = float(_text(req.get("lambda")) or "nan")
        if not (math.isfinite(lam) and lam > 0):
            raise ValueError("data_consistency soft needs lambda > 0")
    elif mode not in ("hard", "off"):
        raise ValueError(f"data_consistency {mode!r} is unknown; expected hard, soft or off")
    return kspace, torch.from_numpy(m), mode, lam


def _encode(image):
    buf = io.BytesIO()
    np.save(buf, image.numpy().astype(np.float32, copy=False), allow_pickle=False)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------
# TorchServe entry point


class _State:
    net = None


def initialize(context):
    props = context.system_properties
    model_dir = props.get("model_dir")
    cfg = (getattr(context, "model_yaml_config", None) or {}).get("handler", {}) or {}
    threads = int(cfg.get("intra_op_threads", os.cpu_count() or 1))
    torch.set_num_threads(threads)
    manifest = context.manifest or {}
    weights = (manifest.get("model") or {}).get("serializedFile") or "recon-lite.safetensors"
    net, width, blocks = load_network(os.path.join(model_dir, weights))
    # warm-up: one small slice through the whole pipeline
    with torch.inference_mode():
        k = fft2c(torch.rand(1, 32, 32).to(torch.complex64))
        p = Prepared(k, torch.ones(32, 32), "hard", 0.0)
        p.finish(run_network(net, [p.net_input])[0])
    _State.net = net
    log.info("ReconResNet width %d, %d residual blocks from %s; torch intra-op threads %d (torch %s)",
             width, blocks, weights, torch.get_num_threads(), torch.__version__)


def handle(data, context):
    if data is None:  # TorchServe calls the function entry point with no data once, to initialise
        initialize(context)
        return None
    replies = [None] * len(data)
    prepared = {}
    with torch.inference_mode():
        for i, req in enumerate(data):
            try:
                prepared[i] = Prepared(*decode_request(req))
            except ValueError as e:
                if len(data) == 1:
                    # the whole call fails: HTTP 400, gRPC INVALID_ARGUMENT
                    raise PredictionException(str(e), 400) from e
                # In a TorchServe batch a malformed request fails alone and the others are served. The
                # REST API returns its 400; TorchServe's unary gRPC path ignores per-request status
                # codes, so a gRPC client gets OK with this message as the body.
                context.set_response_status(400, str(e), i)
                replies[i] = str(e)
        by_size = {}
        for i, p in prepared.items():
            by_size.setdefault((p.ny, p.nx), []).append(i)
        for idx in by_size.values():
            ys = run_network(_State.net, [prepared[i].net_input for i in idx])
            for i, y in zip(idx, ys):
                replies[i] = _encode(prepared[i].finish(y))
    return replies
