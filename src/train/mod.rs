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
