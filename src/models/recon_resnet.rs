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
//! Parameter names follow the official PyTorch module (`self.model = nn.Sequential(...)`), so a state dict
//! saved from it (`safetensors.torch.save_file(net.state_dict(), f)`) loads unchanged:
//!
//! | sequential index | layer | tensors |
//! |---|---|---|
//! | `model.1`, `model.3` | head conv 7×7, PReLU | `weight [w,1,7,7]`, `bias [w]`; `weight [1]` |
//! | `model.{4+3j}`, `model.{6+3j}`, j = 0, 1 | down conv, PReLU | `weight [2^{j+1}w, 2^j w, 3, 3]`, `bias` |
//! | `model.{10+b}.conv_block.{1,3,6}` | residual block b: conv, PReLU, conv | |
//! | `model.{10+B+3j}`, `model.{12+B+3j}` | transposed conv (`weight [in, out, 3, 3]`), PReLU | |
//! | `model.{17+B}` | tail conv 7×7 | `weight [1, w, 7, 7]`, `bias [1]` |
//!
//! Width and number of residual blocks are read from the weights, so the full-size model (w = 64, B = 14,
//! 17.27 M parameters) and lighter variants load through the same code.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig, VarBuilder};
use std::collections::HashMap;

/// Number of stride-2 down (and up) sampling stages; input sizes are padded to a multiple of `2^UPDOWN`.
pub const UPDOWN: usize = 2;
const IN_EPS: f64 = 1e-5;
pub const DROPOUT: f32 = 0.2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconResNetConfig {
    pub width: usize,
    pub res_blocks: usize,
}

impl ReconResNetConfig {
    pub const FULL: ReconResNetConfig = ReconResNetConfig {
        width: 64,
        res_blocks: 14,
    };

    /// Infers width and block count from a state dict's tensor names and shapes.
    pub fn from_tensors(tensors: &HashMap<String, Tensor>) -> std::result::Result<Self, String> {
        let head = tensors
            .get("model.1.weight")
            .ok_or("missing tensor model.1.weight (head 7x7 convolution)")?;
        let width = head
            .dims()
            .first()
            .copied()
            .ok_or("model.1.weight has no dimensions")?;
        let mut res_blocks = 0;
        while tensors.contains_key(&format!("model.{}.conv_block.1.weight", 10 + res_blocks)) {
            res_blocks += 1;
        }
        if width == 0 || res_blocks == 0 {
            return Err(format!(
                "not a ReconResNet state dict (width {width}, {res_blocks} residual blocks)"
            ));
        }
        Ok(ReconResNetConfig { width, res_blocks })
    }

    /// Parameter count (convolutions with bias, one-parameter PReLUs).
    pub fn parameters(&self) -> usize {
        let w = self.width;
        let conv = |i: usize, o: usize, k: usize| i * o * k * k + o;
        let mut n = conv(1, w, 7) + 1;
        n += conv(w, 2 * w, 3) + conv(2 * w, 4 * w, 3) + 2;
        n += self.res_blocks * (2 * conv(4 * w, 4 * w, 3) + 1);
        n += conv(4 * w, 2 * w, 3) + conv(2 * w, w, 3) + 2;
        n + conv(w, 1, 7)
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

#[derive(Debug, Clone)]
struct ResidualBlock {
    conv1: Conv2d,
    act: PRelu,
    conv2: Conv2d,
}

impl ResidualBlock {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = self.conv1.forward(&reflection_pad2d(x, 1)?)?;
        h = self.act.forward(&instance_norm(&h)?)?;
        if train {
            h = dropout2d(&h, DROPOUT)?;
        }
        h = instance_norm(&self.conv2.forward(&reflection_pad2d(&h, 1)?)?)?;
        x + h
    }
}

#[derive(Debug, Clone)]
pub struct ReconResNet {
    pub config: ReconResNetConfig,
    head: (Conv2d, PRelu),
    down: Vec<(Conv2d, PRelu)>,
    blocks: Vec<ResidualBlock>,
    up: Vec<(ConvTranspose2d, PRelu)>,
    tail: Conv2d,
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

/// `ConvTranspose2d(k = 3, stride 2, padding 1, output_padding 1)` without scattered writes: one matrix
/// product for all taps, `Y[o·k, p] = Σ_c W[c, o, k] X[c, p]`, then each of the four output phases
/// (even/odd row × even/odd column) is a sum of shifted taps, and the phases are interleaved.
/// Output row `2i` takes tap row 1 of input row `i`; row `2i+1` takes tap row 2 of row `i` and tap row 0
/// of row `i+1` (zero past the end: the output padding); columns likewise.
pub fn conv_transpose_s2(x: &Tensor, conv: &ConvTranspose2d) -> Result<Tensor> {
    let w = conv.weight();
    let (c, o, kh, kw) = w.dims4()?;
    let (b, cx, h, wd) = x.dims4()?;
    let cfg = conv.config();
    if (
        kh,
        kw,
        cfg.stride,
        cfg.padding,
        cfg.output_padding,
        cfg.dilation,
        cx,
    ) != (3, 3, 2, 1, 1, 1, c)
    {
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
        let m = vb.pp("model");
        let plain = Conv2dConfig::default();
        let head = (
            candle_nn::conv2d(1, w, 7, plain, m.pp("1"))?,
            PRelu::new(m.pp("3"))?,
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
            down.push((
                candle_nn::conv2d(ch, ch * 2, 3, cfg, m.pp(idx))?,
                PRelu::new(m.pp(idx + 2))?,
            ));
            ch *= 2;
            idx += 3;
        }
        let mut blocks = Vec::new();
        for _ in 0..config.res_blocks {
            let b = m.pp(idx).pp("conv_block");
            blocks.push(ResidualBlock {
                conv1: candle_nn::conv2d(ch, ch, 3, plain, b.pp("1"))?,
                act: PRelu::new(b.pp("3"))?,
                conv2: candle_nn::conv2d(ch, ch, 3, plain, b.pp("6"))?,
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
            up.push((
                candle_nn::conv_transpose2d(ch, ch / 2, 3, cfg, m.pp(idx))?,
                PRelu::new(m.pp(idx + 2))?,
            ));
            ch /= 2;
            idx += 3;
        }
        let tail = candle_nn::conv2d(w, 1, 7, plain, m.pp(idx + 1))?;
        Ok(ReconResNet {
            config,
            head,
            down,
            blocks,
            up,
            tail,
        })
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

    /// `x`: `[B, 1, H, W]` magnitude images; returns `[B, 1, H, W]` in (0, 1). Any H, W ≥ 4 works: inputs are
    /// reflection-padded to a multiple of 4 and the output cropped back.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let m = 1 << UPDOWN;
        let (ph, pw) = ((m - h % m) % m, (m - w % m) % m);
        let mut t = if ph + pw > 0 {
            pad_bottom_right(x, ph, pw)?
        } else {
            x.clone()
        };
        t = self.head.0.forward(&reflection_pad2d(&t, 3)?)?;
        t = self.head.1.forward(&instance_norm(&t)?)?;
        for (conv, act) in &self.down {
            t = act.forward(&instance_norm(&conv.forward(&t)?)?)?;
        }
        for block in &self.blocks {
            t = block.forward(&t, train)?;
        }
        for (conv, act) in &self.up {
            t = act.forward(&instance_norm(&conv_transpose_s2(&t, conv)?)?)?;
        }
        t = sigmoid(&conv_taps(&reflection_pad2d(&t, 3)?, &self.tail)?)?;
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
    }

    #[test]
    fn built_model_has_counted_parameters_and_keeps_shape() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let cfg = ReconResNetConfig {
            width: 4,
            res_blocks: 2,
        };
        let net = ReconResNet::new(cfg, vb).unwrap();
        let n: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
        assert_eq!(n, cfg.parameters());
        for (h, w) in [(16, 16), (13, 18)] {
            let x = Tensor::rand(0f32, 1f32, (2, 1, h, w), &Device::Cpu).unwrap();
            let y = net.forward(&x).unwrap();
            assert_eq!(y.dims(), &[2, 1, h, w]);
        }
        let names: std::collections::HashMap<String, Tensor> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        assert_eq!(ReconResNetConfig::from_tensors(&names).unwrap(), cfg);
        assert!(names.contains_key("model.11.conv_block.6.weight"));
        assert!(
            names.contains_key("model.19.weight"),
            "tail conv at model.{{17+B}}"
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
