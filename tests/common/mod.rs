//! Helpers shared by the integration tests: external reference tools and an in-process server.
#![allow(dead_code)]

pub mod orthanc;
pub mod pki;

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command and fails the test with its output when it does not succeed.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot start {cmd:?}: {e} (is the reference tool installed? see .ci/run)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn python() -> Command {
    Command::new(std::env::var("INFERD_PYTHON").unwrap_or_else(|_| "python3".into()))
}

/// An MRD file written by the ISMRMRD tools' `ismrmrd_generate_cartesian_shepp_logan` with `args`.
pub fn shepp_logan_mrd(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    run(Command::new("ismrmrd_generate_cartesian_shepp_logan")
        .args(args)
        .arg("-o")
        .arg(&out)
        .current_dir(dir));
    out
}

pub fn bart(args: &[&str], dir: &Path) -> String {
    run(Command::new("bart").args(args).current_dir(dir))
}

/// A server on 127.0.0.1 with a free port (and a metrics port), serving until stopped.
pub struct TestServer {
    pub url: String,
    pub metrics_url: String,
    /// The MRD streaming port, when started with [`TestServer::start_with_mrd`].
    pub mrd_addr: Option<std::net::SocketAddr>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a server and waits until its health check says SERVING (models loaded, warmed up).
    pub async fn start(config: inferd::serve::ServeConfig) -> TestServer {
        Self::start_listeners(config, false).await
    }

    /// [`TestServer::start`] with the MRD streaming port open too.
    pub async fn start_with_mrd(config: inferd::serve::ServeConfig) -> TestServer {
        Self::start_listeners(config, true).await
    }

    async fn start_listeners(config: inferd::serve::ServeConfig, mrd: bool) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mrd = match mrd {
            true => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
            false => None,
        };
        let mrd_addr = mrd.as_ref().map(|l| l.local_addr().unwrap());
        let url = format!("http://{}", listener.local_addr().unwrap());
        let metrics_url = format!("http://{}", metrics.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(inferd::serve::serve_listeners(
            config,
            listener,
            Some(metrics),
            mrd,
            async move {
                let _ = rx.await;
            },
        ));
        // Ready = models loaded and warmed up (the same flag gRPC health reports); polled over the
        // plain-HTTP port so that TLS servers need no client certificate here.
        let ready = format!("{metrics_url}/ready");
        for _ in 0..1200 {
            if http_request(&ready).is_some_and(|(code, _)| code == 200) {
                return TestServer {
                    url,
                    metrics_url,
                    mrd_addr,
                    shutdown: Some(tx),
                    handle: Some(handle),
                };
            }
            if handle.is_finished() {
                panic!("server exited during start-up: {:?}", handle.await);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("server did not become ready");
    }

    /// The Prometheus text from the metrics port.
    pub fn metrics(&self) -> String {
        http_get(&format!("{}/metrics", self.metrics_url))
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }
}

/// A plain HTTP/1.1 GET (enough for the metrics port): status code and body, `None` if the
/// connection fails.
/// Polls `ok` every 50 ms until it holds; fails the test after 120 s.
pub fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

pub fn http_request(url: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = std::net::TcpStream::connect(host).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// GET that must answer 200; returns the body.
pub fn http_get(url: &str) -> String {
    match http_request(url) {
        Some((200, body)) => body,
        other => panic!("GET {url}: {other:?}"),
    }
}

/// The value of a Prometheus sample line `name{labels} value` whose name and labels contain all of
/// `parts`; 0 when absent.
pub fn metric(text: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A refusal must be INVALID_ARGUMENT with a message that names `expected`.
pub fn assert_invalid(s: &tonic::Status, expected: &str) {
    assert_eq!(
        s.code(),
        tonic::Code::InvalidArgument,
        "{expected}: {}",
        s.message()
    );
    assert!(
        s.message().contains(expected),
        "expected {expected:?} in {:?}",
        s.message()
    );
}

/// `inferd recon` arguments with the defaults the CLI has (automatic data consistency, seed 3).
pub fn recon_args(server: &str, input: PathBuf, out: PathBuf) -> inferd::client::recon::ReconArgs {
    inferd::client::recon::ReconArgs {
        server: server.to_string(),
        input,
        out,
        mask: None,
        pattern: None,
        acceleration: 4.0,
        seed: 3,
        model: String::new(),
        dc: "auto".into(),
        lambda: 10.0,
        high_priority: false,
        max_message_mb: 64,
        dicom: Default::default(),
    }
}

/// A KServe request for a set/graph model: `x` rows (`f` features) and either a `batch` vector or
/// an `edge_index` (sources, targets).
pub fn graph_request(
    model: &str,
    x: &[f32],
    f: usize,
    batch: Option<&[i64]>,
    edges: Option<(&[i64], &[i64])>,
) -> inferd::api::kserve::pb::ModelInferRequest {
    use inferd::api::kserve::pb::model_infer_request::InferInputTensor;
    use inferd::api::kserve::{f32_raw, i64_raw};
    let tensor = |name: &str, datatype: &str, shape: &[i64]| InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        ..Default::default()
    };
    let mut inputs = vec![tensor("x", "FP32", &[(x.len() / f) as i64, f as i64])];
    let mut raw = vec![f32_raw(x)];
    if let Some(b) = batch {
        inputs.push(tensor("batch", "INT64", &[b.len() as i64]));
        raw.push(i64_raw(b));
    }
    if let Some((s, d)) = edges {
        inputs.push(tensor("edge_index", "INT64", &[2, s.len() as i64]));
        raw.push(i64_raw(&[s, d].concat()));
    }
    inferd::api::kserve::pb::ModelInferRequest {
        model_name: model.into(),
        inputs,
        raw_input_contents: raw,
        ..Default::default()
    }
}

/// The reconstruction request stream: `header`, then one slice per `(shape, k-space)`.
/// Fully sampled single-coil k-space `[ny = n, nx = n]` of a synthetic MR phantom.
pub fn phantom_kspace(n: usize, seed: u64) -> Vec<num_complex::Complex32> {
    let mut k = inferd::mri::phantom::SyntheticMr::new(seed)
        .sample(n, n)
        .complex;
    inferd::mri::fft::fft2c(&mut k, n, n);
    k
}

pub fn recon_requests(
    header: inferd::api::pb::ReconHeader,
    slices: &[(Vec<usize>, Vec<num_complex::Complex32>)],
) -> Vec<inferd::api::pb::ReconRequest> {
    use inferd::api::pb::{recon_request::Msg, KSpaceSlice, ReconRequest};
    let mut reqs = vec![ReconRequest {
        msg: Some(Msg::Header(header)),
    }];
    for (i, (shape, k)) in slices.iter().enumerate() {
        reqs.push(ReconRequest {
            msg: Some(Msg::Slice(KSpaceSlice {
                index: i as u32,
                kspace: Some(inferd::api::tensor::encode_c64(shape, k)),
                mask: None,
            })),
        });
    }
    reqs
}

/// Asks the standard gRPC health service on a new connection; asserts SERVING and returns how
/// long the answer took.
pub async fn health(url: &str) -> std::time::Duration {
    health_on(tonic::transport::Endpoint::from_shared(url.to_string()).unwrap()).await
}

/// [`health`] on an endpoint (e.g. one with TLS settings).
pub async fn health_on(endpoint: tonic::transport::Endpoint) -> std::time::Duration {
    let ch = endpoint.connect().await.unwrap();
    let t = std::time::Instant::now();
    let r = tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, 1, "health SERVING");
    t.elapsed()
}

/// Sends a `StreamReconstruct` and collects the images until the stream ends.
pub async fn reconstruct(
    url: &str,
    reqs: Vec<inferd::api::pb::ReconRequest>,
) -> Result<Vec<inferd::api::pb::SliceImage>, tonic::Status> {
    use inferd::api::pb::{recon_response::Msg, reconstruction_client::ReconstructionClient};
    let mut c = ReconstructionClient::connect(url.to_string())
        .await
        .unwrap()
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20);
    let mut s = c
        .stream_reconstruct(tokio_stream::iter(reqs))
        .await?
        .into_inner();
    let mut images = Vec::new();
    while let Some(m) = s.message().await? {
        if let Some(Msg::Image(i)) = m.msg {
            images.push(i);
        }
    }
    Ok(images)
}

/// Awaits calls sent together and counts the served and the refused ones; every refusal must be
/// RESOURCE_EXHAUSTED with a message containing each of `expected`.
pub async fn served_and_refused<T>(
    calls: Vec<tokio::task::JoinHandle<Result<T, tonic::Status>>>,
    expected: &[&str],
) -> (usize, usize) {
    let (mut ok, mut refused) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{}", s.message());
                for e in expected {
                    assert!(s.message().contains(e), "{}", s.message());
                }
                refused += 1;
            }
        }
    }
    println!("{ok} served, {refused} refused");
    (ok, refused)
}

/// Probes the gRPC health service every 20 ms, each time on a new connection (as a kubelet does),
/// until stopped; reports the slowest answer.
pub struct HealthWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(usize, std::time::Duration)>,
}

impl HealthWatch {
    pub fn start(endpoint: tonic::transport::Endpoint) -> HealthWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut probes, mut slowest) = (0, std::time::Duration::ZERO);
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                slowest = slowest.max(health_on(endpoint.clone()).await);
                probes += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            (probes, slowest)
        });
        HealthWatch { stop, task }
    }

    pub fn on(url: &str) -> HealthWatch {
        HealthWatch::start(tonic::transport::Endpoint::from_shared(url.to_string()).unwrap())
    }

    /// Stops probing; asserts that every answer came within `limit` and returns the slowest.
    pub async fn assert_within(
        self,
        limit: std::time::Duration,
        case: &str,
    ) -> std::time::Duration {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (probes, slowest) = self.task.await.expect("health probes");
        println!("{case}: {probes} health probes, slowest {slowest:?}");
        assert!(probes > 0, "{case}: no health probe finished");
        assert!(
            slowest < limit,
            "{case}: health took {slowest:?} (limit {limit:?})"
        );
        slowest
    }
}
