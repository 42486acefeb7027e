//! Training of the shipped models (candle autograd on the CPU or a CUDA device).

pub mod bridge;
pub mod data;
pub mod graph;
pub mod recon;

/// Prints a line above the progress bar, or plainly when the bar is hidden (output not a terminal,
/// e.g. a log file), so that progress reports reach logs too.
pub fn report(bar: &indicatif::ProgressBar, line: String) {
    if bar.is_hidden() {
        println!("{line}");
    } else {
        bar.println(line);
    }
}

/// A trainer's checkpoint beside its output: `<out>.ckpt.safetensors` (weights) and
/// `<out>.ckpt.step` (steps done).
pub struct Checkpoint {
    pub weights: std::path::PathBuf,
    step_file: std::path::PathBuf,
}

impl Checkpoint {
    pub fn beside(out: &std::path::Path) -> Self {
        Checkpoint {
            weights: out.with_extension("ckpt.safetensors"),
            step_file: out.with_extension("ckpt.step"),
        }
    }

    /// With `resume` and a checkpoint present: restores the weights with `load` and returns the
    /// step to continue from; otherwise 0.
    pub fn resume(
        &self,
        resume: bool,
        load: impl FnOnce(&std::path::Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<usize> {
        if !(resume && self.weights.exists()) {
            return Ok(0);
        }
        load(&self.weights)?;
        let start = std::fs::read_to_string(&self.step_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        println!("resumed from {} at step {start}", self.weights.display());
        Ok(start)
    }

    /// Writes the weights with `save`, then the step count.
    pub fn save(
        &self,
        done: usize,
        save: impl FnOnce(&std::path::Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        save(&self.weights)?;
        std::fs::write(&self.step_file, format!("{done}\n"))?;
        Ok(())
    }
}

/// The trainers' progress bar, positioned at `start`.
pub fn progress_bar(steps: usize, start: usize) -> anyhow::Result<indicatif::ProgressBar> {
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} {elapsed}<{eta} {msg}",
    )?);
    bar.set_position(start as u64);
    Ok(bar)
}

/// Adam (AdamW without weight decay) at learning rate `lr`.
pub fn adam(vars: Vec<candle_core::Var>, lr: f64) -> candle_core::Result<candle_nn::AdamW> {
    use candle_nn::Optimizer;
    candle_nn::AdamW::new(
        vars,
        candle_nn::ParamsAdamW {
            lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
}

/// Cosine decay from `lr` at step 0 to 5 % of it at the last step.
pub fn cosine_lr(lr: f64, step: usize, steps: usize) -> f64 {
    let t = step as f64 / steps.max(1) as f64;
    lr * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

/// A variable builder that creates a model's variables in `varmap` with candle's initialisers
/// (the hints each layer asks for: constant, uniform, normal, Kaiming) drawn from a generator seeded
/// with `seed`, so that `--seed` fixes the initial weights as well as the data (candle's own CPU
/// generator cannot be seeded). Variables already in `varmap` are returned as they are.
pub fn seeded_var_builder(
    varmap: &candle_nn::VarMap,
    seed: u64,
    device: &candle_core::Device,
) -> candle_nn::VarBuilder<'static> {
    let backend = SeededInit {
        varmap: varmap.clone(),
        rng: std::sync::Mutex::new(
            <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed ^ 0x1417),
        ),
    };
    candle_nn::VarBuilder::from_backend(Box::new(backend), candle_core::DType::F32, device.clone())
}

struct SeededInit {
    varmap: candle_nn::VarMap,
    rng: std::sync::Mutex<rand_chacha::ChaCha8Rng>,
}

impl candle_nn::var_builder::SimpleBackend for SeededInit {
    fn get(
        &self,
        shape: candle_core::Shape,
        name: &str,
        init: candle_nn::Init,
        dtype: candle_core::DType,
        device: &candle_core::Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        use candle_nn::init::NormalOrUniform;
        use candle_nn::Init;
        use rand::Rng;
        let mut vars = self.varmap.data().lock().unwrap();
        if let Some(v) = vars.get(name) {
            if v.shape() != &shape {
                candle_core::bail!("shape mismatch on {name}: {shape:?} <> {:?}", v.shape());
            }
            return Ok(v.as_tensor().clone());
        }
        let n = shape.elem_count();
        let mut rng = self.rng.lock().unwrap();
        let uniform = |rng: &mut rand_chacha::ChaCha8Rng, lo: f64, up: f64| -> Vec<f32> {
            (0..n)
                .map(|_| (lo + (up - lo) * rng.random::<f64>()) as f32)
                .collect()
        };
        let normal = |rng: &mut rand_chacha::ChaCha8Rng, mean: f64, std: f64| -> Vec<f32> {
            let d = rand_distr::Normal::new(mean, std).expect("finite standard deviation");
            (0..n).map(|_| rng.sample(d) as f32).collect()
        };
        let values = match init {
            Init::Const(c) => vec![c as f32; n],
            Init::Uniform { lo, up } => uniform(&mut rng, lo, up),
            Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let std = non_linearity.gain() / (fan.for_shape(&shape) as f64).sqrt();
                match dist {
                    NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * std;
                        uniform(&mut rng, -bound, bound)
                    }
                    NormalOrUniform::Normal => normal(&mut rng, 0.0, std),
                }
            }
        };
        let t = candle_core::Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?;
        let var = candle_core::Var::from_tensor(&t)?;
        vars.insert(name.to_string(), var.clone());
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(
        &self,
        name: &str,
        _: candle_core::DType,
        _: &candle_core::Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        candle_core::bail!("{name}: a variable needs its shape and initialiser")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap.data().lock().unwrap().contains_key(name)
    }
}
