//! `inferd train graph --task file` on graphs and sets written by NumPy, and the trained models
//! served over KServe: a node-level task that needs the neighbours (a message-passing GNN), a
//! set-level regression (the set model), and malformed files refused with the reason.

mod common;

use common::TestServer;
use inferd::api::kserve::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use inferd::serve::ServeConfig;
use std::path::Path;
use std::process::Command;

/// Writes `graph{i}.npz` (i = 0..5; 4 for training, 1 held out) with a node task: x `[N, 4]`
/// uniform, random directed edges (in-degree 0–8), and target 1 when the largest feature 0 among a
/// node's in-neighbours exceeds 0.8 (0 without in-neighbours). A node's own features say nothing
/// about it, so only aggregation over the in-neighbours can learn it; the majority class is ≈ 55 %.
/// Also `sets.npz`: 300 sets of 2–12 rows, target = the sum of feature 0 over the set.
const WRITE: &str = r#"
import sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(7)
for i in range(5):
    n = 400
    x = rng.uniform(size=(n, 4)).astype(np.float32)
    deg = rng.integers(0, 9, size=n)
    dst = np.repeat(np.arange(n), deg)
    src = rng.integers(0, n, size=dst.size)
    best = np.zeros(n, np.float32)
    np.maximum.at(best, dst, x[src, 0])
    y = (best > 0.8).astype(np.float32)[:, None]
    np.savez(f"{d}/graph{i}.npz", x=x, edge_index=np.stack([src, dst]).astype(np.int64), targets=y)
sizes = rng.integers(2, 13, size=300)
batch = np.repeat(np.arange(300), sizes).astype(np.int64)
x = rng.uniform(size=(batch.size, 3)).astype(np.float32)
y = np.zeros((300, 1), np.float32)
np.add.at(y[:, 0], batch, x[:, 0])
np.savez(f"{d}/sets.npz", x=x, batch=batch, targets=y)
np.savez(f"{d}/bad_range.npz", x=x[:10], edge_index=np.array([[0, 12], [1, 2]], np.int64), targets=y[:10])
np.savez(f"{d}/no_targets.npz", x=x[:10], batch=batch[:10])
print(float((np.load(f"{d}/graph4.npz")["targets"] > 0).mean()))
"#;

/// `inferd train graph ARGS` in `dir`; its output.
fn train_graph(dir: &Path, args: &[&str]) -> String {
    common::run(
        Command::new(env!("CARGO_BIN_EXE_inferd"))
            .args(["train", "graph"])
            .args(args)
            .current_dir(dir),
    )
}

fn train(dir: &Path, extra: &[&str]) -> String {
    let args = [&["--task", "file", "--checkpoint-every", "100"], extra].concat();
    train_graph(dir, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trains_a_gnn_and_a_set_model_from_npz_files_and_serves_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let positive = common::run(common::python().args(["-c", WRITE, d.to_str().unwrap()]));
    let positive: f64 = positive.trim().parse().unwrap();
    assert!((0.3..0.7).contains(&positive), "{positive}");

    let out = train(
        d,
        &[
            "--data",
            "graph0.npz,graph1.npz,graph2.npz,graph3.npz",
            "--val-data",
            "graph4.npz",
            "--aggregator",
            "max",
            "--layers",
            "1",
            "--hidden",
            "32",
            "--steps",
            "300",
            "--lr",
            "0.003",
            "--out",
            "gnn.safetensors",
        ],
    );
    assert!(out.contains("1 message-passing layers"), "{out}");
    let sets = train(
        d,
        &[
            "--data",
            "sets.npz",
            "--loss",
            "mse",
            "--aggregator",
            "sum",
            "--hidden",
            "32",
            "--steps",
            "400",
            "--lr",
            "0.005",
            "--out",
            "sets.safetensors",
        ],
    );
    assert!(sets.contains("0 message-passing layers"), "{sets}");

    // Served: the held-out graph's node labels and the sets' sums.
    let mut config = ServeConfig::for_tests();
    config.models = vec![
        format!("gnn={}", d.join("gnn.safetensors").display())
            .parse()
            .unwrap(),
        format!("setsum={}", d.join("sets.safetensors").display())
            .parse()
            .unwrap(),
    ];
    let server = TestServer::start(config).await;
    let mut c = GrpcInferenceServiceClient::connect(server.url.clone())
        .await
        .unwrap();
    let load = |name: &str| {
        let m = inferd::io::npz::read(&d.join(name)).unwrap();
        let f32s = |k: &str| match &m[k].data {
            inferd::io::npy::NpyData::F32(v) => v.clone(),
            _ => panic!("{k}"),
        };
        let i64s = |k: &str| match &m[k].data {
            inferd::io::npy::NpyData::I64(v) => v.clone(),
            _ => panic!("{k}"),
        };
        let other = if m.contains_key("edge_index") {
            i64s("edge_index")
        } else {
            i64s("batch")
        };
        (f32s("x"), other, f32s("targets"))
    };
    let (x, e, y) = load("graph4.npz");
    let edges = e.len() / 2;
    let resp = c
        .model_infer(common::graph_request(
            "gnn",
            &x,
            4,
            None,
            Some((&e[..edges], &e[edges..])),
        ))
        .await
        .unwrap()
        .into_inner();
    let p = inferd::api::kserve::raw_f32(&resp.raw_output_contents[0]);
    assert_eq!(p.len(), y.len());
    let correct = p
        .iter()
        .zip(&y)
        .filter(|(p, y)| (**p > 0.5) == (**y > 0.5))
        .count();
    let accuracy = correct as f64 / y.len() as f64;
    println!("held-out node accuracy {accuracy:.3} (positives {positive:.3})");
    assert!(accuracy > 0.9, "held-out node accuracy {accuracy}");

    let (x, batch, y) = load("sets.npz");
    let resp = c
        .model_infer(common::graph_request("setsum", &x, 3, Some(&batch), None))
        .await
        .unwrap()
        .into_inner();
    let p = inferd::api::kserve::raw_f32(&resp.raw_output_contents[0]);
    let mse = p.iter().zip(&y).map(|(p, y)| (p - y).powi(2)).sum::<f32>() / y.len() as f32;
    let var = {
        let m = y.iter().sum::<f32>() / y.len() as f32;
        y.iter().map(|v| (v - m).powi(2)).sum::<f32>() / y.len() as f32
    };
    println!("set sums: MSE {mse:.4}, target variance {var:.4}");
    assert!(mse < 0.05 * var, "set sums: MSE {mse}, variance {var}");

    // A message-passing model refuses sets given by a batch vector.
    let e = c
        .model_infer(common::graph_request(
            "gnn",
            &x[..12],
            4,
            Some(&[0, 0, 1]),
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    server.stop().await;

    // Malformed files: the reason is named.
    for (file, expected) in [
        ("bad_range.npz", "out of range"),
        ("no_targets.npz", "\"targets\""),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_inferd"))
            .args(["train", "graph", "--task", "file", "--steps", "1"])
            .args(["--data", file, "--out", "x.safetensors"])
            .current_dir(d)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(expected),
            "{file}: {err}"
        );
    }
}

/// `--seed` fixes the whole run, the initial weights included: two runs with one seed write the same
/// weights, another seed different ones.
#[test]
fn the_seed_fixes_the_initial_weights_and_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = |seed: &str, out: &str| -> Vec<u8> {
        train_graph(
            dir.path(),
            &[
                "--task",
                "second-min",
                "--aggregator",
                "lcm",
                "--hidden",
                "16",
                "--batch",
                "8",
                "--steps",
                "3",
                "--seed",
                seed,
                "--out",
                out,
            ],
        );
        std::fs::read(dir.path().join(out)).unwrap()
    };
    let (a, b, c) = (
        run("5", "a.safetensors"),
        run("5", "b.safetensors"),
        run("6", "c.safetensors"),
    );
    assert!(a == b, "two runs with --seed 5 wrote different weights");
    assert!(a != c, "--seed 5 and --seed 6 wrote the same weights");
}
