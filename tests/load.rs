//! `inferd load` and `inferd health` against servers on free loopback ports: throughput and
//! latency are reported, the JSON and HTML reports are written, overload shows up as counted
//! RESOURCE_EXHAUSTED answers rather than a hang, and connection ageing does not fail clients.

mod common;

use common::TestServer;
use inferd::load::{self, LoadArgs, Protocol};
use inferd::serve::ServeConfig;
use std::process::Command;
use std::time::{Duration, Instant};

fn quick(url: &str, protocol: Protocol, model: &str) -> LoadArgs {
    let mut a = LoadArgs::new(url, protocol, model);
    a.warmup_s = 0.2;
    a.duration_s = Some(2.0);
    a.timeout_s = 20.0;
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_reports_throughput_latency_and_writes_reports() {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick(&server.url, Protocol::Kserve, "lightsb");
    args.concurrency = 8;
    args.json = Some(dir.path().join("report.json"));
    args.html = Some(dir.path().join("report.html"));
    let report = load::run(&args).await.unwrap();
    println!("{}", report.summary());
    assert!(report.ok > 0 && report.requests_per_s > 0.0);
    assert_eq!(report.error_count(), 0, "{:?}", report.error_messages);
    let l = report.latency.as_ref().unwrap();
    assert!(l.min_ms <= l.p50_ms && l.p50_ms <= l.p99_ms && l.p99_ms <= l.max_ms);
    assert!(report.bytes_sent > 0 && report.bytes_received > 0);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["ok"].as_u64(), Some(report.ok));
    assert!(json["latency"]["p999_ms"].as_f64().unwrap() > 0.0);
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Latency histogram"));
    // The server counted what the generator sent.
    let served = common::metric(
        &server.metrics(),
        &["inferd_requests_total", "model=\"lightsb\"", "code=\"OK\""],
    );
    assert!(served >= report.ok as f64, "server counted {served}");

    // Every payload kind the generator makes for the shipped models is accepted.
    for (protocol, model) in [
        (Protocol::Kserve, "lcm"),
        (Protocol::Kserve, "recon"),
        (Protocol::Bridge, "lightsb"),
        (Protocol::Recon, ""),
        (Protocol::Live, ""),
        (Protocol::Health, ""),
    ] {
        let mut a = quick(&server.url, protocol, model);
        a.concurrency = 2;
        a.duration_s = None;
        a.requests = Some(4);
        a.size = 64;
        a.coils = 2;
        let r = load::run(&a).await.unwrap();
        assert_eq!(
            (r.ok, r.error_count()),
            (4, 0),
            "{protocol:?} {model}: {:?}",
            r.error_messages
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_counted_as_resource_exhausted_not_a_hang() {
    let mut config = ServeConfig::for_tests();
    config.queue_capacity = 1;
    config.model_queue_capacity = 1;
    let server = TestServer::start(config).await;
    let mut args = quick(&server.url, Protocol::Kserve, "recon");
    args.concurrency = 16;
    args.size = 128;
    args.duration_s = Some(4.0);
    let start = Instant::now();
    let report = load::run(&args).await.unwrap();
    println!("{}", report.summary());
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "the run must end by itself"
    );
    assert!(report.ok > 0);
    let refused = report.errors.get("ResourceExhausted").copied().unwrap_or(0);
    assert!(refused > 0, "expected refusals: {:?}", report.errors);
    assert_eq!(refused, report.error_count(), "{:?}", report.error_messages);
    assert!(report.error_messages["ResourceExhausted"].contains("limit 1"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rate_sends_the_asked_number_of_requests() {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let mut args = quick(&server.url, Protocol::Live, "");
    args.rate = Some(200.0);
    args.duration_s = Some(1.5);
    args.warmup_s = 0.0;
    let report = load::run(&args).await.unwrap();
    // 300 due in the window; a loaded 2-core machine may finish a few late but none go missing.
    assert_eq!(report.requests, 300, "{}", report.summary());
    assert_eq!(report.error_count(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_load_and_health_check() {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let bin = env!("CARGO_BIN_EXE_inferd");
    let dir = tempfile::tempdir().unwrap();
    let (url, json) = (server.url.clone(), dir.path().join("r.json"));
    let (out, health, closed) = tokio::task::spawn_blocking(move || {
        let out = common::run(Command::new(bin).args([
            "load",
            "--addr",
            &url,
            "--protocol",
            "kserve",
            "--model",
            "lightsb",
            "-c",
            "4",
            "--requests",
            "200",
            "--json",
            json.to_str().unwrap(),
        ]));
        let health = Command::new(bin)
            .args(["health", "--addr", &url])
            .output()
            .unwrap();
        // A port nobody listens on: the check fails with exit code 1, quickly.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = format!("http://{}", free.local_addr().unwrap());
        drop(free);
        let closed = Command::new(bin)
            .args(["health", "--addr", &dead, "--timeout-s", "2"])
            .output()
            .unwrap();
        (out, health, closed)
    })
    .await
    .unwrap();
    println!("{out}");
    assert!(out.contains("ok 200"), "{out}");
    assert!(dir.path().join("r.json").exists());
    assert!(health.status.success());
    assert_eq!(String::from_utf8_lossy(&health.stdout).trim(), "SERVING");
    assert_eq!(closed.status.code(), Some(1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connection_age_rotates_connections_without_failing_grpc_clients() {
    let mut config = ServeConfig::for_tests();
    config.max_connection_age_s = Some(1);
    let server = TestServer::start(config).await;
    let target = server.url.trim_start_matches("http://").to_string();
    let script = common::repo().join("tests/reference/connection_age.py");
    let out = tokio::task::spawn_blocking(move || {
        common::run(common::python().arg(script).arg(target).arg("4"))
    })
    .await
    .unwrap();
    println!("{out}");
    let last = out.lines().last().unwrap();
    assert!(last.ends_with("errors=0"), "{out}");
    let ok: u64 = last
        .trim_start_matches("ok=")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ok > 100, "{out}");
    server.stop().await;
}
