//! Learnable Commutative Monoid aggregation (Ong & Veličković, LoG 2022) and the baselines it is
//! compared with, over neighbourhoods in CSR form.
//!
//! - **Neighbourhoods**: [`Csr`] rows are the receivers (graph nodes, or sets), their entries the
//!   senders (source nodes, or set elements), built from COO `edge_index` `[2, E]` (source, target) or
//!   from a `batch` vector. Messages are gathered in CSR order, so every aggregator sees `[M, F]`.
//! - **Aggregators**: sum and mean (`index_add`), max (the tree reduction with `max` as ⊕), GRU
//!   (recurrent, O(d) steps: rows sorted by degree so that step t updates a prefix) and **LCM**.
//! - **LCM**: ⊕(a, b) = ½ [GRU(a; b) + GRU(b; a)] is commutative by construction (both orders are one
//!   batched GRU step); a learned identity e is the result of an empty neighbourhood and is trained to
//!   satisfy e ⊕ a ≈ a; an associativity regulariser E‖(a⊕b)⊕c − a⊕(b⊕c)‖² pushes ⊕ towards a monoid.
//! - **Tree reduction** (`tree_reduce`): all rows reduce at once, level by level: entries (0,1), (2,3), …
//!   of every row are combined in one ⊕ call, an odd last entry is carried up unchanged, so a row of
//!   degree d takes ⌈log2 d⌉ levels. Values stay compacted (no padding to the largest degree), so the
//!   memory is O(M) whatever the degree distribution.
//! - **Models**: [`SetModel`] — encoder → aggregator → decoder for sets (and neighbourhoods), or, with
//!   message-passing layers, a node-level GNN stack for graphs ([`MpLayer`]).

use crate::error::{Error, Result};
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

/// Reduces each row's values with `op` as a balanced binary tree. `h` is `[M, F]` in CSR order;
/// rows with no entries get `empty` (`[F]`). Returns `[R, F]`.
pub fn tree_reduce(
    h: &Tensor,
    rowptr: &[usize],
    op: &dyn Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
    empty: &Tensor,
) -> Result<Tensor> {
    let device = h.device();
    let rows = rowptr.len() - 1;
    let mut counts: Vec<usize> = rowptr.windows(2).map(|w| w[1] - w[0]).collect();
    let mut v = h.clone();
    while counts.iter().any(|&c| c > 1) {
        // This level: pair (0,1), (2,3), … within every row; carry an odd last value.
        let (mut left, mut right, mut carry) = (Vec::new(), Vec::new(), Vec::new());
        let mut start = 0;
        for &c in &counts {
            for i in 0..c / 2 {
                left.push((start + 2 * i) as u32);
                right.push((start + 2 * i + 1) as u32);
            }
            if c % 2 == 1 {
                carry.push((start + c - 1) as u32);
            }
            start += c;
        }
        let combined = op(
            &v.index_select(&u32_tensor(&left, device)?, 0)?,
            &v.index_select(&u32_tensor(&right, device)?, 0)?,
        )?;
        let carried = v.index_select(&u32_tensor(&carry, device)?, 0)?;
        let stacked = Tensor::cat(&[&combined, &carried], 0)?;
        // Back to row-contiguous order: each row's pair results, then its carried value.
        let (mut order, mut next_pair, mut next_carry) = (Vec::new(), 0u32, left.len() as u32);
        for c in counts.iter_mut() {
            for _ in 0..*c / 2 {
                order.push(next_pair);
                next_pair += 1;
            }
            if *c % 2 == 1 {
                order.push(next_carry);
                next_carry += 1;
            }
            *c = c.div_ceil(2);
        }
        v = stacked.index_select(&u32_tensor(&order, device)?, 0)?;
    }
    // Every row now holds 0 or 1 value; empty rows take `empty` (appended as the last row of v).
    let with_empty = Tensor::cat(&[&v, &empty.unsqueeze(0)?], 0)?;
    let empty_index = v.dim(0)? as u32;
    let (mut pick, mut next) = (Vec::with_capacity(rows), 0u32);
    for &c in &counts {
        if c == 1 {
            pick.push(next);
            next += 1;
        } else {
            pick.push(empty_index);
        }
    }
    Ok(with_empty.index_select(&u32_tensor(&pick, device)?, 0)?)
}

/// The learned commutative operator and its identity element.
pub struct Monoid {
    gru: GRU,
    identity: Tensor,
    dim: usize,
}

impl Monoid {
    pub fn new(dim: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let gru = candle_nn::rnn::gru(dim, dim, GRUConfig::default(), vb.pp("gru"))?;
        let identity = vb.get_with_hints(dim, "identity", candle_nn::Init::Const(0.0))?;
        Ok(Monoid { gru, identity, dim })
    }

    /// a ⊕ b for `[P, F]` pairs: ½ [GRU(input a, state b) + GRU(input b, state a)], one GRU step
    /// over both orders. Exactly commutative.
    pub fn combine(&self, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        let p = a.dim(0)?;
        if p == 0 {
            return Ok(a.clone());
        }
        let input = Tensor::cat(&[a, b], 0)?;
        let state = Tensor::cat(&[b, a], 0)?;
        let h = self.gru.step(&input, &GRUState { h: state })?.h;
        (h.narrow(0, 0, p)? + h.narrow(0, p, p)?)? * 0.5
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

/// Which aggregator a model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Sum,
    Mean,
    Max,
    Gru,
    Lcm,
}

impl AggKind {
    pub const ALL: [AggKind; 5] = [
        AggKind::Sum,
        AggKind::Mean,
        AggKind::Max,
        AggKind::Gru,
        AggKind::Lcm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AggKind::Sum => "sum",
            AggKind::Mean => "mean",
            AggKind::Max => "max",
            AggKind::Gru => "gru",
            AggKind::Lcm => "lcm",
        }
    }

    pub fn code(self) -> f32 {
        Self::ALL.iter().position(|&k| k == self).unwrap() as f32
    }

    pub fn from_code(c: f32) -> Option<AggKind> {
        Self::ALL.get(c as usize).copied().filter(|k| k.code() == c)
    }
}

impl std::str::FromStr for AggKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown aggregator {s:?}; expected sum, mean, max, gru or lcm"))
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
            AggKind::Lcm => Aggregator::Lcm(Monoid::new(dim, vb.pp("lcm"))?),
        })
    }

    pub fn kind(&self) -> AggKind {
        match self {
            Aggregator::Sum => AggKind::Sum,
            Aggregator::Mean => AggKind::Mean,
            Aggregator::Max => AggKind::Max,
            Aggregator::Gru(_) => AggKind::Gru,
            Aggregator::Lcm(_) => AggKind::Lcm,
        }
    }

    /// Aggregates messages `h` (`[M, F]`, CSR order of `csr`) into `[R, F]`.
    pub fn aggregate(&self, h: &Tensor, csr: &Csr) -> Result<Tensor> {
        let (device, f) = (h.device(), h.dim(1)?);
        let rows = csr.rows();
        match self {
            Aggregator::Sum | Aggregator::Mean => {
                let idx = u32_tensor(&csr.row_of_entry(), device)?;
                let sum = Tensor::zeros((rows, f), h.dtype(), device)?.index_add(&idx, h, 0)?;
                if matches!(self, Aggregator::Sum) {
                    return Ok(sum);
                }
                let inv: Vec<f32> = (0..rows)
                    .map(|r| 1.0 / csr.degree(r).max(1) as f32)
                    .collect();
                Ok(sum.broadcast_mul(&Tensor::from_vec(inv, (rows, 1), device)?)?)
            }
            Aggregator::Max => {
                let zero = Tensor::zeros(f, h.dtype(), device)?;
                tree_reduce(h, &csr.rowptr, &|a, b| a.maximum(b), &zero)
            }
            Aggregator::Lcm(m) => {
                tree_reduce(h, &csr.rowptr, &|a, b| m.combine(a, b), m.identity())
            }
            Aggregator::Gru(gru) => gru_reduce(gru, h, csr),
        }
    }
}

/// The recurrent baseline: the state runs over each row's entries in order. Rows are sorted by
/// degree (descending) so that step t updates a prefix of the state; O(d_max) sequential steps.
fn gru_reduce(gru: &GRU, h: &Tensor, csr: &Csr) -> Result<Tensor> {
    let (device, f) = (h.device(), h.dim(1)?);
    let rows = csr.rows();
    let mut order: Vec<usize> = (0..rows).collect();
    order.sort_by_key(|&r| std::cmp::Reverse(csr.degree(r)));
    let d_max = order.first().map_or(0, |&r| csr.degree(r));
    let mut state = Tensor::zeros((rows, f), h.dtype(), device)?;
    for t in 0..d_max {
        let active = order.iter().take_while(|&&r| csr.degree(r) > t).count();
        let idx: Vec<u32> = order[..active]
            .iter()
            .map(|&r| (csr.rowptr[r] + t) as u32)
            .collect();
        let x = h.index_select(&u32_tensor(&idx, device)?, 0)?;
        let s = state.narrow(0, 0, active)?;
        let next = gru.step(&x, &GRUState { h: s })?.h;
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
            self_lin: candle_nn::linear(hidden, hidden, vb.pp("self"))?,
            nbr_lin: candle_nn::linear(hidden, hidden, vb.pp("nbr"))?,
            agg: Aggregator::new(kind, hidden, vb.pp("agg"))?,
        })
    }

    fn forward(&self, h: &Tensor, csr: &Csr, col: &Tensor) -> Result<Tensor> {
        let m = self.agg.aggregate(&h.index_select(col, 0)?, csr)?;
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
                candle_nn::linear(in_dim, hidden, vb.pp("enc.0"))?,
                candle_nn::linear(hidden, hidden, vb.pp("enc.1"))?,
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
                candle_nn::linear(hidden, hidden, vb.pp("dec.0"))?,
                candle_nn::linear(hidden, out_dim, vb.pp("dec.1"))?,
            ),
            in_dim,
            hidden,
            out_dim,
        })
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
        let col = u32_tensor(&csr.col, x.device())?;
        let pooled = if let Some(agg) = &self.agg {
            agg.aggregate(&h.index_select(&col, 0)?, csr)?
        } else {
            if csr.rows() != h.dim(0)? {
                return Err(Error::InvalidArgument(format!(
                    "this message-passing model needs a graph (edge_index over {} nodes), got {} groups",
                    h.dim(0)?,
                    csr.rows()
                )));
            }
            for layer in &self.layers {
                h = layer.forward(&h, csr, &col)?;
            }
            h
        };
        Ok(self.dec.1.forward(&self.dec.0.forward(&pooled)?.relu()?)?)
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
        let sum = tree_reduce(&h, &csr.rowptr, &|a, b| a + b, &zero)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let max = tree_reduce(&h, &csr.rowptr, &|a, b| a.maximum(b), &zero)
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

    #[test]
    fn lcm_operator_is_exactly_commutative() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let m = Monoid::new(8, vb).unwrap();
        let (_, a) = random(16, 8, 3);
        let (_, b) = random(16, 8, 4);
        let ab = m.combine(&a, &b).unwrap().to_vec2::<f32>().unwrap();
        let ba = m.combine(&b, &a).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(ab, ba);
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
                let h = x
                    .index_select(&u32_tensor(&csr.col, &Device::Cpu).unwrap(), 0)
                    .unwrap();
                agg.aggregate(&h, &csr).unwrap().to_vec2::<f32>().unwrap()
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
