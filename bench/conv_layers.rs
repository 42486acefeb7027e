//! Per-layer CPU timings of ReconResNet's layers at 256², batch 1: candle's stock layers next to
//! inferd's kernels (src/models/cpu_conv.rs), same weights and inputs. Width 64 (full size) by default,
//! `INFERD_BENCH_WIDTH=32` for the shipped models.
//! `bench/run_conv_layers.sh` runs this and PyTorch's layers (bench/conv_layers_torch.py) side by side
//! and prints one table with GFLOP/s.
//!
//! cargo bench --bench conv_layers [-- FILTER]

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2dConfig, ConvTranspose2dConfig};
use criterion::{criterion_group, criterion_main, Criterion};
use inferd::models::cpu_conv::{
    ConvTransposeS2, ConvWeights, DirectConv, Epilogue, FastConv, GatherConv, NormAct, Pad,
    Winograd3x3,
};
use inferd::models::recon_resnet::{instance_norm, reflection_pad2d};
use std::time::Duration;

fn randn(shape: &[usize], std: f64) -> Tensor {
    Tensor::randn(0f32, std as f32, shape, &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// One layer: its name, the stock candle computation and inferd's kernel on the same input.
struct Layer {
    name: &'static str,
    input: Tensor,
    stock: Box<dyn Fn(&Tensor) -> Tensor>,
    fast: Box<dyn Fn(&Tensor) -> Tensor>,
}

fn conv_layer(
    name: &'static str,
    (c, o, k, size): (usize, usize, usize, usize),
    stride: usize,
    reflect: usize,
) -> Layer {
    let input = randn(&[1, c, size, size], 1.0);
    let w = randn(&[o, c, k, k], (2.0 / (c * k * k) as f64).sqrt());
    let b = randn(&[o], 0.1);
    let zero = if reflect == 0 { k / 2 } else { 0 };
    let conv = candle_nn::Conv2d::new(
        w.clone(),
        Some(b.clone()),
        Conv2dConfig {
            padding: zero,
            stride,
            ..Default::default()
        },
    );
    let sigmoid = o == 1;
    let (wv, bv) = (flat(&w), flat(&b));
    let kernel = if stride == 2 {
        let weights = ConvWeights::new(&wv, Some(&bv), [o, c, k, k], 2, Pad::Zero(zero));
        FastConv::Gather(GatherConv(weights))
    } else if k == 3 {
        FastConv::Winograd(Winograd3x3::new(
            &wv,
            Some(&bv),
            o,
            c,
            Pad::Reflect(reflect),
        ))
    } else {
        let epilogue = if sigmoid {
            Epilogue::Sigmoid
        } else {
            Epilogue::None
        };
        let weights = ConvWeights::new(&wv, Some(&bv), [o, c, k, k], 1, Pad::Reflect(reflect));
        FastConv::Direct(DirectConv { weights, epilogue })
    };
    Layer {
        name,
        input,
        stock: Box::new(move |x| {
            let y = conv
                .forward(&reflection_pad2d(x, reflect).unwrap())
                .unwrap();
            if sigmoid {
                candle_nn::ops::sigmoid(&y).unwrap()
            } else {
                y
            }
        }),
        fast: Box::new(move |x| x.apply_op1_no_bwd(&kernel).unwrap()),
    }
}

fn transposed(name: &'static str, c: usize, o: usize, size: usize) -> Layer {
    let input = randn(&[1, c, size, size], 1.0);
    let w = randn(&[c, o, 3, 3], (2.0 / (9 * c) as f64).sqrt());
    let b = randn(&[o], 0.1);
    let conv = candle_nn::ConvTranspose2d::new(
        w.clone(),
        Some(b.clone()),
        ConvTranspose2dConfig {
            padding: 1,
            output_padding: 1,
            stride: 2,
            dilation: 1,
        },
    );
    let kernel = FastConv::TransposeS2(ConvTransposeS2::new(&flat(&w), Some(&flat(&b)), c, o));
    Layer {
        name,
        input,
        stock: Box::new(move |x| conv.forward(x).unwrap()),
        fast: Box::new(move |x| x.apply_op1_no_bwd(&kernel).unwrap()),
    }
}

fn norm(name: &'static str, c: usize, size: usize) -> Layer {
    let input = (randn(&[1, c, size, size], 2.0) + 0.5).unwrap();
    let slope = Tensor::new(&[0.25f32], &Device::Cpu).unwrap();
    let op = NormAct {
        slope: Some(0.25),
        eps: 1e-5,
    };
    Layer {
        name,
        input,
        stock: Box::new(move |x| {
            let n = instance_norm(x).unwrap();
            let pos = n.relu().unwrap();
            let neg = (&n - &pos).unwrap();
            (pos + neg.broadcast_mul(&slope).unwrap()).unwrap()
        }),
        fast: Box::new(move |x| x.apply_op1_no_bwd(&op).unwrap()),
    }
}

/// The layers of a ReconResNet of width `w` at 256² (`INFERD_BENCH_WIDTH`, default 64 = full size;
/// 32 = the shipped recon-lite).
fn layers() -> Vec<Layer> {
    let w: usize = std::env::var("INFERD_BENCH_WIDTH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    vec![
        conv_layer("head 7x7", (1, w, 7, 256), 1, 3),
        conv_layer("down1 3x3s2", (w, 2 * w, 3, 256), 2, 0),
        conv_layer("down2 3x3s2", (2 * w, 4 * w, 3, 128), 2, 0),
        conv_layer("res 3x3", (4 * w, 4 * w, 3, 64), 1, 1),
        transposed("up1 convT", 4 * w, 2 * w, 64),
        transposed("up2 convT", 2 * w, w, 128),
        conv_layer("tail 7x7", (w, 1, 7, 256), 1, 3),
        // the unrolled model's complex denoiser: two channels in and out
        conv_layer("head2 7x7", (2, w, 7, 256), 1, 3),
        conv_layer("tail2 7x7", (w, 2, 7, 256), 1, 3),
        norm("norm+prelu @256", w, 256),
        norm("norm+prelu @64", 4 * w, 64),
    ]
}

fn bench(c: &mut Criterion) {
    for layer in layers() {
        let (a, b) = ((layer.stock)(&layer.input), (layer.fast)(&layer.input));
        let err = (a - &b).unwrap().abs().unwrap().max_all().unwrap();
        assert!(
            err.to_scalar::<f32>().unwrap() < 1e-3,
            "{}: kernels disagree",
            layer.name
        );
        assert_eq!(b.dtype(), DType::F32);
        let mut g = c.benchmark_group(layer.name);
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        g.bench_function("candle", |bn| bn.iter(|| (layer.stock)(&layer.input)));
        g.bench_function("inferd", |bn| bn.iter(|| (layer.fast)(&layer.input)));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
