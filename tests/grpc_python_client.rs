//! A second, independent gRPC client (Python grpcio with health checking and reflection) against the
//! server on a free loopback port.

mod common;

use common::TestServer;
use inferd::serve::ServeConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_client_uses_health_reflection_and_reconstruction() {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let target = server.url.trim_start_matches("http://").to_string();
    let script = common::repo().join("tests/reference/grpc_client.py");
    let out =
        tokio::task::spawn_blocking(move || common::run(common::python().arg(script).arg(target)))
            .await
            .unwrap();
    println!("{out}");
    assert!(out.contains("ok: health, reflection"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_talks_to_the_kserve_service_unchanged() {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let target = server.url.trim_start_matches("http://").to_string();
    let script = common::repo().join("tests/reference/triton_client.py");
    let out =
        tokio::task::spawn_blocking(move || common::run(common::python().arg(script).arg(target)))
            .await
            .unwrap();
    println!("{out}");
    assert!(out.contains("ok: tritonclient"));
    server.stop().await;
}
