//! Request validation: every check a request must pass before it may be queued, each failing with a
//! message that names what was expected.

use super::pb::{self, data_consistency::Mode, mask_spec, sampling::Kind};
use super::tensor;
use crate::error::{Error, Result};
use crate::invalid;
use crate::mri::radial::{RadialOperator, RadialSlice, TrajectorySpec};
use crate::mri::recon::{CartesianSlice, Slice};
use crate::mri::traj::{self, Radial, SpokeAngles};
use crate::mri::{dc::DcMode, masks};
use crate::sched::Priority;
use std::sync::Arc;

/// Size limits of a reconstruction request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub min_size: usize,
    pub max_size: usize,
    pub max_coils: usize,
    pub max_slices: usize,
    /// Most samples (or paths) per input row of a bridge request.
    pub max_bridge_samples: usize,
    /// Most values in one unary response (larger bridge requests use the streaming RPC).
    pub max_response_values: usize,
    /// Most samples of a non-Cartesian trajectory.
    pub max_trajectory_samples: usize,
    /// Most memory one request may need at its peak (see [`slice_bytes`], [`graph_bytes`]); larger
    /// requests are refused with RESOURCE_EXHAUSTED before anything is allocated.
    pub max_request_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_size: 8,
            max_size: 1024,
            max_coils: 128,
            max_slices: 10_000,
            max_bridge_samples: 10_000,
            max_response_values: 16 << 20,
            max_trajectory_samples: 4 << 20,
            max_request_bytes: 2 << 30,
        }
    }
}

/// Width (channels of the full-resolution activations) assumed for a reconstruction network that does
/// not state its own (the shipped ones use 32).
pub const DEFAULT_NETWORK_WIDTH: usize = 32;

/// The width of a reconstruction model's network, for [`slice_bytes`].
pub fn network_width(info: &crate::models::ModelInfo) -> usize {
    info.property("width").unwrap_or(DEFAULT_NETWORK_WIDTH)
}

/// Peak bytes of one reconstruction slice of `coils` coils at `ny × nx` (`samples` per coil for a
/// non-Cartesian slice, else 0), counted from what the pipeline allocates: the coil data and up to
/// eight coil-sized complex buffers (images, sensitivities, data-consistency k-space, the CG
/// vectors), the twice-oversampled NUFFT grid and its sample buffers, and the network's
/// activations (about twelve full-resolution tensors of the network's `width`, im2col included).
/// `None` when the product overflows.
pub fn slice_bytes(
    ny: usize,
    nx: usize,
    coils: usize,
    samples: usize,
    width: usize,
) -> Option<u64> {
    let (ny, nx, coils, samples) = (ny as u64, nx as u64, coils as u64, samples as u64);
    let plane = ny.checked_mul(nx)?;
    let coil_planes = coils.checked_mul(plane)?.checked_mul(8 * 9)?;
    let non_cartesian = if samples > 0 {
        let grid = plane.checked_mul(4 * 8 * 2)?;
        coils
            .checked_mul(samples)?
            .checked_mul(8 * 3)?
            .checked_add(grid)?
    } else {
        0
    };
    let network = plane
        .checked_mul(4 * 12)?
        .checked_mul(width.max(1) as u64)?;
    coil_planes.checked_add(non_cartesian)?.checked_add(network)
}

/// Peak bytes of a graph aggregation: per node the features, the encoder's and aggregator's hidden
/// activations (about eight of width `hidden`) and the output; per edge the indices, the CSR and two
/// gathered hidden messages. `None` when the product overflows.
pub fn graph_bytes(nodes: u64, features: u64, hidden: u64, out: u64, edges: u64) -> Option<u64> {
    let per_node = features
        .checked_add(hidden.checked_mul(8)?)?
        .checked_add(out)?
        .checked_mul(4)?;
    let per_edge = hidden.checked_mul(8)?.checked_add(3 * 8)?;
    nodes
        .checked_mul(per_node)?
        .checked_add(edges.checked_mul(per_edge)?)
}

/// Refuses a request whose peak memory (`bytes`, `None` = beyond any count) is above the
/// per-request limit, naming both.
pub fn admit(what: &str, bytes: Option<u64>, max_request_bytes: u64) -> Result<()> {
    const MIB: f64 = (1u64 << 20) as f64;
    match bytes {
        Some(b) if b <= max_request_bytes => Ok(()),
        Some(b) => Err(Error::ResourceExhausted(format!(
            "{what} needs about {:.0} MiB at its peak, above the server's limit of {:.0} MiB per \
             request (--max-request-mb); send fewer coils, smaller images or a smaller batch",
            b as f64 / MIB,
            max_request_bytes as f64 / MIB
        ))),
        None => Err(Error::ResourceExhausted(format!(
            "{what} declares sizes whose product overflows; the server's limit is {:.0} MiB per \
             request (--max-request-mb)",
            max_request_bytes as f64 / MIB
        ))),
    }
}

/// A validated reconstruction header.
#[derive(Debug, Clone)]
pub struct ReconPlan {
    pub ny: usize,
    pub nx: usize,
    pub coils: usize,
    pub slices: usize,
    /// The header's mask (explicit or generated); slices may override it.
    pub mask: Option<Vec<f32>>,
    /// A non-Cartesian trajectory; slices then carry `[coils, samples]`.
    pub trajectory: Option<TrajectorySpec>,
    /// The trajectory's operator, made (or found in the server's cache) after validation.
    pub radial: Option<Arc<RadialOperator>>,
    pub dc: DcMode,
    pub return_complex: bool,
    pub return_zero_filled: bool,
    pub request_id: String,
    pub priority: Priority,
    /// DICOM output, when the header asks for it.
    pub dicom: Option<super::dicom::DicomPlan>,
    /// Peak memory of one slice (admitted against the per-request limit).
    pub slice_bytes: u64,
}

/// Checks a header for a reconstruction model of network width `width` ([`network_width`], for the
/// memory estimate; the caller resolves the model from the header's name).
pub fn plan(h: &pb::ReconHeader, width: usize, limits: &Limits) -> Result<ReconPlan> {
    let (ny, nx, coils, slices) = (
        h.height as usize,
        h.width as usize,
        h.coils as usize,
        h.slices as usize,
    );
    for (what, v) in [("height", ny), ("width", nx)] {
        if v < limits.min_size || v > limits.max_size {
            return Err(invalid!(
                "header {what} is {v}, expected {} to {}",
                limits.min_size,
                limits.max_size
            ));
        }
    }
    if coils == 0 || coils > limits.max_coils {
        return Err(invalid!(
            "header coils is {coils}, expected 1 to {}",
            limits.max_coils
        ));
    }
    if slices == 0 || slices > limits.max_slices {
        return Err(invalid!(
            "header slices is {slices}, expected 1 to {}",
            limits.max_slices
        ));
    }
    let (mut mask, mut trajectory) = (None, None);
    match h.sampling.as_ref().and_then(|s| s.kind.as_ref()) {
        None => {}
        Some(Kind::Mask(t)) => mask = Some(self::mask(t, "header sampling mask", ny, nx)?),
        Some(Kind::Generated(spec)) => mask = Some(generated_mask(spec, ny, nx)?),
        Some(Kind::Radial(r)) => trajectory = Some(radial(r, ny, nx, limits)?),
        Some(Kind::Trajectory(t)) => trajectory = Some(coordinates(t, ny, nx, limits)?),
    }
    let samples = trajectory.as_ref().map_or(0, TrajectorySpec::samples);
    let one_slice = slice_bytes(ny, nx, coils, samples, width);
    admit(
        &format!("one slice of {coils} coils at {ny}x{nx}"),
        one_slice,
        limits.max_request_bytes,
    )?;
    let slice_bytes = one_slice.unwrap_or(u64::MAX);
    let dc = match h.data_consistency.as_ref() {
        None => DcMode::Model,
        Some(d) => {
            let mode = match Mode::try_from(d.mode) {
                Ok(Mode::Unspecified) => "model",
                Ok(Mode::Hard) => "hard",
                Ok(Mode::Off) => "off",
                Ok(Mode::Soft) => "soft",
                Ok(Mode::Cg) => "cg",
                Ok(Mode::Sense) => "sense",
                Err(_) => {
                    return Err(invalid!(
                        "unknown data consistency mode {}; expected HARD, SOFT, OFF, CG or SENSE",
                        d.mode
                    ))
                }
            };
            DcMode::parse(mode, Some(d.lambda as f64), Some(d.iterations as i64))?
        }
    };
    if h.request_id.len() > 128 {
        return Err(invalid!(
            "request_id is {} bytes, expected at most 128",
            h.request_id.len()
        ));
    }
    let dicom = h
        .dicom
        .as_ref()
        .filter(|d| d.return_dicom || d.store)
        .map(|d| super::dicom::plan(d, slices, ny, nx))
        .transpose()?;
    Ok(ReconPlan {
        dicom,
        ny,
        nx,
        coils,
        slices,
        mask,
        trajectory,
        radial: None,
        dc,
        return_complex: h.return_complex,
        return_zero_filled: h.return_zero_filled,
        request_id: h.request_id.clone(),
        priority: priority(h.priority)?,
        slice_bytes,
    })
}

fn square(ny: usize, nx: usize) -> Result<usize> {
    if ny != nx {
        return Err(invalid!(
            "non-Cartesian sampling needs a square image, got height {ny} and width {nx}"
        ));
    }
    Ok(ny)
}

fn radial(
    r: &pb::RadialTrajectory,
    ny: usize,
    nx: usize,
    limits: &Limits,
) -> Result<TrajectorySpec> {
    use pb::radial_trajectory::Angles;
    let n = square(ny, nx)?;
    let readout = if r.readout == 0 {
        2 * n
    } else {
        r.readout as usize
    };
    if r.spokes == 0 {
        return Err(invalid!(
            "radial trajectory has 0 spokes, expected at least 1"
        ));
    }
    if readout < 2 || readout > 8 * n {
        return Err(invalid!(
            "radial readout is {readout} samples, expected 2 to {} (8 x the image size; 0 = {})",
            8 * n,
            2 * n
        ));
    }
    let samples = (r.spokes as usize).saturating_mul(readout);
    if samples > limits.max_trajectory_samples {
        return Err(invalid!(
            "radial trajectory has {samples} samples ({} spokes x {readout}), expected at most {}",
            r.spokes,
            limits.max_trajectory_samples
        ));
    }
    let angles = match Angles::try_from(r.angles) {
        Ok(Angles::Unspecified) | Ok(Angles::GoldenAngle) => SpokeAngles::GoldenAngle,
        Ok(Angles::Half) => SpokeAngles::Half,
        Ok(Angles::Full) => SpokeAngles::Full,
        Err(_) => {
            return Err(invalid!(
                "unknown radial angles {}; expected GOLDEN_ANGLE, HALF or FULL",
                r.angles
            ))
        }
    };
    Ok(TrajectorySpec::Radial(Radial::new(
        n,
        readout,
        r.spokes as usize,
        angles,
    )?))
}

/// `[samples, 2]` FLOAT32 `(kx, ky)` in grid units.
pub fn coordinates(
    t: &pb::Tensor,
    ny: usize,
    nx: usize,
    limits: &Limits,
) -> Result<TrajectorySpec> {
    let n = square(ny, nx)?;
    let (shape, v) = tensor::to_f32(t)?;
    match shape[..] {
        [m, 2] if m >= 1 && m <= limits.max_trajectory_samples => {}
        _ => {
            return Err(invalid!(
                "trajectory has shape {shape:?}, expected [samples, 2] FLOAT32 (k0 along H, k1 along W) with 1 to {} samples",
                limits.max_trajectory_samples
            ))
        }
    }
    trajectory(v.chunks_exact(2).map(|c| [c[0], c[1]]).collect(), n)
}

/// The scheduling priority of an inferd API request (`Priority` enum value).
pub fn priority(p: i32) -> Result<Priority> {
    match pb::Priority::try_from(p) {
        Ok(pb::Priority::High) => Ok(Priority::High),
        Ok(pb::Priority::Normal) => Ok(Priority::Normal),
        Err(_) => Err(invalid!(
            "unknown priority {p}; expected PRIORITY_NORMAL (0) or PRIORITY_HIGH (1)"
        )),
    }
}

/// User-supplied coordinates `[k0, k1]` for an `n × n` image (grid units; `k0` along the image's first
/// axis H, `k1` along W: BART's first and second dimension as `cfl.readcfl` returns its arrays), checked
/// to lie on the grid, in the NUFFT's order.
pub fn trajectory(coords: Vec<[f32; 2]>, n: usize) -> Result<TrajectorySpec> {
    let h = n as f64 / 2.0;
    for (i, pair) in coords.iter().enumerate() {
        for (c, axis) in [(0, "H"), (1, "W")] {
            let v = pair[c];
            if !(v.is_finite() && (-h..h).contains(&(v as f64))) {
                return Err(invalid!(
                    "trajectory sample {i}: k{c} (along {axis}) is {v}, outside the grid; expected a finite coordinate with -{h} <= k{c} < {h} for a {n}x{n} image (grid units, BART's convention)"
                ));
            }
        }
    }
    Ok(TrajectorySpec::Coords(Arc::new(traj::to_nufft_order(
        &coords,
    ))))
}

fn mask(t: &pb::Tensor, what: &str, ny: usize, nx: usize) -> Result<Vec<f32>> {
    let m = tensor::decode_f32(t, what, &[ny, nx], "[ky, kx] of 0/1 values")?;
    check_mask(&m, what)?;
    Ok(m)
}

/// A sampling mask holds only 0 (not sampled) and 1 (sampled), and samples something.
pub fn check_mask(m: &[f32], what: &str) -> Result<()> {
    if let Some(i) = m.iter().position(|&v| v != 0.0 && v != 1.0) {
        return Err(invalid!(
            "{what} has value {} at flat index {i}, expected only 0 (not sampled) or 1 (sampled)",
            m[i]
        ));
    }
    if !m.contains(&1.0) {
        return Err(invalid!(
            "{what} samples no k-space point; expected at least one 1"
        ));
    }
    Ok(())
}

fn generated_mask(spec: &pb::MaskSpec, ny: usize, nx: usize) -> Result<Vec<f32>> {
    let pattern = match mask_spec::Pattern::try_from(spec.pattern) {
        Ok(mask_spec::Pattern::VariableDensity1d) => masks::Pattern::VariableDensity1d,
        Ok(mask_spec::Pattern::Equispaced1d) => masks::Pattern::Equispaced1d,
        Ok(mask_spec::Pattern::VariableDensity2d) => masks::Pattern::VariableDensity2d,
        _ => return Err(invalid!("mask pattern {} is not set or unknown; expected VARIABLE_DENSITY_1D, EQUISPACED_1D or VARIABLE_DENSITY_2D", spec.pattern)),
    };
    let center_fraction = if spec.center_fraction == 0.0 {
        None
    } else {
        Some(spec.center_fraction)
    };
    if let Some(cf) = center_fraction {
        if !(cf.is_finite() && cf > 0.0 && cf <= 1.0) {
            return Err(invalid!("mask center_fraction is {cf}, expected 0 < center_fraction <= 1 (or 0 for the default)"));
        }
    }
    masks::MaskSpec {
        pattern,
        acceleration: spec.acceleration,
        center_fraction,
        seed: spec.seed,
    }
    .generate(ny, nx)
}

/// Validates one slice against its plan. `expected_min_index` is one past the previous slice's index.
pub fn slice(plan: &ReconPlan, s: &pb::KSpaceSlice, expected_min_index: usize) -> Result<Slice> {
    let index = s.index as usize;
    if index < expected_min_index || index >= plan.slices {
        return Err(invalid!(
            "slice index {index} out of order or range; expected {expected_min_index} <= index < {} (header slices)",
            plan.slices
        ));
    }
    if let Some(op) = &plan.radial {
        let shape = [plan.coils, op.samples()];
        if s.mask.is_some() {
            return Err(invalid!(
                "slice {index} has a mask, but the header's sampling is a non-Cartesian trajectory"
            ));
        }
        let kt = s.kspace.as_ref().ok_or_else(|| {
            invalid!(
                "slice {index} has no kspace tensor; expected [coils, samples] COMPLEX64 {shape:?}"
            )
        })?;
        let samples = tensor::decode_c64(
            kt,
            &format!("slice {index} kspace"),
            &shape,
            "[coils, samples] on the header's trajectory",
        )?;
        return Ok(RadialSlice {
            samples,
            coils: plan.coils,
            op: op.clone(),
        }
        .into());
    }
    let shape = [plan.coils, plan.ny, plan.nx];
    let kt = s.kspace.as_ref().ok_or_else(|| {
        invalid!("slice {index} has no kspace tensor; expected [coils, ky, kx] COMPLEX64 {shape:?}")
    })?;
    let kspace = tensor::decode_c64(
        kt,
        &format!("slice {index} kspace"),
        &shape,
        "[coils, ky, kx]",
    )?;
    let mask = match (&s.mask, &plan.mask) {
        (Some(t), _) => mask(t, &format!("slice {index} mask"), plan.ny, plan.nx)?,
        (None, Some(m)) => m.clone(),
        (None, None) => {
            return Err(invalid!("slice {index} has no mask and the header has no sampling; send a [ky, kx] mask in either"))
        }
    };
    Ok(CartesianSlice {
        kspace,
        mask,
        coils: plan.coils,
        ny: plan.ny,
        nx: plan.nx,
    }
    .into())
}
