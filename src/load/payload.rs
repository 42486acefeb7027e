//! What the load generator sends: one request per protocol, generated to fit the target model (asked
//! of the server where the protocol allows) or read from NPY files.

use super::{Caller, LoadArgs, Protocol};
use crate::api::kserve::{f32_raw, i64_raw, pb as kpb};
use crate::api::{pb, tensor};
use crate::io::npy::{self, NpyData};
use crate::mri::{coils, fft, masks, phantom};
use anyhow::{bail, Context};
use kpb::{infer_parameter::ParameterChoice, model_infer_request::InferInputTensor};
use num_complex::Complex32;
use std::collections::HashMap;

/// TorchServe's gRPC inference API (`proto/torchserve/inference.proto`).
pub mod torchserve {
    tonic::include_proto!("org.pytorch.serve.grpc.inference");
}

/// One prepared call; every request of a run sends the same one.
#[derive(Clone)]
pub enum Call {
    /// KServe ServerLive: the floor of the server's per-call cost.
    Live,
    /// grpc.health.v1 Check of a service name ("" = the whole server).
    Health(String),
    Kserve(kpb::ModelInferRequest),
    /// A whole `inferd.v1.Reconstruction/StreamReconstruct` volume: header, then the slices.
    Recon(Vec<pb::ReconRequest>),
    Bridge(pb::BridgeRequest),
    Torchserve(torchserve::PredictionsRequest),
}

/// Undersampled single- or multi-coil k-space of a synthetic MR-like image, and its mask.
pub struct KSpace {
    pub coils: usize,
    pub n: usize,
    pub data: Vec<Complex32>,
    pub mask: Vec<f32>,
}

pub fn synthetic_kspace(n: usize, coils: usize, acceleration: f32, seed: u64) -> KSpace {
    let img = phantom::SyntheticMr::new(seed).sample(n, n).complex;
    // Smooth Gaussian coil profiles around the object, one per coil.
    let plane = n * n;
    let mut sens = vec![Complex32::new(0.0, 0.0); coils * plane];
    for c in 0..coils {
        let a = std::f32::consts::TAU * c as f32 / coils as f32;
        let (cy, cx) = (0.5 + 0.4 * a.sin(), 0.5 + 0.4 * a.cos());
        for y in 0..n {
            for x in 0..n {
                let (dy, dx) = (y as f32 / n as f32 - cy, x as f32 / n as f32 - cx);
                let w = if coils == 1 {
                    1.0
                } else {
                    (-(dy * dy + dx * dx) / 0.18).exp()
                };
                sens[c * plane + y * n + x] = Complex32::from_polar(w, 0.3 * a);
            }
        }
    }
    let mut data = coils::expand(&img, &sens, plane);
    let mask = masks::MaskSpec::new(masks::Pattern::VariableDensity1d, acceleration, seed)
        .generate(n, n)
        .expect("generated masks fit every size the arguments allow");
    for coil in data.chunks_mut(plane) {
        fft::fft2c(coil, n, n);
        for (v, &m) in coil.iter_mut().zip(&mask) {
            *v *= m;
        }
    }
    KSpace {
        coils,
        n,
        data,
        mask,
    }
}

/// Radial k-space `[coils, spokes · 2n]` of a synthetic MR-like image on a golden-angle trajectory
/// (twice-oversampled readout), and the trajectory in BART's order (`[k0, k1]`, k0 along H).
pub fn synthetic_radial(
    n: usize,
    coils: usize,
    spokes: usize,
    seed: u64,
) -> anyhow::Result<(Vec<Complex32>, Vec<[f32; 2]>)> {
    use crate::mri::traj::{Radial, SpokeAngles};
    let img = phantom::SyntheticMr::new(seed).sample(n, n).complex;
    let traj = Radial::new(n, 2 * n, spokes, SpokeAngles::GoldenAngle)?.coords();
    let op = crate::api::validate::trajectory(traj.clone(), n)?.build(n)?;
    let mut k = Vec::with_capacity(coils * traj.len());
    for c in 0..coils {
        // each coil sees the image with its own constant phase
        let phase = Complex32::from_polar(1.0, std::f32::consts::TAU * c as f32 / coils as f32);
        let coil: Vec<Complex32> = img.iter().map(|v| v * phase).collect();
        k.extend(op.forward(&coil)?);
    }
    Ok((k, traj))
}

impl KSpace {
    /// Interleaved real/imaginary float32, `[coils, n, n, 2]`.
    fn interleaved(&self) -> Vec<f32> {
        self.data.iter().flat_map(|v| [v.re, v.im]).collect()
    }
}

/// Reads `--input NAME=FILE.npy` arguments into named arrays.
fn read_inputs(args: &LoadArgs) -> anyhow::Result<Vec<(String, npy::NpyArray)>> {
    args.inputs
        .iter()
        .map(|spec| {
            let (name, path) = spec
                .split_once('=')
                .with_context(|| format!("--input {spec:?}: expected NAME=FILE.npy"))?;
            let a = npy::read(path.as_ref()).with_context(|| format!("--input {name}"))?;
            Ok((name.to_string(), a))
        })
        .collect()
}

fn kserve_input(name: &str, a: &npy::NpyArray) -> (InferInputTensor, Vec<u8>) {
    let (datatype, raw, shape) = match &a.data {
        NpyData::F32(v) => ("FP32", f32_raw(v), a.shape.clone()),
        NpyData::I64(v) => ("INT64", i64_raw(v), a.shape.clone()),
        // Complex arrays travel as a trailing (re, im) axis, as the recon contract expects.
        NpyData::C64(v) => {
            let flat: Vec<f32> = v.iter().flat_map(|c| [c.re, c.im]).collect();
            let mut shape = a.shape.clone();
            shape.push(2);
            ("FP32", f32_raw(&flat), shape)
        }
    };
    (
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.iter().map(|&d| d as i64).collect(),
            ..Default::default()
        },
        raw,
    )
}

fn f32_input(name: &str, shape: &[usize], data: &[f32]) -> (InferInputTensor, Vec<u8>) {
    (
        InferInputTensor {
            name: name.into(),
            datatype: "FP32".into(),
            shape: shape.iter().map(|&d| d as i64).collect(),
            ..Default::default()
        },
        f32_raw(data),
    )
}

/// A row of `dim` smooth values, the same for every request.
fn bridge_rows(rows: usize, dim: usize) -> Vec<f32> {
    (0..rows * dim).map(|i| (i as f32 * 0.37).sin()).collect()
}

/// `sets` sets of `set_size` 8-bit elements (bit i = (v >> i) & 1) and their set ids.
fn sets(sets: usize, set_size: usize, features: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut x = Vec::with_capacity(sets * set_size * features);
    let mut batch = Vec::with_capacity(sets * set_size);
    for s in 0..sets {
        for _ in 0..set_size {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = (state >> 33) as u32;
            x.extend((0..features).map(|i| ((v >> (i % 32)) & 1) as f32));
            batch.push(s as i64);
        }
    }
    (x, batch)
}

/// Builds the KServe request: from `--input` files when given, else generated for the model's
/// family as reported by the server's ModelConfig.
async fn kserve_call(
    args: &LoadArgs,
    caller: &mut Caller,
) -> anyhow::Result<kpb::ModelInferRequest> {
    let mut req = kpb::ModelInferRequest {
        model_name: args.model.clone(),
        ..Default::default()
    };
    let mut add = |(t, raw): (InferInputTensor, Vec<u8>)| {
        req.inputs.push(t);
        req.raw_input_contents.push(raw);
    };
    let files = read_inputs(args)?;
    if !files.is_empty() {
        for (name, a) in &files {
            add(kserve_input(name, a));
        }
    } else {
        let config = caller
            .kserve
            .model_config(kpb::ModelConfigRequest {
                name: args.model.clone(),
                version: String::new(),
            })
            .await
            .with_context(|| format!("asking the server for model {:?}", args.model))?
            .into_inner()
            .config
            .context("the server sent an empty model config")?;
        let names: Vec<&str> = config.input.iter().map(|i| i.name.as_str()).collect();
        let param = |k: &str| -> anyhow::Result<usize> {
            let v = config
                .parameters
                .get(k)
                .with_context(|| format!("model {} reports no {k}", args.model))?;
            v.string_value
                .parse()
                .with_context(|| format!("model {} reports {k} = {:?}", args.model, v.string_value))
        };
        if names.contains(&"traj") && args.spokes > 0 {
            let (k, traj) = synthetic_radial(args.size, args.coils, args.spokes, args.seed)?;
            let (s, r) = (args.spokes, 2 * args.size);
            let interleaved: Vec<f32> = k.iter().flat_map(|v| [v.re, v.im]).collect();
            add(f32_input("kspace", &[1, args.coils, s, r, 2], &interleaved));
            add(f32_input("traj", &[1, s, r, 2], traj.as_flattened()));
            req.parameters.insert(
                "image_size".into(),
                kpb::InferParameter {
                    parameter_choice: Some(ParameterChoice::Int64Param(args.size as i64)),
                },
            );
        } else if names.contains(&"kspace") {
            let k = synthetic_kspace(args.size, args.coils, args.acceleration, args.seed);
            add(f32_input(
                "kspace",
                &[1, k.coils, k.n, k.n, 2],
                &k.interleaved(),
            ));
            add(f32_input("mask", &[1, k.n, k.n], &k.mask));
        } else if names.contains(&"batch") {
            let features = param("in_features")?;
            let (x, batch) = sets(args.sets, args.set_size, features, args.seed);
            add(f32_input("x", &[args.sets * args.set_size, features], &x));
            add(kserve_input(
                "batch",
                &npy::NpyArray {
                    shape: vec![batch.len()],
                    data: NpyData::I64(batch),
                },
            ));
        } else if names == ["x"] {
            let dim = param("dim")?;
            add(f32_input(
                "x",
                &[args.rows, dim],
                &bridge_rows(args.rows, dim),
            ));
            req.parameters.insert(
                "num_samples".into(),
                kpb::InferParameter {
                    parameter_choice: Some(ParameterChoice::Int64Param(args.samples as i64)),
                },
            );
        } else {
            bail!(
                "model {} takes inputs {names:?}; give them with --input NAME=FILE.npy",
                args.model
            );
        }
    }
    Ok(req)
}

fn recon_call(args: &LoadArgs) -> anyhow::Result<Vec<pb::ReconRequest>> {
    anyhow::ensure!(
        args.inputs.is_empty(),
        "--protocol recon sends generated volumes; for a file use `inferd recon --input`"
    );
    let k = synthetic_kspace(args.size, args.coils, args.acceleration, args.seed);
    let plane = k.coils * k.n * k.n;
    let mut reqs = vec![pb::ReconRequest {
        msg: Some(pb::recon_request::Msg::Header(pb::ReconHeader {
            model: args.model.clone(),
            height: k.n as u32,
            width: k.n as u32,
            coils: k.coils as u32,
            slices: args.slices as u32,
            sampling: Some(pb::Sampling {
                kind: Some(pb::sampling::Kind::Mask(tensor::encode_f32(
                    &[k.n, k.n],
                    &k.mask,
                ))),
            }),
            ..Default::default()
        })),
    }];
    for s in 0..args.slices {
        reqs.push(pb::ReconRequest {
            msg: Some(pb::recon_request::Msg::Slice(pb::KSpaceSlice {
                index: s as u32,
                kspace: Some(tensor::encode_c64(&[k.coils, k.n, k.n], &k.data[..plane])),
                mask: None,
            })),
        });
    }
    Ok(reqs)
}

async fn bridge_call(args: &LoadArgs, caller: &mut Caller) -> anyhow::Result<pb::BridgeRequest> {
    let files = read_inputs(args)?;
    let x = match files.as_slice() {
        [] => {
            let info = caller
                .bridge
                .describe(pb::DescribeBridgeRequest {
                    model: args.model.clone(),
                })
                .await
                .with_context(|| format!("asking the server for bridge {:?}", args.model))?
                .into_inner();
            let dim = info.dim as usize;
            tensor::encode_f32(&[args.rows, dim], &bridge_rows(args.rows, dim))
        }
        [(name, a)] if name == "x" => match &a.data {
            NpyData::F32(v) => tensor::encode_f32(&a.shape, v),
            _ => bail!("--input x must be a float32 array [rows, dim]"),
        },
        _ => bail!("--protocol bridge takes one input, x=FILE.npy ([rows, dim] float32)"),
    };
    Ok(pb::BridgeRequest {
        model: args.model.clone(),
        x: Some(x),
        num_samples: args.samples as u32,
        ..Default::default()
    })
}

/// TorchServe requests carry each input as the bytes of an `.npy` file (the handler in
/// bench/torchserve/ decodes them): `kspace` `[coils, n, n, 2]` float32 and `mask` `[n, n]`.
fn torchserve_call(args: &LoadArgs) -> anyhow::Result<torchserve::PredictionsRequest> {
    let mut input = HashMap::new();
    let files = read_inputs(args)?;
    if files.is_empty() {
        let k = synthetic_kspace(args.size, args.coils, args.acceleration, args.seed);
        input.insert(
            "kspace".to_string(),
            npy::encode_f32(&[k.coils, k.n, k.n, 2], &k.interleaved()),
        );
        input.insert("mask".to_string(), npy::encode_f32(&[k.n, k.n], &k.mask));
    } else {
        for spec in &args.inputs {
            let (name, path) = spec.split_once('=').expect("checked by read_inputs");
            input.insert(name.to_string(), std::fs::read(path)?);
        }
    }
    Ok(torchserve::PredictionsRequest {
        model_name: args.model.clone(),
        model_version: String::new(),
        input,
    })
}

/// The call of a run, asking the server (through `caller`) what the model takes where needed.
pub async fn prepare(args: &LoadArgs, caller: &mut Caller) -> anyhow::Result<Call> {
    Ok(match args.protocol {
        Protocol::Live => Call::Live,
        Protocol::Health => Call::Health(args.model.clone()),
        Protocol::Kserve => Call::Kserve(kserve_call(args, caller).await?),
        Protocol::Recon => Call::Recon(recon_call(args)?),
        Protocol::Bridge => Call::Bridge(bridge_call(args, caller).await?),
        Protocol::Torchserve => Call::Torchserve(torchserve_call(args)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_radial_kspace_matches_its_trajectory() {
        let (k, traj) = synthetic_radial(32, 2, 16, 1).unwrap();
        assert_eq!(traj.len(), 16 * 64);
        assert_eq!(k.len(), 2 * 16 * 64);
        assert!(k.iter().all(|v| v.re.is_finite() && v.im.is_finite()));
        // the centre of k-space (largest magnitude) is where every spoke crosses k = 0
        let peak = (0..traj.len())
            .max_by(|&a, &b| k[a].norm().total_cmp(&k[b].norm()))
            .unwrap();
        let [k0, k1] = traj[peak];
        assert!(k0.hypot(k1) <= 1.0, "peak at {:?}", traj[peak]);
    }

    #[test]
    fn synthetic_kspace_is_undersampled_as_asked() {
        let k = synthetic_kspace(64, 4, 4.0, 1);
        assert_eq!(k.data.len(), 4 * 64 * 64);
        let frac = masks::sampled_fraction(&k.mask);
        assert!((0.2..0.35).contains(&frac), "sampled fraction {frac}");
        // Unsampled positions are zero in every coil, sampled ones carry signal.
        for coil in k.data.chunks(64 * 64) {
            for (v, &m) in coil.iter().zip(&k.mask) {
                if m == 0.0 {
                    assert_eq!(v.norm(), 0.0);
                }
            }
            assert!(coil.iter().map(|v| v.norm()).sum::<f32>() > 0.0);
        }
    }

    #[test]
    fn sets_hold_bits_and_ids() {
        let (x, batch) = sets(3, 5, 8, 7);
        assert_eq!(x.len(), 3 * 5 * 8);
        assert!(x.iter().all(|&v| v == 0.0 || v == 1.0));
        assert_eq!(batch, vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
    }
}
