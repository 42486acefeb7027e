"""The unrolled ReconResNet in PyTorch: the reference for inferd's candle implementation and the module
the shipped weights are trained with (scripts/train_unrolled.py).

K passes of one shared complex ReconResNet denoiser `D` (2 channels: real and imaginary part, linear
output), each followed by data consistency with its own learned weight λ_k (MoDL-style physics-guided
unrolling):

    z_k = x_{k-1} + D(x_{k-1})                    (residual denoising step)
    x_k = argmin_x ‖x − z_k‖² + λ_k ‖A x − y‖²      (data consistency; the last pass: the request's mode)

with `A` the sampling operator (Cartesian: mask ⊙ centred orthonormal FFT; radial: the NUFFT with the
density compensation as weights) and `x_0` the zero-filled or gridded image scaled so that its peak
magnitude is 0.5 (inferd's network input convention). For Cartesian sampling the data-consistency
problem is solved exactly per k-space point (`(F z + λ y) / (1 + λ)` where sampled); the last pass is
hard (`λ = ∞`, the measured samples are kept), as served by default. For radial sampling it is solved
by conjugate gradients with `A^H W A` applied through its Toeplitz kernel (exact for the
non-uniform DFT).

State dict: the denoiser under `model.*` (the official ReconResNet names, so inferd's loader reads it),
`unrolled.lambda` `[K]` (λ_k; the last entry is the default of the final pass for radial sampling),
`unrolled.cg_iterations` `[1]`, and for radial models the `sampling.radial` marker.
"""
import torch
import torch.nn as nn

from reconresnet import ReconResNet


def fft2c(x):
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def ifft2c(k):
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def to_channels(x):
    """[B, H, W] complex → [B, 2, H, W] real."""
    return torch.stack([x.real, x.imag], dim=1)


def to_complex(t):
    return torch.complex(t[:, 0], t[:, 1])


class CartesianOp:
    """Single-coil Cartesian sampling: `y` [B, H, W] complex (zero where not sampled), `mask` [B, H, W]."""

    def __init__(self, y, mask):
        self.y, self.mask = y, mask

    def misfit(self, z):
        """inferd's guard statistic: ‖M(F z − y)‖² / ‖M y‖² per image."""
        k = fft2c(z)
        num = ((k - self.y).abs() ** 2 * self.mask).sum(dim=(-2, -1))
        return num / (self.y.abs() ** 2 * self.mask).sum(dim=(-2, -1))

    def dc(self, z, lam, iterations):
        k = fft2c(z)
        if lam is None:  # hard
            k = torch.where(self.mask > 0, self.y, k)
        else:
            k = torch.where(self.mask > 0, (k + lam * self.y) / (1 + lam), k)
        return ifft2c(k)


class ToeplitzOp:
    """Single-coil non-Cartesian sampling through the Toeplitz embedding of `A^H W A`:
    `kernel_f` [B or 1, 2H, 2W] is the FFT of the circulant kernel, `aty` [B, H, W] = A^H W y."""

    def __init__(self, kernel_f, aty, ywy=None):
        self.kernel_f, self.aty, self.ywy = kernel_f, aty, ywy

    def misfit(self, z):
        """inferd's guard statistic ‖W^½(A z − y)‖² / ‖W^½ y‖² = (zᴴAᴴWAz − 2 Re zᴴAᴴWy + yᴴWy) / yᴴWy
        (`ywy` [B] = yᴴWy)."""
        dot = lambda a, b: (a.conj() * b).real.sum(dim=(-2, -1))
        return (dot(z, self.normal(z)) - 2 * dot(z, self.aty) + self.ywy) / self.ywy

    def normal(self, x):
        h, w = x.shape[-2:]
        pad = torch.zeros(x.shape[:-2] + (2 * h, 2 * w), dtype=x.dtype)
        pad[..., :h, :w] = x
        return torch.fft.ifft2(torch.fft.fft2(pad) * self.kernel_f)[..., :h, :w]

    def dc(self, z, lam, iterations):
        """`(I + λ A^H W A) x = z + λ A^H W y` by CG from `z` (as inferd's radial CG data consistency)."""
        dot = lambda a, b: (a.conj() * b).real.sum(dim=(-2, -1), keepdim=True)
        x = z
        r = lam * (self.aty - self.normal(x))
        d = r
        rr = dot(r, r)
        for _ in range(iterations):
            q = d + lam * self.normal(d)
            alpha = rr / dot(d, q).clamp_min(1e-30)
            x = x + alpha * d
            r = r - alpha * q
            rr_next = dot(r, r)
            d = r + (rr_next / rr.clamp_min(1e-30)) * d
            rr = rr_next
        return x


# inferd's default spectral-guard neighbourhood in measured lines (`unrolled.guard_lines` overrides it).
DEFAULT_GUARD_LINES = 2


def band_rings(mask):
    """Each k-space point's ring (one sample wide) for the spectral guard, from a [H, W] mask (centre at
    (H // 2, W // 2)), and a line's worth of points: the distance of its row from the centre row for
    masks of whole rows (W points a line), of its column from the centre column for masks of whole
    columns (H), otherwise round(sqrt((dy / (H / 2))² + (dx / (W / 2))²) · max(H, W) / 2) (max(H, W))."""
    h, w = mask.shape
    dy = (torch.arange(h, dtype=torch.float64) - h // 2).abs()
    dx = (torch.arange(w, dtype=torch.float64) - w // 2).abs()
    sampled = mask > 0
    if bool((sampled == sampled[:, :1]).all()):
        return dy[:, None].expand(h, w).long(), w
    if bool((sampled == sampled[:1, :]).all()):
        return dx[None, :].expand(h, w).long(), h
    r = ((dy[:, None] / (h / 2)) ** 2 + (dx[None, :] / (w / 2)) ** 2).sqrt() * max(h, w) / 2
    return r.round().long(), max(h, w)


def band_gains(kz, y, mask, lines):
    """The spectral guard (inferd's `mri::guard`): per-point gains [H, W] for the unmeasured k-space of
    one slice, or None (no unmeasured point, or `lines` = 0). `kz` [C, H, W] is the k-space of the last
    pass's image before its data consistency, `y` [C, H, W] the measured k-space. Only measured points
    at or beyond the fully sampled centre (ring c0 = the smallest ring of an unmeasured point) count.
    Each ring holding unmeasured points takes the least-squares factor Re<kz, y> / ‖kz‖² (clamped to
    [0, 1]) over the nearest rings holding `lines` lines' worth of measured points: starting at the ring
    itself, growing one ring at a time towards the nearer side (inner on a tie) within [c0, last ring];
    1 where there is nothing to fit."""
    sampled = mask > 0
    if lines == 0 or bool(sampled.all()):
        return None
    ring, line = band_rings(mask)
    last = int(ring.max())
    c0 = int(ring[~sampled].min())
    kz, y = kz.to(torch.complex128), y.to(torch.complex128)
    outer = sampled & (ring >= c0)
    num = torch.zeros(last + 1, dtype=torch.float64).index_add_(
        0, ring[outer], (kz.conj() * y).real.sum(dim=0)[outer])
    den = torch.zeros(last + 1, dtype=torch.float64).index_add_(
        0, ring[outer], (kz.abs() ** 2).sum(dim=0)[outer])
    count = torch.bincount(ring[outer], minlength=last + 1)
    open_rings = set(ring[~sampled].unique().tolist())
    need = lines * line
    gains = torch.ones(last + 1, dtype=torch.float64)
    for r in open_rings:
        lo = hi = r
        held = int(count[r])
        while held < need and (lo > c0 or hi < last):
            inner = r - (lo - 1) if lo > c0 else None
            outer_d = hi + 1 - r if hi < last else None
            if outer_d is None or (inner is not None and inner <= outer_d):
                lo -= 1
                held += int(count[lo])
            else:
                hi += 1
                held += int(count[hi])
        d = float(den[lo:hi + 1].sum())
        if d > 0:
            gains[r] = min(max(float(num[lo:hi + 1].sum()) / d, 0.0), 1.0)
    return torch.where(sampled, torch.ones_like(gains[ring]), gains[ring]).to(torch.float32)


class Unrolled(nn.Module):
    def __init__(self, width=32, res_blocks=2, iterations=5, cg_iterations=5, lam0=1.0):
        super().__init__()
        self.denoiser = ReconResNet(width, res_blocks, channels=2)
        # The last convolution starts at zero: an untrained model is the zero-filled image with data
        # consistency, and training moves away from that.
        tail = self.denoiser.model[-1]
        nn.init.zeros_(tail.weight)
        nn.init.zeros_(tail.bias)
        self.log_lambda = nn.Parameter(torch.full((iterations,), float(lam0)).log())
        self.iterations = iterations
        self.cg_iterations = cg_iterations

    def forward(self, x0, op, final_hard=True, with_last=False):
        """`x0` [B, H, W] complex; returns the complex image after the last pass (and, with `with_last`,
        the last pass's image before its data consistency, which inferd's guard checks)."""
        x = x0
        lam = self.log_lambda.exp()
        for k in range(self.iterations):
            z = x + to_complex(self.denoiser(to_channels(x)))
            last = k == self.iterations - 1
            x = op.dc(z, None if (last and final_hard) else lam[k], self.cg_iterations)
        return (x, z) if with_last else x

    def serve(self, x0, op, final_hard=True):
        """What inferd serves: the magnitude after the last pass with both guards applied. Cartesian: the
        spectral guard scales the unmeasured k-space line by line (`band_gains` over `guard_lines`
        measured lines, 0 = off). Then, where the last pass's image misfits the measurements by more than
        `guard_misfit`, the output is blended towards the zero-filled image `|x0|` with weight
        guard_misfit / misfit."""
        x, last = self.forward(x0, op, final_hard, with_last=True)
        lines = getattr(self, "guard_lines", DEFAULT_GUARD_LINES)
        if isinstance(op, CartesianOp):
            guarded = []
            for i in range(x.shape[0]):
                g = band_gains(fft2c(last[i])[None], op.y[i][None], op.mask[i], lines)
                if g is not None:
                    k = fft2c(x[i])
                    x_i = ifft2c(torch.where(op.mask[i] > 0, k, k * g))
                else:
                    x_i = x[i]
                guarded.append(x_i)
            x = torch.stack(guarded)
        tau = getattr(self, "guard_misfit", None) or 0.5
        m = op.misfit(last).to(torch.float32)
        w = torch.where(m <= tau, torch.ones_like(m), tau / m)[:, None, None]
        return w * x.abs() + (1 - w) * x0.abs(), m

    def inferd_state_dict(self, radial=False):
        """The state dict inferd loads (denoiser as `model.*`)."""
        state = {"model." + k[len("denoiser.model."):]: v.detach().contiguous()
                 for k, v in self.state_dict().items() if k.startswith("denoiser.model.")}
        state["unrolled.lambda"] = self.log_lambda.detach().exp().contiguous()
        state["unrolled.cg_iterations"] = torch.tensor([float(self.cg_iterations)])
        if getattr(self, "guard_misfit", None) is not None:
            state["unrolled.guard_misfit"] = torch.tensor([float(self.guard_misfit)])
        if getattr(self, "guard_lines", None) is not None:
            state["unrolled.guard_lines"] = torch.tensor([float(self.guard_lines)])
        if radial:
            state["sampling.radial"] = torch.ones(1)
        return state

    def load_inferd_state_dict(self, state):
        own = {"denoiser.model." + k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        own["log_lambda"] = state["unrolled.lambda"].log()
        self.load_state_dict(own)
        self.cg_iterations = int(state["unrolled.cg_iterations"].item())
        if "unrolled.guard_misfit" in state:
            self.guard_misfit = float(state["unrolled.guard_misfit"].item())
        if "unrolled.guard_lines" in state:
            self.guard_lines = int(state["unrolled.guard_lines"].item())
