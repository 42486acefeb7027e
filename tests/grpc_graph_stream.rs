//! `inferd.v1.Graph/Aggregate`: sets and graphs streamed in chunks give exactly the answers of the same
//! data in one KServe request, come back in ordered chunks, and malformed streams get
//! INVALID_ARGUMENT naming what was expected.

mod common;

use common::TestServer;
use inferd::api::kserve::pb::{
    self as kpb, grpc_inference_service_client::GrpcInferenceServiceClient,
    model_infer_request::InferInputTensor,
};
use inferd::api::kserve::{f32_raw, i64_raw, raw_f32};
use inferd::api::pb::{self, graph_client::GraphClient, graph_request::Msg};
use inferd::api::tensor;
use inferd::serve::ServeConfig;
use inferd::train::graph::bits;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn msg(m: Msg) -> pb::GraphRequest {
    pb::GraphRequest { msg: Some(m) }
}

fn header(nodes: usize, rows_per_chunk: u32) -> pb::GraphRequest {
    msg(Msg::Header(pb::GraphHeader {
        model: "lcm".into(),
        nodes: nodes as u64,
        features: 8,
        rows_per_chunk,
        ..Default::default()
    }))
}

/// x in node chunks of `chunk` rows.
fn node_chunks(x: &[f32], chunk: usize) -> Vec<pb::GraphRequest> {
    x.chunks(chunk * 8)
        .enumerate()
        .map(|(i, rows)| {
            msg(Msg::Nodes(pb::NodeChunk {
                first_row: (i * chunk) as u64,
                x: Some(tensor::encode_f32(&[rows.len() / 8, 8], rows)),
            }))
        })
        .collect()
}

async fn aggregate(
    url: &str,
    reqs: Vec<pb::GraphRequest>,
) -> Result<Vec<pb::GraphChunk>, tonic::Status> {
    let mut c = GraphClient::connect(url.to_string()).await.unwrap();
    let mut s = c.aggregate(tokio_stream::iter(reqs)).await?.into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = s.message().await? {
        out.push(chunk);
    }
    Ok(out)
}

/// The chunks' rows, checking that they are in order and contiguous.
fn rows(chunks: &[pb::GraphChunk]) -> Vec<f32> {
    let mut all = Vec::new();
    for c in chunks {
        assert_eq!(c.first_row as usize * 8, all.len(), "chunks out of order");
        let (shape, y) = tensor::to_f32(c.y.as_ref().unwrap()).unwrap();
        assert_eq!(shape[1], 8);
        all.extend(y);
    }
    all
}

async fn kserve(url: &str, x: &[f32], name: &str, index: &[i64], shape: Vec<i64>) -> Vec<f32> {
    let mut c = GrpcInferenceServiceClient::connect(url.to_string())
        .await
        .unwrap();
    let tensor = |name: &str, datatype: &str, shape: Vec<i64>| InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        ..Default::default()
    };
    let r = c
        .model_infer(kpb::ModelInferRequest {
            model_name: "lcm".into(),
            inputs: vec![
                tensor("x", "FP32", vec![(x.len() / 8) as i64, 8]),
                tensor(name, "INT64", shape),
            ],
            raw_input_contents: vec![f32_raw(x), i64_raw(index)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    raw_f32(&r.raw_output_contents[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_sets_and_graphs_equal_one_kserve_request() {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (sets, size) = (300usize, 24usize);
    let (mut x, mut batch) = (Vec::new(), Vec::new());
    for g in 0..sets {
        for _ in 0..size {
            x.extend(bits(rng.random()));
            batch.push(g as i64);
        }
    }
    let n = batch.len();

    // Sets: node chunks of 1000 rows and set-id chunks of 700, interleaved; output in chunks of 64.
    let mut reqs = vec![header(n, 64)];
    let nodes = node_chunks(&x, 1000);
    let ids: Vec<_> = batch
        .chunks(700)
        .enumerate()
        .map(|(i, b)| {
            msg(Msg::Sets(pb::SetChunk {
                first_row: (i * 700) as u64,
                batch: b.to_vec(),
            }))
        })
        .collect();
    for i in 0..nodes.len().max(ids.len()) {
        reqs.extend(nodes.get(i).cloned());
        reqs.extend(ids.get(i).cloned());
    }
    let chunks = aggregate(&server.url, reqs).await.unwrap();
    assert_eq!(chunks.len(), sets.div_ceil(64));
    let streamed = rows(&chunks);
    let whole = kserve(&server.url, &x, "batch", &batch, vec![n as i64]).await;
    assert_eq!(
        streamed, whole,
        "streamed sets differ from one KServe request"
    );

    // The same as a graph: set nodes 0..sets receive edges from their elements, in chunks of 999.
    let mut xg = vec![0.0f32; sets * 8];
    xg.extend(&x);
    let src: Vec<i64> = (0..n as i64).map(|e| sets as i64 + e).collect();
    let mut reqs = vec![header(sets + n, 0)];
    reqs.extend(node_chunks(&xg, 1500));
    for (s, d) in src.chunks(999).zip(batch.chunks(999)) {
        reqs.push(msg(Msg::Edges(pb::EdgeChunk {
            source: s.to_vec(),
            target: d.to_vec(),
        })));
    }
    let graph = rows(&aggregate(&server.url, reqs).await.unwrap());
    assert_eq!(graph.len(), (sets + n) * 8);
    let edge_index = [src.clone(), batch.clone()].concat();
    let whole = kserve(
        &server.url,
        &xg,
        "edge_index",
        &edge_index,
        vec![2, n as i64],
    )
    .await;
    assert_eq!(
        graph, whole,
        "streamed graph differs from one KServe request"
    );
    assert_eq!(
        &graph[..sets * 8],
        &streamed[..],
        "graph and set forms disagree"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_graph_streams_get_invalid_argument() {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let x = vec![0.0f32; 4 * 8];
    let edges = |s: Vec<i64>, t: Vec<i64>| {
        msg(Msg::Edges(pb::EdgeChunk {
            source: s,
            target: t,
        }))
    };
    let sets = |b: Vec<i64>| {
        msg(Msg::Sets(pb::SetChunk {
            first_row: 0,
            batch: b,
        }))
    };
    let mut wrong_features = header(4, 0);
    if let Some(Msg::Header(h)) = &mut wrong_features.msg {
        h.features = 5;
    }
    let late = msg(Msg::Nodes(pb::NodeChunk {
        first_row: 2,
        x: Some(tensor::encode_f32(&[2, 8], &x[..16])),
    }));
    let cases: Vec<(&str, Vec<pb::GraphRequest>)> = vec![
        ("must start with a GraphHeader", node_chunks(&x, 4)),
        ("expected 8", vec![wrong_features]),
        ("expected 0 (chunks in order", vec![header(4, 0), late]),
        (
            "after 2 of the header's 4",
            [vec![header(4, 0)], node_chunks(&x[..16], 2)].concat(),
        ),
        (
            "out of range",
            [
                vec![header(4, 0)],
                node_chunks(&x, 4),
                vec![edges(vec![0], vec![4])],
            ]
            .concat(),
        ),
        (
            "equal counts",
            [
                vec![header(4, 0)],
                node_chunks(&x, 4),
                vec![edges(vec![0, 1], vec![1])],
            ]
            .concat(),
        ),
        (
            "not both",
            [
                vec![header(4, 0)],
                node_chunks(&x, 4),
                vec![edges(vec![0], vec![1]), sets(vec![0, 0, 1, 1])],
            ]
            .concat(),
        ),
        (
            "expected one per node",
            [
                vec![header(4, 0)],
                node_chunks(&x, 4),
                vec![sets(vec![0, 0, 1])],
            ]
            .concat(),
        ),
        ("header sent twice", vec![header(4, 0), header(4, 0)]),
    ];
    for (expected, reqs) in cases {
        let s = aggregate(&server.url, reqs).await.unwrap_err();
        common::assert_invalid(&s, expected);
    }
    // still serving
    let ok = aggregate(
        &server.url,
        [
            vec![header(4, 0)],
            node_chunks(&x, 4),
            vec![sets(vec![0, 0, 1, 1])],
        ]
        .concat(),
    )
    .await
    .unwrap();
    assert_eq!(rows(&ok).len(), 2 * 8);
    server.stop().await;
}
