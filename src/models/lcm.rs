//! Learnable Commutative Monoid aggregation (Ong & Veličković, LoG 2022) and the baselines it is
//! compared with, over neighbourhoods in CSR form.
//!
//! - **Neighbourhoods**: [`Csr`] rows are the receivers (graph nodes, or sets), their entries the
//!   senders (source nodes, or set elements), built from COO `edge_index` `[2, E]` (source, target) or
//!   from a `batch` vector. Messages are gathered in CSR order, so every aggregator sees `[M, F]`.
//! - **Aggregators**: sum and mean (`index_add`), max (the tree reduction with `max` as ⊕), GRU
//!   (recurrent, O(d) steps: rows sorted by degree so that step t updates a prefix) and **LCM**.
//! - **LCM**: a learned ⊕ that is commutative by construction ([`Operator`]): `lcm` sorts each
//!   coordinate pair, ⊕(a, b) = lo + MLP([lo; hi]) with lo/hi = elementwise min/max (starts as the
//!   min monoid; 6F² flops per combination), and `lcm-symgru` is PyTorch Geometric's
//!   ½ [GRU(a; b) + GRU(b; a)] (24F²). A learned identity e is the result of an empty neighbourhood and
//!   is trained to satisfy e ⊕ a ≈ a; an associativity regulariser E‖(a⊕b)⊕c − a⊕(b⊕c)‖² pushes ⊕
//!   towards a monoid. At inference on the CPU each tree level of the sort-MLP ⊕ is one fused kernel.
//! - **Tree reduction** (`tree_reduce`): all rows reduce at once, level by level: entries (0,1), (2,3), …
//!   of every row are combined in one ⊕ call, an odd last entry is carried up unchanged, so a row of
//!   degree d takes ⌈log2 d⌉ levels. Values stay compacted (no padding to the largest degree), so the
//!   memory is O(M) whatever the degree distribution; the first level reads the sender states
//!   through the CSR column indices (messages are never gathered into a copy).
//! - **Models**: [`SetModel`] — encoder → aggregator → decoder for sets (and neighbourhoods), or, with
//!   message-passing layers, a node-level GNN stack for graphs ([`MpLayer`]).

use crate::error::{Error, Result};
use crate::models::cpu_conv::matmul_into;
use candle_core::{DType, Device, Tensor, D};
use candle_nn::rnn::{GRUConfig, GRUState, GRU, RNN};
use candle_nn::{Linear, Module, VarBuilder};

/// Neighbourhoods: row `i` holds entries `col[rowptr[i]..rowptr[i+1]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    pub rowptr: Vec<usize>,
    pub col: Vec<u32>,
}

impl Csr {
    /// Rows = targets, entries = sources, from `edge_index` `[2, E]` (row 0 sources, row 1 targets)
    /// over `n` nodes. Self-loops and duplicate edges are kept (a duplicate edge is a repeated
    /// message); entries keep their input order within a row.
    pub fn from_edge_index(src: &[i64], dst: &[i64], n: usize) -> Result<Csr> {
        if src.len() != dst.len() {
            return Err(Error::InvalidArgument(format!(
                "edge_index rows differ in length ({} sources, {} targets)",
                src.len(),
                dst.len()
            )));
        }
        for (what, v) in [("source", src), ("target", dst)] {
            if let Some((e, &bad)) = v
                .iter()
                .enumerate()
                .find(|(_, &i)| i < 0 || i as usize >= n)
            {
                return Err(Error::InvalidArgument(format!(
                    "edge_index {what} {bad} of edge {e} is out of range; expected 0 <= index < {n} (the number of nodes)"
                )));
            }
        }
        let mut counts = vec![0usize; n + 1];
        for &t in dst {
            counts[t as usize + 1] += 1;
        }
        for i in 0..n {
            counts[i + 1] += counts[i];
        }
        let rowptr = counts.clone();
        let mut fill = counts;
        let mut col = vec![0u32; src.len()];
        for (&s, &t) in src.iter().zip(dst) {
            col[fill[t as usize]] = s as u32;
            fill[t as usize] += 1;
        }
        Ok(Csr { rowptr, col })
    }

    /// Rows = groups `0..G` (G = max + 1), entries = the elements with that group id.
    pub fn from_batch(batch: &[i64]) -> Result<Csr> {
        if let Some((i, &bad)) = batch.iter().enumerate().find(|(_, &b)| b < 0) {
            return Err(Error::InvalidArgument(format!(
                "batch[{i}] is {bad}; set ids must be >= 0"
            )));
        }
        let groups = batch.iter().max().map_or(0, |&m| m as usize + 1);
        if groups > batch.len().max(1) * 16 {
            return Err(Error::InvalidArgument(format!(
                "batch ids go up to {} for {} elements; expected ids 0..G without large gaps",
                groups - 1,
                batch.len()
            )));
        }
        let targets: Vec<i64> = batch.to_vec();
        let sources: Vec<i64> = (0..batch.len() as i64).collect();
        let mut csr = Csr::from_edge_index(&sources, &targets, groups.max(batch.len()))?;
        csr.rowptr.truncate(groups + 1);
        Ok(csr)
    }

    pub fn rows(&self) -> usize {
        self.rowptr.len() - 1
    }

    pub fn entries(&self) -> usize {
        self.col.len()
    }

    pub fn degree(&self, row: usize) -> usize {
        self.rowptr[row + 1] - self.rowptr[row]
    }

    /// The row of every entry, in CSR order.
    fn row_of_entry(&self) -> Vec<u32> {
        let mut r = Vec::with_capacity(self.entries());
        for i in 0..self.rows() {
            r.extend(std::iter::repeat_n(i as u32, self.degree(i)));
        }
        r
    }
}

fn u32_tensor(v: &[u32], device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(v, v.len(), device)?)
}

/// Reduces each row's values with `op` as a balanced binary tree. Row `r`'s values are the rows
/// `index[rowptr[r]..rowptr[r + 1]]` of `h` (`[N, F]`), so messages need not be gathered first;
/// rows with no entries get `empty` (`[F]`). Returns `[R, F]`.
pub fn tree_reduce(
    h: &Tensor,
    rowptr: &[usize],
    index: &[u32],
    op: &dyn Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
    empty: &Tensor,
) -> Result<Tensor> {
    let level = |v: &Tensor, left: &[u32], right: &[u32], carry: &[u32]| -> Result<Tensor> {
        let device = v.device();
        let combined = op(
            &v.index_select(&u32_tensor(left, device)?, 0)?,
            &v.index_select(&u32_tensor(right, device)?, 0)?,
        )?;
        if carry.is_empty() {
            return Ok(combined);
        }
        let carried = v.index_select(&u32_tensor(carry, device)?, 0)?;
        Ok(Tensor::cat(&[&combined, &carried], 0)?)
    };
    tree_reduce_levels(h, rowptr, index, &level, empty)
}

/// One tree level: `[v[left] ⊕ v[right]; v[carry]]`.
type Level<'a> = dyn Fn(&Tensor, &[u32], &[u32], &[u32]) -> Result<Tensor> + 'a;

/// The tree reduction of [`tree_reduce`] with each level computed by `level`.
///
/// Level by level, entries (0,1), (2,3), … of every row are combined in one `level` call and an odd
/// last entry is carried up; a level's results are `[pairs; carried]` and a per-entry position list
/// says where each row's entries now are, so no level reorders its values.
fn tree_reduce_levels(
    h: &Tensor,
    rowptr: &[usize],
    index: &[u32],
    level: &Level,
    empty: &Tensor,
) -> Result<Tensor> {
    let device = h.device();
    let mut counts: Vec<usize> = rowptr.windows(2).map(|w| w[1] - w[0]).collect();
    let mut pos: Vec<u32> = index[..rowptr.last().copied().unwrap_or(0)].to_vec();
    let mut v = h.clone();
    while counts.iter().any(|&c| c > 1) {
        let pairs: usize = counts.iter().map(|c| c / 2).sum();
        let (mut left, mut right, mut carry) = (
            Vec::with_capacity(pairs),
            Vec::with_capacity(pairs),
            Vec::new(),
        );
        let mut next_pos = Vec::with_capacity(pos.len() - pairs);
        let mut start = 0;
        for c in counts.iter_mut() {
            for i in 0..*c / 2 {
                next_pos.push(left.len() as u32);
                left.push(pos[start + 2 * i]);
                right.push(pos[start + 2 * i + 1]);
            }
            if *c % 2 == 1 {
                next_pos.push((pairs + carry.len()) as u32);
                carry.push(pos[start + *c - 1]);
            }
            start += *c;
            *c = c.div_ceil(2);
        }
        v = level(&v, &left, &right, &carry)?;
        pos = next_pos;
    }
    // Every row now holds 0 or 1 value; empty rows take `empty`.
    let (mut pick, mut next, mut any_empty) = (Vec::with_capacity(counts.len()), 0, false);
    for &c in &counts {
        pick.push(if c == 1 { pos[next] } else { 0 });
        next += c;
        any_empty |= c == 0;
    }
    if v.dim(0)? == 0 {
        return Ok(empty.unsqueeze(0)?.repeat((counts.len(), 1))?);
    }
    let out = v.index_select(&u32_tensor(&pick, device)?, 0)?;
    if !any_empty {
        return Ok(out);
    }
    let mask: Vec<u8> = counts.iter().map(|&c| u8::from(c == 0)).collect();
    let mask = Tensor::from_vec(mask, (counts.len(), 1), device)?.broadcast_as(out.shape())?;
    Ok(mask.where_cond(&empty.unsqueeze(0)?.broadcast_as(out.shape())?, &out)?)
}

/// A linear layer initialised like PyTorch's `nn.Linear` (weight and bias uniform in ±1/√in), so
/// that `inferd train graph` starts where `scripts/train_graph_torch.py` does (candle's own
/// `linear` draws weights with a 2.4× larger spread, which trains the set model visibly slower).
/// Stored weights load as they are.
fn torch_linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> candle_core::Result<Linear> {
    let bound = 1.0 / (in_dim as f64).sqrt();
    let init = candle_nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    Ok(Linear::new(
        vb.get_with_hints((out_dim, in_dim), "weight", init)?,
        Some(vb.get_with_hints(out_dim, "bias", init)?),
    ))
}

/// How ⊕ combines two latent vectors; both are exactly commutative by construction.
pub enum Operator {
    /// a ⊕ b = lo + W₂ relu(W₁ [lo; hi] + b₁) + b₂ with lo = min(a, b), hi = max(a, b) elementwise
    /// (inferd's `lcm`). Sorting each coordinate pair makes it commutative; the residual `lo` makes
    /// the elementwise min (an exact monoid) the starting point that training corrects, and one
    /// hidden layer of width F costs 6F² flops per combination.
    SortMlp { inner: Linear, outer: Linear },
    /// a ⊕ b = ½ [GRU(input a, state b) + GRU(input b, state a)] (inferd's `lcm-symgru`, PyTorch
    /// Geometric's LCMAggregation operator): two GRU cells, 24F² flops per combination.
    SymGru(GRU),
}

/// The learned commutative operator and its identity element.
pub struct Monoid {
    op: Operator,
    identity: Tensor,
    dim: usize,
    /// The sort-MLP weights laid out for the CPU kernel, made at the first fused reduction (only
    /// fixed weights reach it: autograd variables take candle's ops).
    cpu_kernel: std::sync::OnceLock<SortMlpKernel>,
}

impl Monoid {
    /// A fresh or stored ⊕ of `kind` ([`AggKind::Lcm`] or [`AggKind::LcmSymGru`]) over `dim` features.
    /// Fresh sort-MLP operators start with W₂ = 0, b₂ = 0 (⊕ = min).
    pub fn new(kind: AggKind, dim: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let op = if kind == AggKind::LcmSymGru {
            Operator::SymGru(candle_nn::rnn::gru(
                dim,
                dim,
                GRUConfig::default(),
                vb.pp("gru"),
            )?)
        } else {
            let zero = candle_nn::Init::Const(0.0);
            let outer = vb.pp("mlp.1");
            Operator::SortMlp {
                inner: torch_linear(2 * dim, dim, vb.pp("mlp.0"))?,
                outer: Linear::new(
                    outer.get_with_hints((dim, dim), "weight", zero)?,
                    Some(outer.get_with_hints(dim, "bias", zero)?),
                ),
            }
        };
        let identity = vb.get_with_hints(dim, "identity", candle_nn::Init::Const(0.0))?;
        Ok(Monoid {
            op,
            identity,
            dim,
            cpu_kernel: std::sync::OnceLock::new(),
        })
    }

    pub fn kind(&self) -> AggKind {
        match self.op {
            Operator::SortMlp { .. } => AggKind::Lcm,
            Operator::SymGru(_) => AggKind::LcmSymGru,
        }
    }

    /// a ⊕ b for `[P, F]` pairs. Exactly commutative.
    pub fn combine(&self, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        let p = a.dim(0)?;
        if p == 0 {
            return Ok(a.clone());
        }
        match &self.op {
            Operator::SortMlp { inner, outer } => {
                let lo = a.minimum(b)?;
                let sorted = Tensor::cat(&[&lo, &a.maximum(b)?], 1)?;
                lo + outer.forward(&inner.forward(&sorted)?.relu()?)?
            }
            Operator::SymGru(gru) => {
                // one GRU step over both orders
                let input = Tensor::cat(&[a, b], 0)?;
                let state = Tensor::cat(&[b, a], 0)?;
                let h = gru.step(&input, &GRUState { h: state })?.h;
                (h.narrow(0, 0, p)? + h.narrow(0, p, p)?)? * 0.5
            }
        }
    }

    /// Reduces rows like [`tree_reduce`] with this ⊕. On the CPU at inference (no autograd
    /// tracking) the sort-MLP operator runs each tree level as one fused kernel
    /// ([`sort_mlp_level`]); otherwise, and for the GRU operator, as candle ops.
    pub fn reduce(&self, x: &Tensor, rowptr: &[usize], index: &[u32]) -> Result<Tensor> {
        if let Operator::SortMlp { inner, outer } = &self.op {
            if cpu_inference(&[x, inner.weight(), outer.weight(), &self.identity]) {
                let kernel = match self.cpu_kernel.get() {
                    Some(k) => k,
                    None => {
                        let k = SortMlpKernel::new(inner, outer)?;
                        self.cpu_kernel.get_or_init(|| k)
                    }
                };
                let level = |v: &Tensor, l: &[u32], r: &[u32], c: &[u32]| kernel.level(v, l, r, c);
                return tree_reduce_levels(x, rowptr, index, &level, &self.identity);
            }
        }
        tree_reduce(x, rowptr, index, &|a, b| self.combine(a, b), &self.identity)
    }

    pub fn identity(&self) -> &Tensor {
        &self.identity
    }

    /// E‖(a⊕b)⊕c − a⊕(b⊕c)‖² + E‖e⊕a − a‖² over triples drawn from `h` (`[M, F]`), `samples` each.
    pub fn regularisers(
        &self,
        h: &Tensor,
        samples: usize,
        rng: &mut impl rand::Rng,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let m = h.dim(0)?;
        let pick = |rng: &mut dyn rand::RngCore| -> candle_core::Result<Tensor> {
            let idx: Vec<u32> = (0..samples)
                .map(|_| rand::Rng::random_range(rng, 0..m as u32))
                .collect();
            h.index_select(&Tensor::from_vec(idx, samples, h.device())?, 0)
        };
        let (a, b, c) = (pick(rng)?, pick(rng)?, pick(rng)?);
        let left = self.combine(&self.combine(&a, &b)?, &c)?;
        let right = self.combine(&a, &self.combine(&b, &c)?)?;
        let assoc = (left - right)?.sqr()?.sum(1)?.mean_all()?;
        let e = self
            .identity
            .unsqueeze(0)?
            .broadcast_as((samples, self.dim))?;
        let ident = (self.combine(&e, &a)? - &a)?.sqr()?.sum(1)?.mean_all()?;
        Ok((assoc, ident))
    }
}

/// The sort-MLP ⊕ with its weights laid out for [`sort_mlp_level`]: W₁ᵀ `[2F, H]`, W₂ᵀ `[H, F]`.
struct SortMlpKernel {
    f: usize,
    hidden: usize,
    w1t: Vec<f32>,
    b1: Vec<f32>,
    w2t: Vec<f32>,
    b2: Vec<f32>,
}

impl SortMlpKernel {
    fn new(inner: &Linear, outer: &Linear) -> Result<Self> {
        let rows = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?)
        };
        let bias = |l: &Linear, n: usize| -> Result<Vec<f32>> {
            Ok(match l.bias() {
                Some(b) => b.to_vec1::<f32>()?,
                None => vec![0.0; n],
            })
        };
        let (hidden, f) = (inner.weight().dim(0)?, outer.weight().dim(0)?);
        Ok(SortMlpKernel {
            f,
            hidden,
            w1t: rows(inner.weight())?,
            b1: bias(inner, hidden)?,
            w2t: rows(outer.weight())?,
            b2: bias(outer, f)?,
        })
    }

    /// One tree level `[v[left] ⊕ v[right]; v[carry]]` on the CPU.
    fn level(&self, v: &Tensor, left: &[u32], right: &[u32], carry: &[u32]) -> Result<Tensor> {
        let f = self.f;
        let rows = left.len() + carry.len();
        let out = with_cpu_f32(v, |data| {
            let mut out = vec![0f32; rows * f];
            let (pairs, carried) = out.split_at_mut(left.len() * f);
            sort_mlp_level(self, data, left, right, pairs);
            for (dst, &c) in carried.chunks_exact_mut(f).zip(carry) {
                dst.copy_from_slice(&data[c as usize * f..][..f]);
            }
            out
        })?;
        Ok(Tensor::from_vec(out, (rows, f), &Device::Cpu)?)
    }
}

/// Calls `f` with the values of a CPU f32 tensor in row-major order (copied only if strided).
fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return Err(Error::Internal(
            "a CPU aggregation kernel got a device tensor".into(),
        ));
    };
    Ok(f(
        &cpu.as_slice::<f32>()?[layout.start_offset()..][..t.elem_count()]
    ))
}

/// Inference on the CPU: no autograd graph to record, so the hand-written kernels may run.
fn cpu_inference(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op())
}

/// Sum (or mean) of each row's entries `x[col]` straight from CSR on the CPU: rows in parallel, no
/// gathered copy of the messages. Empty rows are zero.
fn csr_sum_cpu(x: &Tensor, csr: &Csr, mean: bool) -> Result<Tensor> {
    use rayon::prelude::*;
    const ROWS: usize = 64;
    let (rows, f) = (csr.rows(), x.dim(1)?);
    let out = with_cpu_f32(x, |data| {
        let mut out = vec![0f32; rows * f];
        out.par_chunks_mut(ROWS * f)
            .enumerate()
            .for_each(|(c, block)| {
                for (i, o) in block.chunks_exact_mut(f).enumerate() {
                    let r = c * ROWS + i;
                    let entries = &csr.col[csr.rowptr[r]..csr.rowptr[r + 1]];
                    for &s in entries {
                        for (o, v) in o.iter_mut().zip(&data[s as usize * f..][..f]) {
                            *o += v;
                        }
                    }
                    if mean && !entries.is_empty() {
                        let inv = 1.0 / entries.len() as f32;
                        o.iter_mut().for_each(|o| *o *= inv);
                    }
                }
            });
        out
    })?;
    Ok(Tensor::from_vec(out, (rows, f), &Device::Cpu)?)
}

/// `out[p] = lo + W₂ relu(W₁ [lo; hi] + b₁) + b₂` with lo/hi the elementwise min/max of rows
/// `left[p]` and `right[p]` of `v` (`[·, F]` row-major). Pairs are processed in chunks on rayon's
/// pool; a chunk's sorted inputs and hidden activations stay in cache between the two GEMMs.
fn sort_mlp_level(k: &SortMlpKernel, v: &[f32], left: &[u32], right: &[u32], out: &mut [f32]) {
    use rayon::prelude::*;
    const CHUNK: usize = 128;
    let (f, h) = (k.f, k.hidden);
    out.par_chunks_mut(CHUNK * f).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(sorted, z), (c, out)| {
            let n = out.len() / f;
            let (l, r) = (&left[c * CHUNK..][..n], &right[c * CHUNK..][..n]);
            // every value of both buffers is written before it is read
            sorted.resize(n * 2 * f, 0f32);
            z.resize(n * h, 0f32);
            for ((row, &a), &b) in sorted.chunks_exact_mut(2 * f).zip(l).zip(r) {
                let (a, b) = (&v[a as usize * f..][..f], &v[b as usize * f..][..f]);
                let (lo, hi) = row.split_at_mut(f);
                for j in 0..f {
                    lo[j] = a[j].min(b[j]);
                    hi[j] = a[j].max(b[j]);
                }
            }
            matmul_into(n, h, 2 * f, z, h, sorted, 2 * f, &k.w1t, h);
            for row in z.chunks_exact_mut(h) {
                for (z, b) in row.iter_mut().zip(&k.b1) {
                    *z = (*z + b).max(0.0);
                }
            }
            matmul_into(n, f, h, out, f, &z, h, &k.w2t, f);
            for (o, s) in out.chunks_exact_mut(f).zip(sorted.chunks_exact(2 * f)) {
                for ((o, lo), b) in o.iter_mut().zip(&s[..f]).zip(&k.b2) {
                    *o += lo + b;
                }
            }
        },
    );
}

/// Which aggregator a model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Sum,
    Mean,
    Max,
    Gru,
    /// LCM with the sort-MLP operator.
    Lcm,
    /// LCM with the symmetrised GRU operator.
    LcmSymGru,
}

impl AggKind {
    pub const ALL: [AggKind; 6] = [
        AggKind::Sum,
        AggKind::Mean,
        AggKind::Max,
        AggKind::Gru,
        AggKind::Lcm,
        AggKind::LcmSymGru,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AggKind::Sum => "sum",
            AggKind::Mean => "mean",
            AggKind::Max => "max",
            AggKind::Gru => "gru",
            AggKind::Lcm => "lcm",
            AggKind::LcmSymGru => "lcm-symgru",
        }
    }

    pub fn code(self) -> f32 {
        Self::ALL.iter().position(|&k| k == self).unwrap() as f32
    }

    pub fn from_code(c: f32) -> Option<AggKind> {
        Self::ALL.get(c as usize).copied().filter(|k| k.code() == c)
    }

    /// The aggregator of a model file from its `aggregator_kind` code and tensor names. Files
    /// written before `lcm-symgru` had a code of its own mark the GRU operator as `lcm`.
    pub fn of_file<'a>(code: f32, mut names: impl Iterator<Item = &'a String>) -> Option<AggKind> {
        match Self::from_code(code)? {
            AggKind::Lcm if names.any(|k| k.ends_with("lcm.gru.weight_ih_l0")) => {
                Some(AggKind::LcmSymGru)
            }
            kind => Some(kind),
        }
    }
}

impl std::str::FromStr for AggKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!("unknown aggregator {s:?}; expected sum, mean, max, gru, lcm or lcm-symgru")
            })
    }
}

/// An aggregator with its learned parts.
pub enum Aggregator {
    Sum,
    Mean,
    Max,
    /// Recurrent over the row's entries in order, from a zero state.
    Gru(GRU),
    Lcm(Monoid),
}

impl Aggregator {
    pub fn new(kind: AggKind, dim: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(match kind {
            AggKind::Sum => Aggregator::Sum,
            AggKind::Mean => Aggregator::Mean,
            AggKind::Max => Aggregator::Max,
            AggKind::Gru => Aggregator::Gru(candle_nn::rnn::gru(
                dim,
                dim,
                GRUConfig::default(),
                vb.pp("gru"),
            )?),
            AggKind::Lcm | AggKind::LcmSymGru => {
                Aggregator::Lcm(Monoid::new(kind, dim, vb.pp("lcm"))?)
            }
        })
    }

    pub fn kind(&self) -> AggKind {
        match self {
            Aggregator::Sum => AggKind::Sum,
            Aggregator::Mean => AggKind::Mean,
            Aggregator::Max => AggKind::Max,
            Aggregator::Gru(_) => AggKind::Gru,
            Aggregator::Lcm(m) => m.kind(),
        }
    }

    /// Aggregates, for every row of `csr`, the sender states `x[col]` (`x` `[N, F]`, `col` indexing
    /// its rows) into `[R, F]`. The tree and recurrent aggregators read `x` through `col` directly;
    /// sum and mean do too at inference on the CPU ([`csr_sum_cpu`]) and otherwise gather the
    /// messages once for candle's `index_add`.
    pub fn aggregate(&self, x: &Tensor, csr: &Csr) -> Result<Tensor> {
        let (device, f) = (x.device(), x.dim(1)?);
        let rows = csr.rows();
        match self {
            Aggregator::Sum | Aggregator::Mean if cpu_inference(&[x]) => {
                csr_sum_cpu(x, csr, matches!(self, Aggregator::Mean))
            }
            Aggregator::Sum | Aggregator::Mean => {
                let h = x.index_select(&u32_tensor(&csr.col, device)?, 0)?;
                let idx = u32_tensor(&csr.row_of_entry(), device)?;
                let sum = Tensor::zeros((rows, f), h.dtype(), device)?.index_add(&idx, &h, 0)?;
                if matches!(self, Aggregator::Sum) {
                    return Ok(sum);
                }
                let inv: Vec<f32> = (0..rows)
                    .map(|r| 1.0 / csr.degree(r).max(1) as f32)
                    .collect();
                Ok(sum.broadcast_mul(&Tensor::from_vec(inv, (rows, 1), device)?)?)
            }
            Aggregator::Max => {
                let zero = Tensor::zeros(f, x.dtype(), device)?;
                tree_reduce(x, &csr.rowptr, &csr.col, &|a, b| a.maximum(b), &zero)
            }
            Aggregator::Lcm(m) => m.reduce(x, &csr.rowptr, &csr.col),
            Aggregator::Gru(gru) => gru_reduce(gru, x, csr),
        }
    }
}

/// The recurrent baseline: the state runs over each row's entries (rows of `x` named by `col`) in
/// order. Rows are sorted by degree (descending) so that step t updates a prefix of the state;
/// O(d_max) sequential steps.
fn gru_reduce(gru: &GRU, x: &Tensor, csr: &Csr) -> Result<Tensor> {
    let (device, f) = (x.device(), x.dim(1)?);
    let rows = csr.rows();
    let mut order: Vec<usize> = (0..rows).collect();
    order.sort_by_key(|&r| std::cmp::Reverse(csr.degree(r)));
    let d_max = order.first().map_or(0, |&r| csr.degree(r));
    let mut state = Tensor::zeros((rows, f), x.dtype(), device)?;
    for t in 0..d_max {
        let active = order.iter().take_while(|&&r| csr.degree(r) > t).count();
        let idx: Vec<u32> = order[..active]
            .iter()
            .map(|&r| csr.col[csr.rowptr[r] + t])
            .collect();
        let input = x.index_select(&u32_tensor(&idx, device)?, 0)?;
        let s = state.narrow(0, 0, active)?;
        let next = gru.step(&input, &GRUState { h: s })?.h;
        state = if active == rows {
            next
        } else {
            Tensor::cat(&[&next, &state.narrow(0, active, rows - active)?], 0)?
        };
    }
    // un-sort
    let mut inverse = vec![0u32; rows];
    for (pos, &r) in order.iter().enumerate() {
        inverse[r] = pos as u32;
    }
    Ok(state.index_select(&u32_tensor(&inverse, device)?, 0)?)
}

/// One message-passing layer: every node aggregates its in-neighbours' states with the layer's own
/// aggregator, then `h' = relu(W_self h + W_nbr agg(h))` (GraphSAGE's update with any aggregator).
pub struct MpLayer {
    self_lin: Linear,
    nbr_lin: Linear,
    pub agg: Aggregator,
}

impl MpLayer {
    fn new(kind: AggKind, hidden: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(MpLayer {
            self_lin: torch_linear(hidden, hidden, vb.pp("self"))?,
            nbr_lin: torch_linear(hidden, hidden, vb.pp("nbr"))?,
            agg: Aggregator::new(kind, hidden, vb.pp("agg"))?,
        })
    }

    fn forward(&self, h: &Tensor, csr: &Csr) -> Result<Tensor> {
        let m = self.agg.aggregate(h, csr)?;
        Ok((self.self_lin.forward(h)? + self.nbr_lin.forward(&m)?)?.relu()?)
    }
}

/// How the decoder's outputs are served: probabilities (sigmoid, per output), raw values, or a
/// distribution over the outputs (softmax). Stored in a model file as `output_kind` (0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Sigmoid,
    Identity,
    Softmax,
}

impl OutputKind {
    pub fn code(self) -> f32 {
        match self {
            OutputKind::Sigmoid => 0.0,
            OutputKind::Identity => 1.0,
            OutputKind::Softmax => 2.0,
        }
    }

    pub fn from_code(c: f32) -> Option<OutputKind> {
        [
            OutputKind::Sigmoid,
            OutputKind::Identity,
            OutputKind::Softmax,
        ]
        .into_iter()
        .find(|k| k.code() == c)
    }

    pub fn name(self) -> &'static str {
        match self {
            OutputKind::Sigmoid => "sigmoid",
            OutputKind::Identity => "identity",
            OutputKind::Softmax => "softmax",
        }
    }

    /// The served values for decoder outputs `logits` (`[R, out]`).
    pub fn apply(self, logits: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            OutputKind::Sigmoid => candle_nn::ops::sigmoid(logits),
            OutputKind::Identity => Ok(logits.clone()),
            OutputKind::Softmax => candle_nn::ops::softmax_last_dim(logits),
        }
    }
}

/// Element encoder → aggregator → decoder: the set model of the 2nd-minimum task, also applied to
/// graph neighbourhoods (each node aggregates its in-neighbours). With message-passing layers
/// (`layers > 0`) it is a node-level GNN for graphs `x` `[N, F]` + `edge_index`: encoder → `layers` ×
/// [`MpLayer`] (each with its own aggregator of the same kind) → decoder on every node.
pub struct SetModel {
    enc: (Linear, Linear),
    /// The readout aggregator of the set model (`None` for a message-passing stack).
    pub agg: Option<Aggregator>,
    pub layers: Vec<MpLayer>,
    dec: (Linear, Linear),
    pub in_dim: usize,
    pub hidden: usize,
    pub out_dim: usize,
}

impl SetModel {
    pub fn new(
        kind: AggKind,
        in_dim: usize,
        hidden: usize,
        out_dim: usize,
        layers: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        Ok(SetModel {
            enc: (
                torch_linear(in_dim, hidden, vb.pp("enc.0"))?,
                torch_linear(hidden, hidden, vb.pp("enc.1"))?,
            ),
            agg: if layers == 0 {
                Some(Aggregator::new(kind, hidden, vb.pp("agg"))?)
            } else {
                None
            },
            layers: (0..layers)
                .map(|i| MpLayer::new(kind, hidden, vb.pp(format!("gnn.{i}"))))
                .collect::<candle_core::Result<_>>()?,
            dec: (
                torch_linear(hidden, hidden, vb.pp("dec.0"))?,
                torch_linear(hidden, out_dim, vb.pp("dec.1"))?,
            ),
            in_dim,
            hidden,
            out_dim,
        })
    }

    /// A model from a model file's tensors: the aggregator from `aggregator_kind` (or `kind`, for
    /// checkpoints without the marker), the sizes from the encoder and decoder, the message-passing
    /// layers from the `gnn.{i}` tensors, and how outputs are served from `output_kind` (sigmoid
    /// when absent). Errors name what is missing or does not fit.
    pub fn from_tensors(
        mut tensors: std::collections::HashMap<String, Tensor>,
        kind: Option<AggKind>,
        device: &Device,
    ) -> Result<(SetModel, OutputKind)> {
        let bad = |m: String| Error::InvalidArgument(m);
        let code = |t: Option<Tensor>| -> Result<Option<f32>> {
            Ok(match t {
                Some(t) => t.flatten_all()?.to_vec1::<f32>()?.first().copied(),
                None => None,
            })
        };
        let stored = code(tensors.remove("aggregator_kind"))?;
        let kind = match (kind, stored) {
            (Some(k), _) => k,
            (None, Some(c)) => AggKind::of_file(c, tensors.keys())
                .ok_or_else(|| bad(format!("unknown aggregator_kind {c}")))?,
            (None, None) => return Err(bad("no aggregator_kind".into())),
        };
        let output = match code(tensors.remove("output_kind"))? {
            None => OutputKind::Sigmoid,
            Some(c) => {
                OutputKind::from_code(c).ok_or_else(|| bad(format!("unknown output_kind {c}")))?
            }
        };
        let dims = |t: &str| -> Result<Vec<usize>> {
            Ok(tensors
                .get(t)
                .ok_or_else(|| bad(format!("no tensor {t}")))?
                .dims()
                .to_vec())
        };
        let (enc, dec) = (dims("enc.0.weight")?, dims("dec.1.weight")?);
        let layers = (0..)
            .take_while(|i| tensors.contains_key(&format!("gnn.{i}.self.weight")))
            .count();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let model = SetModel::new(kind, enc[1], enc[0], dec[0], layers, vb)
            .map_err(|e| bad(format!("weights do not fit a {} model: {e}", kind.name())))?;
        Ok((model, output))
    }

    /// The aggregator kind (of the readout, or of the message-passing layers).
    pub fn kind(&self) -> AggKind {
        self.agg
            .as_ref()
            .or(self.layers.first().map(|l| &l.agg))
            .map_or(AggKind::Sum, Aggregator::kind)
    }

    /// Encodes the elements, `[N, in] → [N, hidden]`.
    pub fn encode(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.enc.1.forward(&self.enc.0.forward(x)?.relu()?)
    }

    /// The LCM operators the model learns (the readout's, or each layer's), for the regularisers.
    pub fn monoids(&self) -> Vec<&Monoid> {
        self.agg
            .iter()
            .chain(self.layers.iter().map(|l| &l.agg))
            .filter_map(|a| match a {
                Aggregator::Lcm(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// Logits `[R, out]` for the rows of `csr` over elements `x` (`[N, in]`). A message-passing
    /// stack needs one row per node (`csr` from `edge_index`) and answers `[N, out]`.
    pub fn forward(&self, x: &Tensor, csr: &Csr) -> Result<Tensor> {
        let mut h = self.encode(x)?;
        let pooled = if let Some(agg) = &self.agg {
            agg.aggregate(&h, csr)?
        } else {
            if csr.rows() != h.dim(0)? {
                return Err(Error::InvalidArgument(format!(
                    "this message-passing model needs a graph (edge_index over {} nodes), got {} groups",
                    h.dim(0)?,
                    csr.rows()
                )));
            }
            for layer in &self.layers {
                h = layer.forward(&h, csr)?;
            }
            h
        };
        self.decode(&pooled)
    }

    /// Decoder logits `[R, out]` for pooled values `[R, hidden]`.
    pub fn decode(&self, pooled: &Tensor) -> Result<Tensor> {
        Ok(self.dec.1.forward(&self.dec.0.forward(pooled)?.relu()?)?)
    }
}

/// Exact-set accuracy: the share of rows whose every predicted bit (logit > 0) matches `targets`.
pub fn exact_accuracy(logits: &Tensor, targets: &Tensor) -> Result<f64> {
    let pred = logits.gt(0.0)?.to_dtype(DType::F32)?;
    let wrong = (pred - targets)?.abs()?.sum(D::Minus1)?.to_vec1::<f32>()?;
    Ok(wrong.iter().filter(|&&w| w == 0.0).count() as f64 / wrong.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(rows: usize, f: usize, seed: u64) -> (Vec<f32>, Tensor) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..rows * f).map(|_| rng.random_range(-1.0..1.0)).collect();
        let t = Tensor::from_vec(v.clone(), (rows, f), &Device::Cpu).unwrap();
        (v, t)
    }

    fn max_abs(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn csr_from_degrees(degrees: &[usize]) -> Csr {
        let mut rowptr = vec![0];
        for d in degrees {
            rowptr.push(rowptr.last().unwrap() + d);
        }
        let m = *rowptr.last().unwrap();
        Csr {
            rowptr,
            col: (0..m as u32).collect(),
        }
    }

    #[test]
    fn csr_from_coo_and_batch_and_bad_indices() {
        let csr = Csr::from_edge_index(&[0, 2, 1, 2, 2], &[1, 1, 0, 2, 1], 4).unwrap();
        assert_eq!(csr.rowptr, vec![0, 1, 4, 5, 5]);
        assert_eq!(csr.col, vec![1, 0, 2, 2, 2]); // duplicates and self-loops kept, input order
        let b = Csr::from_batch(&[0, 0, 1, 0, 2]).unwrap();
        assert_eq!(b.rowptr, vec![0, 3, 4, 5]);
        assert_eq!(b.col, vec![0, 1, 3, 2, 4]);
        assert!(Csr::from_edge_index(&[0, 5], &[1, 1], 4)
            .unwrap_err()
            .to_string()
            .contains("source 5"));
        assert!(Csr::from_edge_index(&[0, -1], &[1, 1], 4).is_err());
        assert!(Csr::from_edge_index(&[0], &[1, 1], 4).is_err());
        assert!(Csr::from_batch(&[0, -2]).is_err());
    }

    #[test]
    fn tree_reduction_equals_a_fold_for_associative_operations() {
        let degrees = [0usize, 1, 2, 3, 5, 8, 13, 1000];
        let csr = csr_from_degrees(&degrees);
        let f = 3;
        let (v, h) = random(csr.entries(), f, 1);
        let zero = Tensor::zeros(f, DType::F32, &Device::Cpu).unwrap();
        // with f64 inputs the sums are exact enough to compare tightly
        let sum = tree_reduce(&h, &csr.rowptr, &csr.col, &|a, b| a + b, &zero)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let max = tree_reduce(&h, &csr.rowptr, &csr.col, &|a, b| a.maximum(b), &zero)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (r, _) in degrees.iter().enumerate() {
            for j in 0..f {
                let vals = (csr.rowptr[r]..csr.rowptr[r + 1]).map(|i| v[i * f + j]);
                let s: f32 = vals.clone().sum();
                let m = vals.fold(f32::NEG_INFINITY, f32::max);
                assert!(
                    (sum[r][j] - s).abs() < 1e-3,
                    "row {r}: {} vs {s}",
                    sum[r][j]
                );
                if degrees[r] == 0 {
                    assert_eq!(max[r][j], 0.0);
                } else {
                    assert_eq!(max[r][j], m);
                }
            }
        }
    }

    #[test]
    fn a_node_of_degree_100000_reduces_in_17_levels_without_padding() {
        let csr = csr_from_degrees(&[100_000, 1, 0, 2]);
        let (v, h) = random(csr.entries(), 2, 2);
        let zero = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
        let levels = std::cell::Cell::new(0);
        let max = tree_reduce(
            &h,
            &csr.rowptr,
            &csr.col,
            &|a, b| {
                levels.set(levels.get() + 1);
                a.maximum(b)
            },
            &zero,
        )
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
        assert_eq!(levels.get(), 17); // ⌈log2 100 000⌉
        let want = v[..200_000]
            .iter()
            .step_by(2)
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(max[0][0], want);
    }

    /// A ⊕ of `kind` with random weights everywhere (a fresh sort-MLP would start as exact min).
    fn random_monoid(kind: AggKind, dim: usize, seed: u64) -> Monoid {
        let vm = VarMap::new();
        Monoid::new(
            kind,
            dim,
            VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let mut k = seed;
        let tensors = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(name, v)| {
                k += 1;
                let (_, t) = random(v.elem_count(), 1, k);
                (name.clone(), t.reshape(v.shape()).unwrap())
            })
            .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        Monoid::new(kind, dim, vb).unwrap()
    }

    #[test]
    fn lcm_operators_are_exactly_commutative() {
        for kind in [AggKind::Lcm, AggKind::LcmSymGru] {
            let m = random_monoid(kind, 8, 10);
            assert_eq!(m.kind(), kind);
            let (_, a) = random(16, 8, 3);
            let (_, b) = random(16, 8, 4);
            let ab = m.combine(&a, &b).unwrap().to_vec2::<f32>().unwrap();
            let ba = m.combine(&b, &a).unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(ab, ba, "{kind:?}");
        }
    }

    #[test]
    fn the_fused_cpu_level_kernel_equals_candle_ops() {
        let m = random_monoid(AggKind::Lcm, 16, 20);
        // rows of degree 0..=300 over a shuffled index into 500 node states
        let degrees: Vec<usize> = (0..40).map(|i| (i * i * 7) % 301).collect();
        let mut csr = csr_from_degrees(&degrees);
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        for c in csr.col.iter_mut() {
            *c = rng.random_range(0..500);
        }
        let (_, x) = random(500, 16, 22);
        let fused = m.reduce(&x, &csr.rowptr, &csr.col).unwrap();
        let ops = tree_reduce(
            &x,
            &csr.rowptr,
            &csr.col,
            &|a, b| m.combine(a, b),
            m.identity(),
        )
        .unwrap();
        let scale = max_abs(&ops);
        let diff = max_abs(&(fused - &ops).unwrap());
        assert!(diff <= 1e-5 * scale.max(1.0), "{diff} (scale {scale})");
        let empty = ops.get(0).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(empty, m.identity().to_vec1::<f32>().unwrap());
    }

    #[test]
    fn a_fresh_sort_mlp_operator_is_the_elementwise_min() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let m = Monoid::new(AggKind::Lcm, 8, vb).unwrap();
        let (a, at) = random(4, 8, 11);
        let (b, bt) = random(4, 8, 12);
        let got = m.combine(&at, &bt).unwrap().flatten_all().unwrap();
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x.min(*y)).collect();
        assert_eq!(got.to_vec1::<f32>().unwrap(), want);
    }

    #[test]
    fn csr_sum_and_mean_equal_candles_index_add() {
        let mut rng = ChaCha8Rng::seed_from_u64(30);
        let (src, dst): (Vec<i64>, Vec<i64>) = (0..3000)
            .map(|_| (rng.random_range(0..300), rng.random_range(0..290)))
            .unzip();
        let csr = Csr::from_edge_index(&src, &dst, 300).unwrap(); // rows 290..300 are empty
        let (_, x) = random(300, 24, 31);
        // a variable records an autograd graph, which routes through candle's ops
        let tracked = candle_core::Var::from_tensor(&x).unwrap();
        for agg in [Aggregator::Sum, Aggregator::Mean] {
            let fast = agg.aggregate(&x, &csr).unwrap();
            let ops = agg.aggregate(tracked.as_tensor(), &csr).unwrap();
            let diff = max_abs(&(fast - ops.detach()).unwrap());
            assert!(diff < 1e-5, "{:?}: {diff}", agg.kind());
        }
    }

    #[test]
    fn sum_mean_max_do_not_depend_on_neighbour_order() {
        let src = [0i64, 1, 2, 3, 4, 5, 6, 7];
        let dst = [0i64, 0, 0, 1, 1, 2, 0, 1];
        let (_, x) = random(8, 4, 5);
        let perm = [6usize, 2, 0, 7, 1, 5, 3, 4];
        let (ps, pd): (Vec<i64>, Vec<i64>) = perm.iter().map(|&i| (src[i], dst[i])).unzip();
        for kind in [AggKind::Sum, AggKind::Mean, AggKind::Max] {
            let vm = VarMap::new();
            let agg = Aggregator::new(
                kind,
                4,
                VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
            )
            .unwrap();
            let run = |s: &[i64], d: &[i64]| {
                let csr = Csr::from_edge_index(s, d, 8).unwrap();
                agg.aggregate(&x, &csr).unwrap().to_vec2::<f32>().unwrap()
            };
            let (a, b) = (run(&src, &dst), run(&ps, &pd));
            for (ra, rb) in a.iter().zip(&b) {
                for (va, vb) in ra.iter().zip(rb) {
                    assert!((va - vb).abs() < 1e-5, "{kind:?}");
                }
            }
        }
    }

    #[test]
    fn gru_baseline_matches_a_sequential_loop() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let gru = candle_nn::rnn::gru(4, 4, GRUConfig::default(), vb).unwrap();
        let csr = csr_from_degrees(&[3, 0, 5, 1]);
        let (_, h) = random(csr.entries(), 4, 6);
        let out = gru_reduce(&gru, &h, &csr)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for r in 0..4 {
            let mut s = Tensor::zeros((1, 4), DType::F32, &Device::Cpu).unwrap();
            for i in csr.rowptr[r]..csr.rowptr[r + 1] {
                s = gru
                    .step(&h.narrow(0, i, 1).unwrap(), &GRUState { h: s })
                    .unwrap()
                    .h;
            }
            let want = s.to_vec2::<f32>().unwrap();
            for j in 0..4 {
                assert!((out[r][j] - want[0][j]).abs() < 1e-5);
            }
        }
    }
}
