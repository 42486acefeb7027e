//! inferd's set model (candle) against the PyTorch implementation with torch.nn.GRUCell
//! (tests/reference/graph_parity.py), for every aggregator including both LCM operators: same
//! weights, same sets, logits within 1e-4.

mod common;

use candle_core::Device;
use inferd::models::lcm::Csr;
use inferd::models::{Engine, GraphEngine, GraphInput, Input, Output};

#[test]
fn set_model_matches_pytorch_for_every_aggregator() {
    let dir = tempfile::tempdir().unwrap();
    common::run(
        common::python()
            .arg(common::repo().join("tests/reference/graph_parity.py"))
            .arg(dir.path()),
    );
    for kind in ["sum", "max", "gru", "lcm", "lcm-symgru"] {
        let weights = candle_core::safetensors::load(
            dir.path().join(format!("{kind}.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let engine = GraphEngine::from_tensors(kind, weights, &Device::Cpu).unwrap();
        let io = candle_core::safetensors::load(
            dir.path().join(format!("{kind}-io.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let x = io["x"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let batch = io["batch"].to_vec1::<i64>().unwrap();
        let want: Vec<f32> = io["logits"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let out = engine
            .run(vec![Input::Graph(GraphInput {
                x,
                features: 8,
                csr: Csr::from_batch(&batch).unwrap(),
            })])
            .unwrap();
        let Some(Output::Graph(probs)) = out.into_iter().next() else {
            panic!("no output")
        };
        let sigmoid = |v: f32| 1.0 / (1.0 + (-v).exp());
        let max_diff = probs
            .iter()
            .zip(&want)
            .map(|(p, l)| (p - sigmoid(*l)).abs())
            .fold(0.0f32, f32::max);
        assert!(
            max_diff < 1e-4,
            "{kind}: max probability difference {max_diff}"
        );
    }
}

/// The message-passing stack against PyTorch Geometric's SAGEConv (tests/reference/gnn_pyg.py):
/// two layers with sum, mean and max aggregation on a graph with isolated nodes, self-loops and
/// duplicate edges; same weights, node outputs within 1e-4.
#[test]
fn message_passing_stack_matches_pyg_sageconv() {
    let dir = tempfile::tempdir().unwrap();
    common::run(
        common::python()
            .arg(common::repo().join("tests/reference/gnn_pyg.py"))
            .arg(dir.path()),
    );
    for aggr in ["sum", "mean", "max"] {
        let load = |name: String| {
            candle_core::safetensors::load(dir.path().join(name), &Device::Cpu).unwrap()
        };
        let engine =
            GraphEngine::from_tensors(aggr, load(format!("{aggr}.safetensors")), &Device::Cpu)
                .unwrap();
        let io = load(format!("{aggr}-io.safetensors"));
        let x = io["x"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let e = io["edge_index"]
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap();
        let want = io["y"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let n = x.len() / 6;
        let (src, dst) = e.split_at(e.len() / 2);
        let out = engine
            .run(vec![Input::Graph(GraphInput {
                x,
                features: 6,
                csr: Csr::from_edge_index(src, dst, n).unwrap(),
            })])
            .unwrap();
        let Some(Output::Graph(y)) = out.into_iter().next() else {
            panic!("no output")
        };
        assert_eq!(y.len(), want.len());
        let max_diff = y
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(max_diff < 1e-4, "{aggr}: max difference {max_diff}");
    }
}
