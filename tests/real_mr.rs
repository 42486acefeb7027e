//! The served default reconstruction models as a user meets them, over KServe with NVIDIA's
//! tritonclient: orientation conventions checked against BART's own FFT, trajectories and NUFFT on an
//! asymmetric image (tests/reference/orientation_client.py), and quality on held-out real MR slices
//! against zero-filled / gridding and BART's compressed sensing (tests/reference/real_mr_client.py).

mod common;

use common::TestServer;
use inferd::serve::ServeConfig;

async fn run_client(script: &str, expect: &str) {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let target = server.url.trim_start_matches("http://").to_string();
    let script = common::repo().join("tests/reference").join(script);
    let out =
        tokio::task::spawn_blocking(move || common::run(common::python().arg(script).arg(target)))
            .await
            .unwrap();
    println!("{out}");
    assert!(out.contains(expect), "{out}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orientation_matches_bart_for_rows_columns_and_radial() {
    run_client("orientation_client.py", "ok: orientation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_mr_slices_beat_zero_filled_everywhere_and_bart_on_the_mean() {
    run_client("real_mr_client.py", "ok: real MR").await;
}
