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
