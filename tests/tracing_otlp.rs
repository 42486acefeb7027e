//! Request traces of the real binary, exported over OTLP/gRPC to a receiver built on the
//! OpenTelemetry project's own protocol definitions (tests/reference/otlp_collector.py): spans
//! continue the caller's W3C `traceparent` (gRPC metadata, or the MRD session's parameter), nest as
//! `inferd::telemetry` documents, the background PACS delivery (to a real Orthanc) links to the
//! requests whose images it carries, no attribute carries patient data, and the sample ratio applies
//! to new traces only.

mod common;

use common::orthanc::{free_port, Orthanc, AET};
use common::{http_request, wait_for};
use inferd::api::kserve::{f32_raw, pb as kpb};
use inferd::api::pb::{self, recon_response, reconstruction_client::ReconstructionClient};
use kpb::grpc_inference_service_client::GrpcInferenceServiceClient;
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PATIENT_NAME: &str = "Doe^Secretina";
const PATIENT_ID: &str = "PID-TRACE-4711";
const ACCESSION: &str = "ACC-TRACE-0815";

/// The OTLP receiver, killed when dropped.
struct Collector {
    child: Child,
    out: PathBuf,
    port: u16,
}

impl Collector {
    fn start(dir: &Path) -> Collector {
        let (port_file, out) = (dir.join("otlp.port"), dir.join("spans.jsonl"));
        let child = common::python()
            .arg(common::repo().join("tests/reference/otlp_collector.py"))
            .arg(&port_file)
            .arg(&out)
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 with grpcio and opentelemetry-proto (see scripts/test.sh)");
        wait_for("the OTLP receiver", || port_file.exists());
        let port = std::fs::read_to_string(&port_file)
            .unwrap()
            .parse()
            .unwrap();
        Collector { child, out, port }
    }

    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `inferd serve` exporting to `collector`, with `extra` flags; ready when returned.
struct Inferd {
    child: Child,
    url: String,
    mrd_port: u16,
    log: tempfile::NamedTempFile,
}

impl Inferd {
    fn start(collector: &Collector, extra: &[String]) -> Inferd {
        let (port, metrics_port, mrd_port) = (free_port(), free_port(), free_port());
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_inferd"))
            .args(["serve", "--device", "cpu"])
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--mrd-addr", &format!("127.0.0.1:{mrd_port}")])
            .args([
                "--otlp-endpoint",
                &format!("http://127.0.0.1:{}", collector.port),
            ])
            .args(extra)
            // the batch processor's export interval (default 5 s)
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let ready_url = format!("http://127.0.0.1:{metrics_port}/ready");
        let mut server = Inferd {
            child,
            url: format!("http://127.0.0.1:{port}"),
            mrd_port,
            log,
        };
        wait_for("readiness", || {
            if let Ok(Some(s)) = server.child.try_wait() {
                panic!("inferd exited with {s}: {}", server.log());
            }
            http_request(&ready_url).map(|(c, _)| c) == Some(200)
        });
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Stops the server (which exports what it still buffers) and returns every span the collector
    /// received, and the server's log.
    async fn stop_and_collect(self, collector: &Collector) -> (Vec<Value>, String) {
        let log = self.log();
        tokio::task::spawn_blocking(move || self.stop())
            .await
            .unwrap();
        (collector.spans(), log)
    }

    /// SIGTERM, which exports the spans still buffered before the process exits.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let start = Instant::now();
        let exit = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("inferd did not exit: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(exit.success(), "exit {exit:?}: {}", self.log());
    }
}

fn traceparent(trace_id: &str, parent: &str, sampled: bool) -> String {
    format!(
        "00-{trace_id}-{parent}-{}",
        if sampled { "01" } else { "00" }
    )
}

fn with_traceparent<T>(msg: T, tp: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("traceparent", tp.parse().unwrap());
    r
}

type Kserve = GrpcInferenceServiceClient<tonic::transport::Channel>;

/// A KServe call made inside the caller's trace `trace_id` (sampled or not).
async fn infer_in_trace(
    c: &mut Kserve,
    req: kpb::ModelInferRequest,
    trace_id: &str,
    sampled: bool,
) -> Result<(), tonic::Status> {
    let tp = traceparent(trace_id, CLIENT_SPAN, sampled);
    c.model_infer(with_traceparent(req, &tp)).await.map(|_| ())
}

/// A fully sampled 32×32 phantom slice as KServe `recon` inputs (k-space [1,1,H,W,2], mask [1,H,W]).
fn kserve_recon(n: usize) -> kpb::ModelInferRequest {
    let k = common::phantom_kspace(n, 3);
    let interleaved: Vec<f32> = k.iter().flat_map(|c| [c.re, c.im]).collect();
    let mask: Vec<f32> = (0..n * n)
        .map(|i| ((i / n) % 2 == 0) as u8 as f32)
        .collect();
    kpb::ModelInferRequest {
        model_name: "recon".into(),
        inputs: vec![
            kpb::model_infer_request::InferInputTensor {
                name: "kspace".into(),
                datatype: "FP32".into(),
                shape: vec![1, 1, n as i64, n as i64, 2],
                ..Default::default()
            },
            kpb::model_infer_request::InferInputTensor {
                name: "mask".into(),
                datatype: "FP32".into(),
                shape: vec![1, n as i64, n as i64],
                ..Default::default()
            },
        ],
        raw_input_contents: vec![f32_raw(&interleaved), f32_raw(&mask)],
        ..Default::default()
    }
}

/// Streams `slices` phantom slices with DICOM output stored in the PACS; returns the SOP Instance
/// UIDs of the images.
async fn stream_to_pacs(url: &str, tp: &str, slices: u32) -> Vec<String> {
    let n = 64;
    let header = pb::ReconHeader {
        height: n as u32,
        width: n as u32,
        coils: 1,
        slices,
        sampling: Some(pb::Sampling::variable_density(4.0, 1)),
        request_id: "trace-test".into(),
        dicom: Some(pb::DicomOutput {
            return_dicom: true,
            store: true,
            patient_study: Some(pb::PatientStudy {
                patient_name: PATIENT_NAME.into(),
                patient_id: PATIENT_ID.into(),
                accession_number: ACCESSION.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let kspace: Vec<_> = (0..slices)
        .map(|i| (vec![1, n, n], common::phantom_kspace(n, i as u64 + 1)))
        .collect();
    let reqs = common::recon_requests(header, &kspace);
    let mut client = ReconstructionClient::connect(url.to_string())
        .await
        .unwrap();
    let mut stream = client
        .stream_reconstruct(with_traceparent(tokio_stream::iter(reqs), tp))
        .await
        .unwrap()
        .into_inner();
    let mut uids = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        if let Some(recon_response::Msg::Image(i)) = m.msg {
            assert!(i.queued_for_pacs);
            uids.push(i.sop_instance_uid);
        }
    }
    assert_eq!(uids.len(), slices as usize);
    uids
}

fn named<'a>(spans: &'a [Value], trace: &str, name: &str) -> Vec<&'a Value> {
    spans
        .iter()
        .filter(|s| s["trace_id"] == trace && s["name"] == name)
        .collect()
}

/// The server spans of gRPC calls in `trace` (named `<service>/<method>`).
fn calls<'a>(spans: &'a [Value], trace: &str) -> Vec<&'a Value> {
    spans
        .iter()
        .filter(|s| s["trace_id"] == trace && s["attributes"]["rpc.system"] == "grpc")
        .collect()
}

fn ids<'a>(spans: &[&'a Value]) -> HashSet<&'a str> {
    spans
        .iter()
        .map(|s| s["span_id"].as_str().unwrap())
        .collect()
}

/// Every span in `children` has its parent among `parents`, and there is at least one.
fn all_children_of(children: &[&Value], parents: &[&Value], what: &str) {
    assert!(!children.is_empty(), "no {what} spans");
    let parents = ids(parents);
    for c in children {
        assert!(
            parents.contains(c["parent_span_id"].as_str().unwrap()),
            "{what}: parent of {c} is not among {parents:?}"
        );
    }
}

const TRACE_STREAM: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACE_INFER: &str = "0af7651916cd43dd8448eb211c80319c";
const TRACE_MRD: &str = "5c0b6a1f3f2e4d0e9a7b8c6d5e4f3a2b";
const TRACE_ERROR: &str = "7d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_continue_the_callers_trace_link_pacs_delivery_and_carry_no_patient_data() {
    let dir = tempfile::tempdir().unwrap();
    let orthanc = Orthanc::start(&dir.path().join("orthanc"));
    let collector = Collector::start(dir.path());
    let server = Inferd::start(
        &collector,
        &[
            "--pacs".into(),
            orthanc.dicom_addr(),
            "--pacs-aet".into(),
            AET.into(),
            "--outbox".into(),
            dir.path().join("outbox").display().to_string(),
        ],
    );

    // a reconstruction stream whose images go to the PACS
    let uids = stream_to_pacs(
        &server.url,
        &traceparent(TRACE_STREAM, CLIENT_SPAN, true),
        2,
    )
    .await;
    // a KServe call, and one that fails
    let mut kserve = GrpcInferenceServiceClient::connect(server.url.clone())
        .await
        .unwrap();
    infer_in_trace(&mut kserve, kserve_recon(32), TRACE_INFER, true)
        .await
        .unwrap();
    let unknown = kpb::ModelInferRequest {
        model_name: "no-such-model".into(),
        ..kserve_recon(32)
    };
    let e = infer_in_trace(&mut kserve, unknown, TRACE_ERROR, true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    // health checks make no spans
    common::health(&server.url).await;
    // an MRD session with the caller's trace as a parameter
    let scan = common::shepp_logan_mrd(
        dir.path(),
        "scan.h5",
        &["-m", "64", "-c", "2", "-a", "2", "-w", "16", "-r", "1"],
    );
    let params = format!(
        r#"{{"traceparent": "{}"}}"#,
        traceparent(TRACE_MRD, CLIENT_SPAN, true)
    );
    let mrd_out = dir.path().join("mrd.npz");
    common::run(
        common::python()
            .arg(common::repo().join("tests/reference/mrd_client.py"))
            .args(["127.0.0.1", &server.mrd_port.to_string()])
            .arg(&scan)
            .arg(&mrd_out)
            .args(["--params", &params]),
    );
    let mrd: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}.json", mrd_out.display())).unwrap(),
    )
    .unwrap();
    assert!(mrd["texts"].as_array().unwrap().is_empty(), "{mrd}");
    assert!(!mrd["images"].as_array().unwrap().is_empty(), "{mrd}");

    // the PACS has the images (delivered in the background)
    tokio::task::spawn_blocking({
        let n = uids.len();
        let o = orthanc;
        move || {
            wait_for("the PACS delivery", || o.instances().len() >= n);
            o
        }
    })
    .await
    .unwrap();
    let (spans, log) = server.stop_and_collect(&collector).await;
    let context = || format!("{} spans:\n{}\nlog:\n{log}", spans.len(), dump(&spans));

    assert!(
        spans.iter().all(|s| s["service"] == "inferd"),
        "{}",
        context()
    );
    // no span for health checks
    assert!(
        !spans.iter().any(|s| s["attributes"]["rpc.service"]
            .as_str()
            .is_some_and(|s| s.starts_with("grpc.health"))),
        "{}",
        context()
    );

    // each model loaded at start is a trace of its own, holding its warm-up passes
    let loads: Vec<&Value> = spans.iter().filter(|s| s["name"] == "model_load").collect();
    assert!(!loads.is_empty(), "{}", context());
    for l in &loads {
        assert_eq!(l["parent_span_id"], "", "{l}");
        if l["attributes"]["model"] == "recon-unrolled" {
            let trace = l["trace_id"].as_str().unwrap();
            assert!(!named(&spans, trace, "network").is_empty(), "{l}");
        }
    }
    assert!(loads
        .iter()
        .any(|l| l["attributes"]["model"] == "recon-unrolled"));
    assert!(
        spans
            .iter()
            .filter(|s| s["parent_span_id"] == "")
            .all(|s| s["name"] == "model_load" || s["name"] == "pacs_delivery"),
        "root spans other than model loads and deliveries: {}",
        context()
    );

    // the stream: the call's span (child of the client's span) > recon_stream > queue, compute, dicom_encode;
    // compute (the batch leader) > network, data_consistency
    let grpc = calls(&spans, TRACE_STREAM);
    assert_eq!(grpc.len(), 1, "{}", context());
    assert_eq!(grpc[0]["parent_span_id"], CLIENT_SPAN);
    assert_eq!(grpc[0]["kind"], "SPAN_KIND_SERVER");
    assert_eq!(
        grpc[0]["name"],
        "inferd.v1.Reconstruction/StreamReconstruct"
    );
    assert_eq!(grpc[0]["attributes"]["rpc.method"], "StreamReconstruct");
    assert_eq!(grpc[0]["attributes"]["rpc.grpc.status_code"], 0);
    let stream = named(&spans, TRACE_STREAM, "recon_stream");
    all_children_of(&stream, &grpc, "recon_stream");
    assert_eq!(stream[0]["attributes"]["request_id"], "trace-test");
    all_children_of(
        &named(&spans, TRACE_STREAM, "admission"),
        &grpc,
        "admission",
    );
    let queue = named(&spans, TRACE_STREAM, "queue");
    let compute = named(&spans, TRACE_STREAM, "compute");
    let encode = named(&spans, TRACE_STREAM, "dicom_encode");
    all_children_of(&queue, &stream, "queue");
    all_children_of(&compute, &stream, "compute");
    all_children_of(&encode, &stream, "dicom_encode");
    assert_eq!(
        (queue.len(), compute.len(), encode.len()),
        (2, 2, 2),
        "{}",
        context()
    );
    let network = named(&spans, TRACE_STREAM, "network");
    all_children_of(&network, &compute, "network");
    all_children_of(
        &named(&spans, TRACE_STREAM, "data_consistency"),
        &compute,
        "data_consistency",
    );
    // PACS delivery runs in its own trace, linked to each image's dicom_encode
    let linked: HashSet<&str> = spans
        .iter()
        .filter(|s| s["name"] == "pacs_delivery")
        .flat_map(|s| s["links"].as_array().unwrap())
        .filter(|l| l["trace_id"] == TRACE_STREAM)
        .map(|l| l["span_id"].as_str().unwrap())
        .collect();
    assert_eq!(linked, ids(&encode), "{}", context());

    // KServe (model `recon`, an alias): the call > model_infer > queue, compute > network
    let grpc = calls(&spans, TRACE_INFER);
    assert_eq!(grpc.len(), 1, "{}", context());
    assert_eq!(grpc[0]["parent_span_id"], CLIENT_SPAN);
    assert_eq!(grpc[0]["name"], "inference.GRPCInferenceService/ModelInfer");
    let infer = named(&spans, TRACE_INFER, "model_infer");
    all_children_of(&infer, &grpc, "model_infer");
    assert_eq!(
        infer[0]["attributes"]["model"], "recon-unrolled",
        "the model behind the alias"
    );
    let compute = named(&spans, TRACE_INFER, "compute");
    all_children_of(&compute, &infer, "compute");
    all_children_of(&named(&spans, TRACE_INFER, "network"), &compute, "network");

    // the failed call's status is on its span
    let grpc = calls(&spans, TRACE_ERROR);
    assert_eq!(grpc.len(), 1, "{}", context());
    assert_eq!(
        grpc[0]["attributes"]["rpc.grpc.status_code"],
        tonic::Code::NotFound as i32
    );

    // MRD: mrd_session (child of the traceparent parameter) > mrd_slice > queue, compute > network
    let session = named(&spans, TRACE_MRD, "mrd_session");
    assert_eq!(session.len(), 1, "{}", context());
    assert_eq!(session[0]["parent_span_id"], CLIENT_SPAN);
    assert_eq!(session[0]["kind"], "SPAN_KIND_SERVER");
    let slices = named(&spans, TRACE_MRD, "mrd_slice");
    all_children_of(&slices, &session, "mrd_slice");
    let compute = named(&spans, TRACE_MRD, "compute");
    all_children_of(&compute, &slices, "compute");
    all_children_of(&named(&spans, TRACE_MRD, "network"), &compute, "network");

    // no patient data and no DICOM UIDs in any attribute
    let text = dump(&spans);
    for secret in [PATIENT_NAME, "Secretina", PATIENT_ID, ACCESSION] {
        assert!(!text.contains(secret), "{secret} in the spans: {text}");
    }
    for uid in &uids {
        assert!(
            !text.contains(uid.as_str()),
            "SOP Instance UID in the spans"
        );
    }
}

fn dump(spans: &[Value]) -> String {
    spans
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_ratio_zero_still_follows_a_sampled_caller() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(dir.path());
    let server = Inferd::start(&collector, &["--otlp-sample-ratio".into(), "0".into()]);
    let mut kserve = GrpcInferenceServiceClient::connect(server.url.clone())
        .await
        .unwrap();
    // a new trace (ratio 0: not sampled), a caller that did not sample, and one that did
    kserve.model_infer(kserve_recon(32)).await.unwrap();
    infer_in_trace(&mut kserve, kserve_recon(32), TRACE_ERROR, false)
        .await
        .unwrap();
    infer_in_trace(&mut kserve, kserve_recon(32), TRACE_INFER, true)
        .await
        .unwrap();
    let (spans, log) = server.stop_and_collect(&collector).await;
    let traces: HashSet<&str> = spans
        .iter()
        .map(|s| s["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        traces,
        HashSet::from([TRACE_INFER]),
        "{}\nlog:\n{log}",
        dump(&spans)
    );
    let grpc = calls(&spans, TRACE_INFER);
    assert_eq!(grpc.len(), 1);
    all_children_of(
        &named(&spans, TRACE_INFER, "model_infer"),
        &grpc,
        "model_infer",
    );
}

#[test]
fn bad_trace_settings_are_refused_at_start() {
    for (args, expected) in [
        (
            vec![
                "--otlp-endpoint",
                "http://127.0.0.1:4317",
                "--otlp-sample-ratio",
                "1.5",
            ],
            "--otlp-sample-ratio must be between 0 and 1",
        ),
        (
            vec!["--otlp-endpoint", "https://collector:4317"],
            "needs --otlp-ca",
        ),
        (
            vec!["--otlp-endpoint", "collector:4317"],
            "http:// or https://",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_inferd"))
            .args(["serve", "--device", "cpu", "--addr", "127.0.0.1:0"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(expected), "{expected:?} not in {stderr}");
    }
}
