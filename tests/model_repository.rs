//! The model repository over real gRPC: versions on disk, index, load and unload at run time
//! (explicit control), version-specific inference, a corrupt file refused while the old version
//! serves, statistics per version, poll mode picking up new and removed versions while clients keep
//! calling (no request fails, each client sees one switch), memory returned after unload, the admin
//! token, and tritonclient's repository calls unchanged.

mod common;

use common::TestServer;
use inferd::api::kserve::pb::{
    self, grpc_inference_service_client::GrpcInferenceServiceClient,
    model_infer_request::InferInputTensor, model_repository_parameter::ParameterChoice,
    ModelRepositoryParameter,
};
use inferd::api::kserve::{f32_raw, raw_f32};
use inferd::serve::repository::ModelControl;
use inferd::serve::ServeConfig;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;

type Client = GrpcInferenceServiceClient<Channel>;

/// The tests of this file measure the process's memory: they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn shipped(name: &str) -> PathBuf {
    common::repo()
        .join("models")
        .join(format!("{name}.safetensors"))
}

/// Puts `file` into the repository as `name` version `version`.
fn add_version(repo: &Path, name: &str, version: u32, file: &Path) {
    let dir = repo.join(name).join(version.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    // written under another name, then renamed: a scan never sees half a file
    let tmp = dir.join("model.safetensors.part");
    std::fs::copy(file, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("model.safetensors")).unwrap();
}

fn config(repo: &Path, control: ModelControl) -> ServeConfig {
    let mut c = ServeConfig::for_tests();
    c.model_repository = Some(repo.to_path_buf());
    c.model_control = control;
    c
}

async fn client(url: &str) -> Client {
    GrpcInferenceServiceClient::connect(url.to_string())
        .await
        .unwrap()
}

/// A one-slice 64² single-coil `recon` request (a fixed asymmetric pattern, every other line
/// sampled) for `model` at `version`.
fn recon_request(model: &str, version: &str) -> pb::ModelInferRequest {
    let n = 64;
    let mut kspace = Vec::with_capacity(n * n * 2);
    let mut mask = Vec::with_capacity(n * n);
    for y in 0..n {
        for x in 0..n {
            let sampled = y % 2 == 0 || (28..36).contains(&y);
            let v = ((x * 7 + y * 3) % 11) as f32 / 11.0 - 0.5 + if x < 20 { 0.3 } else { 0.0 };
            kspace.extend(if sampled { [v, 0.5 * v] } else { [0.0, 0.0] });
            mask.push(if sampled { 1.0 } else { 0.0 });
        }
    }
    pb::ModelInferRequest {
        model_name: model.into(),
        model_version: version.into(),
        inputs: vec![
            InferInputTensor {
                name: "kspace".into(),
                datatype: "FP32".into(),
                shape: vec![1, 1, n as i64, n as i64, 2],
                ..Default::default()
            },
            InferInputTensor {
                name: "mask".into(),
                datatype: "FP32".into(),
                shape: vec![1, n as i64, n as i64],
                ..Default::default()
            },
        ],
        raw_input_contents: vec![f32_raw(&kspace), f32_raw(&mask)],
        ..Default::default()
    }
}

fn bridge_request(model: &str) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 2],
            ..Default::default()
        }],
        raw_input_contents: vec![f32_raw(&[0.5, -0.25])],
        ..Default::default()
    }
}

/// The repository index as (name, version, state, reason).
async fn index(c: &mut Client) -> Vec<(String, String, String, String)> {
    c.repository_index(pb::RepositoryIndexRequest::default())
        .await
        .unwrap()
        .into_inner()
        .models
        .into_iter()
        .map(|m| (m.name, m.version, m.state, m.reason))
        .collect()
}

async fn state_of(c: &mut Client, name: &str, version: &str) -> Option<String> {
    index(c)
        .await
        .into_iter()
        .find(|m| m.0 == name && m.1 == version)
        .map(|m| m.2)
}

/// Waits until `name`/`version` is in `state` (unloading finishes when work in flight is done).
async fn wait_state(c: &mut Client, name: &str, version: &str, state: &str) {
    let start = Instant::now();
    loop {
        if state_of(c, name, version).await.as_deref() == Some(state) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{name} {version} never became {state}: {:?}",
            index(c).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn load_request(name: &str, config: Option<&str>) -> pb::RepositoryModelLoadRequest {
    pb::RepositoryModelLoadRequest {
        model_name: name.into(),
        parameters: config
            .map(|c| {
                HashMap::from([(
                    "config".to_string(),
                    ModelRepositoryParameter {
                        parameter_choice: Some(ParameterChoice::StringParam(c.into())),
                    },
                )])
            })
            .unwrap_or_default(),
        ..Default::default()
    }
}

fn unload_request(name: &str) -> pb::RepositoryModelUnloadRequest {
    pb::RepositoryModelUnloadRequest {
        model_name: name.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_control_loads_unloads_and_serves_versions() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    add_version(repo, "mri", 1, &shipped("recon-lite"));
    add_version(repo, "mri", 2, &shipped("recon-unrolled"));
    std::fs::write(
        repo.join("mri/config.json"),
        r#"{"version_policy": {"all": {}}, "max_batch_size": 2}"#,
    )
    .unwrap();
    add_version(repo, "bridge", 1, &shipped("lightsb"));
    add_version(repo, "spare", 1, &shipped("lightsb"));
    let mut cfg = config(repo, ModelControl::Explicit);
    cfg.load_models = vec!["mri".into(), "bridge".into()];
    let server = TestServer::start(cfg).await;
    let mut c = client(&server.url).await;

    // explicit control loads what --load-model names: the embedded defaults are not served
    let idx = index(&mut c).await;
    let ready: Vec<(&str, &str)> = idx
        .iter()
        .filter(|m| m.2 == "READY")
        .map(|m| (m.0.as_str(), m.1.as_str()))
        .collect();
    assert_eq!(
        ready,
        [("bridge", "1"), ("mri", "1"), ("mri", "2")],
        "{idx:?}"
    );
    let err = c.model_infer(bridge_request("lightsb")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // both versions answer, each as itself; the newest serves when no version is named
    let mut answers = HashMap::new();
    for v in ["1", "2", ""] {
        let r = c
            .model_infer(recon_request("mri", v))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.model_version, if v.is_empty() { "2" } else { v });
        answers.insert(v, raw_f32(&r.raw_output_contents[0]));
    }
    assert_eq!(answers[""], answers["2"]);
    let diff = answers["1"]
        .iter()
        .zip(&answers["2"])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        diff > 1e-3,
        "the two versions gave the same image (max diff {diff})"
    );
    // Prometheus series per version: version 1 answered once, version 2 twice (named and default)
    let text = server.metrics();
    for (v, n) in [("1", 1.0), ("2", 2.0)] {
        let version = format!("version=\"{v}\"");
        let requests = common::metric(
            &text,
            &[
                "inferd_requests_total",
                "model=\"mri\"",
                &version,
                "code=\"OK\"",
            ],
        );
        assert_eq!(requests, n, "version {v}:\n{text}");
        let computed = common::metric(
            &text,
            &["inferd_compute_seconds_count", "model=\"mri\"", &version],
        );
        assert!(computed >= 1.0, "version {v}:\n{text}");
        assert!(
            text.contains(&format!("inferd_queue_depth{{model=\"mri\",{version}}} 0")),
            "{text}"
        );
    }
    let err = c.model_infer(recon_request("mri", "3")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("serving versions"),
        "{}",
        err.message()
    );
    for v in ["1", "2"] {
        let ready = c
            .model_ready(pb::ModelReadyRequest {
                name: "mri".into(),
                version: v.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .ready;
        assert!(ready, "version {v}");
    }
    let meta = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "mri".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.versions, ["1", "2"]);
    let cfg1 = c
        .model_config(pb::ModelConfigRequest {
            name: "mri".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(cfg1.max_batch_size, 2, "config.json's batching applies");

    // statistics per version agree with the requests sent (1 to version 1, 2 to version 2)
    let stats = c
        .model_statistics(pb::ModelStatisticsRequest {
            name: "mri".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .model_stats;
    let success = |v: &str| {
        stats
            .iter()
            .find(|s| s.version == v)
            .and_then(|s| s.inference_stats.as_ref())
            .and_then(|s| s.success.as_ref())
            .map_or(0, |d| d.count)
    };
    assert_eq!((success("1"), success("2")), (1, 2), "{stats:?}");

    // unload: requests no longer find it; load brings it back
    c.repository_model_unload(unload_request("bridge"))
        .await
        .unwrap();
    wait_state(&mut c, "bridge", "1", "UNAVAILABLE").await;
    assert_eq!(
        c.model_infer(bridge_request("bridge"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    c.repository_model_load(load_request("spare", None))
        .await
        .unwrap();
    c.model_infer(bridge_request("spare")).await.unwrap();
    c.repository_model_load(load_request("bridge", None))
        .await
        .unwrap();
    c.model_infer(bridge_request("bridge")).await.unwrap();

    // a configuration override: only version 1 stays
    c.repository_model_load(load_request(
        "mri",
        Some(r#"{"version_policy": {"specific": {"versions": [1]}}}"#),
    ))
    .await
    .unwrap();
    wait_state(&mut c, "mri", "2", "UNAVAILABLE").await;
    let r = c
        .model_infer(recon_request("mri", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.model_version, "1");

    // a corrupt new version is refused with the reason; the serving version stays
    let bad = repo.join("mri/3");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("model.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}",
    )
    .unwrap();
    let err = c
        .repository_model_load(load_request(
            "mri",
            Some(r#"{"version_policy": {"latest": {"num_versions": 1}}}"#),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("version 3") && err.message().contains("serving versions: [\"1\"]"),
        "{}",
        err.message()
    );
    let idx = index(&mut c).await;
    let v3 = idx.iter().find(|m| m.0 == "mri" && m.1 == "3").unwrap();
    assert_eq!(v3.2, "UNAVAILABLE");
    assert!(v3.3.contains("failed to load"), "{v3:?}");
    let r = c
        .model_infer(recon_request("mri", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.model_version, "1", "the old version keeps serving");

    // names that would leave the repository, unknown models, other repositories
    for (name, code) in [
        ("../mri", Code::InvalidArgument),
        ("nope", Code::NotFound),
        ("", Code::InvalidArgument),
    ] {
        let err = c
            .repository_model_load(load_request(name, None))
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{name}: {err:?}");
    }
    let mut other = load_request("mri", None);
    other.repository_name = "elsewhere".into();
    assert_eq!(
        c.repository_model_load(other).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let err = c
        .repository_model_load(load_request("mri", Some("{\"max_batch_size\": 0}")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("max_batch_size"),
        "{}",
        err.message()
    );
    server.stop().await;
}

/// Resident memory of this process, bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// A LightSB model with `k` components in `d` dimensions (≈ 2·k·d·4 bytes of weights).
fn big_bridge(path: &Path, k: usize, d: usize) {
    let dev = candle_core::Device::Cpu;
    let sb = inferd::models::lightsb::LightSb::new(
        vec![0.0; k],
        (0..k * d)
            .map(|i| ((i % 97) as f32 - 48.0) / 50.0)
            .collect(),
        vec![-1.0; k * d],
        0.1,
        &dev,
    )
    .unwrap();
    candle_core::safetensors::save(&sb.tensors().unwrap(), path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloading_returns_the_memory() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    add_version(&repo, "small", 1, &shipped("lightsb"));
    let file = dir.path().join("big.safetensors");
    big_bridge(&file, 2048, 4096); // 64 MiB of weights
    add_version(&repo, "big", 1, &file);
    let mut cfg = config(&repo, ModelControl::Explicit);
    cfg.load_models = vec!["small".into()];
    let server = TestServer::start(cfg).await;
    let mut c = client(&server.url).await;
    inferd::serve::repository::release_freed_memory();
    let before = rss();
    c.repository_model_load(load_request("big", None))
        .await
        .unwrap();
    let loaded = rss();
    c.model_infer(bridge_request("big")).await.unwrap_err(); // dim 4096: wrong shape, refused
    c.repository_model_unload(unload_request("big"))
        .await
        .unwrap();
    wait_state(&mut c, "big", "1", "UNAVAILABLE").await;
    let after = rss();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "resident: {:.1} MiB before load, {:.1} loaded, {:.1} after unload",
        mib(before),
        mib(loaded),
        mib(after)
    );
    let grown = loaded.saturating_sub(before);
    assert!(
        grown >= 60 << 20,
        "loading 64 MiB of weights grew RSS by {:.1} MiB",
        mib(grown)
    );
    let kept = after.saturating_sub(before);
    assert!(
        kept * 4 <= grown,
        "unloading kept {:.1} of {:.1} MiB",
        mib(kept),
        mib(grown)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_switches_versions_under_load_without_failures() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    add_version(repo, "mri", 1, &shipped("recon-lite"));
    let mut cfg = config(repo, ModelControl::Poll);
    cfg.repository_poll_s = 0.2;
    let server = TestServer::start(cfg).await;
    let mut c = client(&server.url).await;
    // control by request is off in poll mode
    let err = c
        .repository_model_load(load_request("mri", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // three clients call continuously while version 2 appears, then leaves again
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let callers: Vec<_> = (0..3)
        .map(|_| {
            let (url, stop) = (server.url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut c = client(&url).await;
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let r = c.model_infer(recon_request("mri", "")).await;
                    let r = r.expect("a request failed during a version switch");
                    seen.push(r.into_inner().model_version);
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    add_version(repo, "mri", 2, &shipped("recon-unrolled"));
    wait_state(&mut c, "mri", "1", "UNAVAILABLE").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for caller in callers {
        let seen = caller.await.unwrap();
        // each client's answers switch once, from 1 to 2, at one boundary
        let switch = seen
            .iter()
            .position(|v| v == "2")
            .expect("never saw version 2");
        assert!(switch > 0, "{seen:?}");
        assert!(seen[..switch].iter().all(|v| v == "1"), "{seen:?}");
        assert!(seen[switch..].iter().all(|v| v == "2"), "{seen:?}");
    }
    let r = c.model_infer(recon_request("mri", "1")).await.unwrap_err();
    assert_eq!(r.code(), Code::NotFound, "latest 1: version 1 left");

    // the newest version removed: the scan goes back to version 1; the model removed: unloaded
    std::fs::remove_dir_all(repo.join("mri/2")).unwrap();
    wait_state(&mut c, "mri", "1", "READY").await;
    wait_state(&mut c, "mri", "2", "UNAVAILABLE").await;
    std::fs::remove_dir_all(repo.join("mri")).unwrap();
    wait_state(&mut c, "mri", "1", "UNAVAILABLE").await;
    assert_eq!(
        c.model_infer(recon_request("mri", ""))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // health stays SERVING through all of it
    common::health(&server.url).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_control_needs_the_admin_token() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    add_version(&repo, "bridge", 1, &shipped("lightsb"));
    let (user, admin) = ("user-token-0123456789", "admin-token-0123456789");
    let admin_file = dir.path().join("admin");
    std::fs::write(&admin_file, admin).unwrap();
    let with = |token: &str| {
        let t: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", t.clone());
            Ok(r)
        }
    };
    let mut cfg = config(&repo, ModelControl::Explicit);
    cfg.auth_token = Some(inferd::serve::config::Secret(user.into()));
    cfg.admin_token_file = Some(admin_file);
    cfg.load_models = vec!["*".into()];
    let server = TestServer::start(cfg.clone()).await;
    let channel = Channel::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut as_user = GrpcInferenceServiceClient::with_interceptor(channel.clone(), with(user));
    let mut as_admin = GrpcInferenceServiceClient::with_interceptor(channel, with(admin));
    as_user.model_infer(bridge_request("bridge")).await.unwrap();
    let err = as_user
        .repository_model_unload(unload_request("bridge"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    as_admin
        .model_infer(bridge_request("bridge"))
        .await
        .unwrap();
    as_admin
        .repository_model_unload(unload_request("bridge"))
        .await
        .unwrap();
    as_admin
        .repository_model_load(load_request("bridge", None))
        .await
        .unwrap();
    server.stop().await;

    // an auth token without an admin token: nobody may control models
    cfg.admin_token_file = None;
    let server = TestServer::start(cfg).await;
    let channel = Channel::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut as_user = GrpcInferenceServiceClient::with_interceptor(channel, with(user));
    let err = as_user
        .repository_model_load(load_request("bridge", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("admin token"), "{}", err.message());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_controls_the_repository_unchanged() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    add_version(repo, "mri", 1, &shipped("recon-lite"));
    add_version(repo, "mri", 2, &shipped("recon-unrolled"));
    add_version(repo, "bridge", 1, &shipped("lightsb"));
    let server = TestServer::start(config(repo, ModelControl::Explicit)).await;
    let target = server.url.trim_start_matches("http://").to_string();
    let script = common::repo().join("tests/reference/triton_repository.py");
    let out =
        tokio::task::spawn_blocking(move || common::run(common::python().arg(script).arg(target)))
            .await
            .unwrap();
    assert!(out.contains("ok: tritonclient repository"), "{out}");
    server.stop().await;
}
