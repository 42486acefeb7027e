//! The candle models and the engines that run them. Only this module touches candle tensors; the
//! scheduler and the gRPC layer see plain `f32` buffers.

pub mod cpu_conv;
pub mod lcm;
pub mod lightsb;
pub mod recon_resnet;
pub mod unrolled;

use crate::error::{Error, Result};
use crate::mri::{
    dc::DcMode,
    recon::{self, Prepared},
};
use candle_core::{DType, Device, Module, Tensor};
use lightsb::LightSb;
use num_complex::Complex32;
use recon_resnet::ReconResNet;
use std::collections::HashMap;
use std::path::PathBuf;
use unrolled::Unrolled;

/// Name under which the shipped reconstruction model is served.
pub const DEFAULT_RECON_MODEL: &str = "recon-unrolled";
/// The shipped reconstruction model for golden-angle radial sampling.
pub const DEFAULT_RADIAL_MODEL: &str = "recon-radial";
/// Name under which the shipped bridge (2-D Gaussian → Swiss roll) is served.
pub const DEFAULT_BRIDGE_MODEL: &str = "lightsb";
/// Name under which the shipped LCM second-minimum model is served.
pub const DEFAULT_GRAPH_MODEL: &str = "lcm";

/// The shipped default weights, embedded at build time (see build.rs).
#[cfg(inferd_embedded_recon)]
pub const EMBEDDED_RECON: Option<&[u8]> =
    Some(include_bytes!("../../models/recon-unrolled.safetensors"));
#[cfg(not(inferd_embedded_recon))]
pub const EMBEDDED_RECON: Option<&[u8]> = None;
#[cfg(inferd_embedded_radial)]
pub const EMBEDDED_RADIAL: Option<&[u8]> =
    Some(include_bytes!("../../models/recon-radial.safetensors"));
#[cfg(not(inferd_embedded_radial))]
pub const EMBEDDED_RADIAL: Option<&[u8]> = None;
#[cfg(inferd_embedded_bridge)]
pub const EMBEDDED_BRIDGE: Option<&[u8]> = Some(include_bytes!("../../models/lightsb.safetensors"));
#[cfg(not(inferd_embedded_bridge))]
pub const EMBEDDED_BRIDGE: Option<&[u8]> = None;
#[cfg(inferd_embedded_graph)]
pub const EMBEDDED_GRAPH: Option<&[u8]> = Some(include_bytes!("../../models/lcm.safetensors"));
#[cfg(not(inferd_embedded_graph))]
pub const EMBEDDED_GRAPH: Option<&[u8]> = None;

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

/// The model families inferd serves; each has its own request contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// ReconResNet for Cartesian k-space.
    Recon,
    /// Light Schrödinger Bridge.
    Bridge,
    /// Set / neighbourhood aggregation (LCM and baselines).
    Graph,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Recon => "recon",
            Family::Bridge => "lightsb",
            Family::Graph => "lcm",
        }
    }
}

/// What the API layer may know about a loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    /// The model repository's version directory ("1" for models given by file or embedded).
    pub version: String,
    pub family: Family,
    pub description: String,
    pub parameters: u64,
    /// Batching that suits the model when the operator sets none.
    pub default_batching: DefaultBatching,
    /// Family-specific facts clients may need (e.g. a bridge's D, K and ε), as name/value pairs.
    pub properties: Vec<(String, String)>,
}

impl ModelInfo {
    /// A bare description for unit tests of the serving layer.
    #[cfg(test)]
    pub(crate) fn stub(name: &str, version: &str, family: Family) -> Self {
        ModelInfo {
            name: name.into(),
            version: version.into(),
            family,
            description: String::new(),
            parameters: 0,
            default_batching: DefaultBatching {
                max_batch: 1,
                max_delay: std::time::Duration::ZERO,
            },
            properties: Vec::new(),
        }
    }

    /// A property every model of the family has (set at load time), e.g. a bridge's `dim`.
    pub fn require<T: std::str::FromStr>(&self, name: &str) -> Result<T> {
        self.property(name)
            .ok_or_else(|| Error::Internal(format!("model {} has no property {name}", self.name)))
    }

    /// A family-specific property, e.g. a bridge's `dim`.
    pub fn property<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse().ok())
    }
}

/// A family's batching defaults: compute-bound models gain nothing from waiting, small fast
/// requests gain a lot.
#[derive(Debug, Clone, Copy)]
pub struct DefaultBatching {
    pub max_batch: usize,
    pub max_delay: std::time::Duration,
}

/// One item of work for a model (one slice, one set of samples...). Items of a batch share a
/// [`Input::batch_key`].
pub enum Input {
    Recon { slice: recon::Slice, dc: DcMode },
    Bridge(BridgeInput),
    Graph(GraphInput),
}

/// Elements `x` (`[N, F]`) and the neighbourhoods to aggregate them over; the output has one row
/// per CSR row.
#[derive(Debug, Clone)]
pub struct GraphInput {
    pub x: Vec<f32>,
    pub features: usize,
    pub csr: lcm::Csr,
}

/// What to draw from a bridge for each row of `x` (`[rows, D]`).
#[derive(Debug, Clone)]
pub struct BridgeInput {
    pub x: Vec<f32>,
    pub dim: usize,
    pub op: BridgeOp,
    pub samples: usize,
    /// The random stream of this item; equal seeds give equal draws, whatever else is batched.
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BridgeOp {
    /// States at time `t` in (0, 1]; `t = 1` is the endpoint y ~ π(·|x). Output `[rows, n, D]`.
    At(f32),
    /// Paths through `times` (increasing, in (0, 1]) by the Brownian bridge; output
    /// `[rows, n, 1 + times.len(), D]`.
    BridgePath(Vec<f32>),
    /// Paths by Euler–Maruyama with `steps` uniform steps; output `[rows, n, steps + 1, D]`.
    EulerPath(usize),
}

impl Input {
    /// Items with equal keys can run through the model together.
    pub fn batch_key(&self) -> Vec<usize> {
        match self {
            // The size the network sees: column-sampled Cartesian slices run transposed.
            Input::Recon { slice, .. } => match slice {
                recon::Slice::Cartesian(c) if c.samples_columns() => vec![c.nx, c.ny],
                s => {
                    let (ny, nx) = s.image_size();
                    vec![ny, nx]
                }
            },
            // Everything but Euler–Maruyama shares one γ computation over the batch.
            Input::Bridge(b) => vec![b.dim, matches!(b.op, BridgeOp::EulerPath(_)) as usize],
            Input::Graph(g) => vec![g.features],
        }
    }
}

/// The result of one [`Input`].
pub enum Output {
    Recon(recon::SliceOutput),
    /// Samples in the layout of the input's [`BridgeOp`].
    Bridge(Vec<f32>),
    /// `[rows, out]` probabilities (sigmoid of the decoder's logits).
    Graph(Vec<f32>),
}

/// A loaded model on its device. Only implementations touch candle; the scheduler and the API
/// layer see [`Input`] and [`Output`].
pub trait Engine: Send + Sync {
    fn info(&self) -> &ModelInfo;
    fn info_mut(&mut self) -> &mut ModelInfo;
    /// Runs one small batch so that the first request does not pay for lazy initialisation.
    fn warm_up(&self) -> Result<()>;
    /// Runs a batch of compatible items; returns one output per input, in order.
    fn run(&self, batch: Vec<Input>) -> Result<Vec<Output>>;
}

/// Reads a safetensors source as f32 tensors on `device`.
/// The tensors of a safetensors source (as f32 on `device`) and its [`provenance`], from one read of
/// its bytes.
fn read_weights(
    source: &WeightsSource,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, Vec<(String, String)>)> {
    let file;
    let (bytes, what): (&[u8], String) = match source {
        WeightsSource::File(p) => {
            file = std::fs::read(p)
                .map_err(|e| Error::InvalidArgument(format!("cannot read {}: {e}", p.display())))?;
            (&file, p.display().to_string())
        }
        WeightsSource::Embedded(b) => (b, "the embedded weights".into()),
    };
    let tensors = candle_core::safetensors::load_buffer(bytes, device)
        .map_err(|e| Error::InvalidArgument(format!("cannot load {what}: {e}")))?
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
        .collect::<candle_core::Result<HashMap<_, _>>>()?;
    Ok((tensors, provenance(bytes)?))
}

/// Loads a model, telling the family from the tensors it contains (reconstruction models on a CPU use
/// the fast convolution kernels unless `INFERD_FAST_CONV=0`).
pub fn load(spec: &ModelSpec, device: &Device) -> Result<Box<dyn Engine>> {
    load_with(spec, device, cpu_conv::fast_conv_enabled())
}

/// [`load`], choosing the CPU convolution path of reconstruction models (`fast_cpu_conv`: inferd's
/// kernels; otherwise candle's stock layers).
pub fn load_with(
    spec: &ModelSpec,
    device: &Device,
    fast_cpu_conv: bool,
) -> Result<Box<dyn Engine>> {
    let (tensors, provenance) = read_weights(&spec.source, device)?;
    let mut engine: Box<dyn Engine> = if tensors.keys().any(|k| k.starts_with("model.")) {
        Box::new(ReconEngine::from_tensors(
            &spec.name,
            tensors,
            device,
            fast_cpu_conv,
        )?)
    } else if tensors.contains_key("aggregator_kind") {
        Box::new(GraphEngine::from_tensors(&spec.name, tensors, device)?)
    } else if tensors.contains_key("log_alpha") && tensors.contains_key("r") {
        Box::new(BridgeEngine::new(
            &spec.name,
            LightSb::from_tensors(&tensors, device)?,
        ))
    } else {
        return Err(unrecognised(&spec.name, &tensors));
    };
    engine.info_mut().properties.extend(provenance);
    Ok(engine)
}

/// Where a weights file comes from: the SHA-256 of its bytes and the `__metadata__` its writer stored
/// (the shipped files carry their training data, recipe and validation figures, see
/// `scripts/stamp_provenance.py`), as `sha256` and `provenance.KEY` properties.
pub fn provenance(bytes: &[u8]) -> Result<Vec<(String, String)>> {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(bytes);
    let mut out = vec![(
        "sha256".to_string(),
        digest.iter().map(|b| format!("{b:02x}")).collect(),
    )];
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::InvalidArgument(format!("not a safetensors file: {e}")))?;
    let mut stored: Vec<_> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    stored.sort();
    out.extend(
        stored
            .into_iter()
            .map(|(k, v)| (format!("provenance.{k}"), v)),
    );
    Ok(out)
}

fn unrecognised(name: &str, tensors: &HashMap<String, Tensor>) -> Error {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    names.truncate(5);
    Error::InvalidArgument(format!(
        "model {name}: unrecognised weights (first tensors {names:?}); expected a ReconResNet (model.N.*) a LightSB (log_alpha, r, log_s, epsilon) or a set/graph model (aggregator_kind, enc.*, agg.*, dec.*)"
    ))
}

/// A tensor whose presence in a ReconResNet weights file marks a model trained on gridded radial
/// (non-Cartesian) data: KServe then gives it the `recon-radial` contract (k-space on a trajectory).
pub const RADIAL_MARKER: &str = "sampling.radial";

/// The bound on the full-resolution activations of one CPU network group: the server's allocator keeps
/// blocks below 32 MiB (glibc's largest mmap threshold) on its heap (`src/main.rs`).
pub const CPU_GROUP_ACTIVATION_BYTES: usize = 32 << 20;

/// How many `ny × nx` images of a network of `width` channels one CPU group holds (at least one).
fn cpu_group(width: usize, ny: usize, nx: usize) -> usize {
    let per_image = width
        .saturating_mul(ny)
        .saturating_mul(nx)
        .saturating_mul(4);
    ((CPU_GROUP_ACTIVATION_BYTES - 1) / per_image.max(1)).max(1)
}

/// A loaded ReconResNet on its device, with the MR physics around it (coil combination, data
/// consistency): a single-pass magnitude network, or an unrolled model ([`unrolled`]).
pub struct ReconEngine {
    net: ReconResNet,
    unrolled: Option<Unrolled>,
    device: Device,
    info: ModelInfo,
}

impl ReconEngine {
    /// Loads a model; on a CPU it runs on the fast kernels unless `INFERD_FAST_CONV=0`.
    pub fn load(source: &WeightsSource, device: &Device) -> Result<Self> {
        Self::load_with(source, device, cpu_conv::fast_conv_enabled())
    }

    /// Loads a model choosing the CPU convolution path: inferd's fast kernels, or candle's stock layers.
    pub fn load_with(source: &WeightsSource, device: &Device, fast_cpu: bool) -> Result<Self> {
        Self::from_tensors("recon", read_weights(source, device)?.0, device, fast_cpu)
    }

    fn from_tensors(
        name: &str,
        mut tensors: HashMap<String, Tensor>,
        device: &Device,
        fast_cpu: bool,
    ) -> Result<Self> {
        let radial = tensors.remove(RADIAL_MARKER).is_some();
        let unrolled = Unrolled::take_from(&mut tensors)
            .map_err(|e| Error::InvalidArgument(format!("model {name}: {e}")))?;
        let mut net = ReconResNet::from_tensors(tensors, device).map_err(Error::InvalidArgument)?;
        let c = net.config;
        let expected_channels = if unrolled.is_some() { 2 } else { 1 };
        if c.channels != expected_channels {
            return Err(Error::InvalidArgument(format!(
                "model {name}: a {} model needs a {expected_channels}-channel ReconResNet, the weights have {} channels",
                if unrolled.is_some() { "unrolled" } else { "single-pass" },
                c.channels
            )));
        }
        if device.is_cpu() && fast_cpu {
            net.prepare_cpu_kernels()?;
        }
        let conv_path = match (device.is_cpu(), net.uses_cpu_kernels()) {
            (false, _) => "candle (device kernels)",
            (true, true) => "inferd CPU kernels",
            (true, false) => "candle stock CPU layers",
        };
        let sampling = if radial { "radial" } else { "cartesian" };
        let (description, passes) = match &unrolled {
            Some(u) => (
                format!(
                    "unrolled ReconResNet: {} passes of a complex denoiser (width {}, {} residual blocks) with data consistency, trained for {sampling} sampling",
                    u.passes(),
                    c.width,
                    c.res_blocks
                ),
                u.passes(),
            ),
            None => (
                format!(
                    "ReconResNet width {} with {} residual blocks, trained for {sampling} sampling",
                    c.width, c.res_blocks
                ),
                1,
            ),
        };
        let info = ModelInfo {
            name: name.to_string(),
            version: "1".into(),
            family: Family::Recon,
            description,
            parameters: c.parameters() as u64 + unrolled.as_ref().map_or(0, |u| u.passes() as u64),
            default_batching: DefaultBatching {
                max_batch: 4,
                max_delay: std::time::Duration::ZERO,
            },
            properties: vec![
                ("width".into(), c.width.to_string()),
                ("res_blocks".into(), c.res_blocks.to_string()),
                ("passes".into(), passes.to_string()),
                ("sampling".into(), sampling.into()),
                ("convolutions".into(), conv_path.into()),
            ],
        };
        Ok(ReconEngine {
            net,
            unrolled,
            device: device.clone(),
            info,
        })
    }

    /// The unrolled model's passes and data-consistency weights (`None` for a single-pass network).
    pub fn unrolled(&self) -> Option<&Unrolled> {
        self.unrolled.as_ref()
    }

    /// Runs the network on a batch of `[c, ny, nx]` images of one size (`c` = the network's channels).
    ///
    /// On the CPU a batch runs in groups whose full-resolution feature maps (width × ny × nx floats per
    /// image, the network's largest activations) stay below [`CPU_GROUP_ACTIVATION_BYTES`]: larger
    /// blocks are mapped and page-faulted in afresh by the allocator in every layer, and the CPU gains
    /// nothing from a larger batch (BENCHMARKS.md). A GPU runs the whole batch at once.
    pub fn run_network(&self, images: &[&[f32]], ny: usize, nx: usize) -> Result<Vec<Vec<f32>>> {
        let c = self.net.config.channels;
        let group = if self.device.is_cpu() {
            cpu_group(self.net.config.width, ny, nx)
        } else {
            images.len().max(1)
        };
        let mut out = Vec::with_capacity(images.len());
        for part in images.chunks(group) {
            let flat: Vec<f32> = part.iter().flat_map(|i| i.iter().copied()).collect();
            let x = Tensor::from_vec(flat, (part.len(), c, ny, nx), &self.device)?;
            let y = self.net.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
            out.extend(y.chunks_exact(c * ny * nx).map(<[f32]>::to_vec));
        }
        Ok(out)
    }

    /// One denoising pass of the unrolled model over a batch: `z = x + s · D(x / s)` per slice, with `s`
    /// the slice's network scale (all-zero slices stay zero).
    fn denoise(&self, x: &[Vec<Complex32>], prepared: &[Prepared]) -> Result<Vec<Vec<Complex32>>> {
        let (ny, nx) = (prepared[0].ny, prepared[0].nx);
        let plane = ny * nx;
        let inputs: Vec<Vec<f32>> = x
            .iter()
            .zip(prepared)
            .map(|(x, p)| {
                let inv = 1.0 / p.scale();
                let mut v = Vec::with_capacity(2 * plane);
                v.extend(x.iter().map(|c| c.re * inv));
                v.extend(x.iter().map(|c| c.im * inv));
                v
            })
            .collect();
        let refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        let out = self.run_network(&refs, ny, nx)?;
        Ok(x.iter()
            .zip(prepared)
            .zip(out)
            .map(|((x, p), d)| {
                if p.is_empty() {
                    return x.clone();
                }
                let s = p.scale();
                x.iter()
                    .enumerate()
                    .map(|(i, c)| c + Complex32::new(d[i], d[plane + i]) * s)
                    .collect()
            })
            .collect())
    }

    /// The unrolled passes over prepared slices, each finished with its own data consistency.
    fn run_unrolled(
        &self,
        u: &Unrolled,
        items: Vec<(Prepared, DcMode)>,
    ) -> Result<Vec<recon::SliceOutput>> {
        use rayon::prelude::*;
        let (prepared, modes): (Vec<Prepared>, Vec<DcMode>) = items.into_iter().unzip();
        let mut x: Vec<Vec<Complex32>> = prepared
            .par_iter()
            .map(Prepared::zero_filled_image)
            .collect();
        // spans on this thread (the worker's `compute` is current); rayon's threads carry none
        let network = |pass| network_span(pass, prepared.len());
        let consistency = consistency_span;
        let last = u.passes() - 1;
        for k in 0..last {
            let z = network(k).in_scope(|| self.denoise(&x, &prepared))?;
            x = consistency(k).in_scope(|| {
                prepared
                    .par_iter()
                    .zip(z)
                    .map(|(p, z)| {
                        recon::consistent_image(p, z, u.step(k, p.is_radial(), p.is_multicoil()))
                    })
                    .collect::<Result<_>>()
            })?;
        }
        let z = network(last).in_scope(|| self.denoise(&x, &prepared))?;
        let _dc = consistency(last).entered();
        prepared
            .into_par_iter()
            .zip(z)
            .zip(modes)
            .map(|((p, z), mode)| {
                // The spectral guard scales the predicted, unmeasured k-space; with data consistency off
                // the client asked for the network's own image, so no gains are fitted.
                let lines = if mode == DcMode::Off { 0 } else { u.guard_lines };
                let (misfit, gains) = recon::guard_statistics(&p, &z, lines)?;
                let weight = u.guard_weight(misfit);
                if weight < 1.0 {
                    tracing::debug!(weight, "reconstruction guard: the network's image contradicts the measurements; blended towards zero-filled");
                }
                let zero_filled = p.zero_filled_image();
                Ok(recon::finish_image(p, z, mode, gains.as_deref())?
                    .blend_towards_zero_filled(weight, &zero_filled))
            })
            .collect()
    }
}

/// The trace span of one network pass over `slices` slices (see `crate::telemetry`).
fn network_span(pass: usize, slices: usize) -> tracing::Span {
    tracing::info_span!("network", pass = pass as i64, slices = slices as i64)
}

/// The trace span of one pass's data consistency.
fn consistency_span(pass: usize) -> tracing::Span {
    tracing::info_span!("data_consistency", pass = pass as i64)
}

impl Engine for ReconEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn info_mut(&mut self) -> &mut ModelInfo {
        &mut self.info
    }

    fn warm_up(&self) -> Result<()> {
        let n = 32;
        let image: Vec<Complex32> = (0..n * n)
            .map(|i| Complex32::new((i % 7) as f32, 0.0))
            .collect();
        let slice = recon::CartesianSlice::single_coil(&image, vec![1.0; n * n], n, n);
        self.run(vec![Input::Recon {
            slice: slice.into(),
            dc: DcMode::Model,
        }])
        .map(|_| ())
    }

    fn run(&self, batch: Vec<Input>) -> Result<Vec<Output>> {
        use rayon::prelude::*;
        // The physics before and after the network is independent per slice: the slices of a batch
        // are prepared and finished in parallel on rayon's pool (sized by `--cpu-threads`), while the
        // network runs once for the whole batch. Cartesian slices whose lines are columns run
        // transposed (the networks are trained on row lines) and are transposed back at the end.
        let prepare = tracing::info_span!("prepare", slices = batch.len() as i64).entered();
        let items: Vec<(Prepared, DcMode, Option<(usize, usize)>)> = batch
            .into_par_iter()
            .map(|input| {
                let Input::Recon { slice, dc } = input else {
                    return Err(Error::Internal(
                        "a reconstruction model got another family's input".into(),
                    ));
                };
                let (slice, transposed) = match slice {
                    recon::Slice::Cartesian(c) if c.samples_columns() => {
                        let dims = (c.nx, c.ny);
                        (recon::Slice::Cartesian(c.transposed()), Some(dims))
                    }
                    s => (s, None),
                };
                let radial = matches!(slice, recon::Slice::Radial(_));
                let trained = self.unrolled.as_ref().and_then(|u| u.trained_final(radial));
                Ok((
                    recon::prepare(slice)?,
                    dc.resolve(radial, trained),
                    transposed,
                ))
            })
            .collect::<Result<_>>()?;
        drop(prepare);
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let transposed: Vec<Option<(usize, usize)>> = items.iter().map(|i| i.2).collect();
        let items: Vec<(Prepared, DcMode)> = items.into_iter().map(|(p, m, _)| (p, m)).collect();
        let outputs = match &self.unrolled {
            Some(u) => self.run_unrolled(u, items)?,
            None => {
                let (ny, nx) = (items[0].0.ny, items[0].0.nx);
                let inputs: Vec<&[f32]> =
                    items.iter().map(|(p, _)| p.net_input.as_slice()).collect();
                let outputs =
                    network_span(0, inputs.len()).in_scope(|| self.run_network(&inputs, ny, nx))?;
                let _dc = consistency_span(0).entered();
                items
                    .into_par_iter()
                    .zip(outputs)
                    .map(|((p, dc), o)| recon::finish(p, &o, dc))
                    .collect::<Result<Vec<_>>>()?
            }
        };
        Ok(outputs
            .into_iter()
            .zip(transposed)
            .map(|(o, t)| {
                Output::Recon(match t {
                    // reconstructed as nx × ny: back to the slice's ny × nx
                    Some((ny_t, nx_t)) => o.transposed(ny_t, nx_t),
                    None => o,
                })
            })
            .collect())
    }
}

/// A loaded LightSB.
pub struct BridgeEngine {
    model: LightSb,
    info: ModelInfo,
}

impl BridgeEngine {
    pub fn new(name: &str, model: LightSb) -> Self {
        let info = ModelInfo {
            name: name.to_string(),
            version: "1".into(),
            family: Family::Bridge,
            description: format!(
                "Light Schrödinger Bridge, D = {}, K = {}, epsilon = {}",
                model.dim, model.components, model.epsilon
            ),
            parameters: (model.components * (1 + 2 * model.dim)) as u64,
            // Many small requests: under load they queue up and run as one batch (one matrix
            // product for all rows). No delay by default: an idle worker takes what is there, as
            // waiting only adds latency when the worker keeps up (see BENCHMARKS.md).
            default_batching: DefaultBatching {
                max_batch: 64,
                max_delay: std::time::Duration::ZERO,
            },
            properties: vec![
                ("dim".into(), model.dim.to_string()),
                ("components".into(), model.components.to_string()),
                ("epsilon".into(), model.epsilon.to_string()),
            ],
        };
        BridgeEngine { model, info }
    }
}

impl Engine for BridgeEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn info_mut(&mut self) -> &mut ModelInfo {
        &mut self.info
    }

    fn warm_up(&self) -> Result<()> {
        let x = vec![0.0; 2 * self.model.dim];
        let input = |op| {
            Input::Bridge(BridgeInput {
                x: x.clone(),
                dim: self.model.dim,
                op,
                samples: 2,
                seed: 0,
            })
        };
        self.run(vec![input(BridgeOp::At(1.0)), input(BridgeOp::At(0.5))])?;
        self.run(vec![input(BridgeOp::EulerPath(2))]).map(|_| ())
    }

    fn run(&self, batch: Vec<Input>) -> Result<Vec<Output>> {
        use rand::SeedableRng;
        let m = &self.model;
        let inputs: Vec<BridgeInput> = batch
            .into_iter()
            .map(|i| match i {
                Input::Bridge(b) if b.dim == m.dim => Ok(b),
                _ => Err(Error::Internal(
                    "a bridge got an input it cannot take".into(),
                )),
            })
            .collect::<Result<_>>()?;
        // One γ computation for every row of every item that needs it.
        let shared: Vec<f32> = inputs
            .iter()
            .filter(|b| !matches!(b.op, BridgeOp::EulerPath(_)))
            .flat_map(|b| b.x.iter().copied())
            .collect();
        let gamma = m.gamma(&shared, shared.len() / m.dim)?;
        let mut offset = 0;
        inputs
            .into_iter()
            .map(|b| {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(b.seed);
                let rows = b.x.len() / m.dim;
                let out = match &b.op {
                    BridgeOp::EulerPath(steps) => {
                        m.trajectories_euler(&b.x, b.samples, *steps, &mut rng)?
                    }
                    op => {
                        let k = m.components;
                        let g = &gamma[offset * k..(offset + rows) * k];
                        offset += rows;
                        match op {
                            BridgeOp::At(t) => {
                                let mut y = m.sample_with_gamma(&b.x, g, b.samples, &mut rng);
                                if *t < 1.0 {
                                    m.states_at(&b.x, &mut y, b.samples, *t, &mut rng);
                                }
                                y
                            }
                            BridgeOp::BridgePath(times) => {
                                m.trajectories_bridge(&b.x, g, b.samples, times, &mut rng)
                            }
                            BridgeOp::EulerPath(_) => unreachable!("handled above"),
                        }
                    }
                };
                Ok(Output::Bridge(out))
            })
            .collect()
    }
}

/// A loaded set / graph model: encoder → aggregator → decoder.
pub struct GraphEngine {
    model: lcm::SetModel,
    output: lcm::OutputKind,
    info: ModelInfo,
    device: Device,
}

impl GraphEngine {
    pub fn from_tensors(
        name: &str,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let (model, output) = lcm::SetModel::from_tensors(tensors, None, device)
            .map_err(|e| Error::InvalidArgument(format!("model {name}: {e}")))?;
        let (kind, layers) = (model.kind(), model.layers.len());
        let (in_dim, hidden, out_dim) = (model.in_dim, model.hidden, model.out_dim);
        let info = ModelInfo {
            name: name.to_string(),
            version: "1".into(),
            family: Family::Graph,
            description: if layers == 0 {
                format!(
                    "set/graph model, {} aggregator, {in_dim} → {hidden} → {out_dim}",
                    kind.name()
                )
            } else {
                format!(
                    "GNN, {layers} message-passing layers with {} aggregators, {in_dim} → {hidden} → {out_dim} per node",
                    kind.name()
                )
            },
            parameters: 0,
            default_batching: DefaultBatching {
                max_batch: 32,
                max_delay: std::time::Duration::ZERO,
            },
            properties: vec![
                ("aggregator".into(), kind.name().into()),
                ("in_features".into(), in_dim.to_string()),
                ("hidden".into(), hidden.to_string()),
                ("out_features".into(), out_dim.to_string()),
                ("layers".into(), layers.to_string()),
                ("output".into(), output.name().into()),
            ],
        };
        Ok(GraphEngine {
            output,
            model,
            info,
            device: device.clone(),
        })
    }
}

impl Engine for GraphEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn info_mut(&mut self) -> &mut ModelInfo {
        &mut self.info
    }

    fn warm_up(&self) -> Result<()> {
        let f = self.model.in_dim;
        let csr = if self.model.layers.is_empty() {
            lcm::Csr::from_batch(&[0, 0, 0, 1, 1])?
        } else {
            lcm::Csr::from_edge_index(&[0, 1, 2, 3, 4], &[1, 2, 3, 4, 0], 5)?
        };
        self.run(vec![Input::Graph(GraphInput {
            x: vec![0.5; 5 * f],
            features: f,
            csr,
        })])
        .map(|_| ())
    }

    fn run(&self, batch: Vec<Input>) -> Result<Vec<Output>> {
        // All graphs of the batch as one disjoint union: one encoder, aggregator and decoder pass.
        let f = self.model.in_dim;
        let (mut x, mut rowptr, mut col, mut rows) =
            (Vec::new(), vec![0usize], Vec::new(), Vec::new());
        for input in batch {
            let Input::Graph(g) = input else {
                return Err(Error::Internal(
                    "a graph model got another family's input".into(),
                ));
            };
            if g.features != f {
                return Err(Error::Internal(
                    "graph input with the wrong feature count".into(),
                ));
            }
            let node_offset = (x.len() / f) as u32;
            let entry_offset = col.len();
            x.extend_from_slice(&g.x);
            col.extend(g.csr.col.iter().map(|c| c + node_offset));
            rowptr.extend(g.csr.rowptr[1..].iter().map(|p| p + entry_offset));
            rows.push(g.csr.rows());
        }
        let n = x.len() / f;
        let csr = lcm::Csr { rowptr, col };
        let xt = Tensor::from_vec(x, (n, f), &self.device)?;
        let probs = self
            .output
            .apply(&self.model.forward(&xt, &csr)?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let out = self.model.out_dim;
        let mut offset = 0;
        Ok(rows
            .into_iter()
            .map(|r| {
                let v = probs[offset * out..(offset + r) * out].to_vec();
                offset += r;
                Output::Graph(v)
            })
            .collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recon_engines_report_and_switch_their_cpu_convolution_path() {
        let source = WeightsSource::File(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/recon-lite.safetensors"),
        );
        let path = |e: &ReconEngine| {
            e.info()
                .properties
                .iter()
                .find(|(k, _)| k == "convolutions")
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let fast = ReconEngine::load_with(&source, &Device::Cpu, true).unwrap();
        let stock = ReconEngine::load_with(&source, &Device::Cpu, false).unwrap();
        assert_eq!(path(&fast), "inferd CPU kernels");
        assert_eq!(path(&stock), "candle stock CPU layers");
        let img: Vec<f32> = (0..48 * 40)
            .map(|i| ((i * 37) % 101) as f32 / 101.0)
            .collect();
        let (a, b) = (
            fast.run_network(&[&img], 48, 40).unwrap(),
            stock.run_network(&[&img], 48, 40).unwrap(),
        );
        let d = a[0]
            .iter()
            .zip(&b[0])
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-5, "fast and stock paths differ by {d}");
    }

    #[test]
    fn cpu_batches_run_in_groups_below_the_allocators_mmap_threshold_with_unchanged_results() {
        assert_eq!(cpu_group(32, 256, 256), 3); // 8 MiB of feature maps per image
        assert_eq!(cpu_group(32, 512, 512), 1);
        assert_eq!(cpu_group(32, 64, 64), 63);
        assert_eq!(cpu_group(usize::MAX, 2, 2), 1);
        // Four 1024 × 512 images of a width-4 network: groups of 3 and 1, in order, each image's output
        // what it is alone.
        assert_eq!(cpu_group(4, 1024, 512), 3);
        let weights = recon_resnet::ReconResNetConfig::magnitude(4, 1)
            .random_weights(&Device::Cpu)
            .unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        candle_core::safetensors::save(&weights, file.path()).unwrap();
        let engine = ReconEngine::load(
            &WeightsSource::File(file.path().to_path_buf()),
            &Device::Cpu,
        )
        .unwrap();
        let images: Vec<Vec<f32>> = (0..4)
            .map(|k| {
                (0..1024 * 512)
                    .map(|i| ((i * (7 + 2 * k)) % 97) as f32 / 97.0)
                    .collect()
            })
            .collect();
        let refs: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
        let batch = engine.run_network(&refs, 1024, 512).unwrap();
        assert_eq!(batch.len(), 4);
        for (k, image) in refs.iter().enumerate() {
            let alone = engine.run_network(&[image], 1024, 512).unwrap();
            let d = batch[k]
                .iter()
                .zip(&alone[0])
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(d <= 1e-5, "image {k}: batched and alone differ by {d}");
        }
    }
}
