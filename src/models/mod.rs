//! The candle models and the engines that run them. Only this module touches candle tensors; the
//! scheduler and the gRPC layer see plain `f32` buffers.

pub mod recon_resnet;

use crate::error::{Error, Result};
use candle_core::{DType, Device, Module, Tensor};
use recon_resnet::ReconResNet;
use std::collections::HashMap;
use std::path::PathBuf;

/// Name under which the shipped reconstruction model is served.
pub const DEFAULT_RECON_MODEL: &str = "recon-lite";

/// The shipped default weights, embedded at build time (see build.rs).
#[cfg(inferd_embedded_recon)]
pub const EMBEDDED_RECON: Option<&[u8]> =
    Some(include_bytes!("../../models/recon-lite.safetensors"));
#[cfg(not(inferd_embedded_recon))]
pub const EMBEDDED_RECON: Option<&[u8]> = None;

/// Where a model's weights come from.
#[derive(Debug, Clone)]
pub enum WeightsSource {
    File(PathBuf),
    Embedded(&'static [u8]),
}

/// A model to load: a name and a safetensors source.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub name: String,
    pub source: WeightsSource,
}

impl std::str::FromStr for ModelSpec {
    type Err = String;
    /// `NAME=PATH` (a user model) as given to `--model`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, path) = s
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=FILE.safetensors, got {s:?}"))?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "model name {name:?} must be non-empty ASCII letters, digits, '-', '_' or '.'"
            ));
        }
        Ok(ModelSpec {
            name: name.to_string(),
            source: WeightsSource::File(PathBuf::from(path)),
        })
    }
}

/// What the API layer may know about a loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    pub family: &'static str,
    pub description: String,
    pub parameters: u64,
}

/// A loaded ReconResNet on its device.
pub struct ReconEngine {
    net: ReconResNet,
    device: Device,
}

impl ReconEngine {
    pub fn load(source: &WeightsSource, device: &Device) -> Result<Self> {
        let tensors = match source {
            WeightsSource::File(p) => candle_core::safetensors::load(p, device)
                .map_err(|e| Error::InvalidArgument(format!("cannot load {}: {e}", p.display())))?,
            WeightsSource::Embedded(bytes) => candle_core::safetensors::load_buffer(bytes, device)?,
        };
        let tensors = tensors
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
            .collect::<candle_core::Result<HashMap<_, _>>>()?;
        let net = ReconResNet::from_tensors(tensors, device).map_err(Error::InvalidArgument)?;
        Ok(ReconEngine {
            net,
            device: device.clone(),
        })
    }

    pub fn info(&self, name: &str) -> ModelInfo {
        let c = self.net.config;
        ModelInfo {
            name: name.to_string(),
            family: "recon",
            description: format!(
                "ReconResNet width {} with {} residual blocks, Cartesian",
                c.width, c.res_blocks
            ),
            parameters: c.parameters() as u64,
        }
    }

    /// Runs the network on a batch of `[ny, nx]` magnitude images of one size.
    pub fn run(&self, images: &[&[f32]], ny: usize, nx: usize) -> Result<Vec<Vec<f32>>> {
        let b = images.len();
        let flat: Vec<f32> = images.iter().flat_map(|i| i.iter().copied()).collect();
        let x = Tensor::from_vec(flat, (b, 1, ny, nx), &self.device)?;
        let y = self.net.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(y.chunks_exact(ny * nx).map(<[f32]>::to_vec).collect())
    }
}

/// Parses `--device auto|cpu|cuda:N` into a candle device.
pub fn select_device(spec: &str) -> anyhow::Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            if cfg!(feature = "cuda") {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok(d);
                }
            }
            Ok(Device::Cpu)
        }
        s if s.starts_with("cuda") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| anyhow::anyhow!("bad device {s:?}; expected cuda:N"))?,
                None if s == "cuda" => 0,
                None => anyhow::bail!("bad device {s:?}; expected auto, cpu or cuda:N"),
            };
            if !cfg!(feature = "cuda") {
                anyhow::bail!("device {s} requested but this build has no CUDA support; rebuild with --features cuda");
            }
            Device::new_cuda(ordinal)
                .map_err(|e| anyhow::anyhow!("device {s} is not available: {e}"))
        }
        other => anyhow::bail!("bad device {other:?}; expected auto, cpu or cuda:N"),
    }
}

pub fn describe_device(d: &Device) -> String {
    match d {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(_) => format!("cuda ({:?})", d.location()),
        other => format!("{:?}", other.location()),
    }
}
