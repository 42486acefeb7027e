"""Writes an unrolled ReconResNet (random weights, or a given inferd weights file), one undersampled
slice and PyTorch's reconstruction of it (tests/reference/unrolled.py), for inferd's parity test.

Usage: python3 unrolled_parity.py OUT_DIR cartesian|radial SIZE SEED [WEIGHTS|-] [GUARD]
GUARD overrides the misfit guard's threshold and turns the spectral guard on (random weights default to
no guard at all: threshold 1e6 and no spectral rings, the network path alone).
Writes weights.safetensors, kspace.npy (complex64: [ny, nx] Cartesian k-space, zero where not sampled, or
[spokes * 2N] radial samples), mask.npy ([ny, nx], Cartesian), image.npy (the ground-truth magnitude) and
output.npy (the reconstruction's magnitude, in the input's scale).
Radial: golden-angle spokes of 2N samples (`bart traj -r -G -x 2N` scaled by 0.5), 40 spokes.
"""
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
import mr_data as md  # noqa: E402
from reconresnet import randomise  # noqa: E402
from unrolled import DEFAULT_GUARD_LINES, CartesianOp, ToeplitzOp, Unrolled  # noqa: E402

out, sampling, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
radial = sampling == "radial"
torch.manual_seed(seed)
if len(sys.argv) > 5 and sys.argv[5] != "-":
    state = load_file(sys.argv[5])
    w = state["model.1.weight"].shape[0]
    blocks = sum(1 for k in state if k.endswith("conv_block.1.weight"))
    model = Unrolled(w, blocks, state["unrolled.lambda"].numel())
    model.load_inferd_state_dict(state)
else:
    model = Unrolled(8, 2, 3, cg_iterations=4)
    randomise(model.denoiser, seed)
    with torch.no_grad():
        model.log_lambda.copy_(torch.tensor([0.3, 2.0, 0.7]).log())
    model.guard_misfit = 1e6
    model.guard_lines = 0
if len(sys.argv) > 6:
    model.guard_misfit = float(sys.argv[6])
    model.guard_lines = DEFAULT_GUARD_LINES
model.eval()

rng = np.random.default_rng(seed)
# An asymmetric test object: an off-centre L with a smooth background blob and a gradient.
yy, xx = np.mgrid[0:n, 0:n] / n
img = 0.3 * np.exp(-((yy - 0.6) ** 2 + (xx - 0.4) ** 2) / 0.05) + 0.2 * xx
img[int(0.2 * n):int(0.7 * n), int(0.25 * n):int(0.35 * n)] += 0.8
img[int(0.6 * n):int(0.7 * n), int(0.25 * n):int(0.6 * n)] += 0.8
img = img * np.exp(1j * 0.5 * yy)
with torch.no_grad():
    if radial:
        spokes = 40
        kx, ky = md.radial_coords(n, spokes)
        wts = md.radial_ramp(n, spokes)
        y = md.nufft_forward(img, kx, ky)
        x0 = md.nufft_adjoint(wts * y, kx, ky, n)
        s = np.abs(x0).max() / md.NET_INPUT_PEAK
        op = ToeplitzOp(torch.from_numpy(md.toeplitz_kernel(kx, ky, wts, n).astype(np.complex64))[None],
                        torch.from_numpy((x0 / s).astype(np.complex64))[None])
        op.ywy = torch.tensor([np.sum(wts * np.abs(y) ** 2) / s ** 2])
        pred, misfit = model.serve(torch.from_numpy((x0 / s).astype(np.complex64))[None], op, final_hard=False)
        np.save(os.path.join(out, "kspace.npy"), y.astype(np.complex64))
    else:
        mask = md.random_mask(rng, n, 4.0)
        k = md.fft2c(img) * mask
        x0 = md.ifft2c(k)
        s = np.abs(x0).max() / md.NET_INPUT_PEAK
        op = CartesianOp(torch.from_numpy((k / s).astype(np.complex64))[None], torch.from_numpy(mask)[None])
        pred, misfit = model.serve(torch.from_numpy((x0 / s).astype(np.complex64))[None], op, final_hard=True)
        np.save(os.path.join(out, "kspace.npy"), k.astype(np.complex64))
        np.save(os.path.join(out, "mask.npy"), mask)
save_file(model.inferd_state_dict(radial), os.path.join(out, "weights.safetensors"))
np.save(os.path.join(out, "image.npy"), np.abs(img).astype(np.float32))
np.save(os.path.join(out, "output.npy"), (pred[0].numpy() * s).astype(np.float32))
print(f"misfit of the last pass {misfit.item():.4g}, guard threshold {getattr(model, 'guard_misfit', None) or 0.5}")
