//! Light Schrödinger Bridge (Korotin et al., ICLR 2024): a Gaussian-mixture potential whose
//! entropic-OT conditional plan is available in closed form,
//!
//! ```text
//! π(y|x) = Σ_k γ_k(x) N(y | r_k + S_k x, ε S_k),   γ_k(x) ∝ α_k exp((xᵀS_k x + 2 r_kᵀx) / 2ε)
//! ```
//!
//! with diagonal `S_k = diag(exp(s_k))`. Sampling is exact (pick a component by γ, then one Gaussian
//! draw); bridge states follow the Brownian bridge `x_t = t y + (1−t) x + √(ε t (1−t)) ξ`; the SDE
//! drift of the bridge is `g(x, t) = (E[y | x_t = x] − x) / (1 − t)` with the mixture posterior of
//! PAPERS.md §2 (derivation in [`LightSb::drift`]).
//!
//! Every quantity that couples all inputs with all components is one matrix product over the whole
//! batch (`[x², x] · W`), computed through candle on the model's device once the product is large,
//! and by a plain loop when it is small (where a kernel launch costs more than the arithmetic). Log-
//! sum-exp is max-shifted everywhere, and the logits are accumulated in f64 on the loop path, so
//! ε down to 0.002 and D up to 1000 stay finite.

use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;
use std::collections::HashMap;

/// Products with fewer multiply-adds than this run as a loop on the CPU.
const LOOP_LIMIT: usize = 1 << 18;

/// A `[rows, cols]` matrix kept on the host; copied to the device the first time a product is
/// large enough to go there (small products never upload anything).
struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
    device: Device,
    on_device: std::sync::OnceLock<Tensor>,
}

impl Matrix {
    fn new(rows: usize, cols: usize, data: Vec<f32>, device: &Device) -> Self {
        Matrix {
            rows,
            cols,
            data,
            device: device.clone(),
            on_device: std::sync::OnceLock::new(),
        }
    }

    /// `a · self` for `a` of shape `[m, rows]`.
    fn left_mul(&self, a: &[f32], m: usize) -> Result<Vec<f32>> {
        debug_assert_eq!(a.len(), m * self.rows);
        if m * self.rows * self.cols <= LOOP_LIMIT {
            let mut out = vec![0.0f32; m * self.cols];
            for (i, row) in out.chunks_exact_mut(self.cols).enumerate() {
                let mut acc = vec![0.0f64; self.cols];
                for (p, &av) in a[i * self.rows..(i + 1) * self.rows].iter().enumerate() {
                    if av == 0.0 {
                        continue;
                    }
                    let w = &self.data[p * self.cols..(p + 1) * self.cols];
                    for (o, &wv) in acc.iter_mut().zip(w) {
                        *o += av as f64 * wv as f64;
                    }
                }
                for (o, v) in row.iter_mut().zip(acc) {
                    *o = v as f32;
                }
            }
            return Ok(out);
        }
        let w = match self.on_device.get() {
            Some(w) => w,
            None => {
                let t = Tensor::from_slice(&self.data, (self.rows, self.cols), &self.device)?;
                self.on_device.get_or_init(|| t)
            }
        };
        let a = Tensor::from_slice(a, (m, self.rows), &self.device)?;
        Ok(a.matmul(w)?.flatten_all()?.to_vec1::<f32>()?)
    }
}

/// `[x², x]` per row: the features every mixture term is linear in.
fn quadratic_features(x: &[f32], d: usize) -> Vec<f32> {
    let mut f = Vec::with_capacity(2 * x.len());
    for row in x.chunks_exact(d) {
        f.extend(row.iter().map(|v| v * v));
        f.extend_from_slice(row);
    }
    f
}

/// Row-wise softmax in place (max-shifted).
fn softmax_rows(logits: &mut [f32], k: usize) {
    for row in logits.chunks_exact_mut(k) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f64;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v as f64;
        }
        let inv = (1.0 / sum) as f32;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Draws an index from probabilities `p` (summing to 1).
fn categorical(p: &[f32], rng: &mut impl Rng) -> usize {
    let u: f32 = rng.random();
    let mut acc = 0.0;
    for (i, &pi) in p.iter().enumerate() {
        acc += pi;
        if u < acc {
            return i;
        }
    }
    p.len() - 1
}

fn normal(rng: &mut impl Rng) -> f32 {
    rng.sample(StandardNormal)
}

/// The fitted bridge.
pub struct LightSb {
    pub dim: usize,
    pub components: usize,
    pub epsilon: f32,
    log_alpha: Vec<f32>,
    r: Vec<f32>,
    log_s: Vec<f32>,
    s: Vec<f32>,
    /// `[2D, K]`: γ logits are `[x², x] · logit_w + log α`.
    logit_w: Matrix,
    device: Device,
}

impl LightSb {
    /// Tensor names in the safetensors file.
    pub const TENSORS: [&'static str; 4] = ["log_alpha", "r", "log_s", "epsilon"];

    pub fn new(
        log_alpha: Vec<f32>,
        r: Vec<f32>,
        log_s: Vec<f32>,
        epsilon: f32,
        device: &Device,
    ) -> Result<Self> {
        let k = log_alpha.len();
        if k == 0 || r.len() % k != 0 || r.is_empty() || log_s.len() != r.len() {
            return Err(Error::InvalidArgument(format!(
                "LightSB tensors disagree: log_alpha [{k}], r {} values, log_s {} values; expected [K], [K, D], [K, D]",
                r.len(),
                log_s.len()
            )));
        }
        if !(epsilon.is_finite() && epsilon > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "LightSB epsilon is {epsilon}, expected > 0"
            )));
        }
        let all = log_alpha.iter().chain(&r).chain(&log_s);
        if all.clone().any(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(
                "LightSB weights contain NaN or infinity".into(),
            ));
        }
        let d = r.len() / k;
        let s: Vec<f32> = log_s.iter().map(|v| v.exp()).collect();
        let mut w = vec![0.0f32; 2 * d * k];
        for kk in 0..k {
            for dd in 0..d {
                w[dd * k + kk] = s[kk * d + dd] / (2.0 * epsilon);
                w[(d + dd) * k + kk] = r[kk * d + dd] / epsilon;
            }
        }
        Ok(LightSb {
            dim: d,
            components: k,
            epsilon,
            logit_w: Matrix::new(2 * d, k, w, device),
            log_alpha,
            r,
            log_s,
            s,
            device: device.clone(),
        })
    }

    pub fn from_tensors(t: &HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        let get = |name: &str| -> Result<Vec<f32>> {
            let v = t.get(name).ok_or_else(|| {
                Error::InvalidArgument(format!("LightSB weights lack tensor {name:?}"))
            })?;
            Ok(v.flatten_all()?.to_vec1::<f32>()?)
        };
        let eps = get("epsilon")?;
        if eps.len() != 1 {
            return Err(Error::InvalidArgument(format!(
                "LightSB epsilon has {} values, expected 1",
                eps.len()
            )));
        }
        Self::new(get("log_alpha")?, get("r")?, get("log_s")?, eps[0], device)
    }

    /// The weights as named tensors (for safetensors).
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        let (k, d) = (self.components, self.dim);
        let cpu = Device::Cpu;
        Ok(HashMap::from([
            (
                "log_alpha".to_string(),
                Tensor::from_slice(&self.log_alpha, k, &cpu)?,
            ),
            ("r".to_string(), Tensor::from_slice(&self.r, (k, d), &cpu)?),
            (
                "log_s".to_string(),
                Tensor::from_slice(&self.log_s, (k, d), &cpu)?,
            ),
            (
                "epsilon".to_string(),
                Tensor::from_slice(&[self.epsilon], 1, &cpu)?,
            ),
        ]))
    }

    /// Unnormalised log γ_k(x) for `rows` inputs: `[rows, K]`, one matrix product for all.
    pub fn log_gamma(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let mut logits = self
            .logit_w
            .left_mul(&quadratic_features(x, self.dim), rows)?;
        for row in logits.chunks_exact_mut(self.components) {
            for (v, la) in row.iter_mut().zip(&self.log_alpha) {
                *v += la;
            }
        }
        Ok(logits)
    }

    /// γ(x) for every input row: `[rows, K]`.
    pub fn gamma(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let mut g = self.log_gamma(x, rows)?;
        softmax_rows(&mut g, self.components);
        Ok(g)
    }

    /// `n` exact draws from π(·|x) per row given precomputed γ: `[rows, n, D]`.
    pub fn sample_with_gamma(
        &self,
        x: &[f32],
        gamma: &[f32],
        n: usize,
        rng: &mut impl Rng,
    ) -> Vec<f32> {
        let (d, k) = (self.dim, self.components);
        let rows = x.len() / d;
        let sqrt_eps = self.epsilon.sqrt();
        let mut out = Vec::with_capacity(rows * n * d);
        for (xr, g) in x.chunks_exact(d).zip(gamma.chunks_exact(k)) {
            for _ in 0..n {
                let c = categorical(g, rng);
                let (r, s) = (&self.r[c * d..(c + 1) * d], &self.s[c * d..(c + 1) * d]);
                for i in 0..d {
                    out.push(r[i] + s[i] * xr[i] + sqrt_eps * s[i].sqrt() * normal(rng));
                }
            }
        }
        out
    }

    /// `n` exact draws of the endpoint y ~ π(·|x) per row: `[rows, n, D]`.
    pub fn sample(&self, x: &[f32], n: usize, rng: &mut impl Rng) -> Result<Vec<f32>> {
        let g = self.gamma(x, x.len() / self.dim)?;
        Ok(self.sample_with_gamma(x, &g, n, rng))
    }

    /// Turns endpoint draws `[rows, n, D]` into bridge states at time `t` in place:
    /// `x_t = t y + (1 − t) x + √(ε t (1 − t)) ξ`.
    pub fn states_at(&self, x: &[f32], y: &mut [f32], n: usize, t: f32, rng: &mut impl Rng) {
        let d = self.dim;
        let sd = (self.epsilon * t * (1.0 - t)).max(0.0).sqrt();
        for (xr, ys) in x.chunks_exact(d).zip(y.chunks_exact_mut(n * d)) {
            for yv in ys.chunks_exact_mut(d) {
                for (v, &x0) in yv.iter_mut().zip(xr) {
                    *v = t * *v + (1.0 - t) * x0 + sd * normal(rng);
                }
            }
        }
    }

    /// Whole paths by the Brownian bridge: draw y, then each state given the previous one and y.
    /// `times` strictly increasing in (0, 1]; returns `[rows, n, 1 + times.len(), D]` (t = 0 first).
    pub fn trajectories_bridge(
        &self,
        x: &[f32],
        gamma: &[f32],
        n: usize,
        times: &[f32],
        rng: &mut impl Rng,
    ) -> Vec<f32> {
        let d = self.dim;
        let y = self.sample_with_gamma(x, gamma, n, rng);
        let steps = times.len() + 1;
        let mut out = Vec::with_capacity(y.len() * steps);
        for (row, xr) in x.chunks_exact(d).enumerate() {
            for j in 0..n {
                let yj = &y[(row * n + j) * d..(row * n + j + 1) * d];
                let mut cur = xr.to_vec();
                let mut t_prev = 0.0f32;
                out.extend_from_slice(&cur);
                for &t in times {
                    // Brownian bridge from (t_prev, cur) to (1, y), Wiener variance ε.
                    let w = (t - t_prev) / (1.0 - t_prev);
                    let var = self.epsilon * (t - t_prev) * (1.0 - t) / (1.0 - t_prev);
                    let sd = var.max(0.0).sqrt();
                    for (c, &yv) in cur.iter_mut().zip(yj) {
                        *c += w * (yv - *c) + sd * normal(rng);
                    }
                    out.extend_from_slice(&cur);
                    t_prev = t;
                }
            }
        }
        out
    }

    /// The bridge SDE's drift at time `t < 1` for `rows` states: `[rows, D]`.
    ///
    /// Given x_t = x, the endpoint's posterior is again a mixture over k with (diagonal)
    /// precision `A_k = t/(ε(1−t)) + 1/(ε S_k)` and mean `m_k = h_k / A_k`, where
    /// `h_k = x/(ε(1−t)) + r_k/(ε S_k)`; its weights are the softmax over k of
    /// `log α_k − ½ log det S_k − ½ log det A_k − r_kᵀS_k⁻¹r_k/(2ε) + ½ h_kᵀA_k⁻¹h_k` (PAPERS.md §2).
    /// The drift is `(Σ_k w_k m_k − x) / (1 − t)`, which equals `−x/(1−t) + ε ∇ LSE`. Both the weight
    /// logits and `m_k` are linear in `[x², x]` and `x`, so each is one matrix product.
    pub fn drift(&self, x: &[f32], rows: usize, t: f32) -> Result<Vec<f32>> {
        let (d, k, eps) = (self.dim, self.components, self.epsilon as f64);
        let u = 1.0 - t as f64;
        let mut wq = vec![0.0f32; 2 * d * k]; // logits: [x², x] · wq
        let mut p = vec![0.0f32; k * d]; // m_k = x ⊙ p_k + q_k
        let mut q = vec![0.0f32; k * d];
        let mut c = vec![0.0f64; k];
        for kk in 0..k {
            let mut ck = self.log_alpha[kk] as f64;
            for dd in 0..d {
                let i = kk * d + dd;
                let (s, r) = (self.s[i] as f64, self.r[i] as f64);
                let a = t as f64 / (eps * u) + 1.0 / (eps * s);
                ck += -0.5 * self.log_s[i] as f64 - 0.5 * a.ln() - r * r / (2.0 * eps * s)
                    + r * r / (2.0 * eps * eps * s * s * a);
                wq[dd * k + kk] = (1.0 / (2.0 * eps * eps * u * u * a)) as f32;
                wq[(d + dd) * k + kk] = (r / (eps * eps * u * s * a)) as f32;
                p[i] = (1.0 / (eps * u * a)) as f32;
                q[i] = (r / (eps * s * a)) as f32;
            }
            c[kk] = ck;
        }
        let wq = Matrix::new(2 * d, k, wq, &self.device);
        let mut w = wq.left_mul(&quadratic_features(x, d), rows)?;
        for row in w.chunks_exact_mut(k) {
            for (v, &ck) in row.iter_mut().zip(&c) {
                *v += ck as f32;
            }
        }
        softmax_rows(&mut w, k);
        let pm = Matrix::new(k, d, p, &self.device).left_mul(&w, rows)?;
        let qm = Matrix::new(k, d, q, &self.device).left_mul(&w, rows)?;
        Ok(x.iter()
            .zip(pm.iter().zip(&qm))
            .map(|(&xv, (&pv, &qv))| ((xv * pv + qv - xv) as f64 / u) as f32)
            .collect())
    }

    /// Whole paths by Euler–Maruyama with the closed-form drift on a uniform grid of `steps` steps:
    /// `[rows, n, steps + 1, D]` (t = 0 first, t = 1 last).
    pub fn trajectories_euler(
        &self,
        x: &[f32],
        n: usize,
        steps: usize,
        rng: &mut impl Rng,
    ) -> Result<Vec<f32>> {
        let d = self.dim;
        let rows = x.len() / d;
        let particles = rows * n;
        let mut cur: Vec<f32> = x
            .chunks_exact(d)
            .flat_map(|r| std::iter::repeat_n(r, n).flatten().copied())
            .collect();
        let mut path = vec![cur.clone()];
        let dt = 1.0 / steps as f32;
        let sd = (self.epsilon * dt).sqrt();
        for i in 0..steps {
            let g = self.drift(&cur, particles, i as f32 * dt)?;
            for (c, gv) in cur.iter_mut().zip(g) {
                *c += gv * dt + sd * normal(rng);
            }
            path.push(cur.clone());
        }
        // [steps + 1][particles, D] → [particles, steps + 1, D]
        let mut out = Vec::with_capacity(path.len() * cur.len());
        for pidx in 0..particles {
            for state in &path {
                out.extend_from_slice(&state[pidx * d..(pidx + 1) * d]);
            }
        }
        Ok(out)
    }

    /// Mean and covariance (`[D]`, `[D, D]` row-major) of π(·|x) for one x, in closed form.
    pub fn conditional_moments(&self, x: &[f32]) -> Result<(Vec<f64>, Vec<f64>)> {
        let (d, k) = (self.dim, self.components);
        let g = self.gamma(x, 1)?;
        let mut mean = vec![0.0f64; d];
        let mut second = vec![0.0f64; d * d];
        for kk in 0..k {
            let gk = g[kk] as f64;
            if gk == 0.0 {
                continue;
            }
            let m: Vec<f64> = (0..d)
                .map(|i| (self.r[kk * d + i] + self.s[kk * d + i] * x[i]) as f64)
                .collect();
            for i in 0..d {
                mean[i] += gk * m[i];
                for j in 0..d {
                    second[i * d + j] += gk * m[i] * m[j];
                }
                second[i * d + i] += gk * (self.epsilon * self.s[kk * d + i]) as f64;
            }
        }
        for i in 0..d {
            for j in 0..d {
                second[i * d + j] -= mean[i] * mean[j];
            }
        }
        Ok((mean, second))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn model(k: usize, d: usize, eps: f32, seed: u64) -> LightSb {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let la = (0..k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let r = (0..k * d).map(|_| rng.random_range(-2.0..2.0)).collect();
        let ls = (0..k * d).map(|_| rng.random_range(-1.0..0.5)).collect();
        LightSb::new(la, r, ls, eps, &Device::Cpu).unwrap()
    }

    /// γ by the definition, in f64, for one x.
    fn gamma_reference(m: &LightSb, x: &[f32]) -> Vec<f64> {
        let (d, k, e) = (m.dim, m.components, m.epsilon as f64);
        let logits: Vec<f64> = (0..k)
            .map(|kk| {
                let mut v = m.log_alpha[kk] as f64;
                for i in 0..d {
                    let (s, r, xi) = (m.s[kk * d + i] as f64, m.r[kk * d + i] as f64, x[i] as f64);
                    v += (s * xi * xi + 2.0 * r * xi) / (2.0 * e);
                }
                v
            })
            .collect();
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logits.iter().map(|v| (v - max).exp()).sum();
        logits.iter().map(|v| (v - max).exp() / z).collect()
    }

    #[test]
    fn gamma_matches_the_definition_on_both_paths() {
        for (k, d, rows) in [(5, 3, 4), (64, 64, 200)] {
            // the second size is above LOOP_LIMIT: candle's matmul
            let m = model(k, d, 0.5, 1);
            let mut rng = ChaCha8Rng::seed_from_u64(2);
            let x: Vec<f32> = (0..rows * d).map(|_| rng.random_range(-1.0..1.0)).collect();
            let g = m.gamma(&x, rows).unwrap();
            for row in 0..rows {
                let want = gamma_reference(&m, &x[row * d..(row + 1) * d]);
                for kk in 0..k {
                    let got = g[row * k + kk] as f64;
                    assert!(
                        (got - want[kk]).abs() < 2e-4,
                        "row {row} k {kk}: {got} vs {}",
                        want[kk]
                    );
                }
            }
        }
    }

    #[test]
    fn tiny_epsilon_and_large_dimension_stay_finite() {
        let m = model(1000, 1000, 0.002, 3);
        let x = vec![3.0f32; 2 * 1000];
        let g = m.gamma(&x, 2).unwrap();
        assert!(g.iter().all(|v| v.is_finite()));
        let s: f32 = g[..1000].iter().sum();
        assert!((s - 1.0).abs() < 1e-4);
    }

    #[test]
    fn drift_at_time_zero_is_the_conditional_mean_minus_x() {
        let m = model(4, 3, 0.7, 5);
        let x = [0.3f32, -0.5, 1.1];
        let (mean, _) = m.conditional_moments(&x).unwrap();
        let g = m.drift(&x, 1, 0.0).unwrap();
        for i in 0..3 {
            assert!(
                (g[i] as f64 - (mean[i] - x[i] as f64)).abs() < 1e-4,
                "{i}: {g:?} {mean:?}"
            );
        }
    }

    #[test]
    fn sampling_is_reproducible_per_seed() {
        let m = model(8, 4, 0.3, 7);
        let x = vec![0.2f32; 8];
        let a = m.sample(&x, 5, &mut ChaCha8Rng::seed_from_u64(9)).unwrap();
        let b = m.sample(&x, 5, &mut ChaCha8Rng::seed_from_u64(9)).unwrap();
        let c = m.sample(&x, 5, &mut ChaCha8Rng::seed_from_u64(10)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 2 * 5 * 4);
    }
}
