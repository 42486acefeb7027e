//! The serving core over real gRPC connections: KServe v2 calls, overload, deadlines, priorities,
//! compression, bearer tokens, TLS and mutual TLS, and the Prometheus metrics that record them.

mod common;

use common::{metric, pki::Pki, TestServer};
use inferd::api::kserve::pb::{
    self, grpc_inference_service_client::GrpcInferenceServiceClient,
    infer_parameter::ParameterChoice, model_infer_request::InferInputTensor, InferParameter,
};
use inferd::api::kserve::{f32_raw, raw_f32};
use inferd::mri::{fft, masks, metrics, phantom};
use inferd::serve::{config::Secret, ServeConfig};
use std::time::{Duration, Instant};
use tonic::codec::CompressionEncoding;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::Code;

type Client = GrpcInferenceServiceClient<Channel>;

async fn client(url: &str) -> Client {
    GrpcInferenceServiceClient::connect(url.to_string())
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// A single-coil `recon` request of `b` synthetic n×n slices at 4× (1D variable density), and the
/// ground-truth magnitudes.
fn recon_request(n: usize, b: usize, seed: u64) -> (pb::ModelInferRequest, Vec<Vec<f32>>) {
    let mut gen = phantom::SyntheticMr::new(seed);
    let (mut kspace, mut mask, mut truth) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..b {
        let img = gen.sample(n, n);
        let mut k = img.complex.clone();
        fft::fft2c(&mut k, n, n);
        let m = masks::MaskSpec {
            pattern: masks::Pattern::VariableDensity1d,
            acceleration: 4.0,
            center_fraction: None,
            seed: seed + i as u64,
        }
        .generate(n, n)
        .unwrap();
        for (v, &w) in k.iter().zip(&m) {
            kspace.extend([v.re * w, v.im * w]);
        }
        mask.extend_from_slice(&m);
        truth.push(img.magnitude);
    }
    let (b, n) = (b as i64, n as i64);
    let req = pb::ModelInferRequest {
        model_name: "recon".into(),
        id: format!("req-{seed}"),
        inputs: vec![
            InferInputTensor {
                name: "kspace".into(),
                datatype: "FP32".into(),
                shape: vec![b, 1, n, n, 2],
                ..Default::default()
            },
            InferInputTensor {
                name: "mask".into(),
                datatype: "FP32".into(),
                shape: vec![b, n, n],
                ..Default::default()
            },
        ],
        raw_input_contents: vec![f32_raw(&kspace), f32_raw(&mask)],
        ..Default::default()
    };
    (req, truth)
}

fn image(resp: &pb::ModelInferResponse) -> Vec<f32> {
    raw_f32(&resp.raw_output_contents[0])
}

fn param(choice: ParameterChoice) -> InferParameter {
    InferParameter {
        parameter_choice: Some(choice),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_metadata_infer_stream_and_compression() {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let mut c = client(&server.url).await;
    assert!(
        c.server_live(pb::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        c.server_ready(pb::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let md = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "recon".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let inputs: Vec<(&str, &[i64])> = md
        .inputs
        .iter()
        .map(|t| (t.name.as_str(), t.shape.as_slice()))
        .collect();
    assert_eq!(
        inputs,
        vec![
            ("kspace", &[-1, -1, -1, -1, 2][..]),
            ("mask", &[-1, -1, -1][..])
        ]
    );
    let unknown = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        unknown.message().contains("recon-unrolled"),
        "{}",
        unknown.message()
    );

    // A batch of two slices in one request: each comes back better than zero-filling.
    let n = 64;
    let (req, truth) = recon_request(n, 2, 11);
    let resp = c.model_infer(req.clone()).await.unwrap().into_inner();
    assert_eq!(resp.outputs[0].shape, vec![2, n as i64, n as i64]);
    assert_eq!(resp.id, "req-11");
    let img = image(&resp);
    for (i, t) in truth.iter().enumerate() {
        let ssim = metrics::ssim(t, &img[i * n * n..(i + 1) * n * n], n, n);
        assert!(ssim > 0.5, "slice {i}: SSIM {ssim}");
    }

    // The same request compressed with gzip and with zstd gives the same image.
    for enc in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut cc = client(&server.url).await.send_compressed(enc);
        let again = image(&cc.model_infer(req.clone()).await.unwrap().into_inner());
        assert_eq!(again, img, "{enc:?}");
    }

    // Streaming: answers in request order, a bad request answered in place without ending the stream.
    let mut bad = req.clone();
    bad.inputs[1].shape = vec![2, n as i64, n as i64 + 1];
    let reqs = vec![req.clone(), bad, req.clone()];
    let mut stream = c
        .model_stream_infer(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut answers = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        answers.push(m);
    }
    assert_eq!(answers.len(), 3);
    assert!(answers[0].error_message.is_empty());
    assert!(
        answers[1].error_message.contains("InvalidArgument"),
        "{}",
        answers[1].error_message
    );
    assert_eq!(image(answers[2].infer_response.as_ref().unwrap()), img);

    let config = c
        .model_config(pb::ModelConfigRequest {
            name: "recon".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(config.max_batch_size, 4);
    assert_eq!(config.input[0].dims, vec![-1, -1, -1, 2]);

    let text = server.metrics();
    assert!(
        metric(
            &text,
            &[
                "inferd_requests_total",
                "model=\"recon-unrolled\"",
                "protocol=\"kserve\"",
                "code=\"OK\""
            ]
        ) >= 5.0,
        "{text}"
    );
    assert!(metric(&text, &["inferd_batch_size_count", "recon-unrolled"]) >= 1.0);
    assert!(text.contains("inferd_queue_seconds_bucket"));
    assert!(text.contains("inferd_compute_seconds_sum"));
    assert!(text.contains("inferd_inflight_requests"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_bad_input_gets_invalid_argument() {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let mut c = client(&server.url).await;
    let (good, _) = recon_request(32, 1, 3);
    let cases: Vec<(&str, Box<dyn Fn(&mut pb::ModelInferRequest)>)> = vec![
        (
            "expected FP32",
            Box::new(|r| r.inputs[0].datatype = "FP64".into()),
        ),
        (
            "expected [-1, -1, -1, -1, 2]",
            Box::new(|r| r.inputs[0].shape = vec![1, 32, 32, 2]),
        ),
        (
            "raw bytes",
            Box::new(|r| r.raw_input_contents[0].truncate(100)),
        ),
        (
            "missing input mask",
            Box::new(|r| {
                r.inputs.truncate(1);
                r.raw_input_contents.truncate(1);
            }),
        ),
        (
            "non-finite",
            Box::new(|r| r.raw_input_contents[0][0..4].copy_from_slice(&f32::NAN.to_le_bytes())),
        ),
        (
            "only 0 (not sampled) or 1",
            Box::new(|r| r.raw_input_contents[1][0..4].copy_from_slice(&0.5f32.to_le_bytes())),
        ),
        (
            "expected 8 to 1024",
            Box::new(|r| {
                r.inputs[0].shape = vec![1, 1, 4, 4, 2];
                r.inputs[1].shape = vec![1, 4, 4];
                r.raw_input_contents = vec![vec![0; 128], f32_raw(&[1.0; 16])];
            }),
        ),
        (
            "unknown; expected hard, soft, cg, sense, off or model",
            Box::new(|r| {
                r.parameters.insert(
                    "data_consistency".into(),
                    param(ParameterChoice::StringParam("maybe".into())),
                );
            }),
        ),
        (
            "priority 7 does not exist",
            Box::new(|r| {
                r.parameters
                    .insert("priority".into(), param(ParameterChoice::Uint64Param(7)));
            }),
        ),
        (
            "requested output \"label\"",
            Box::new(|r| {
                r.outputs
                    .push(pb::model_infer_request::InferRequestedOutputTensor {
                        name: "label".into(),
                        ..Default::default()
                    })
            }),
        ),
    ];
    for (expected, change) in cases {
        let mut r = good.clone();
        change(&mut r);
        let s = c.model_infer(r).await.unwrap_err();
        common::assert_invalid(&s, expected);
    }
    let mut r = good.clone();
    r.model_name = "nope".into();
    assert_eq!(c.model_infer(r).await.unwrap_err().code(), Code::NotFound);
    let mut r = good.clone();
    r.model_version = "7".into();
    assert_eq!(c.model_infer(r).await.unwrap_err().code(), Code::NotFound);
    // Still serving.
    c.model_infer(good).await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_refuses_some_at_once_loses_none_and_recovers() {
    let server = TestServer::start(ServeConfig {
        queue_capacity: 4,
        model_queue_capacity: 4,
        max_batch: Some(1),
        ..ServeConfig::for_tests()
    })
    .await;
    let (req, _) = recon_request(96, 1, 5);
    let calls: Vec<_> = (0..24)
        .map(|_| {
            let (url, req) = (server.url.clone(), req.clone());
            tokio::spawn(async move {
                let mut c = client(&url).await;
                tokio::time::timeout(Duration::from_secs(120), c.model_infer(req)).await
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for call in calls {
        match call.await.unwrap().expect("a request hung") {
            Ok(r) => {
                assert_eq!(r.into_inner().outputs[0].shape, vec![1, 96, 96]);
                ok += 1
            }
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{}", s.message());
                assert!(s.message().contains("limit 4"), "{}", s.message());
                refused += 1;
            }
        }
    }
    println!("{ok} served, {refused} refused");
    assert!(ok >= 4 && refused >= 1, "{ok} served, {refused} refused");
    assert_eq!(ok + refused, 24);
    let text = server.metrics();
    assert_eq!(
        metric(
            &text,
            &["inferd_requests_total", "code=\"RESOURCE_EXHAUSTED\""]
        ),
        refused as f64
    );
    assert_eq!(
        metric(&text, &["inferd_requests_total", "code=\"OK\""]),
        ok as f64
    );
    assert_eq!(metric(&text, &["inferd_inflight_requests "]), 0.0, "{text}");
    let mut c = client(&server.url).await;
    assert!(
        c.server_ready(pb::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    c.model_infer(req).await.unwrap();
    server.stop().await;
}

type Blockers =
    Vec<tokio::task::JoinHandle<Result<tonic::Response<pb::ModelInferResponse>, tonic::Status>>>;

/// A server with one worker and batches of one, whose worker is kept busy by `count` slow requests
/// (256², 8 coils) sent 200 ms before this returns; await the blockers at the end.
/// A request that keeps one worker busy for a while: 256², 8 coils (the same slice per coil).
fn slow_request() -> pb::ModelInferRequest {
    let n = 256;
    let (mut req, _) = recon_request(n, 1, 9);
    let k = req.raw_input_contents[0].clone();
    req.raw_input_contents[0] = k.repeat(8);
    req.inputs[0].shape = vec![1, 8, n as i64, n as i64, 2];
    req
}

async fn busy_server(count: usize) -> (TestServer, Blockers) {
    busy_server_with(count, ServeConfig::for_tests()).await
}

async fn busy_server_with(count: usize, config: ServeConfig) -> (TestServer, Blockers) {
    let server = TestServer::start(ServeConfig {
        max_batch: Some(1),
        ..config
    })
    .await;
    let req = slow_request();
    let blockers = (0..count)
        .map(|_| {
            let (url, req) = (server.url.clone(), req.clone());
            tokio::spawn(async move { client(&url).await.model_infer(req).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    (server, blockers)
}

async fn finish(blockers: Blockers) {
    for b in blockers {
        b.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_past_its_deadline_never_reaches_the_device() {
    let (server, blockers) = busy_server(2).await;
    let (req, _) = recon_request(32, 1, 2);

    // The client's gRPC deadline (grpc-timeout). tonic enforces it on both sides and reports
    // CANCELLED "Timeout expired" (other gRPC stacks say DEADLINE_EXCEEDED); either way the call
    // ends at its deadline, and the server drops the queued work (checked in the metrics below).
    let mut timed = tonic::Request::new(req.clone());
    timed.set_timeout(Duration::from_millis(100));
    let t = Instant::now();
    let s = client(&server.url)
        .await
        .model_infer(timed)
        .await
        .unwrap_err();
    assert!(
        s.code() == Code::DeadlineExceeded
            || (s.code() == Code::Cancelled && s.message().contains("Timeout expired")),
        "{s:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));

    // Server-side `timeout` parameter (microseconds): the queue drops it and says so.
    let mut r = req.clone();
    r.parameters.insert(
        "timeout".into(),
        param(ParameterChoice::Int64Param(100_000)),
    );
    let s = client(&server.url).await.model_infer(r).await.unwrap_err();
    assert_eq!(s.code(), Code::DeadlineExceeded, "{}", s.message());
    assert!(s.message().contains("in the queue"), "{}", s.message());

    finish(blockers).await;
    let text = server.metrics();
    let dropped = metric(&text, &["inferd_dropped_total", "recon-unrolled"]);
    assert!(dropped >= 2.0, "{text}");
    // Only the two slow requests (and nothing dropped) ran on the device.
    assert_eq!(
        metric(&text, &["inferd_batch_size_count", "recon-unrolled"]),
        2.0,
        "{text}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_overtakes_queued_normal_work() {
    let config = ServeConfig {
        high_priority_clients: vec!["127.0.0.1".parse().unwrap()],
        // strict priority: on a loaded machine the normal requests could otherwise age into the
        // high-priority lane before the high-priority request arrives
        priority_aging_ms: 0,
        ..ServeConfig::for_tests()
    };
    let (server, blockers) = busy_server_with(3, config).await;
    let (req, _) = recon_request(128, 1, 4);
    let spawn = |priority: u64| {
        let (url, mut r) = (server.url.clone(), req.clone());
        r.parameters.insert(
            "priority".into(),
            param(ParameterChoice::Uint64Param(priority)),
        );
        tokio::spawn(async move {
            client(&url).await.model_infer(r).await.unwrap();
            Instant::now()
        })
    };
    let normal: Vec<_> = (0..4).map(|_| spawn(2)).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let high = spawn(1);
    let high_done = high.await.unwrap();
    let mut later = 0;
    for n in normal {
        if n.await.unwrap() > high_done {
            later += 1;
        }
    }
    // The worker was busy, so the high-priority request ran right after the blocker: at least three
    // of the four normal requests queued before it finish after it.
    assert!(
        later >= 3,
        "only {later} normal requests finished after the high-priority one"
    );
    finish(blockers).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_fill_the_queue_nor_claim_high_priority_unless_configured() {
    // Three items per client, one worker, batches of one: of twelve slow requests sent at once by
    // one client, three are admitted and the rest refused at once, naming the client and the limit.
    let server = TestServer::start(ServeConfig {
        client_queue_limit: 3,
        max_batch: Some(1),
        ..ServeConfig::for_tests()
    })
    .await;
    let req = slow_request();
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let (url, req) = (server.url.clone(), req.clone());
            tokio::spawn(async move { client(&url).await.model_infer(req).await })
        })
        .collect();
    let (ok, refused) =
        common::served_and_refused(calls, &["limit per client is 3", "ip:127.0.0.1"]).await;
    assert!(ok >= 3 && refused >= 1, "{ok} served, {refused} refused");
    // Nobody is configured for high priority: asking for it is refused, and says why.
    let (mut high, _) = recon_request(64, 1, 3);
    high.parameters
        .insert("priority".into(), param(ParameterChoice::Uint64Param(1)));
    let s = client(&server.url)
        .await
        .model_infer(high)
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{}", s.message());
    assert!(
        s.message().contains("--high-priority-clients"),
        "{}",
        s.message()
    );
    // The places came back: the client is served again.
    client(&server.url).await.model_infer(req).await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_guards_every_rpc_but_health() {
    let token = "a-long-enough-test-token";
    let server = TestServer::start(ServeConfig {
        auth_token: Some(Secret(token.into())),
        ..ServeConfig::for_tests()
    })
    .await;
    let ch = Channel::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = GrpcInferenceServiceClient::new(ch.clone());
    let s = c.server_live(pb::ServerLiveRequest {}).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    let with = |t: &str| {
        let mut r = tonic::Request::new(pb::ServerLiveRequest {});
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
        r
    };
    let s = c
        .server_live(with("wrong-token-of-some-length"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(c.server_live(with(token)).await.unwrap().into_inner().live);
    let mut recon = inferd::api::pb::reconstruction_client::ReconstructionClient::new(ch.clone());
    let s = recon
        .list_models(inferd::api::pb::ListModelsRequest {})
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    server.stop().await;
}

async fn tls_live(url: &str, tls: ClientTlsConfig) -> Result<bool, String> {
    let ch = Channel::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    GrpcInferenceServiceClient::new(ch)
        .server_live(pb::ServerLiveRequest {})
        .await
        .map(|r| r.into_inner().live)
        .map_err(|s| format!("{s:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls_handshakes() {
    let pki = Pki::new();
    let ca = Certificate::from_pem(pki.read("ca.pem"));
    let base = ClientTlsConfig::new()
        .ca_certificate(ca)
        .domain_name("localhost");

    // TLS: a client trusting the CA connects; a plain-text client does not.
    let server = TestServer::start(ServeConfig {
        tls_cert: Some(pki.path("server.pem")),
        tls_key: Some(pki.path("server.key")),
        ..ServeConfig::for_tests()
    })
    .await;
    let https = server.url.replace("http://", "https://");
    assert_eq!(tls_live(&https, base.clone()).await, Ok(true));
    let plain = async {
        let mut c = GrpcInferenceServiceClient::connect(server.url.clone())
            .await
            .ok()?;
        c.server_live(pb::ServerLiveRequest {}).await.ok()
    };
    assert!(tokio::time::timeout(Duration::from_secs(10), plain)
        .await
        .ok()
        .flatten()
        .is_none());
    server.stop().await;

    // Mutual TLS: the client certificate signed by the configured CA is accepted; none, or one
    // signed by another CA, is refused.
    let server = TestServer::start(ServeConfig {
        tls_cert: Some(pki.path("server.pem")),
        tls_key: Some(pki.path("server.key")),
        tls_client_ca: Some(pki.path("ca.pem")),
        ..ServeConfig::for_tests()
    })
    .await;
    let https = server.url.replace("http://", "https://");
    assert_eq!(
        tls_live(&https, base.clone().identity(pki.identity("client"))).await,
        Ok(true)
    );
    assert!(
        tls_live(&https, base.clone()).await.is_err(),
        "no client certificate was accepted"
    );
    assert!(
        tls_live(&https, base.clone().identity(pki.identity("intruder")))
            .await
            .is_err(),
        "a client certificate from another CA was accepted"
    );
    // `inferd health` and `inferd load` over mutual TLS: with the client certificate they work,
    // without it the health check reports failure instead of hanging.
    let mut health = inferd::client::health::HealthArgs {
        addr: https.clone(),
        service: String::new(),
        timeout_s: 5.0,
        tls: inferd::client::TlsArgs {
            tls_ca: Some(pki.path("ca.pem")),
            tls_domain: Some("localhost".into()),
            tls_cert: Some(pki.path("client.pem")),
            tls_key: Some(pki.path("client.key")),
        },
    };
    assert_eq!(
        inferd::client::health::check(&health).await.unwrap(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let mut load = inferd::load::LoadArgs::new(&https, inferd::load::Protocol::Kserve, "lightsb");
    load.tls = health.tls.clone();
    load.requests = Some(20);
    load.warmup_s = 0.0;
    let report = inferd::load::run(&load).await.unwrap();
    assert_eq!((report.ok, report.error_count()), (20, 0));
    health.tls.tls_cert = None;
    health.tls.tls_key = None;
    assert!(inferd::client::health::check(&health).await.is_err());
    server.stop().await;
}
