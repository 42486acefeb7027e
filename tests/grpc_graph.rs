//! The shipped LCM second-minimum model over KServe: sets given by a `batch` vector and graph
//! neighbourhoods given by `edge_index`, answers checked against the true second-smallest element,
//! and every malformed-graph case refused with INVALID_ARGUMENT.

mod common;

use common::TestServer;
use inferd::api::kserve::pb::{self, grpc_inference_service_client::GrpcInferenceServiceClient};
use inferd::serve::ServeConfig;
use inferd::train::graph::bits;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tonic::Code;

/// `x` rows and either a batch vector or an edge index, for the shipped `lcm`.
fn request(
    x: &[f32],
    f: usize,
    batch: Option<&[i64]>,
    edges: Option<(&[i64], &[i64])>,
) -> pb::ModelInferRequest {
    common::graph_request("lcm", x, f, batch, edges)
}

fn decode(resp: &pb::ModelInferResponse) -> Vec<u8> {
    let p = inferd::api::kserve::raw_f32(&resp.raw_output_contents[0]);
    p.chunks_exact(8)
        .map(|b| {
            b.iter()
                .enumerate()
                .map(|(i, &v)| ((v > 0.5) as u8) << i)
                .sum()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_minimum_of_sets_and_of_neighbourhoods() {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let mut c = GrpcInferenceServiceClient::connect(server.url.clone())
        .await
        .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(99);

    // 200 sets of 32 elements, given by a batch vector
    let (sets, size) = (200usize, 32usize);
    let (mut x, mut batch, mut truth) = (Vec::new(), Vec::new(), Vec::new());
    for g in 0..sets {
        let mut vals: Vec<u8> = (0..size).map(|_| rng.random()).collect();
        for &v in &vals {
            x.extend(bits(v));
            batch.push(g as i64);
        }
        vals.sort_unstable();
        truth.push(vals[1]);
    }
    let resp = c
        .model_infer(request(&x, 8, Some(&batch), None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.outputs[0].shape, vec![sets as i64, 8]);
    let got = decode(&resp);
    let correct = got.iter().zip(&truth).filter(|(a, b)| a == b).count();
    let acc = correct as f64 / sets as f64;
    println!("exact accuracy at size {size}: {acc}");
    assert!(acc >= 0.95, "exact accuracy {acc} at set size {size}");

    // The same sets as a graph: node i < 200 receives edges from its set's 32 element nodes.
    let n_elems = sets * size;
    let mut xg = vec![0.0f32; (sets + n_elems) * 8];
    xg[sets * 8..].copy_from_slice(&x);
    let src: Vec<i64> = (0..n_elems as i64).map(|e| sets as i64 + e).collect();
    let dst: Vec<i64> = batch.clone();
    let resp = c
        .model_infer(request(&xg, 8, None, Some((&src, &dst))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.outputs[0].shape, vec![(sets + n_elems) as i64, 8]);
    let per_node = decode(&resp);
    assert_eq!(&per_node[..sets], &got[..], "graph and set forms disagree");

    // malformed graphs
    let ok_x = vec![0.0f32; 4 * 8];
    let cases: Vec<(&str, pb::ModelInferRequest)> = vec![
        (
            "out of range",
            request(&ok_x, 8, None, Some((&[0, 4], &[1, 2]))),
        ),
        (
            "out of range",
            request(&ok_x, 8, None, Some((&[0, -1], &[1, 2]))),
        ),
        (
            "expected [N, 8]",
            request(&vec![0.0; 4 * 5], 5, None, Some((&[0], &[1]))),
        ),
        ("exactly one of", request(&ok_x, 8, None, None)),
        (
            "exactly one of",
            request(&ok_x, 8, Some(&[0, 0, 1, 1]), Some((&[0], &[1]))),
        ),
        ("expected [4]", request(&ok_x, 8, Some(&[0, 0, 1]), None)),
        (
            "must be >= 0",
            request(&ok_x, 8, Some(&[0, 0, -1, 1]), None),
        ),
    ];
    for (expected, req) in cases {
        let s = c.model_infer(req).await.unwrap_err();
        common::assert_invalid(&s, expected);
    }
    let mut wrong_rank = request(&ok_x, 8, None, Some((&[0], &[1])));
    wrong_rank.inputs[1].shape = vec![2];
    let s = c.model_infer(wrong_rank).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    // isolated nodes and self-loops are fine
    let r = c
        .model_infer(request(&ok_x, 8, None, Some((&[2, 2, 3], &[2, 2, 1]))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outputs[0].shape, vec![4, 8]);
    server.stop().await;
}
