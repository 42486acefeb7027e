//! Graceful shutdown of the real binary: SIGTERM in the middle of a reconstruction stream flips
//! readiness at once, the stream still completes with every slice, and the process exits 0.

mod common;

use common::orthanc::free_port;
use common::{http_request, wait_for};
use inferd::api::pb::{
    self, recon_request, recon_response, reconstruction_client::ReconstructionClient,
};
use inferd::api::tensor;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_stream::wrappers::ReceiverStream;

fn slice_msg(index: u32, n: usize, seed: u64) -> pb::ReconRequest {
    pb::ReconRequest {
        msg: Some(recon_request::Msg::Slice(pb::KSpaceSlice {
            index,
            kspace: Some(tensor::encode_c64(
                &[1, n, n],
                &common::phantom_kspace(n, seed),
            )),
            mask: None,
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_stream_lets_it_finish_then_exits_cleanly() {
    let (port, metrics_port) = (free_port(), free_port());
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_inferd"))
        .args(["serve", "--device", "cpu", "--shutdown-grace-s", "60"])
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let ready_url = format!("http://127.0.0.1:{metrics_port}/ready");
    let ready = move || http_request(&ready_url).map(|(code, _)| code);
    let ready2 = ready.clone();
    tokio::task::spawn_blocking(move || wait_for("readiness", || ready2() == Some(200)))
        .await
        .unwrap();

    let n = 64;
    let slices = 4u32;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(pb::ReconRequest {
        msg: Some(recon_request::Msg::Header(pb::ReconHeader {
            height: n as u32,
            width: n as u32,
            coils: 1,
            slices,
            sampling: Some(pb::Sampling::variable_density(4.0, 1)),
            request_id: "shutdown-test".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    tx.send(slice_msg(0, n, 1)).await.unwrap();
    let mut client = ReconstructionClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let mut stream = client
        .stream_reconstruct(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut images = Vec::new();
    // First image back: the stream is running. Now SIGTERM.
    while images.is_empty() {
        if let Some(recon_response::Msg::Image(i)) = stream.message().await.unwrap().unwrap().msg {
            images.push(i.index);
        }
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Readiness flips to 503 while the stream is still open.
    tokio::task::spawn_blocking(move || wait_for("readiness to drop", || ready() == Some(503)))
        .await
        .unwrap();
    // The rest of the stream is still served.
    for i in 1..slices {
        tx.send(slice_msg(i, n, i as u64 + 1)).await.unwrap();
    }
    drop(tx);
    while let Some(m) = stream.message().await.unwrap() {
        if let Some(recon_response::Msg::Image(i)) = m.msg {
            images.push(i.index);
        }
    }
    assert_eq!(images, vec![0, 1, 2, 3]);
    let exit = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("the server did not exit after its stream finished");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    let log = std::fs::read_to_string(log.path()).unwrap();
    assert!(exit.success(), "exit status {exit:?}; log:\n{log}");
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("inferd stopped"), "{log}");
}
