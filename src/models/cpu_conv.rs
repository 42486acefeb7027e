//! Fast CPU kernels for the layers of ReconResNet, plugged into candle as custom ops.
//!
//! The model is written once in candle terms ([`super::recon_resnet`]); on a CPU device an inference
//! model swaps each layer's stock candle op for one of these (training keeps candle's ops and autograd,
//! CUDA keeps candle's kernels). Every kernel reads and writes plain contiguous NCHW `f32` buffers, so
//! the layout is the same between layers and no conversion is needed.
//!
//! | layer | kernel | why |
//! |---|---|---|
//! | 3×3 stride-1 (residual blocks) | [`Winograd3x3`]: Winograd F(4×4, 3×3), reflection padding read in the input transform | 36 multiplies per 16 outputs instead of 144, so the 36 GEMMs of the transformed tiles do 4× fewer flops than a direct convolution |
//! | 3×3 stride-2 (down) | [`GatherConv`]: im2col of a band of output rows + GEMM | bands sized to stay in cache, no full im2col matrix |
//! | 3×3 transposed stride-2 (up) | [`ConvTransposeS2`]: four output phases, each a GEMM over the shifted inputs it uses (1, 2, 2, 4 taps) | no scattered accumulation, no multiplies by zeros |
//! | 7×7 with 1 input or 1 output channel (head, tail) | [`DirectConv`]: row-wise multiply-adds with the padding read through index maps | a GEMM with M or K = 1..49 runs far below peak; direct loops stay in L1 |
//! | instance norm + PReLU (+ residual, + sigmoid) | [`NormAct`], the tail's epilogue | one pass per plane instead of five candle ops |
//!
//! Matrix products use the `gemm` crate (runtime-dispatched AVX-512/AVX2/NEON micro-kernels); the
//! transforms and direct loops are compiled for AVX-512 and AVX2+FMA as well and picked at run time.
//! Work runs on rayon's current pool (the server's `--cpu-threads`), so several requests on several
//! device workers share the same threads instead of oversubscribing the cores.
//!
//! Winograd F(4×4, 3×3) rounds differently from a direct convolution: the transforms multiply by up to
//! 8 and divide by 24. Against candle's direct convolution with Kaiming-scaled random weights and
//! unit-variance activations (the scale instance norm gives every residual block input) the largest
//! error is 1.3e-5 of the output's largest magnitude at 256 channels (8e-5 absolute on outputs up to
//! 6.5); the tests assert < 5e-5. Through the whole network (instance norm after every convolution) the
//! full-size model's [0, 1] outputs stay within 8e-6 of PyTorch's (tests/parity_torch.rs, tolerance 1e-4).
//! Set `INFERD_FAST_CONV=0` (server: `--cpu-fast-conv false`) to run candle's stock layers instead.

// Index loops over tiles, lanes and taps read more clearly than iterator chains here.
#![allow(clippy::needless_range_loop)]

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Whether inference models on the CPU use these kernels (`INFERD_FAST_CONV=0` or `false` turns them
/// off; read when a model is loaded).
pub fn fast_conv_enabled() -> bool {
    !matches!(
        std::env::var("INFERD_FAST_CONV").as_deref(),
        Ok("0") | Ok("false") | Ok("off") | Ok("no")
    )
}

/// Padding of both spatial axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pad {
    Zero(usize),
    /// PyTorch `ReflectionPad2d` (the edge sample is not repeated).
    Reflect(usize),
}

impl Pad {
    fn size(self) -> usize {
        match self {
            Pad::Zero(p) | Pad::Reflect(p) => p,
        }
    }
}

/// For padded coordinates `0..len` along an axis of `n` samples: the source index, or -1 where the
/// value is zero (zero padding, or beyond the padded extent, which only partial tiles read).
fn axis_map(n: usize, pad: Pad, len: usize) -> Result<Vec<isize>> {
    let p = pad.size() as isize;
    let n = n as isize;
    if matches!(pad, Pad::Reflect(_)) && p >= n {
        bail!("reflection padding {p} needs more than {p} samples along the axis, got {n}");
    }
    Ok((0..len as isize)
        .map(|q| {
            let j = q - p;
            if (0..n).contains(&j) {
                j
            } else if j >= n + p || j < -p {
                -1
            } else {
                match pad {
                    Pad::Zero(_) => -1,
                    Pad::Reflect(_) if j < 0 => -j,
                    Pad::Reflect(_) => 2 * (n - 1) - j,
                }
            }
        })
        .collect())
}

/// A raw pointer that rayon tasks may share; each use writes a region no other task writes.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// (A method, so that closures capture the whole `Send` wrapper, not its raw-pointer field.)
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Runs `$body` compiled for AVX-512 or AVX2+FMA when the CPU has them (the body must be a call of an
/// `#[inline(always)]` function so that it is compiled with the wrapper's features).
macro_rules! simd_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $inner:ident) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? { $inner($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { $inner($($arg),*) }
                if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl") {
                    // SAFETY: the CPU supports the features the function was compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $inner($($arg),*)
        }
    };
}

/// Whether a row-major `rows × cols` matrix with row stride `rs` fits in `len` values.
fn fits(len: usize, rows: usize, cols: usize, rs: usize) -> bool {
    rows == 0 || cols == 0 || (cols <= rs && (rows - 1) * rs + cols <= len)
}

/// `dst[m×n] = lhs[m×k] · rhs[k×n]`, all row-major with the given row strides, on the calling thread.
/// The operands are bounds-checked slices; the destination is a raw pointer because parallel tasks
/// write disjoint blocks of one shared output.
///
/// # Safety
/// `dst` must be valid for writes of `dst_len` values, of which the `m × n` block (row stride
/// `dst_rs`) is written by this call only, and must not alias `lhs` or `rhs`. The extent is checked
/// against `dst_len` (and the operands against their slices) before the product runs.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_len: usize,
    dst_rs: usize,
    lhs: &[f32],
    lhs_rs: usize,
    rhs: &[f32],
    rhs_rs: usize,
) {
    assert!(
        fits(dst_len, m, n, dst_rs),
        "GEMM output {m}x{n} (stride {dst_rs}) exceeds {dst_len} values"
    );
    assert!(
        fits(lhs.len(), m, k, lhs_rs),
        "GEMM lhs {m}x{k} (stride {lhs_rs}) exceeds {} values",
        lhs.len()
    );
    assert!(
        fits(rhs.len(), k, n, rhs_rs),
        "GEMM rhs {k}x{n} (stride {rhs_rs}) exceeds {} values",
        rhs.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: every matrix lies inside its buffer (checked above); exclusivity of the output block is
    // the caller's promise.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            lhs.as_ptr(),
            1,
            lhs_rs as isize,
            rhs.as_ptr(),
            1,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// [`matmul`] into a buffer the caller owns.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_into(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    lhs: &[f32],
    lhs_rs: usize,
    rhs: &[f32],
    rhs_rs: usize,
) {
    // SAFETY: `dst` is an exclusive borrow of `dst.len()` values that cannot alias the shared inputs.
    unsafe {
        matmul(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst.len(),
            dst_rs,
            lhs,
            lhs_rs,
            rhs,
            rhs_rs,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Winograd F(4×4, 3×3)
// ---------------------------------------------------------------------------------------------

/// Tiles transformed together: one SIMD register of lanes (16 × f32 on AVX-512).
const LANES: usize = 16;
type Lanes = [f32; LANES];

/// `Bᵀ x` for the six input points of F(4, 3) (interpolation points 0, ±1, ±2, ∞), lane-wise.
#[inline(always)]
fn bt6(x: &[Lanes; 6]) -> [Lanes; 6] {
    let mut y = [[0.0; LANES]; 6];
    for l in 0..LANES {
        let [x0, x1, x2, x3, x4, x5] = [x[0][l], x[1][l], x[2][l], x[3][l], x[4][l], x[5][l]];
        y[0][l] = 4.0 * x0 - 5.0 * x2 + x4;
        y[1][l] = x3 + x4 - 4.0 * (x1 + x2);
        y[2][l] = 4.0 * (x1 - x2) + x4 - x3;
        y[3][l] = 2.0 * (x3 - x1) + x4 - x2;
        y[4][l] = 2.0 * (x1 - x3) + x4 - x2;
        y[5][l] = 4.0 * x1 - 5.0 * x3 + x5;
    }
    y
}

/// `Aᵀ m`: four outputs from six transformed points, lane-wise.
#[inline(always)]
fn at4(m: &[Lanes; 6]) -> [Lanes; 4] {
    let mut y = [[0.0; LANES]; 4];
    for l in 0..LANES {
        let [m0, m1, m2, m3, m4, m5] = [m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]];
        let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        y[0][l] = m0 + s12 + s34;
        y[1][l] = d12 + 2.0 * d34;
        y[2][l] = s12 + 4.0 * s34;
        y[3][l] = d12 + 8.0 * d34 + m5;
    }
    y
}

/// `U = G g Gᵀ` for one 3×3 kernel (in f64, rounded once).
fn winograd_kernel(g: &[f32]) -> [f32; 36] {
    let gm = |a: f64, b: f64, c: f64| -> [f64; 6] {
        [
            a / 4.0,
            -(a + b + c) / 6.0,
            -(a - b + c) / 6.0,
            a / 24.0 + b / 12.0 + c / 6.0,
            a / 24.0 - b / 12.0 + c / 6.0,
            c,
        ]
    };
    let g = |i: usize, j: usize| g[i * 3 + j] as f64;
    // columns first: t[i][k] = Σ_j g[i][j] G[k][j]
    let t: [[f64; 6]; 3] = std::array::from_fn(|i| gm(g(i, 0), g(i, 1), g(i, 2)));
    let mut u = [0f32; 36];
    for k in 0..6 {
        let col = gm(t[0][k], t[1][k], t[2][k]);
        for (m, v) in col.iter().enumerate() {
            u[m * 6 + k] = *v as f32;
        }
    }
    u
}

/// A 3×3 stride-1 convolution by Winograd F(4×4, 3×3): input tiles of 6×6 (overlapping by 2) are
/// transformed to `V[36][C][T]`, the 36 products `M_e = U_e V_e` (`U_e`: `[O, C]`) run as GEMMs, and
/// the inverse transform writes 4×4 output tiles (plus bias). Padding is read through index maps.
#[derive(Debug, Clone)]
pub struct Winograd3x3 {
    o: usize,
    c: usize,
    /// `[36][O][C]`
    u: Vec<f32>,
    bias: Vec<f32>,
    pad: Pad,
}

impl Winograd3x3 {
    /// `weight`: `[O, C, 3, 3]` row-major.
    pub fn new(weight: &[f32], bias: Option<&[f32]>, o: usize, c: usize, pad: Pad) -> Self {
        assert_eq!(weight.len(), o * c * 9, "3x3 weight size");
        let mut u = vec![0f32; 36 * o * c];
        for oc in 0..o * c {
            let k = winograd_kernel(&weight[oc * 9..oc * 9 + 9]);
            for (e, v) in k.iter().enumerate() {
                u[e * o * c + oc] = *v;
            }
        }
        Winograd3x3 {
            o,
            c,
            u,
            bias: bias.map_or_else(|| vec![0.0; o], <[f32]>::to_vec),
            pad,
        }
    }

    fn forward(&self, x: &[f32], [b, c, h, w]: [usize; 4]) -> Result<(Vec<f32>, [usize; 4])> {
        let (o, p) = (self.o, self.pad.size());
        if c != self.c {
            bail!(
                "winograd conv: input has {c} channels, weight expects {}",
                self.c
            );
        }
        if h + 2 * p < 3 || w + 2 * p < 3 {
            bail!("winograd conv: {h}x{w} input is smaller than the 3x3 kernel");
        }
        let (ho, wo) = (h + 2 * p - 2, w + 2 * p - 2);
        let (th, tw) = (ho.div_ceil(4), wo.div_ceil(4));
        let rmap = axis_map(h, self.pad, 4 * th + 2)?;
        let cmap = axis_map(w, self.pad, 4 * tw + 2)?;
        // Tiles go through in chunks of whole tile rows of one image, sized so that the transformed
        // chunk (V and M, 36 × channels × tiles) stays in the last-level cache.
        let rows_per_chunk = (TILES_PER_CHUNK / tw).clamp(1, th);
        let t_max = rows_per_chunk * tw;
        let mut v = scratch(36 * c * t_max);
        let mut m = scratch(36 * o * t_max);
        let mut y = vec![0f32; b * o * ho * wo];
        for bi in 0..b {
            let img = &x[bi * c * h * w..(bi + 1) * c * h * w];
            let out = &mut y[bi * o * ho * wo..(bi + 1) * o * ho * wo];
            for ty0 in (0..th).step_by(rows_per_chunk) {
                let nty = rows_per_chunk.min(th - ty0);
                let geo = TileGeometry {
                    w,
                    ty0,
                    nty,
                    tw,
                    t: nty * tw,
                    rmap: &rmap,
                    cmap: &cmap,
                    pad: p,
                };
                self.chunk(img, out, &geo, [h, ho, wo], &mut v, &mut m);
            }
        }
        give_back(v);
        give_back(m);
        Ok((y, [b, o, ho, wo]))
    }

    /// Input transform, 36 GEMMs and output transform of one chunk of tile rows of one image.
    fn chunk(
        &self,
        img: &[f32],
        out: &mut [f32],
        geo: &TileGeometry,
        [h, ho, wo]: [usize; 3],
        v: &mut [f32],
        m: &mut [f32],
    ) {
        let (o, c, t, w) = (self.o, self.c, geo.t, geo.w);
        let vp = SharedMut(v.as_mut_ptr());
        (0..c).into_par_iter().for_each_init(
            || vec![0f32; 6 * (4 * geo.tw + 2)],
            |padded, ci| {
                // SAFETY: channel ci writes only V[e][ci][..t] for every e.
                let plane = &img[ci * h * w..(ci + 1) * h * w];
                winograd_input_plane(plane, geo, c, ci, vp, padded);
            },
        );
        // the input transform has filled V: from here on it is only read
        let (u, v, m_len) = (&self.u[..], &*v, m.len());
        let mp = SharedMut(m.as_mut_ptr());
        // 36 products, split along the tiles when there are many threads (36 tasks leave 16 threads
        // a quarter idle)
        let parts = (2 * rayon::current_num_threads())
            .div_ceil(36)
            .clamp(1, t.div_ceil(LANES));
        let per = t.div_ceil(parts).next_multiple_of(LANES);
        (0..36 * parts).into_par_iter().for_each(|task| {
            let (e, n0) = (task / parts, (task % parts) * per);
            let n = per.min(t.saturating_sub(n0));
            if n == 0 {
                return;
            }
            let at = e * o * t + n0;
            // SAFETY: task (e, part) writes only columns n0..n0+n of M_e (`o` rows of stride t
            // starting at `at`); no other task writes them and nothing reads M until all are done.
            unsafe {
                matmul(
                    o,
                    n,
                    c,
                    mp.get().add(at),
                    m_len - at,
                    t,
                    &u[e * o * c..],
                    c,
                    &v[e * c * t + n0..],
                    t,
                )
            }
        });
        let m = &*m;
        out.par_chunks_mut(ho * wo)
            .enumerate()
            .for_each(|(oi, plane)| {
                winograd_output_plane(m, geo, o, oi, self.bias[oi], plane, ho, wo);
            });
    }
}

/// Winograd tiles transformed together (about 9 MiB of V and M at 256 channels).
const TILES_PER_CHUNK: usize = 256;

/// The chunk of tile rows `ty0 .. ty0 + nty` of one image.
struct TileGeometry<'a> {
    w: usize,
    ty0: usize,
    nty: usize,
    tw: usize,
    /// tiles in the chunk
    t: usize,
    rmap: &'a [isize],
    cmap: &'a [isize],
    /// padding in front of the first row and column
    pad: usize,
}

simd_dispatch!(fn winograd_input_plane(x: &[f32], g: &TileGeometry, c: usize, ci: usize, v: SharedMut, padded: &mut [f32]) => winograd_input_plane_impl);

/// `padded`: room for the six padded input rows of a tile row (`6 · (4·tw + 2)`), reused per thread.
#[inline(always)]
fn winograd_input_plane_impl(
    x: &[f32],
    g: &TileGeometry,
    c: usize,
    ci: usize,
    v: SharedMut,
    padded: &mut [f32],
) {
    // the six input rows of a tile row, padded once: tiles then read them without index maps
    let len = 4 * g.tw + 2;
    let p = g.pad;
    for ty in g.ty0..g.ty0 + g.nty {
        for (i, prow) in padded.chunks_exact_mut(len).enumerate() {
            match g.rmap[4 * ty + i] {
                r if r < 0 => prow.fill(0.0),
                r => pad_row(
                    &x[r as usize * g.w..(r as usize + 1) * g.w],
                    prow,
                    g.cmap,
                    p,
                ),
            }
        }
        for tx0 in (0..g.tw).step_by(LANES) {
            let nl = LANES.min(g.tw - tx0);
            let mut d = [[[0f32; LANES]; 6]; 6];
            for (i, prow) in padded.chunks_exact(len).enumerate() {
                if nl == LANES {
                    // fixed bounds: the stride-4 reads vectorise as interleaved loads
                    let src: &[f32; 4 * LANES + 2] = prow[4 * tx0..4 * tx0 + 4 * LANES + 2]
                        .try_into()
                        .expect("a full group of tiles");
                    for l in 0..LANES {
                        for j in 0..6 {
                            d[i][j][l] = src[4 * l + j];
                        }
                    }
                } else {
                    for l in 0..nl {
                        for j in 0..6 {
                            d[i][j][l] = prow[4 * (tx0 + l) + j];
                        }
                    }
                }
            }
            // (d B) row by row, then Bᵀ (d B) column by column
            let r: [[Lanes; 6]; 6] = std::array::from_fn(|i| bt6(&d[i]));
            let t0 = (ty - g.ty0) * g.tw + tx0;
            for k in 0..6 {
                let col: [Lanes; 6] = std::array::from_fn(|i| r[i][k]);
                let out = bt6(&col);
                for (mm, vals) in out.iter().enumerate() {
                    let e = mm * 6 + k;
                    let at = (e * c + ci) * g.t + t0;
                    debug_assert!(at + nl <= 36 * c * g.t, "V holds 36 × C × T values");
                    // SAFETY: V holds 36 × C × T values (at least); channel ci's task alone
                    // writes V[e][ci][..t].
                    unsafe {
                        let dst = v.get().add(at);
                        std::ptr::copy_nonoverlapping(vals.as_ptr(), dst, nl);
                    }
                }
            }
        }
    }
}

simd_dispatch!(
    #[allow(clippy::too_many_arguments)]
    fn winograd_output_plane(m: &[f32], g: &TileGeometry, o: usize, oi: usize, bias: f32, out: &mut [f32], ho: usize, wo: usize) => winograd_output_plane_impl
);

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn winograd_output_plane_impl(
    m: &[f32],
    g: &TileGeometry,
    o: usize,
    oi: usize,
    bias: f32,
    out: &mut [f32],
    ho: usize,
    wo: usize,
) {
    for ty in g.ty0..g.ty0 + g.nty {
        for tx0 in (0..g.tw).step_by(LANES) {
            let nl = LANES.min(g.tw - tx0);
            let t0 = (ty - g.ty0) * g.tw + tx0;
            let mut mt = [[[0f32; LANES]; 6]; 6];
            for (i, row) in mt.iter_mut().enumerate() {
                for (j, lanes) in row.iter_mut().enumerate() {
                    let src = &m[((i * 6 + j) * o + oi) * g.t + t0..][..nl];
                    lanes[..nl].copy_from_slice(src);
                }
            }
            // (M A) row by row, then Aᵀ (M A) column by column: res[k][i] is output row i, column k
            let s: [[Lanes; 4]; 6] = std::array::from_fn(|i| at4(&mt[i]));
            let res: [[Lanes; 4]; 4] = std::array::from_fn(|k| {
                let col: [Lanes; 6] = std::array::from_fn(|i| s[i][k]);
                at4(&col)
            });
            for i in 0..4 {
                let y = 4 * ty + i;
                if y >= ho {
                    break;
                }
                let row = &mut out[y * wo..(y + 1) * wo];
                if nl == LANES && 4 * (tx0 + LANES) <= wo {
                    // fixed bounds: the four columns are written as interleaved stores
                    let dst: &mut [f32; 4 * LANES] = (&mut row[4 * tx0..4 * (tx0 + LANES)])
                        .try_into()
                        .expect("a full group of tiles");
                    for l in 0..LANES {
                        for k in 0..4 {
                            dst[4 * l + k] = res[k][i][l] + bias;
                        }
                    }
                } else {
                    for l in 0..nl {
                        for k in 0..4 {
                            let x = 4 * (tx0 + l) + k;
                            if x < wo {
                                row[x] = res[k][i][l] + bias;
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Strided convolution: im2col of a band of output rows + GEMM
// ---------------------------------------------------------------------------------------------

/// Output pixels per band of the gather kernels (the band's im2col block stays in L2).
const BAND_PIXELS: usize = 256;

/// Rows of `row_len` pixels in one band.
fn band_rows(row_len: usize) -> usize {
    (BAND_PIXELS / row_len).max(1)
}

/// Runs `f(state, image, first row, rows)` over the bands of `band_rows` rows (of `rows`) of every one of
/// `images` images, in parallel, with one `init()` state (the band's buffers) per worker.
fn for_each_band<S>(
    images: usize,
    rows: usize,
    band_rows: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, usize, usize) + Sync + Send,
) {
    let per_image = rows.div_ceil(band_rows);
    (0..images * per_image)
        .into_par_iter()
        .for_each_init(init, |state, band| {
            let (bi, r0) = (band / per_image, (band % per_image) * band_rows);
            f(state, bi, r0, band_rows.min(rows - r0));
        });
}

/// A convolution's weights and geometry: `[O, C, kh, kw]` weights (candle's layout), bias, stride and
/// padding, shared by [`GatherConv`] and [`DirectConv`].
#[derive(Debug, Clone)]
pub struct ConvWeights {
    pub o: usize,
    pub c: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: Pad,
    /// `[O, C·kh·kw]`
    w: Vec<f32>,
    bias: Vec<f32>,
}

impl ConvWeights {
    pub fn new(
        weight: &[f32],
        bias: Option<&[f32]>,
        [o, c, kh, kw]: [usize; 4],
        stride: usize,
        pad: Pad,
    ) -> Self {
        assert_eq!(weight.len(), o * c * kh * kw, "weight size");
        ConvWeights {
            o,
            c,
            kh,
            kw,
            stride,
            pad,
            w: weight.to_vec(),
            bias: bias.map_or_else(|| vec![0.0; o], <[f32]>::to_vec),
        }
    }

    /// Checks an input `[B, C, H, W]` and returns the output size and the padding maps of both axes.
    fn plan(&self, [_, c, h, w]: [usize; 4]) -> Result<(usize, usize, Vec<isize>, Vec<isize>)> {
        let (kh, kw, s, p) = (self.kh, self.kw, self.stride, self.pad.size());
        if c != self.c {
            bail!("conv: input has {c} channels, weight expects {}", self.c);
        }
        if h + 2 * p < kh || w + 2 * p < kw {
            bail!("conv: {h}x{w} input is smaller than the {kh}x{kw} kernel");
        }
        let rmap = axis_map(h, self.pad, h + 2 * p)?;
        let cmap = axis_map(w, self.pad, w + 2 * p)?;
        Ok((
            (h + 2 * p - kh) / s + 1,
            (w + 2 * p - kw) / s + 1,
            rmap,
            cmap,
        ))
    }
}

/// Any `kh×kw` convolution with stride, computed band by band: the band's im2col block
/// `[C·kh·kw, pixels]` is gathered (padding through index maps) and multiplied by the weight matrix
/// `[O, C·kh·kw]`, writing straight into the output.
#[derive(Debug, Clone)]
pub struct GatherConv(pub ConvWeights);

impl GatherConv {
    fn forward(&self, x: &[f32], dims: [usize; 4]) -> Result<(Vec<f32>, [usize; 4])> {
        let cw = &self.0;
        let [b, c, h, w] = dims;
        let (o, kh, kw, s) = (cw.o, cw.kh, cw.kw, cw.stride);
        let (ho, wo, rmap, cmap) = cw.plan(dims)?;
        let k = c * kh * kw;
        let rows_per_band = band_rows(wo);
        let mut y = vec![0f32; b * o * ho * wo];
        let (yp, y_len) = (SharedMut(y.as_mut_ptr()), y.len());
        for_each_band(
            b,
            ho,
            rows_per_band,
            || vec![0f32; k * rows_per_band * wo],
            |col, bi, r0, nr| {
                let n = nr * wo;
                let img = &x[bi * c * h * w..(bi + 1) * c * h * w];
                let kksp = [kh, kw, s, cw.pad.size()];
                gather_band(img, col, [c, h, w], kksp, &rmap, &cmap, r0, nr, wo);
                let at = bi * o * ho * wo + r0 * wo;
                // SAFETY: the band writes rows r0..r0+nr (the `n` values from `at` of each of
                // the `o` channel planes of image bi) and no other band writes them.
                unsafe {
                    let dst = yp.get().add(at);
                    matmul(o, n, k, dst, y_len - at, ho * wo, &cw.w, k, col, n);
                    for (oi, &bias) in cw.bias.iter().enumerate() {
                        add_bias(
                            std::slice::from_raw_parts_mut(dst.add(oi * ho * wo), n),
                            bias,
                        );
                    }
                }
            },
        );
        Ok((y, [b, o, ho, wo]))
    }
}

simd_dispatch!(fn add_bias(row: &mut [f32], bias: f32) => add_bias_impl);

#[inline(always)]
fn add_bias_impl(row: &mut [f32], bias: f32) {
    row.iter_mut().for_each(|v| *v += bias);
}

simd_dispatch!(
    #[allow(clippy::too_many_arguments)]
    fn gather_band(img: &[f32], col: &mut [f32], chw: [usize; 3], kksp: [usize; 4], rmap: &[isize], cmap: &[isize], r0: usize, nr: usize, wo: usize) => gather_band_impl
);

/// Fills `col[(c·kh + ky)·kw + kx][n]` for the band's `nr × wo` output pixels (kernel `kh × kw`,
/// stride `s`, padding `p`). Each source row is read once for all `kw` kernel columns: with stride 1
/// every column's interior is a shifted copy of the row; with stride 2 the row is split into its even
/// and odd samples first, so that every column's interior is a contiguous copy of one of them.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gather_band_impl(
    img: &[f32],
    col: &mut [f32],
    [c, h, w]: [usize; 3],
    [kh, kw, s, p]: [usize; 4],
    rmap: &[isize],
    cmap: &[isize],
    r0: usize,
    nr: usize,
    wo: usize,
) {
    let n = nr * wo;
    let mut phases = if s == 2 { vec![0f32; w] } else { Vec::new() };
    let half = w.div_ceil(2);
    // interior output columns of each kernel column kx: 0 ≤ ox·s + kx − p < w
    let interior: Vec<(usize, usize)> = (0..kw)
        .map(|kx| {
            let lo = p.saturating_sub(kx).div_ceil(s).min(wo);
            let hi = if w + p > kx {
                ((w + p - kx - 1) / s + 1).clamp(lo, wo)
            } else {
                lo
            };
            (lo, hi)
        })
        .collect();
    for ci in 0..c {
        let plane = &img[ci * h * w..(ci + 1) * h * w];
        for ky in 0..kh {
            for r in 0..nr {
                let src_row = rmap[(r0 + r) * s + ky];
                let dst = |kx: usize| ((ci * kh + ky) * kw + kx) * n + r * wo;
                let Ok(src_row) = usize::try_from(src_row) else {
                    for kx in 0..kw {
                        col[dst(kx)..dst(kx) + wo].fill(0.0);
                    }
                    continue;
                };
                let row = &plane[src_row * w..(src_row + 1) * w];
                if s == 2 {
                    let (even, odd) = phases.split_at_mut(half);
                    for ((e, o), pair) in
                        even.iter_mut().zip(odd.iter_mut()).zip(row.chunks_exact(2))
                    {
                        *e = pair[0];
                        *o = pair[1];
                    }
                    if w % 2 == 1 {
                        even[w / 2] = row[w - 1];
                    }
                }
                for kx in 0..kw {
                    let d = &mut col[dst(kx)..dst(kx) + wo];
                    let (lo, hi) = interior[kx];
                    if hi > lo {
                        // source sample of output column ox: (ox − lo)·s + start
                        let start = lo * s + kx - p;
                        match s {
                            1 => d[lo..hi].copy_from_slice(&row[start..start + hi - lo]),
                            2 => {
                                let from = if start % 2 == 0 { 0 } else { half } + start / 2;
                                d[lo..hi].copy_from_slice(&phases[from..from + hi - lo]);
                            }
                            _ => {
                                for (i, v) in d[lo..hi].iter_mut().enumerate() {
                                    *v = row[start + i * s];
                                }
                            }
                        }
                    }
                    for ox in (0..lo).chain(hi..wo) {
                        let cc = cmap[ox * s + kx];
                        d[ox] = if cc < 0 { 0.0 } else { row[cc as usize] };
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Transposed convolution k = 3, stride 2, padding 1, output padding 1
// ---------------------------------------------------------------------------------------------

/// `ConvTranspose2d(k 3, stride 2, padding 1, output_padding 1)` by output phase. Output row `2i`
/// takes kernel row 1 of input row `i`; row `2i+1` kernel row 2 of row `i` and kernel row 0 of row
/// `i+1` (zero past the end); columns likewise. So each of the four phases (row parity, column
/// parity) is a stride-1 convolution over 1, 2, 2 or 4 shifted copies of the input. The shifted
/// copies of a band are gathered once in the order (0,1), (0,0), (1,0), (1,1), in which every phase
/// uses a contiguous run of them, and each phase is one GEMM, interleaved into the output.
#[derive(Debug, Clone)]
pub struct ConvTransposeS2 {
    o: usize,
    c: usize,
    /// per phase (a, b) in order (0,0), (0,1), (1,0), (1,1): `[O, shifts·C]`
    w: [Vec<f32>; 4],
    bias: Vec<f32>,
}

/// Shifts (row offset, column offset) in gather order.
const SHIFTS: [(usize, usize); 4] = [(0, 1), (0, 0), (1, 0), (1, 1)];
/// The run of shifts each phase uses.
const PHASE_SHIFTS: [std::ops::Range<usize>; 4] = [1..2, 0..2, 1..3, 0..4];

impl ConvTransposeS2 {
    /// `weight`: `[C, O, 3, 3]` (PyTorch's transposed-convolution layout).
    pub fn new(weight: &[f32], bias: Option<&[f32]>, c: usize, o: usize) -> Self {
        assert_eq!(weight.len(), c * o * 9, "transposed 3x3 weight size");
        // kernel index along one axis for output parity and input offset
        let tap = |parity: usize, off: usize| match (parity, off) {
            (0, 0) => 1,
            (1, 0) => 2,
            (1, 1) => 0,
            _ => unreachable!("parity 0 uses offset 0 only"),
        };
        let w = std::array::from_fn(|phase| {
            let (a, bb) = (phase / 2, phase % 2);
            let shifts = &SHIFTS[PHASE_SHIFTS[phase].clone()];
            let k = shifts.len() * c;
            let mut m = vec![0f32; o * k];
            for oi in 0..o {
                for (si, &(di, dj)) in shifts.iter().enumerate() {
                    let (ky, kx) = (tap(a, di), tap(bb, dj));
                    for ci in 0..c {
                        m[oi * k + si * c + ci] = weight[((ci * o + oi) * 3 + ky) * 3 + kx];
                    }
                }
            }
            m
        });
        ConvTransposeS2 {
            o,
            c,
            w,
            bias: bias.map_or_else(|| vec![0.0; o], <[f32]>::to_vec),
        }
    }

    fn forward(&self, x: &[f32], [b, c, h, w]: [usize; 4]) -> Result<(Vec<f32>, [usize; 4])> {
        let o = self.o;
        if c != self.c {
            bail!(
                "transposed conv: input has {c} channels, weight expects {}",
                self.c
            );
        }
        let (ho, wo) = (2 * h, 2 * w);
        let rows_per_band = band_rows(w);
        let mut y = vec![0f32; b * o * ho * wo];
        let yp = SharedMut(y.as_mut_ptr());
        let band_n = rows_per_band * w;
        for_each_band(
            b,
            h,
            rows_per_band,
            || {
                let tmp = || vec![0f32; o * band_n];
                (vec![0f32; 4 * c * band_n], [tmp(), tmp()])
            },
            |(col, tmp), bi, r0, nr| {
                let n = nr * w;
                let img = &x[bi * c * h * w..(bi + 1) * c * h * w];
                shift_band(img, col, [c, h, w], r0, nr);
                // the two phases of one output-row parity (even and odd columns), then their rows
                for a in 0..2 {
                    for (bb, t) in tmp.iter_mut().enumerate() {
                        let (wm, run) = (&self.w[2 * a + bb], &PHASE_SHIFTS[2 * a + bb]);
                        let k = run.len() * c;
                        matmul_into(o, n, k, t, n, wm, k, &col[run.start * c * n..], n);
                    }
                    // SAFETY: this band writes output rows 2·r0 .. 2·(r0+nr) of image bi only.
                    unsafe { interleave_rows(tmp, yp, &self.bias, [bi, o, ho, wo], a, r0, nr, w) };
                }
            },
        );
        Ok((y, [b, o, ho, wo]))
    }
}

simd_dispatch!(fn shift_band(img: &[f32], col: &mut [f32], chw: [usize; 3], r0: usize, nr: usize) => shift_band_impl);

/// `col[(s·C + c)][r·W + j] = x[c][r0 + r + di][j + dj]` (zero past the end) for the shifts in
/// [`SHIFTS`] order.
#[inline(always)]
fn shift_band_impl(img: &[f32], col: &mut [f32], [c, h, w]: [usize; 3], r0: usize, nr: usize) {
    let n = nr * w;
    for (si, &(di, dj)) in SHIFTS.iter().enumerate() {
        for ci in 0..c {
            let plane = &img[ci * h * w..(ci + 1) * h * w];
            let dst = &mut col[(si * c + ci) * n..][..n];
            for r in 0..nr {
                let d = &mut dst[r * w..(r + 1) * w];
                let src = r0 + r + di;
                if src >= h {
                    d.fill(0.0);
                    continue;
                }
                let row = &plane[src * w..(src + 1) * w];
                d[..w - dj].copy_from_slice(&row[dj..]);
                if dj == 1 {
                    d[w - 1] = 0.0;
                }
            }
        }
    }
}

/// Adds the bias to the GEMM outputs of the two phases of output-row parity `a` (even and odd
/// columns) and writes them, interleaved, to the band's rows of that parity.
///
/// # Safety
/// `out` addresses the whole `[B, O, ho, wo]` output; the caller's band owns output rows
/// `2·r0 .. 2·(r0+nr)` of image `bi`, the only rows written here.
#[allow(clippy::too_many_arguments)]
unsafe fn interleave_rows(
    tmp: &[Vec<f32>; 2],
    out: SharedMut,
    bias: &[f32],
    [bi, o, ho, wo]: [usize; 4],
    a: usize,
    r0: usize,
    nr: usize,
    w: usize,
) {
    let n = nr * w;
    debug_assert!(2 * (r0 + nr) <= ho && 2 * w == wo && tmp[0].len().min(tmp[1].len()) >= o * n);
    for (oi, &b) in bias.iter().enumerate().take(o) {
        for r in 0..nr {
            let at = oi * n + r * w;
            // SAFETY: row 2·(r0+r)+a of plane (bi, oi) lies in the output and belongs to this band.
            let row = unsafe {
                std::slice::from_raw_parts_mut(
                    out.get().add(((bi * o + oi) * ho + 2 * (r0 + r) + a) * wo),
                    wo,
                )
            };
            interleave_pair(row, &tmp[0][at..at + w], &tmp[1][at..at + w], b);
        }
    }
}

simd_dispatch!(fn interleave_pair(row: &mut [f32], even: &[f32], odd: &[f32], bias: f32) => interleave_pair_impl);

/// `row[2j] = even[j] + bias`, `row[2j+1] = odd[j] + bias`.
#[inline(always)]
fn interleave_pair_impl(row: &mut [f32], even: &[f32], odd: &[f32], bias: f32) {
    for ((pair, e), o) in row.chunks_exact_mut(2).zip(even).zip(odd) {
        pair[0] = e + bias;
        pair[1] = o + bias;
    }
}

// ---------------------------------------------------------------------------------------------
// Direct convolution for few input or output channels
// ---------------------------------------------------------------------------------------------

/// What the tail applies to its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    None,
    Sigmoid,
}

/// A stride-1 `kh×kw` convolution as row-wise multiply-adds: the input planes are padded once, then
/// every output row adds the `kh` padded rows it reads, shifted by each kernel column, into all output
/// channels' rows. Used where a GEMM would have M or K of 1 or 2 (the 7×7 head with one or two input
/// channels, the 7×7 tail with one or two output channels).
#[derive(Debug, Clone)]
pub struct DirectConv {
    pub weights: ConvWeights,
    pub epilogue: Epilogue,
}

impl DirectConv {
    fn forward(&self, x: &[f32], dims: [usize; 4]) -> Result<(Vec<f32>, [usize; 4])> {
        let cw = &self.weights;
        if cw.stride != 1 {
            bail!("direct conv: stride {} (only 1)", cw.stride);
        }
        let [b, c, h, w] = dims;
        let (o, kh, kw) = (cw.o, cw.kh, cw.kw);
        let (ho, wo, rmap, cmap) = cw.plan(dims)?;
        // every plane padded once (reflection or zeros through the maps), so that the rows an
        // output row reads are plain slices
        let (hp, wp) = (ho + kh - 1, wo + kw - 1);
        let mut padded = vec![0f32; b * c * hp * wp];
        padded
            .par_chunks_mut(hp * wp)
            .zip(x.par_chunks(h * w))
            .for_each(|(dst, src)| {
                for (q, drow) in dst.chunks_exact_mut(wp).enumerate() {
                    if let Ok(r) = usize::try_from(rmap[q]) {
                        pad_row(&src[r * w..(r + 1) * w], drow, &cmap, cw.pad.size());
                    }
                }
            });
        let mut y = vec![0f32; b * o * ho * wo];
        let (yp, y_len) = (SharedMut(y.as_mut_ptr()), y.len());
        (0..b * ho).into_par_iter().for_each_init(
            || vec![0f32; o * wo],
            |acc, row| {
                let (bi, oy) = (row / ho, row % ho);
                let img = &padded[bi * c * hp * wp..(bi + 1) * c * hp * wp];
                direct_row(self, img, [hp, wp], oy, wo, acc);
                for (oi, vals) in acc.chunks_exact(wo).enumerate() {
                    let at = ((bi * o + oi) * ho + oy) * wo;
                    debug_assert!(at + wo <= y_len);
                    // SAFETY: output row (bi, oi, oy) lies in y and is written by this task only.
                    let dst = unsafe { std::slice::from_raw_parts_mut(yp.get().add(at), wo) };
                    match self.epilogue {
                        Epilogue::None => dst.copy_from_slice(vals),
                        Epilogue::Sigmoid => {
                            for (d, v) in dst.iter_mut().zip(vals) {
                                *d = 1.0 / (1.0 + (-v).exp());
                            }
                        }
                    }
                }
            },
        );
        Ok((y, [b, o, ho, wo]))
    }
}

simd_dispatch!(
    fn direct_row(conv: &DirectConv, padded: &[f32], hw: [usize; 2], oy: usize, wo: usize, acc: &mut [f32]) => direct_row_impl
);

/// Output row `oy` of every output channel into `acc` (`[O, wo]`) from the padded planes
/// (`[C, hp, wp]`): per input channel, blocks of output channels × output pixels accumulate all
/// `kh·kw` taps in registers between one load and one store of the block (see [`direct_block`]).
#[inline(always)]
fn direct_row_impl(
    conv: &DirectConv,
    padded: &[f32],
    [hp, wp]: [usize; 2],
    oy: usize,
    wo: usize,
    acc: &mut [f32],
) {
    let cw = &conv.weights;
    let (o, c, kh, kw) = (cw.o, cw.c, cw.kh, cw.kw);
    for (oi, a) in acc.chunks_exact_mut(wo).enumerate() {
        a.fill(cw.bias[oi]);
    }
    let taps = kh * kw;
    for ci in 0..c {
        let geo = BlockGeometry {
            rows: &padded[(ci * hp + oy) * wp..][..kh * wp],
            wp,
            kh,
            kw,
            wstride: c * taps,
            wo,
        };
        let mut oi = 0;
        while oi < o {
            let wk = &cw.w[(oi * c + ci) * taps..];
            let a = &mut acc[oi * wo..];
            let ob = match o - oi {
                1 => direct_span::<1, 4>(&geo, wk, a),
                2 | 3 => direct_span::<2, 4>(&geo, wk, a),
                _ => direct_span::<4, 2>(&geo, wk, a),
            };
            oi += ob;
        }
    }
}

/// Where one block reads and writes: `kh` padded input rows of stride `wp`, output rows of `wo`
/// pixels, and the weight stride between consecutive output channels.
struct BlockGeometry<'a> {
    rows: &'a [f32],
    wp: usize,
    kh: usize,
    kw: usize,
    wstride: usize,
    wo: usize,
}

/// `OB` output channels over the whole row: blocks of `XB` × 16 pixels, then single vectors, then
/// scalars. Returns `OB`.
#[inline(always)]
fn direct_span<const OB: usize, const XB: usize>(
    g: &BlockGeometry,
    wk: &[f32],
    a: &mut [f32],
) -> usize {
    let mut x0 = 0;
    while x0 + XB * LANES <= g.wo {
        direct_block::<OB, XB>(g, wk, a, x0);
        x0 += XB * LANES;
    }
    while x0 + LANES <= g.wo {
        direct_block::<OB, 1>(g, wk, a, x0);
        x0 += LANES;
    }
    for ob in 0..OB {
        let w = &wk[ob * g.wstride..][..g.kh * g.kw];
        for x in x0..g.wo {
            a[ob * g.wo + x] += g
                .rows
                .chunks_exact(g.wp)
                .zip(w.chunks_exact(g.kw))
                .map(|(prow, wrow)| {
                    wrow.iter()
                        .enumerate()
                        .map(|(kx, wv)| wv * prow[x + kx])
                        .sum::<f32>()
                })
                .sum::<f32>();
        }
    }
    OB
}

/// `OB` output channels × `XB` vectors of 16 pixels from `x0`: every tap loads `XB` input vectors and
/// `OB` weights for `OB·XB` multiply-adds into register accumulators.
#[inline(always)]
fn direct_block<const OB: usize, const XB: usize>(
    g: &BlockGeometry,
    wk: &[f32],
    a: &mut [f32],
    x0: usize,
) {
    let mut s = [[[0f32; LANES]; XB]; OB];
    for (ob, so) in s.iter_mut().enumerate() {
        for (j, sj) in so.iter_mut().enumerate() {
            let at = ob * g.wo + x0 + j * LANES;
            sj.copy_from_slice(&a[at..at + LANES]);
        }
    }
    for (ky, prow) in g.rows.chunks_exact(g.wp).enumerate().take(g.kh) {
        for kx in 0..g.kw {
            let wv: [f32; OB] = std::array::from_fn(|ob| wk[ob * g.wstride + ky * g.kw + kx]);
            for j in 0..XB {
                let src: &Lanes = prow[x0 + j * LANES + kx..][..LANES]
                    .try_into()
                    .expect("16 lanes");
                for (so, &w) in s.iter_mut().zip(&wv) {
                    for l in 0..LANES {
                        so[j][l] = w.mul_add(src[l], so[j][l]);
                    }
                }
            }
        }
    }
    for (ob, so) in s.iter().enumerate() {
        for (j, sj) in so.iter().enumerate() {
            let at = ob * g.wo + x0 + j * LANES;
            a[at..at + LANES].copy_from_slice(sj);
        }
    }
}

/// `prow[q] = row[cmap[q]]` (zero where the map says so): the interior is one copy, only the padding
/// goes through the map.
#[inline(always)]
fn pad_row(row: &[f32], prow: &mut [f32], cmap: &[isize], p: usize) {
    let w = row.len();
    let interior = w.min(prow.len().saturating_sub(p));
    prow[p..p + interior].copy_from_slice(&row[..interior]);
    for q in (0..p).chain(p + interior..prow.len()) {
        let cc = cmap[q];
        prow[q] = if cc < 0 { 0.0 } else { row[cc as usize] };
    }
}

// ---------------------------------------------------------------------------------------------
// Instance norm + PReLU (+ residual)
// ---------------------------------------------------------------------------------------------

/// Instance normalisation without affine parameters (biased variance, eps 1e-5, as PyTorch), then an
/// optional single-slope PReLU, then an optional residual added: one pass over each plane after its
/// statistics (accumulated in f64).
#[derive(Debug, Clone, Copy)]
pub struct NormAct {
    pub slope: Option<f32>,
    pub eps: f64,
}

impl NormAct {
    fn forward(&self, x: &[f32], [b, c, h, w]: [usize; 4], residual: Option<&[f32]>) -> Vec<f32> {
        let (hw, n) = (h * w, b * c * h * w);
        assert!(x.len() == n && residual.is_none_or(|r| r.len() == n));
        if n == 0 {
            return Vec::new();
        }
        // written once, without zeroing first (the output is as large as the activations)
        let mut y = Vec::with_capacity(n);
        y.spare_capacity_mut()[..n]
            .par_chunks_mut(hw)
            .enumerate()
            .for_each(|(plane, out)| {
                let src = &x[plane * hw..(plane + 1) * hw];
                let res = residual.map(|r| &r[plane * hw..(plane + 1) * hw]);
                norm_plane(src, out, res, self.slope, self.eps);
            });
        // SAFETY: the planes partition the first n values and norm_plane writes every value of its
        // plane (its output has the plane's length).
        unsafe { y.set_len(n) };
        y
    }
}

simd_dispatch!(fn norm_plane(x: &[f32], out: &mut [MaybeUninit<f32>], res: Option<&[f32]>, slope: Option<f32>, eps: f64) => norm_plane_impl);

/// `Σ f(x)` over a plane: 16 lane-wise f32 accumulators over runs of 1 024 values (so the compiler
/// keeps them in vector registers; a plain `iter().sum()` is one sequential chain), each run's total
/// added in f64.
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    x.chunks(1024)
        .map(|run| {
            let mut acc = [0f32; LANES];
            let mut lanes = run.chunks_exact(LANES);
            for v in &mut lanes {
                for l in 0..LANES {
                    acc[l] += f(v[l]);
                }
            }
            let tail: f32 = lanes.remainder().iter().map(|&v| f(v)).sum();
            (acc.iter().sum::<f32>() + tail) as f64
        })
        .sum()
}

#[inline(always)]
fn norm_plane_impl(
    x: &[f32],
    out: &mut [MaybeUninit<f32>],
    res: Option<&[f32]>,
    slope: Option<f32>,
    eps: f64,
) {
    assert_eq!(out.len(), x.len(), "one output value per input value");
    let n = x.len() as f64;
    let mean = lane_sum(x, |v| v) / n;
    let mf = mean as f32;
    let var = lane_sum(x, |v| (v - mf) * (v - mf)) / n;
    let rstd = (1.0 / (var + eps).sqrt()) as f32;
    let a = slope.unwrap_or(1.0);
    let act = |v: f32| {
        let t = (v - mf) * rstd;
        if t >= 0.0 {
            t
        } else {
            a * t
        }
    };
    match res {
        None => {
            for (o, &v) in out.iter_mut().zip(x) {
                o.write(act(v));
            }
        }
        Some(r) => {
            for ((o, &v), r) in out.iter_mut().zip(x).zip(r) {
                o.write(act(v) + r);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scratch buffers and candle glue
// ---------------------------------------------------------------------------------------------

/// Large transform buffers are kept between layers and requests (a few per process).
static SCRATCH: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());
const SCRATCH_KEEP: usize = 8;

/// A buffer of `len` zeros, reusing a kept one of enough capacity (zeroed, so nothing a previous
/// request left in it can be read).
fn scratch(len: usize) -> Vec<f32> {
    let mut pool = SCRATCH.lock().unwrap_or_else(|e| e.into_inner());
    let mut buf = match pool.iter().position(|b| b.capacity() >= len) {
        Some(i) => pool.swap_remove(i),
        None => Vec::with_capacity(len),
    };
    drop(pool);
    buf.clear();
    buf.resize(len, 0.0);
    buf
}

fn give_back(buf: Vec<f32>) {
    let mut pool = SCRATCH.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < SCRATCH_KEEP {
        pool.push(buf);
    }
}

/// One fast convolution layer.
#[derive(Debug, Clone)]
pub enum FastConv {
    Winograd(Winograd3x3),
    Gather(GatherConv),
    TransposeS2(ConvTransposeS2),
    Direct(DirectConv),
}

impl FastConv {
    /// Runs the layer on a contiguous NCHW buffer.
    pub fn run(&self, x: &[f32], dims: [usize; 4]) -> Result<(Vec<f32>, [usize; 4])> {
        match self {
            FastConv::Winograd(k) => k.forward(x, dims),
            FastConv::Gather(k) => k.forward(x, dims),
            FastConv::TransposeS2(k) => k.forward(x, dims),
            FastConv::Direct(k) => k.forward(x, dims),
        }
    }
}

fn nchw<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<(&'a [f32], [usize; 4])> {
    let CpuStorage::F32(data) = storage else {
        bail!("fast CPU kernels take f32 tensors");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("fast CPU kernels take contiguous tensors");
    };
    let &[b, c, h, w] = layout.dims() else {
        bail!(
            "fast CPU kernels take [B, C, H, W] tensors, got {:?}",
            layout.dims()
        );
    };
    Ok((&data[start..end], [b, c, h, w]))
}

impl CustomOp1 for FastConv {
    fn name(&self) -> &'static str {
        "inferd-fast-conv"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, dims) = nchw(storage, layout)?;
        let (y, dims) = self.run(x, dims)?;
        Ok((CpuStorage::F32(y), Shape::from(dims.to_vec())))
    }
}

impl CustomOp1 for NormAct {
    fn name(&self) -> &'static str {
        "inferd-norm-act"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, dims) = nchw(storage, layout)?;
        Ok((
            CpuStorage::F32(self.forward(x, dims, None)),
            layout.shape().clone(),
        ))
    }
}

/// Second argument: the residual added after the activation.
impl CustomOp2 for NormAct {
    fn name(&self) -> &'static str {
        "inferd-norm-act-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, dims) = nchw(s1, l1)?;
        let (r, rdims) = nchw(s2, l2)?;
        if dims != rdims {
            bail!("residual {rdims:?} does not match {dims:?}");
        }
        Ok((
            CpuStorage::F32(self.forward(x, dims, Some(r))),
            l1.shape().clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::recon_resnet::reflection_pad2d;
    use candle_core::{Device, Tensor};
    use candle_nn::{Conv2dConfig, ConvTranspose2dConfig, Module};

    fn randn(shape: &[usize], std: f64) -> Tensor {
        Tensor::randn(0f32, std as f32, shape, &Device::Cpu).unwrap()
    }

    fn vec(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn run(k: &FastConv, x: &Tensor) -> Tensor {
        x.contiguous().unwrap().apply_op1_no_bwd(k).unwrap()
    }

    /// max |a − b| and max |b|
    fn err(a: &Tensor, b: &Tensor) -> (f32, f32) {
        assert_eq!(a.dims(), b.dims());
        let (a, b) = (vec(a), vec(b));
        let e = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        (e, b.iter().map(|v| v.abs()).fold(0f32, f32::max))
    }

    fn conv2d(x: &Tensor, w: &Tensor, b: &Tensor, pad: usize, stride: usize) -> Tensor {
        let conv = candle_nn::Conv2d::new(
            w.clone(),
            Some(b.clone()),
            Conv2dConfig {
                padding: pad,
                stride,
                ..Default::default()
            },
        );
        conv.forward(x).unwrap()
    }

    #[test]
    fn reflection_and_zero_maps() {
        // n = 4, pad 2: reflect → 2 1 | 0 1 2 3 | 2 1, then beyond the padded extent → -1
        assert_eq!(
            axis_map(4, Pad::Reflect(2), 10).unwrap(),
            vec![2, 1, 0, 1, 2, 3, 2, 1, -1, -1]
        );
        assert_eq!(
            axis_map(3, Pad::Zero(1), 6).unwrap(),
            vec![-1, 0, 1, 2, -1, -1]
        );
        assert!(axis_map(3, Pad::Reflect(3), 9).is_err());
    }

    #[test]
    fn winograd_kernel_transform_reproduces_direct_convolution_of_one_tile() {
        // one 6×6 tile, one channel: Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A must equal the 4×4 valid correlation
        let g: Vec<f32> = (0..9).map(|i| (i as f32 * 0.37).sin()).collect();
        let d: Vec<f32> = (0..36).map(|i| (i as f32 * 0.91).cos()).collect();
        let k = Winograd3x3::new(&g, None, 1, 1, Pad::Zero(0));
        let (y, dims) = k.forward(&d, [1, 1, 6, 6]).unwrap();
        assert_eq!(dims, [1, 1, 4, 4]);
        for i in 0..4 {
            for j in 0..4 {
                let mut s = 0.0;
                for a in 0..3 {
                    for b in 0..3 {
                        s += g[a * 3 + b] * d[(i + a) * 6 + j + b];
                    }
                }
                assert!(
                    (y[i * 4 + j] - s).abs() < 2e-5 * s.abs().max(1.0),
                    "({i},{j}): {} vs {s}",
                    y[i * 4 + j]
                );
            }
        }
    }

    /// The Winograd error bound, measured against candle's direct convolution with Kaiming-scaled
    /// random weights and unit-variance inputs (what instance norm feeds every residual block):
    /// relative to the output's largest magnitude it stays below 5e-5 (measured 1.3e-5 at 256
    /// channels), for reflection and zero padding and for partial edge tiles.
    #[test]
    fn winograd_matches_direct_convolution_within_bound() {
        for (b, c, o, h, w, reflect) in [
            (2, 16, 24, 13, 22, true),
            (1, 256, 256, 32, 32, true),
            (2, 8, 8, 5, 7, false),
            (1, 3, 2, 1, 9, false),
        ] {
            let x = randn(&[b, c, h, w], 1.0);
            let wt = randn(&[o, c, 3, 3], (2.0 / (9.0 * c as f64)).sqrt());
            let bias = randn(&[o], 0.1);
            let (pad, reference) = if reflect {
                let xp = reflection_pad2d(&x, 1).unwrap();
                (Pad::Reflect(1), conv2d(&xp, &wt, &bias, 0, 1))
            } else {
                (Pad::Zero(1), conv2d(&x, &wt, &bias, 1, 1))
            };
            let k = FastConv::Winograd(Winograd3x3::new(&vec(&wt), Some(&vec(&bias)), o, c, pad));
            let (e, scale) = err(&run(&k, &x), &reference);
            println!("winograd c={c} {h}x{w}: max abs error {e:.2e}, output max {scale:.2}, ratio {:.1e}", e / scale);
            assert!(
                e <= 5e-5 * scale,
                "c={c} {h}x{w}: max error {e} vs scale {scale}"
            );
        }
    }

    #[test]
    fn strided_gather_conv_matches_candle() {
        for (b, c, o, h, w, k, stride, pad) in [
            (2, 16, 32, 17, 20, 3, 2, 1),
            (1, 5, 7, 12, 9, 3, 1, 1),
            (1, 4, 6, 11, 13, 5, 2, 0),
            (1, 3, 4, 10, 21, 3, 2, 1),
        ] {
            let x = randn(&[b, c, h, w], 1.0);
            let wt = randn(&[o, c, k, k], 0.2);
            let bias = randn(&[o], 0.1);
            let fast = FastConv::Gather(GatherConv(ConvWeights::new(
                &vec(&wt),
                Some(&vec(&bias)),
                [o, c, k, k],
                stride,
                Pad::Zero(pad),
            )));
            let (e, scale) = err(&run(&fast, &x), &conv2d(&x, &wt, &bias, pad, stride));
            assert!(
                e <= 1e-5 * scale.max(1.0),
                "{c}->{o} {h}x{w} k{k} s{stride}: {e}"
            );
        }
    }

    #[test]
    fn transposed_phases_match_candle() {
        for (b, c, o, h, w) in [(2, 32, 16, 9, 13), (1, 8, 4, 1, 1), (1, 3, 5, 4, 40)] {
            let x = randn(&[b, c, h, w], 1.0);
            let wt = randn(&[c, o, 3, 3], 0.2);
            let bias = randn(&[o], 0.1);
            let stock = candle_nn::ConvTranspose2d::new(
                wt.clone(),
                Some(bias.clone()),
                ConvTranspose2dConfig {
                    padding: 1,
                    output_padding: 1,
                    stride: 2,
                    dilation: 1,
                },
            );
            let fast =
                FastConv::TransposeS2(ConvTransposeS2::new(&vec(&wt), Some(&vec(&bias)), c, o));
            let (e, scale) = err(&run(&fast, &x), &stock.forward(&x).unwrap());
            assert!(e <= 1e-5 * scale.max(1.0), "{c}->{o} {h}x{w}: {e}");
        }
    }

    #[test]
    fn direct_head_and_tail_match_candle() {
        // head: 1 → 16 channels; tail: 16 → 1 with the sigmoid; both 7×7 after reflection padding 3;
        // 7 output channels over 70 columns take every block shape (4, 2 and 1 channels; 64-, 16- and
        // 1-pixel runs)
        for (c, o, epilogue, w) in [
            (1, 16, Epilogue::None, 18),
            (16, 1, Epilogue::Sigmoid, 18),
            (3, 2, Epilogue::None, 18),
            (2, 7, Epilogue::None, 70),
            (2, 2, Epilogue::None, 83),
        ] {
            let x = randn(&[2, c, 21, w], 1.0);
            let wt = randn(&[o, c, 7, 7], 0.1);
            let bias = randn(&[o], 0.1);
            let mut reference = conv2d(&reflection_pad2d(&x, 3).unwrap(), &wt, &bias, 0, 1);
            if epilogue == Epilogue::Sigmoid {
                reference = candle_nn::ops::sigmoid(&reference).unwrap();
            }
            let fast = FastConv::Direct(DirectConv {
                weights: ConvWeights::new(
                    &vec(&wt),
                    Some(&vec(&bias)),
                    [o, c, 7, 7],
                    1,
                    Pad::Reflect(3),
                ),
                epilogue,
            });
            let (e, scale) = err(&run(&fast, &x), &reference);
            assert!(e <= 1e-5 * scale.max(1.0), "{c}->{o} width {w}: {e}");
        }
    }

    #[test]
    fn norm_act_matches_candle_ops() {
        use crate::models::recon_resnet::instance_norm;
        let x = (randn(&[2, 3, 9, 11], 2.0) + 5.0).unwrap();
        let r = randn(&[2, 3, 9, 11], 1.0);
        let n = instance_norm(&x).unwrap();
        let prelu =
            (n.relu().unwrap() + ((&n - n.relu().unwrap()).unwrap() * 0.25).unwrap()).unwrap();
        let op = NormAct {
            slope: Some(0.25),
            eps: 1e-5,
        };
        let (e, _) = err(&x.apply_op1_no_bwd(&op).unwrap(), &prelu);
        assert!(e < 1e-5, "norm + prelu: {e}");
        let plain = NormAct {
            slope: None,
            eps: 1e-5,
        };
        let with_res = x.apply_op2_no_bwd(&r, &plain).unwrap();
        let (e, _) = err(&with_res, &(&n + &r).unwrap());
        assert!(e < 1e-5, "norm + residual: {e}");
        assert!(x
            .apply_op2_no_bwd(&r.narrow(3, 0, 5).unwrap(), &plain)
            .is_err());
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        let k = FastConv::Winograd(Winograd3x3::new(
            &[0.0; 2 * 3 * 9],
            None,
            2,
            3,
            Pad::Reflect(1),
        ));
        assert!(run_err(&k, &[1, 4, 8, 8]).contains("channels"));
        // reflection padding 1 of a 1-pixel axis is undefined, as in PyTorch
        assert!(run_err(&k, &[1, 3, 1, 8]).contains("reflection"));
        let x = Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(x.apply_op1_no_bwd(&k).is_err());
    }

    fn run_err(k: &FastConv, dims: &[usize]) -> String {
        let x = Tensor::zeros(dims, candle_core::DType::F32, &Device::Cpu).unwrap();
        x.apply_op1_no_bwd(k).unwrap_err().to_string()
    }

    #[test]
    fn scratch_buffers_are_reused() {
        let a = scratch(1000);
        let p = a.as_ptr();
        give_back(a);
        let b = scratch(500);
        assert_eq!(b.as_ptr(), p);
        give_back(b);
    }
}
