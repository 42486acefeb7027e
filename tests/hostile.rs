//! Requests that try to take the server down: headers that declare a few KB of input expanding to
//! many GiB (radial size × coils on the streaming API and on KServe, a graph of 2^25 nodes, bridge
//! shapes that wrap and samples × trajectory steps), streams that stop sending, thousands of idle
//! streams, a flood of stream resets, TLS clients that never finish their handshake, a slowloris
//! client on the metrics port. Each ends in a clean status naming the limit (or a closed
//! connection), health answers within 100 ms throughout (probed every 20 ms on new connections), and
//! a normal request succeeds right after each case; the expanding requests are also sent to the real
//! binary under a 4 GiB address-space limit, and the admission estimate is checked against the
//! binary's measured peak memory. The cases run one at a time (they measure latency).

mod common;

use common::{HealthWatch, TestServer};
use inferd::api::pb::{
    self, bridge_client::BridgeClient, graph_client::GraphClient, graph_request::Msg as GraphMsg,
    recon_request, reconstruction_client::ReconstructionClient,
};
use inferd::api::tensor;
use inferd::serve::limits::TransportLimits;
use inferd::serve::ServeConfig;
use num_complex::Complex32;
use std::time::{Duration, Instant};
use tonic::Code;

/// Health must answer within this while any case runs.
const HEALTH_LIMIT: Duration = Duration::from_millis(100);

/// Held by every case: they measure latency, so they do not share the machine with each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn header(n: u32, coils: u32, sampling: Option<pb::Sampling>) -> pb::ReconHeader {
    pb::ReconHeader {
        height: n,
        width: n,
        coils,
        slices: 1,
        sampling,
        return_zero_filled: true,
        request_id: "hostile".into(),
        ..Default::default()
    }
}

fn radial(spokes: u32, readout: u32) -> pb::Sampling {
    pb::Sampling {
        kind: Some(pb::sampling::Kind::Radial(pb::RadialTrajectory {
            spokes,
            readout,
            ..Default::default()
        })),
    }
}

/// A small Cartesian slice reconstructs: the server is still fully working.
async fn normal_request_succeeds(url: &str) {
    let n = 32;
    let k: Vec<Complex32> = (0..n * n)
        .map(|i| Complex32::new((i % 7) as f32, (i % 3) as f32))
        .collect();
    let reqs = common::recon_requests(
        header(n as u32, 1, Some(pb::Sampling::variable_density(4.0, 1))),
        &[(vec![1, n, n], k)],
    );
    let images = common::reconstruct(url, reqs).await.unwrap();
    assert_eq!(images.len(), 1);
    assert!(common::health(url).await < Duration::from_secs(1));
}

fn assert_exhausted(s: &tonic::Status, needle: &str) {
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(
        s.message().contains(needle),
        "{s:?} should mention {needle:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expanding_headers_are_refused_before_allocation() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = TestServer::start(ServeConfig {
        max_request_mb: 1024,
        ..ServeConfig::for_tests()
    })
    .await;
    let watch = HealthWatch::on(&server.url);
    expanding_requests(&server.url).await;
    watch
        .assert_within(HEALTH_LIMIT, "expanding requests")
        .await;
    server.stop().await;
}

/// Every expanding request, each refused and followed by a normal request that must succeed
/// (the server runs with `--max-request-mb 1024`).
async fn expanding_requests(url: &str) {
    let url = url.to_string();
    // StreamReconstruct: 128 coils at 1024², radial, slices of 2 samples per coil (a few KB sent,
    // several GiB of coil images, sensitivities and CG vectors if admitted).
    let k = vec![Complex32::new(1.0, 0.0); 128 * 2];
    let reqs = common::recon_requests(header(1024, 128, Some(radial(1, 2))), &[(vec![128, 2], k)]);
    let s = common::reconstruct(&url, reqs).await.unwrap_err();
    assert_exhausted(&s, "--max-request-mb");
    assert!(s.message().contains("128 coils at 1024x1024"), "{s:?}");
    normal_request_succeeds(&url).await;

    // The same on the unary API, Cartesian.
    let mut c = ReconstructionClient::connect(url.clone()).await.unwrap();
    let s = c
        .reconstruct_slice(pb::ReconstructSliceRequest {
            header: Some(header(1024, 128, None)),
            slice: Some(pb::KSpaceSlice {
                index: 0,
                kspace: Some(tensor::encode_c64(&[1, 1, 1], &[Complex32::default()])),
                mask: None,
            }),
        })
        .await
        .unwrap_err();
    assert_exhausted(&s, "MiB");
    normal_request_succeeds(&url).await;

    // KServe recon-radial: C = 128, one spoke of 2 samples, image_size 1024.
    use inferd::api::kserve::pb::{
        grpc_inference_service_client::GrpcInferenceServiceClient,
        infer_parameter::ParameterChoice, model_infer_request::InferInputTensor, InferParameter,
        ModelInferRequest,
    };
    let input = |name: &str, shape: &[i64], values: usize| {
        (
            InferInputTensor {
                name: name.into(),
                datatype: "FP32".into(),
                shape: shape.to_vec(),
                ..Default::default()
            },
            inferd::api::kserve::f32_raw(&vec![0.25; values]),
        )
    };
    let (k, kraw) = input("kspace", &[1, 128, 1, 2, 2], 128 * 2 * 2);
    let (t, traj) = input("traj", &[1, 1, 2, 2], 4);
    let mut kc = GrpcInferenceServiceClient::connect(url.clone())
        .await
        .unwrap();
    let s = kc
        .model_infer(ModelInferRequest {
            model_name: "recon-radial".into(),
            inputs: vec![k, t],
            raw_input_contents: vec![kraw, traj],
            parameters: [(
                "image_size".to_string(),
                InferParameter {
                    parameter_choice: Some(ParameterChoice::Int64Param(1024)),
                },
            )]
            .into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_exhausted(&s, "radial slices of 128 coils at 1024x1024");
    normal_request_succeeds(&url).await;

    // Graph/Aggregate declaring 2^25 nodes of 8 features (1 GiB of features alone, and the
    // model's hidden activations on top): refused at the header.
    let mut g = GraphClient::connect(url.clone()).await.unwrap();
    let reqs = vec![pb::GraphRequest {
        msg: Some(GraphMsg::Header(pb::GraphHeader {
            model: "lcm".into(),
            nodes: 1 << 25,
            features: 8,
            ..Default::default()
        })),
    }];
    let s = match g.aggregate(tokio_stream::iter(reqs)).await {
        Err(s) => s,
        Ok(r) => r.into_inner().message().await.unwrap_err(),
    };
    assert_exhausted(&s, "33554432 nodes");
    normal_request_succeeds(&url).await;

    // Bridge/Sample: a shape whose element count wraps (2^62 rows, no data), and the most samples
    // times the longest trajectory.
    let b = BridgeClient::connect(url.clone()).await.unwrap();
    let sample = |req: pb::BridgeRequest| {
        let mut b = b.clone();
        async move {
            match b.sample(req).await {
                Err(s) => s,
                Ok(r) => {
                    let mut r = r.into_inner();
                    loop {
                        match r.message().await {
                            Ok(Some(_)) => continue,
                            Ok(None) => panic!("an expanding bridge request was served"),
                            Err(s) => break s,
                        }
                    }
                }
            }
        }
    };
    let s = sample(pb::BridgeRequest {
        x: Some(pb::Tensor {
            shape: vec![1 << 62, 2],
            dtype: pb::DataType::Float32 as i32,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let s = sample(pb::BridgeRequest {
        x: Some(tensor::encode_f32(&[1, 2], &[0.0, 0.0])),
        num_samples: u32::MAX,
        what: Some(pb::bridge_request::What::Trajectory(pb::Trajectory {
            steps: 10_000,
            ..Default::default()
        })),
        ..Default::default()
    })
    .await;
    assert!(
        matches!(s.code(), Code::InvalidArgument | Code::ResourceExhausted),
        "{s:?}"
    );
    normal_request_succeeds(&url).await;
}

/// One stream that sends its header and then nothing; returns how it ended.
async fn idle_stream(ch: tonic::transport::Channel) -> tonic::Status {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::ReconRequest {
        msg: Some(recon_request::Msg::Header(header(
            32,
            1,
            Some(pb::Sampling::variable_density(4.0, 1)),
        ))),
    })
    .await
    .unwrap();
    let mut c = ReconstructionClient::new(ch);
    let r = c
        .stream_reconstruct(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    let status = match r {
        Err(s) => s,
        Ok(r) => r.into_inner().message().await.unwrap_err(),
    };
    drop(tx);
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_streams_are_closed_and_release_their_slots() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = TestServer::start(ServeConfig {
        transport: TransportLimits {
            stream_idle_timeout_s: 1,
            ..Default::default()
        },
        ..ServeConfig::for_tests()
    })
    .await;
    let connect = || async {
        tonic::transport::Channel::from_shared(server.url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let t = Instant::now();
    let s = idle_stream(connect().await).await;
    assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
    assert!(s.message().contains("no message for 1 s"), "{s:?}");
    assert!(t.elapsed() < Duration::from_secs(10));

    // 2 000 idle streams on 8 connections: 128 at a time per connection by the server's limit (the
    // rest wait in HTTP/2 flow control). All are closed, health answers meanwhile, and the server
    // works afterwards.
    let watch = HealthWatch::on(&server.url);
    let t = Instant::now();
    let mut streams = Vec::new();
    for _ in 0..8 {
        let ch = connect().await;
        streams.extend((0..250).map(|_| tokio::spawn(idle_stream(ch.clone()))));
    }
    for s in streams {
        let s = s.await.unwrap();
        assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
    }
    println!("2000 idle streams closed after {:?}", t.elapsed());
    watch.assert_within(HEALTH_LIMIT, "2000 idle streams").await;
    normal_request_succeeds(&server.url).await;
    server.stop().await;
}

/// HTTP/2 "rapid reset": one connection opens streams and cancels each at once, as fast as it can.
/// The server answers with GOAWAY (ENHANCE_YOUR_CALM) and closes the connection within a few
/// thousand streams; health and other clients are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reset_flood_is_cut_off() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let watch = HealthWatch::on(&server.url);
    let authority = server.url.trim_start_matches("http://").to_string();
    let tcp = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut sent = 0u32;
    while sent < 100_000 {
        let Ok(ready) = client.ready().await else {
            break;
        };
        client = ready;
        let request = http::Request::post(format!(
            "http://{authority}/inferd.v1.Reconstruction/ReconstructSlice"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
        let Ok((_response, mut stream)) = client.send_request(request, false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the server kept the flooding connection open")
        .unwrap();
    println!("reset flood: {sent} streams opened and reset, then {ended:?}");
    // GOAWAY ENHANCE_YOUR_CALM, or (when the client is still writing as the server hangs up) the
    // closed socket: either way the server ended the connection, after a few thousand streams
    let err = ended.expect_err("the flooding connection ended cleanly");
    assert!(
        err.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) || err.is_io(),
        "{err:?}"
    );
    assert!(sent < 20_000, "{sent} reset streams were accepted");
    watch.assert_within(HEALTH_LIMIT, "reset flood").await;
    normal_request_succeeds(&server.url).await;
    server.stop().await;
}

/// TLS clients that connect and never finish the handshake (silent, or half a ClientHello) are
/// dropped after `--tls-handshake-timeout-s`; meanwhile real TLS clients connect and are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_that_never_finish_their_handshake_are_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _one = ONE_AT_A_TIME.lock().await;
    let pki = common::pki::Pki::new();
    let server = TestServer::start(ServeConfig {
        tls_cert: Some(pki.path("server.pem")),
        tls_key: Some(pki.path("server.key")),
        transport: TransportLimits {
            tls_handshake_timeout_s: 1,
            ..Default::default()
        },
        ..ServeConfig::for_tests()
    })
    .await;
    let endpoint =
        tonic::transport::Endpoint::from_shared(server.url.replace("http://", "https://"))
            .unwrap()
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pki.read("ca.pem")))
                    .domain_name("localhost"),
            )
            .unwrap();
    let authority = server.url.trim_start_matches("http://").to_string();
    let t = Instant::now();
    let mut stalled = Vec::new();
    for i in 0..200 {
        let mut s = tokio::net::TcpStream::connect(&authority).await.unwrap();
        if i % 2 == 1 {
            // a TLS 1.2 record header announcing a 512-byte handshake message, then silence
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
                .await
                .unwrap();
        }
        stalled.push(s);
    }
    let watch = HealthWatch::start(endpoint.clone());
    for _ in 0..5 {
        common::health_on(endpoint.clone()).await;
    }
    let closed = stalled.into_iter().map(|mut s| {
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            // end of stream or a reset: the server closed the connection
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
    });
    for c in closed.collect::<Vec<_>>() {
        tokio::time::timeout(Duration::from_secs(10), c)
            .await
            .expect("a stalled TLS connection stayed open")
            .unwrap();
    }
    println!("200 stalled TLS handshakes closed after {:?}", t.elapsed());
    watch
        .assert_within(HEALTH_LIMIT, "stalled TLS handshakes")
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_metrics_client_is_disconnected() {
    let _one = ONE_AT_A_TIME.lock().await;
    use std::io::{Read, Write};
    let server = TestServer::start(ServeConfig {
        transport: TransportLimits {
            metrics_timeout_s: 1,
            ..Default::default()
        },
        ..ServeConfig::for_tests()
    })
    .await;
    let addr = server.metrics_url.trim_start_matches("http://").to_string();
    // Slowloris: half a request line, then silence. The server closes the connection.
    let t = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metr").unwrap();
        let mut buf = [0u8; 256];
        matches!(s.read(&mut buf), Ok(_))
    })
    .await
    .unwrap();
    assert!(closed, "the metrics port kept a silent client open");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(server.metrics().contains("inferd_"));
    server.stop().await;
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kb * 1024
}

/// The admission estimate is an upper bound of what a slice really costs: the real binary's peak
/// resident memory grows by less than `slice_bytes` when a 16-coil 384² slice is reconstructed
/// (and by more than a tenth of it, so the bound is not vacuous).
/// The real binary serving on free loopback ports, started through `sh -c` with `limits` (shell
/// `ulimit` commands, may be empty) and `extra` flags; returns the child and the gRPC URL once ready.
async fn spawn_binary(limits: &str, extra: &str) -> (std::process::Child, String) {
    use common::orthanc::free_port;
    let (port, metrics_port) = (free_port(), free_port());
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{limits} exec \"$0\" serve --device cpu --cpu-threads 2 --addr 127.0.0.1:{port} \
             --metrics-addr 127.0.0.1:{metrics_port} {extra}"
        ))
        .arg(env!("CARGO_BIN_EXE_inferd"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let ready = format!("http://127.0.0.1:{metrics_port}/ready");
    let start = Instant::now();
    while common::http_request(&ready).map(|(c, _)| c) != Some(200) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "server not ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, url)
}

/// The shipped binary under a 4 GiB address-space limit (the cpu overlay's memory limit) survives
/// every expanding request: each is refused, and a normal request succeeds after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_under_a_4_gib_address_space_limit_survives_expanding_requests() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (mut child, url) = spawn_binary("ulimit -v 4194304;", "--max-request-mb 1024").await;
    let watch = HealthWatch::on(&url);
    expanding_requests(&url).await;
    watch
        .assert_within(HEALTH_LIMIT, "expanding requests, binary under ulimit -v")
        .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the server exited under the address-space limit"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admission_estimate_bounds_the_measured_peak_memory() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (mut child, url) = spawn_binary("", "").await;
    normal_request_succeeds(&url).await; // warm-up: models loaded, pools created
    let before = peak_rss(child.id());

    let (n, coils) = (384usize, 16usize);
    let k: Vec<Complex32> = (0..coils * n * n)
        .map(|i| {
            Complex32::new(
                ((i * 7919) % 1013) as f32 / 1013.0,
                ((i * 104729) % 997) as f32 / 997.0,
            )
        })
        .collect();
    let reqs = common::recon_requests(
        header(
            n as u32,
            coils as u32,
            Some(pb::Sampling::variable_density(4.0, 1)),
        ),
        &[(vec![coils, n, n], k)],
    );
    let images = common::reconstruct(&url, reqs).await.unwrap();
    assert_eq!(images.len(), 1);
    let growth = peak_rss(child.id()).saturating_sub(before);
    let estimate = inferd::api::validate::slice_bytes(n, n, coils, 0, 32).unwrap();
    println!(
        "{coils} coils at {n}²: peak RSS grew {} MiB, admission estimate {} MiB",
        growth >> 20,
        estimate >> 20
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        growth <= estimate,
        "measured {growth} B above the estimate {estimate} B"
    );
    assert!(
        growth * 10 >= estimate,
        "estimate {estimate} B is over 10× the measured {growth} B"
    );
}

/// The server-wide memory budget: while one stream holds its reservation, a second that does not
/// fit next to it is refused with RESOURCE_EXHAUSTED naming the budget; once the first ends, its
/// memory is given back and the second succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_refuses_what_does_not_fit_and_recovers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = TestServer::start(ServeConfig {
        max_request_mb: 200,
        memory_budget_mb: 200,
        ..ServeConfig::for_tests()
    })
    .await;
    // 256², 8 coils: about 132 MiB per slice in flight.
    let (n, coils) = (256usize, 8u32);
    let h = || {
        header(
            n as u32,
            coils,
            Some(pb::Sampling::variable_density(4.0, 1)),
        )
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::ReconRequest {
        msg: Some(recon_request::Msg::Header(h())),
    })
    .await
    .unwrap();
    let mut c = ReconstructionClient::connect(server.url.clone())
        .await
        .unwrap();
    let first = c
        .stream_reconstruct(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("the first stream is admitted");

    let k: Vec<Complex32> = (0..coils as usize * n * n)
        .map(|i| Complex32::new((i % 13) as f32, (i % 5) as f32))
        .collect();
    let second = || common::recon_requests(h(), &[(vec![coils as usize, n, n], k.clone())]);
    let s = common::reconstruct(&server.url, second())
        .await
        .unwrap_err();
    assert_exhausted(&s, "--memory-budget-mb");
    assert!(s.message().contains("of the server's 200 MiB"), "{s:?}");

    drop(tx);
    drop(first);
    let start = Instant::now();
    loop {
        match common::reconstruct(&server.url, second()).await {
            Ok(images) => {
                assert_eq!(images.len(), 1);
                break;
            }
            Err(s) if s.code() == Code::ResourceExhausted => {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "never released: {s:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => panic!("{s:?}"),
        }
    }
    server.stop().await;
}
