//! ReconResNet (Chatterjee et al. 2022; the `Resnet2Dv2b14` network) in candle.
//!
//! ```text
//! ReflectionPad(3) → Conv 7×7 (1→w) → IN → PReLU
//! 2 × [Conv 3×3 stride 2 pad 1 → IN → PReLU]                   w → 2w → 4w
//! B × residual [ReflectionPad(1) → Conv 3×3 → IN → PReLU → Dropout2d(0.2) → ReflectionPad(1) → Conv 3×3 → IN] + x
//! 2 × [ConvTranspose 3×3 stride 2 pad 1 output_padding 1 → IN → PReLU]  4w → 2w → w
//! ReflectionPad(3) → Conv 7×7 (w→1) → Sigmoid
//! ```
//! InstanceNorm has no affine parameters (PyTorch's default); every PReLU has one parameter.
//!
//! The same network with two channels in and out (real and imaginary part; linear output, no sigmoid)
//! is the complex denoiser of the unrolled reconstruction ([`super::unrolled`]); the channel count is
//! read from the weights.
//!
//! Parameter names follow the official PyTorch module (`self.model = nn.Sequential(...)`), so a state dict
//! saved from it (`safetensors.torch.save_file(net.state_dict(), f)`) loads unchanged:
//!
//! | sequential index | layer | tensors |
//! |---|---|---|
//! | `model.1`, `model.3` | head conv 7×7, PReLU | `weight [w,c,7,7]`, `bias [w]`; `weight [1]` |
//! | `model.{4+3j}`, `model.{6+3j}`, j = 0, 1 | down conv, PReLU | `weight [2^{j+1}w, 2^j w, 3, 3]`, `bias` |
//! | `model.{10+b}.conv_block.{1,3,6}` | residual block b: conv, PReLU, conv | |
//! | `model.{10+B+3j}`, `model.{12+B+3j}` | transposed conv (`weight [in, out, 3, 3]`), PReLU | |
//! | `model.{17+B}` | tail conv 7×7 | `weight [c, w, 7, 7]`, `bias [c]` |
//!
//! Width and number of residual blocks are read from the weights, so the full-size model (w = 64, B = 14,
//! 17.27 M parameters) and lighter variants load through the same code.

use super::cpu_conv::{
    ConvTransposeS2, ConvWeights, DirectConv, Epilogue, FastConv, GatherConv, NormAct, Pad,
    Winograd3x3,
};
use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig, VarBuilder};
use std::collections::HashMap;
use std::sync::Arc;

/// Number of stride-2 down (and up) sampling stages; input sizes are padded to a multiple of `2^UPDOWN`.
pub const UPDOWN: usize = 2;
const IN_EPS: f64 = 1e-5;
pub const DROPOUT: f32 = 0.2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconResNetConfig {
    pub width: usize,
    pub res_blocks: usize,
    /// Image channels in and out: 1 (magnitude, sigmoid output; the official network) or 2 (real and
    /// imaginary part, linear output; the unrolled model's denoiser).
    pub channels: usize,
}

impl ReconResNetConfig {
    pub const FULL: ReconResNetConfig = ReconResNetConfig {
        width: 64,
        res_blocks: 14,
        channels: 1,
    };

    /// A magnitude network (one channel) of the given width and depth.
    pub const fn magnitude(width: usize, res_blocks: usize) -> Self {
        ReconResNetConfig {
            width,
            res_blocks,
            channels: 1,
        }
    }

    /// Infers width and block count from a state dict's tensor names and shapes.
    pub fn from_tensors(tensors: &HashMap<String, Tensor>) -> std::result::Result<Self, String> {
        let head = tensors
            .get("model.1.weight")
            .ok_or("missing tensor model.1.weight (head 7x7 convolution)")?;
        let (width, channels) = match head.dims() {
            &[w, c, 7, 7] => (w, c),
            d => {
                return Err(format!(
                    "model.1.weight has shape {d:?}, expected [width, 1 or 2, 7, 7]"
                ))
            }
        };
        if !(1..=2).contains(&channels) {
            return Err(format!(
                "model.1.weight has {channels} input channels, expected 1 (magnitude) or 2 (complex)"
            ));
        }
        let mut res_blocks = 0;
        while tensors.contains_key(&format!("model.{}.conv_block.1.weight", 10 + res_blocks)) {
            res_blocks += 1;
        }
        if width == 0 || res_blocks == 0 {
            return Err(format!(
                "not a ReconResNet state dict (width {width}, {res_blocks} residual blocks)"
            ));
        }
        Ok(ReconResNetConfig {
            width,
            res_blocks,
            channels,
        })
    }

    /// Parameter count (convolutions with bias, one-parameter PReLUs).
    pub fn parameters(&self) -> usize {
        let w = self.width;
        let conv = |i: usize, o: usize, k: usize| i * o * k * k + o;
        let c = self.channels;
        let mut n = conv(c, w, 7) + 1;
        n += conv(w, 2 * w, 3) + conv(2 * w, 4 * w, 3) + 2;
        n += self.res_blocks * (2 * conv(4 * w, 4 * w, 3) + 1);
        n += conv(4 * w, 2 * w, 3) + conv(2 * w, w, 3) + 2;
        n + conv(w, c, 7)
    }

    /// A state dict of this shape with candle's default initialisation (benchmarks time random weights).
    pub fn random_weights(&self, device: &Device) -> Result<HashMap<String, Tensor>> {
        let varmap = candle_nn::VarMap::new();
        ReconResNet::new(*self, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        let vars = varmap.data().lock().expect("var map lock");
        Ok(vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect())
    }

    /// Multiply-add operations ×2 of one forward pass on an `h × w` image, counted as direct
    /// convolutions (the usual way to quote convolution GFLOP/s; Winograd does fewer multiplies).
    pub fn forward_flops(&self, h: usize, w: usize) -> f64 {
        let m = 1 << UPDOWN;
        let (h, w) = (h.div_ceil(m) * m, w.div_ceil(m) * m);
        let px = |s: usize| ((h >> s) * (w >> s)) as f64;
        let conv =
            |i: usize, o: usize, k: usize, pixels: f64| 2.0 * (i * o * k * k) as f64 * pixels;
        let c = self.width;
        let io = self.channels;
        let mut f = conv(io, c, 7, px(0)) + conv(c, io, 7, px(0));
        for j in 0..UPDOWN {
            let (cin, cout) = (c << j, c << (j + 1));
            // down: output at scale j+1; up (transposed, cout → cin): input at scale j+1
            f += conv(cin, cout, 3, px(j + 1)) * 2.0;
        }
        let cr = c << UPDOWN;
        f + self.res_blocks as f64 * 2.0 * conv(cr, cr, 3, px(UPDOWN))
    }
}

/// PyTorch `nn.PReLU()` with a single learned slope.
#[derive(Debug, Clone)]
struct PRelu {
    weight: Tensor,
}

impl PRelu {
    fn new(vb: VarBuilder) -> Result<Self> {
        Ok(PRelu {
            weight: vb.get_with_hints(1, "weight", candle_nn::Init::Const(0.25))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let pos = x.relu()?;
        let neg = (x - &pos)?;
        pos + neg.broadcast_mul(&self.weight)?
    }
}

/// Reflection padding of the two spatial dimensions (PyTorch `nn.ReflectionPad2d`).
pub fn reflection_pad2d(x: &Tensor, pad: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if pad == 0 {
        return Ok(x.clone());
    }
    let idx = |n: usize| -> Result<Tensor> {
        let v: Vec<u32> = (0..n + 2 * pad)
            .map(|i| {
                let j = i as i64 - pad as i64;
                let r = if j < 0 {
                    -j
                } else if j >= n as i64 {
                    2 * (n as i64 - 1) - j
                } else {
                    j
                };
                r as u32
            })
            .collect();
        Tensor::from_vec(v, n + 2 * pad, x.device())
    };
    x.index_select(&idx(h)?, 2)?.index_select(&idx(w)?, 3)
}

/// Instance normalisation without affine parameters (biased variance, eps 1e-5, as PyTorch).
pub fn instance_norm(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let flat = x.reshape((b, c, h * w))?;
    let mean = flat.mean_keepdim(D::Minus1)?;
    let centred = flat.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    centred
        .broadcast_div(&(var + IN_EPS)?.sqrt()?)?
        .reshape((b, c, h, w))
}

fn sigmoid(x: &Tensor) -> Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// Channel dropout (`nn.Dropout2d`), active only in training.
fn dropout2d(x: &Tensor, p: f32) -> Result<Tensor> {
    let (b, c, _, _) = x.dims4()?;
    let keep = Tensor::rand(0f32, 1f32, (b, c, 1, 1), x.device())?
        .ge(p as f64)?
        .to_dtype(x.dtype())?;
    x.broadcast_mul(&(keep / (1.0 - p as f64))?)
}

/// A convolution layer: candle's op (training, CUDA, and CPU with the fast kernels switched off) and,
/// once [`ReconResNet::prepare_cpu_kernels`] has run, the fast CPU kernel computing the same function
/// (padding and, for the tail, the sigmoid included).
#[derive(Debug, Clone)]
struct ConvLayer {
    stock: StockConv,
    /// Reflection padding applied before the stock op.
    reflect: usize,
    sigmoid: bool,
    fast: Option<Arc<FastConv>>,
}

#[derive(Debug, Clone)]
enum StockConv {
    /// candle's conv2d (its own zero padding and stride come from its config)
    Direct(Conv2d),
    /// [`conv_taps`]: the few-output-channel tail
    Taps(Conv2d),
    /// [`conv_transpose_s2`]
    TransposeS2(ConvTranspose2d),
}

impl ConvLayer {
    fn new(stock: StockConv, reflect: usize) -> Self {
        ConvLayer {
            stock,
            reflect,
            sigmoid: false,
            fast: None,
        }
    }

    fn forward(&self, x: &Tensor, fast: bool) -> Result<Tensor> {
        if let (true, Some(kernel)) = (fast, &self.fast) {
            return x.contiguous()?.apply_op1_no_bwd(kernel.as_ref());
        }
        let x = reflection_pad2d(x, self.reflect)?;
        let y = match &self.stock {
            StockConv::Direct(c) => c.forward(&x)?,
            StockConv::Taps(c) => conv_taps(&x, c)?,
            StockConv::TransposeS2(c) => conv_transpose_s2(&x, c)?,
        };
        if self.sigmoid {
            sigmoid(&y)
        } else {
            Ok(y)
        }
    }

    /// Builds the fast CPU kernel for this layer's shape from its current weights.
    fn prepare(&mut self) -> Result<()> {
        let vec = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let pad = Pad::Reflect(self.reflect);
        let kernel = match &self.stock {
            StockConv::Direct(c) | StockConv::Taps(c) => {
                let (o, ci, kh, kw) = c.weight().dims4()?;
                let cfg = c.config();
                let (w, b) = (vec(c.weight())?, c.bias().map(vec).transpose()?);
                let pad = if cfg.padding > 0 {
                    if self.reflect > 0 {
                        candle_core::bail!("a layer has both reflection and zero padding");
                    }
                    Pad::Zero(cfg.padding)
                } else {
                    pad
                };
                let epilogue = if self.sigmoid {
                    Epilogue::Sigmoid
                } else {
                    Epilogue::None
                };
                if (kh, kw, cfg.stride, cfg.dilation, cfg.groups) == (3, 3, 1, 1, 1)
                    && !self.sigmoid
                {
                    FastConv::Winograd(Winograd3x3::new(&w, b.as_deref(), o, ci, pad))
                } else if cfg.stride == 1
                    && cfg.dilation == 1
                    && cfg.groups == 1
                    && (o <= 4 || ci <= 4)
                {
                    FastConv::Direct(DirectConv {
                        weights: ConvWeights::new(&w, b.as_deref(), [o, ci, kh, kw], 1, pad),
                        epilogue,
                    })
                } else if cfg.dilation == 1 && cfg.groups == 1 && !self.sigmoid {
                    let weights =
                        ConvWeights::new(&w, b.as_deref(), [o, ci, kh, kw], cfg.stride, pad);
                    FastConv::Gather(GatherConv(weights))
                } else {
                    return Ok(());
                }
            }
            StockConv::TransposeS2(c) => {
                let (ci, o, _, _) = c.weight().dims4()?;
                if !is_s2_transpose(c)? || self.reflect != 0 {
                    return Ok(());
                }
                let b = c.bias().map(vec).transpose()?;
                FastConv::TransposeS2(ConvTransposeS2::new(&vec(c.weight())?, b.as_deref(), ci, o))
            }
        };
        self.fast = Some(Arc::new(kernel));
        Ok(())
    }
}

/// Instance norm, then an optional PReLU, then an optional residual added.
#[derive(Debug, Clone)]
struct NormLayer {
    act: Option<PRelu>,
    /// the PReLU slope as a number, set with the fast kernels
    fast: Option<NormAct>,
}

impl NormLayer {
    fn new(act: Option<PRelu>) -> Self {
        NormLayer { act, fast: None }
    }

    fn forward(&self, x: &Tensor, residual: Option<&Tensor>, fast: bool) -> Result<Tensor> {
        if let (true, Some(op)) = (fast, &self.fast) {
            let x = x.contiguous()?;
            return match residual {
                None => x.apply_op1_no_bwd(op),
                Some(r) => x.apply_op2_no_bwd(&r.contiguous()?, op),
            };
        }
        let mut h = instance_norm(x)?;
        if let Some(act) = &self.act {
            h = act.forward(&h)?;
        }
        match residual {
            Some(r) => r + h,
            None => Ok(h),
        }
    }

    fn prepare(&mut self) -> Result<()> {
        let slope = match &self.act {
            Some(a) => Some(a.weight.flatten_all()?.to_vec1::<f32>()?[0]),
            None => None,
        };
        self.fast = Some(NormAct { slope, eps: IN_EPS });
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct ResidualBlock {
    conv1: ConvLayer,
    norm1: NormLayer,
    conv2: ConvLayer,
    norm2: NormLayer,
}

impl ResidualBlock {
    fn forward(&self, x: &Tensor, train: bool, fast: bool) -> Result<Tensor> {
        let mut h = self
            .norm1
            .forward(&self.conv1.forward(x, fast)?, None, fast)?;
        if train {
            h = dropout2d(&h, DROPOUT)?;
        }
        self.norm2
            .forward(&self.conv2.forward(&h, fast)?, Some(x), fast)
    }
}

#[derive(Debug, Clone)]
pub struct ReconResNet {
    pub config: ReconResNetConfig,
    /// head, down, up: convolution then norm + PReLU
    head: (ConvLayer, NormLayer),
    down: Vec<(ConvLayer, NormLayer)>,
    blocks: Vec<ResidualBlock>,
    up: Vec<(ConvLayer, NormLayer)>,
    tail: ConvLayer,
    /// whether inference on a CPU uses the fast kernels (see [`Self::prepare_cpu_kernels`])
    fast_ready: bool,
}

/// A stride-1 convolution without padding computed as one matrix product over input channels for all
/// kernel taps, `Y[o·k, p] = Σ_c W[o, c, k] X[c, p]` on the (already padded) input, then a sum of the
/// `kh×kw` shifted windows of `Y`. candle's direct conv2d degenerates for few output channels (the 7×7
/// tail has one: a GEMM with M = 1); this form runs at matrix-product speed and keeps autograd (matmul,
/// narrow, add).
pub fn conv_taps(x: &Tensor, conv: &Conv2d) -> Result<Tensor> {
    let w = conv.weight();
    let (o, c, kh, kw) = w.dims4()?;
    let (b, cx, hp, wp) = x.dims4()?;
    if cx != c {
        candle_core::bail!("conv_few_out: input has {cx} channels, weight expects {c}");
    }
    let (h, wd) = (hp - kh + 1, wp - kw + 1);
    // [o, c, kh, kw] → [o·kh·kw, c]
    let wm = w.permute((0, 2, 3, 1))?.reshape((o * kh * kw, c))?;
    let xm = x.reshape((b, c, hp * wp))?;
    let y = wm
        .broadcast_left(b)?
        .matmul(&xm)?
        .reshape((b, o, kh * kw, hp, wp))?;
    let mut acc: Option<Tensor> = None;
    for dy in 0..kh {
        for dx in 0..kw {
            let tap = y
                .narrow(2, dy * kw + dx, 1)?
                .narrow(3, dy, h)?
                .narrow(4, dx, wd)?;
            acc = Some(match acc {
                None => tap,
                Some(a) => (a + tap)?,
            });
        }
    }
    let out = acc
        .expect("kernel has at least one tap")
        .reshape((b, o, h, wd))?;
    match conv.bias() {
        Some(bias) => out.broadcast_add(&bias.reshape((1, o, 1, 1))?),
        None => Ok(out),
    }
}

/// Whether a transposed convolution is the up-sampling one of ReconResNet: `k = 3, stride 2,
/// padding 1, output_padding 1`, no dilation.
fn is_s2_transpose(conv: &ConvTranspose2d) -> Result<bool> {
    let (_, _, kh, kw) = conv.weight().dims4()?;
    let cfg = conv.config();
    Ok((
        kh,
        kw,
        cfg.stride,
        cfg.padding,
        cfg.output_padding,
        cfg.dilation,
    ) == (3, 3, 2, 1, 1, 1))
}

/// `ConvTranspose2d(k = 3, stride 2, padding 1, output_padding 1)` without scattered writes: one matrix
/// product for all taps, `Y[o·k, p] = Σ_c W[c, o, k] X[c, p]`, then each of the four output phases
/// (even/odd row × even/odd column) is a sum of shifted taps, and the phases are interleaved.
/// Output row `2i` takes tap row 1 of input row `i`; row `2i+1` takes tap row 2 of row `i` and tap row 0
/// of row `i+1` (zero past the end: the output padding); columns likewise.
pub fn conv_transpose_s2(x: &Tensor, conv: &ConvTranspose2d) -> Result<Tensor> {
    let w = conv.weight();
    let (c, o, _, _) = w.dims4()?;
    let (b, cx, h, wd) = x.dims4()?;
    if !is_s2_transpose(conv)? || cx != c {
        return conv.forward(x);
    }
    let wm = w.permute((1, 2, 3, 0))?.reshape((o * 9, c))?;
    let y = wm
        .broadcast_left(b)?
        .matmul(&x.reshape((b, c, h * wd))?)?
        .reshape((b, o, 9, h, wd))?;
    // one zero row and column past the end for the taps that read input row/column i+1
    let y = y.pad_with_zeros(3, 0, 1)?.pad_with_zeros(4, 0, 1)?;
    let taps = |parity: usize| -> &'static [(usize, usize)] {
        // (tap index along the axis, input offset)
        if parity == 0 {
            &[(1, 0)]
        } else {
            &[(2, 0), (0, 1)]
        }
    };
    let phase = |a: usize, bb: usize| -> Result<Tensor> {
        let mut acc: Option<Tensor> = None;
        for &(ky, di) in taps(a) {
            for &(kx, dj) in taps(bb) {
                let t = y
                    .narrow(2, ky * 3 + kx, 1)?
                    .narrow(3, di, h)?
                    .narrow(4, dj, wd)?;
                acc = Some(match acc {
                    None => t,
                    Some(s) => (s + t)?,
                });
            }
        }
        acc.expect("every phase has a tap").reshape((b, o, h, wd))
    };
    let row = |a: usize| -> Result<Tensor> {
        Tensor::stack(&[phase(a, 0)?, phase(a, 1)?], 4)?.reshape((b, o, h, 2 * wd))
    };
    let out = Tensor::stack(&[row(0)?, row(1)?], 3)?.reshape((b, o, 2 * h, 2 * wd))?;
    match conv.bias() {
        Some(bias) => out.broadcast_add(&bias.reshape((1, o, 1, 1))?),
        None => Ok(out),
    }
}

impl ReconResNet {
    pub fn new(config: ReconResNetConfig, vb: VarBuilder) -> Result<Self> {
        let w = config.width;
        let io = config.channels;
        let m = vb.pp("model");
        let plain = Conv2dConfig::default();
        let norm_act =
            |idx: usize| -> Result<NormLayer> { Ok(NormLayer::new(Some(PRelu::new(m.pp(idx))?))) };
        let head = (
            ConvLayer::new(
                StockConv::Direct(candle_nn::conv2d(io, w, 7, plain, m.pp("1"))?),
                3,
            ),
            norm_act(3)?,
        );
        let mut idx = 4;
        let mut down = Vec::new();
        let mut ch = w;
        for _ in 0..UPDOWN {
            let cfg = Conv2dConfig {
                padding: 1,
                stride: 2,
                ..Default::default()
            };
            let conv = candle_nn::conv2d(ch, ch * 2, 3, cfg, m.pp(idx))?;
            down.push((
                ConvLayer::new(StockConv::Direct(conv), 0),
                norm_act(idx + 2)?,
            ));
            ch *= 2;
            idx += 3;
        }
        let mut blocks = Vec::new();
        for _ in 0..config.res_blocks {
            let b = m.pp(idx).pp("conv_block");
            let conv = |i: &str| -> Result<ConvLayer> {
                Ok(ConvLayer::new(
                    StockConv::Direct(candle_nn::conv2d(ch, ch, 3, plain, b.pp(i))?),
                    1,
                ))
            };
            blocks.push(ResidualBlock {
                conv1: conv("1")?,
                norm1: NormLayer::new(Some(PRelu::new(b.pp("3"))?)),
                conv2: conv("6")?,
                norm2: NormLayer::new(None),
            });
            idx += 1;
        }
        let mut up = Vec::new();
        for _ in 0..UPDOWN {
            let cfg = ConvTranspose2dConfig {
                padding: 1,
                output_padding: 1,
                stride: 2,
                dilation: 1,
            };
            let conv = candle_nn::conv_transpose2d(ch, ch / 2, 3, cfg, m.pp(idx))?;
            up.push((
                ConvLayer::new(StockConv::TransposeS2(conv), 0),
                norm_act(idx + 2)?,
            ));
            ch /= 2;
            idx += 3;
        }
        let mut tail = ConvLayer::new(
            StockConv::Taps(candle_nn::conv2d(w, io, 7, plain, m.pp(idx + 1))?),
            3,
        );
        tail.sigmoid = io == 1;
        Ok(ReconResNet {
            config,
            head,
            down,
            blocks,
            up,
            tail,
            fast_ready: false,
        })
    }

    /// Prepares the fast CPU kernels ([`super::cpu_conv`]) from the current weights; inference
    /// (`train = false`) on a CPU tensor then uses them. Weights changed afterwards (training) are not
    /// seen by the kernels, so only fixed inference models call this.
    pub fn prepare_cpu_kernels(&mut self) -> Result<()> {
        let pairs = std::iter::once(&mut self.head)
            .chain(self.down.iter_mut())
            .chain(self.up.iter_mut());
        for (conv, norm) in pairs {
            conv.prepare()?;
            norm.prepare()?;
        }
        for b in &mut self.blocks {
            b.conv1.prepare()?;
            b.norm1.prepare()?;
            b.conv2.prepare()?;
            b.norm2.prepare()?;
        }
        self.tail.prepare()?;
        self.fast_ready = true;
        Ok(())
    }

    /// Whether the fast CPU kernels are prepared.
    pub fn uses_cpu_kernels(&self) -> bool {
        self.fast_ready
    }

    /// Loads a state dict (safetensors) and infers the configuration from it.
    pub fn from_tensors(
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> std::result::Result<Self, String> {
        let config = ReconResNetConfig::from_tensors(&tensors)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        ReconResNet::new(config, vb)
            .map_err(|e| format!("state dict does not match a ReconResNet {config:?}: {e}"))
    }

    /// `x`: `[B, c, H, W]` images (magnitude, or real and imaginary part); returns `[B, c, H, W]` (in
    /// (0, 1) for magnitude networks). Any H, W ≥ 4 works: inputs are reflection-padded to a multiple of
    /// 4 and the output cropped back.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let m = 1 << UPDOWN;
        let (ph, pw) = ((m - h % m) % m, (m - w % m) % m);
        let mut t = if ph + pw > 0 {
            pad_bottom_right(x, ph, pw)?
        } else {
            x.clone()
        };
        let fast = !train && self.fast_ready && t.device().is_cpu();
        for (conv, norm) in std::iter::once(&self.head).chain(&self.down) {
            t = norm.forward(&conv.forward(&t, fast)?, None, fast)?;
        }
        for block in &self.blocks {
            t = block.forward(&t, train, fast)?;
        }
        for (conv, norm) in &self.up {
            t = norm.forward(&conv.forward(&t, fast)?, None, fast)?;
        }
        t = self.tail.forward(&t, fast)?;
        if ph + pw > 0 {
            t = t.narrow(2, 0, h)?.narrow(3, 0, w)?;
        }
        Ok(t)
    }
}

impl Module for ReconResNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }
}

/// Reflection padding at the bottom and right only (to reach a size the down/up path restores exactly).
fn pad_bottom_right(x: &Tensor, ph: usize, pw: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let idx = |n: usize, p: usize| -> Result<Tensor> {
        let v: Vec<u32> = (0..n + p)
            .map(|i| {
                if i < n {
                    i as u32
                } else {
                    (2 * (n - 1) - i) as u32
                }
            })
            .collect();
        Tensor::from_vec(v, n + p, x.device())
    };
    x.index_select(&idx(h, ph)?, 2)?
        .index_select(&idx(w, pw)?, 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    #[test]
    fn full_size_parameter_count() {
        assert_eq!(ReconResNetConfig::FULL.parameters(), 17_266_452);
        // ≈ 146 GFLOP per 256² slice, 28 of the 3×3 256-channel convolutions (4.83 GFLOP each) most of it
        let f = ReconResNetConfig::FULL.forward_flops(256, 256);
        assert!((f / 1e9 - 145.78).abs() < 0.01, "{f}");
    }

    fn state(vm: &VarMap) -> HashMap<String, Tensor> {
        vm.data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    }

    #[test]
    fn built_model_has_counted_parameters_and_keeps_shape() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let cfg = ReconResNetConfig::magnitude(4, 2);
        let net = ReconResNet::new(cfg, vb).unwrap();
        let n: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
        assert_eq!(n, cfg.parameters());
        for (h, w) in [(16, 16), (13, 18)] {
            let x = Tensor::rand(0f32, 1f32, (2, 1, h, w), &Device::Cpu).unwrap();
            let y = net.forward(&x).unwrap();
            assert_eq!(y.dims(), &[2, 1, h, w]);
        }
        let names = state(&vm);
        assert_eq!(ReconResNetConfig::from_tensors(&names).unwrap(), cfg);
        assert!(names.contains_key("model.11.conv_block.6.weight"));
        assert!(
            names.contains_key("model.19.weight"),
            "tail conv at model.{{17+B}}"
        );
    }

    #[test]
    fn complex_network_has_two_channels_and_fast_kernels_match() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let cfg = ReconResNetConfig {
            width: 8,
            res_blocks: 1,
            channels: 2,
        };
        let mut net = ReconResNet::new(cfg, vb).unwrap();
        let n: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
        assert_eq!(n, cfg.parameters());
        assert_eq!(ReconResNetConfig::from_tensors(&state(&vm)).unwrap(), cfg);
        // Real and imaginary parts of any sign in, a linear (unbounded) output.
        let x = (Tensor::rand(0f32, 1f32, (2, 2, 20, 24), &Device::Cpu).unwrap() - 0.5).unwrap();
        let stock = net.forward(&x).unwrap();
        assert_eq!(stock.dims(), &[2, 2, 20, 24]);
        assert!(stock.min_all().unwrap().to_scalar::<f32>().unwrap() < 0.0);
        net.prepare_cpu_kernels().unwrap();
        let fast = net.forward(&x).unwrap();
        let max_abs = |t: &Tensor| {
            t.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let diff = max_abs(&(fast - &stock).unwrap());
        let scale = max_abs(&stock);
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "fast vs stock {diff} (scale {scale})"
        );
    }

    #[test]
    fn reflection_pad_matches_definition() {
        let x = Tensor::arange(0f32, 12f32, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 3, 4))
            .unwrap();
        let p = reflection_pad2d(&x, 2).unwrap();
        let row: Vec<f32> = p
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .get(2)
            .unwrap()
            .to_vec1()
            .unwrap();
        // original row 0 = [0,1,2,3] → reflect 2: [2,1,0,1,2,3,2,1]
        assert_eq!(row, vec![2.0, 1.0, 0.0, 1.0, 2.0, 3.0, 2.0, 1.0]);
    }
}
