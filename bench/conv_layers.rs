//! Times the individual layer types of the shipped ReconResNet (width 32) at 256² on the CPU: candle's
//! own convolutions next to inferd's matrix-product formulations (`conv_taps`, `conv_transpose_s2`).
//!
//! cargo run --example conv_layers
use candle_core::{Device, Module, Tensor};
use candle_nn::{Conv2dConfig, ConvTranspose2dConfig, VarBuilder, VarMap};
use std::time::Instant;
fn t<F: FnMut() -> candle_core::Result<Tensor>>(name: &str, mut f: F) {
    f().unwrap();
    let s = Instant::now();
    for _ in 0..3 {
        f().unwrap();
    }
    println!("{name}: {:.4} s", s.elapsed().as_secs_f64() / 3.0);
}
fn main() {
    let d = Device::Cpu;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, candle_core::DType::F32, &d);
    let w = 32;
    let head = candle_nn::conv2d(1, w, 7, Conv2dConfig::default(), vb.pp("h")).unwrap();
    let down1 = candle_nn::conv2d(
        w,
        2 * w,
        3,
        Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        },
        vb.pp("d1"),
    )
    .unwrap();
    let res = candle_nn::conv2d(4 * w, 4 * w, 3, Conv2dConfig::default(), vb.pp("r")).unwrap();
    let up2 = candle_nn::conv_transpose2d(
        2 * w,
        w,
        3,
        ConvTranspose2dConfig {
            padding: 1,
            output_padding: 1,
            stride: 2,
            dilation: 1,
        },
        vb.pp("u2"),
    )
    .unwrap();
    let x1 = Tensor::rand(0f32, 1., (1, 1, 262, 262), &d).unwrap();
    let xw = Tensor::rand(0f32, 1., (1, w, 256, 256), &d).unwrap();
    let x4 = Tensor::rand(0f32, 1., (1, 4 * w, 66, 66), &d).unwrap();
    let x2 = Tensor::rand(0f32, 1., (1, 2 * w, 128, 128), &d).unwrap();
    t("head 7x7 1->w @256", || head.forward(&x1));
    t("down1 3x3 s2 w->2w @256", || down1.forward(&xw));
    t("res 3x3 4w @64", || res.forward(&x4));
    t("up2 convT 2w->w @128", || up2.forward(&x2));
    t("up2 taps", || {
        inferd::models::recon_resnet::conv_transpose_s2(&x2, &up2)
    });
    t("res taps", || {
        inferd::models::recon_resnet::conv_taps(&x4, &res)
    });
    t("instnorm w@256", || {
        inferd::models::recon_resnet::instance_norm(&xw)
    });
    t("reflpad3 w@256", || {
        inferd::models::recon_resnet::reflection_pad2d(&xw, 3)
    });
}
