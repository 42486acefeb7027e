//! End to end over gRPC: a real tonic client against the server started on a free loopback port.

mod common;

use common::TestServer;
use inferd::api::pb::{
    self, recon_request, recon_response, reconstruction_client::ReconstructionClient,
};
use inferd::api::tensor;
use inferd::io::cfl;
use inferd::mri::{coils, fft, metrics, phantom};
use inferd::serve::ServeConfig;
use num_complex::Complex32;
use tonic::Code;

type Client = ReconstructionClient<tonic::transport::Channel>;

async fn client(url: &str) -> Client {
    ReconstructionClient::connect(url.to_string())
        .await
        .unwrap()
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20)
}

fn header(ny: usize, nx: usize, coils: usize, slices: usize, accel: f32) -> pb::ReconHeader {
    pb::ReconHeader {
        model: String::new(),
        height: ny as u32,
        width: nx as u32,
        coils: coils as u32,
        slices: slices as u32,
        sampling: Some(pb::Sampling::variable_density(accel, 1)),
        data_consistency: None,
        return_complex: false,
        return_zero_filled: true,
        request_id: "test".into(),
        priority: pb::Priority::Normal as i32,
        dicom: None,
    }
}

fn hdr(h: pb::ReconHeader) -> pb::ReconRequest {
    pb::ReconRequest {
        msg: Some(recon_request::Msg::Header(h)),
    }
}

fn slice(index: u32, shape: &[usize], k: &[Complex32]) -> pb::ReconRequest {
    pb::ReconRequest {
        msg: Some(recon_request::Msg::Slice(pb::KSpaceSlice {
            index,
            kspace: Some(tensor::encode_c64(shape, k)),
            mask: None,
        })),
    }
}

/// Sends `reqs` and collects images until the stream ends; returns the images and the final status.
async fn exchange(
    c: &mut Client,
    reqs: Vec<pb::ReconRequest>,
) -> (Vec<pb::SliceImage>, usize, Result<(), tonic::Status>) {
    let mut stream = match c.stream_reconstruct(tokio_stream::iter(reqs)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return (vec![], 0, Err(s)),
    };
    let (mut images, mut progress) = (Vec::new(), 0);
    loop {
        match stream.message().await {
            Ok(Some(m)) => match m.msg {
                Some(recon_response::Msg::Image(i)) => images.push(i),
                Some(recon_response::Msg::Progress(_)) => progress += 1,
                None => {}
            },
            Ok(None) => return (images, progress, Ok(())),
            Err(s) => return (images, progress, Err(s)),
        }
    }
}

/// A multi-coil volume from BART's analytic k-space phantoms: Shepp–Logan, tubes, geometric objects.
fn bart_volume(n: usize, ncoils: usize) -> (Vec<Vec<Complex32>>, Vec<Vec<f32>>) {
    let dir = tempfile::tempdir().unwrap();
    let (mut ks, mut gts) = (Vec::new(), Vec::new());
    for (i, extra) in [vec![], vec!["-T"], vec!["-G"]].into_iter().enumerate() {
        let name = format!("p{i}");
        let x = n.to_string();
        let s = ncoils.to_string();
        let mut args = vec!["phantom", "-k", "-s", s.as_str(), "-x", x.as_str()];
        args.extend(extra);
        args.push(&name);
        common::bart(&args, dir.path());
        let c = cfl::read(&dir.path().join(&name)).unwrap();
        let (ns, nc, ny, nx, k) = cfl::to_slices(&c).unwrap();
        assert_eq!((ns, nc, ny, nx), (1, ncoils, n, n));
        let mut img = k.clone();
        fft::ifft2c(&mut img, n, n);
        gts.push(coils::rss(&img, n * n));
        ks.push(k);
    }
    (ks, gts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_a_multicoil_bart_volume_in_order_and_beats_zero_filled() {
    let n = 128;
    let ncoils = 8;
    let (ks, gts) = bart_volume(n, ncoils);
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let mut c = client(&server.url).await;
    for accel in [4.0f32, 8.0] {
        let mut reqs = vec![hdr(header(n, n, ncoils, ks.len(), accel))];
        for (i, k) in ks.iter().enumerate() {
            reqs.push(slice(i as u32, &[ncoils, n, n], k));
        }
        let (images, progress, status) = exchange(&mut c, reqs).await;
        status.unwrap();
        assert_eq!(progress, ks.len());
        assert_eq!(
            images.iter().map(|i| i.index).collect::<Vec<_>>(),
            (0..ks.len() as u32).collect::<Vec<_>>()
        );
        for (img, gt) in images.iter().zip(&gts) {
            let (shape, rec) = tensor::to_f32(img.magnitude.as_ref().unwrap()).unwrap();
            assert_eq!(shape, vec![n, n]);
            let (_, zf) = tensor::to_f32(img.zero_filled.as_ref().unwrap()).unwrap();
            let (s_zf, s_rec) = (metrics::ssim(gt, &zf, n, n), metrics::ssim(gt, &rec, n, n));
            let (e_zf, e_rec) = (metrics::nmse(gt, &zf), metrics::nmse(gt, &rec));
            println!("R={accel} slice {}: SSIM zero-filled {s_zf:.4} → inferd {s_rec:.4}; NMSE {e_zf:.4} → {e_rec:.4}; sampled {:.3}", img.index, img.sampled_fraction);
            assert!(
                s_rec > s_zf,
                "slice {}: SSIM {s_rec} not above zero-filled {s_zf}",
                img.index
            );
            assert!(
                e_rec < e_zf,
                "slice {}: NMSE {e_rec} not below zero-filled {e_zf}",
                img.index
            );
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_slice_keeps_the_input_intensity_scale() {
    let n = 256;
    let img = phantom::SyntheticMr::new(424242).sample(n, n);
    let mut k = img.complex.clone();
    fft::fft2c(&mut k, n, n);
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let mut c = client(&server.url).await;
    let models = c
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    assert!(
        models
            .iter()
            .any(|m| m.is_default && m.name == "recon-unrolled" && m.parameters > 0),
        "{models:?}"
    );
    // Provenance: the weights' SHA-256 (as coreutils' sha256sum computes it from the shipped file,
    // which the binary embeds) and what the file says of its training.
    let default = models.iter().find(|m| m.name == "recon-unrolled").unwrap();
    let sum = common::run(
        std::process::Command::new("sha256sum")
            .arg(common::repo().join("models/recon-unrolled.safetensors")),
    );
    assert_eq!(sum.split_whitespace().next(), Some(default.sha256.as_str()));
    for key in ["training_data", "recipe", "validation", "licence"] {
        assert!(
            default.provenance.contains_key(key),
            "{key}: {:?}",
            default.provenance
        );
    }
    assert!(default.provenance["training_data"].contains("nilearn"));
    let mut per_scale = Vec::new();
    for scale in [1.0f32, 1000.0] {
        let ks: Vec<Complex32> = k.iter().map(|v| v * scale).collect();
        let req = pb::ReconstructSliceRequest {
            header: Some(pb::ReconHeader {
                return_complex: true,
                ..header(n, n, 1, 1, 4.0)
            }),
            slice: Some(pb::KSpaceSlice {
                index: 0,
                kspace: Some(tensor::encode_c64(&[1, n, n], &ks)),
                mask: None,
            }),
        };
        let out = c.reconstruct_slice(req).await.unwrap().into_inner();
        let (_, rec) = tensor::to_f32(out.magnitude.as_ref().unwrap()).unwrap();
        let (_, zf) = tensor::to_f32(out.zero_filled.as_ref().unwrap()).unwrap();
        let (_, cx) = tensor::to_c64(out.complex.as_ref().unwrap()).unwrap();
        let rec: Vec<f32> = rec.iter().map(|v| v / scale).collect();
        let zf: Vec<f32> = zf.iter().map(|v| v / scale).collect();
        let peak = rec.iter().cloned().fold(0.0f32, f32::max);
        assert!(
            (0.8..1.2).contains(&peak),
            "peak {peak}: an image in [0, 1] must come back in [0, 1]"
        );
        for (m, z) in rec.iter().zip(&cx) {
            assert!(
                (z.norm() / scale - m).abs() <= 1e-3 * (1.0 + m),
                "complex output magnitude matches"
            );
        }
        let (s_zf, s_rec) = (
            metrics::ssim(&img.magnitude, &zf, n, n),
            metrics::ssim(&img.magnitude, &rec, n, n),
        );
        let (e_zf, e_rec) = (
            metrics::nmse(&img.magnitude, &zf),
            metrics::nmse(&img.magnitude, &rec),
        );
        println!("scale {scale}: SSIM zero-filled {s_zf:.4} → inferd {s_rec:.4}, NMSE {e_zf:.4} → {e_rec:.4}, peak {peak:.3}");
        assert!(s_rec > s_zf, "SSIM {s_rec} vs zero-filled {s_zf}");
        assert!(e_rec < e_zf, "NMSE {e_rec} vs zero-filled {e_zf}");
        per_scale.push((s_rec, e_rec));
    }
    // the same image at both scales gives the same reconstruction (the scale is divided out)
    let ((s1, e1), (s2, e2)) = (per_scale[0], per_scale[1]);
    assert!(
        (s1 - s2).abs() < 2e-3 && (e1 - e2).abs() < 2e-3 * e1.max(1e-6) + 1e-5,
        "scale 1: SSIM {s1} NMSE {e1}; scale 1000: SSIM {s2} NMSE {e2}"
    );
    server.stop().await;
}

async fn expect_stream_error(
    c: &mut Client,
    reqs: Vec<pb::ReconRequest>,
    code: Code,
    needle: &str,
) {
    let (_, _, status) = exchange(c, reqs).await;
    let s = status.expect_err("expected an error status");
    assert_eq!(s.code(), code, "message: {}", s.message());
    assert!(
        s.message().contains(needle),
        "message {:?} should mention {needle:?}",
        s.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_status_and_the_server_keeps_serving() {
    let n = 32;
    let server = TestServer::start(ServeConfig {
        max_message_mb: 1,
        ..ServeConfig::for_tests()
    })
    .await;
    let mut c = client(&server.url).await;
    let good = vec![Complex32::new(0.1, 0.0); 2 * n * n];
    let h = || header(n, n, 2, 1, 4.0);

    expect_stream_error(
        &mut c,
        vec![slice(0, &[2, n, n], &good)],
        Code::InvalidArgument,
        "first message must be a ReconHeader",
    )
    .await;
    expect_stream_error(
        &mut c,
        vec![hdr(h()), hdr(h())],
        Code::InvalidArgument,
        "header sent twice",
    )
    .await;
    expect_stream_error(
        &mut c,
        vec![hdr(pb::ReconHeader {
            model: "nope".into(),
            ..h()
        })],
        Code::NotFound,
        "loaded models",
    )
    .await;
    expect_stream_error(
        &mut c,
        vec![hdr(pb::ReconHeader { coils: 0, ..h() })],
        Code::InvalidArgument,
        "expected 1 to",
    )
    .await;
    expect_stream_error(
        &mut c,
        vec![hdr(pb::ReconHeader { height: 0, ..h() })],
        Code::InvalidArgument,
        "height",
    )
    .await;
    expect_stream_error(
        &mut c,
        vec![
            hdr(pb::ReconHeader {
                sampling: None,
                ..h()
            }),
            slice(0, &[2, n, n], &good),
        ],
        Code::InvalidArgument,
        "no mask",
    )
    .await;
    // wrong rank, wrong shape, wrong dtype, empty, NaN
    expect_stream_error(
        &mut c,
        vec![hdr(h()), slice(0, &[2 * n, n], &good)],
        Code::InvalidArgument,
        "expected [2, 32, 32] [coils, ky, kx]",
    )
    .await;
    expect_stream_error(
        &mut c,
        vec![hdr(h()), slice(0, &[2, n / 2, 2 * n], &good)],
        Code::InvalidArgument,
        "expected [2, 32, 32]",
    )
    .await;
    let as_f32 = pb::ReconRequest {
        msg: Some(recon_request::Msg::Slice(pb::KSpaceSlice {
            index: 0,
            kspace: Some(tensor::encode_f32(&[2, n, n], &vec![0.0; 2 * n * n])),
            mask: None,
        })),
    };
    expect_stream_error(
        &mut c,
        vec![hdr(h()), as_f32],
        Code::InvalidArgument,
        "dtype FLOAT32, expected COMPLEX64",
    )
    .await;
    expect_stream_error(
        &mut c,
        vec![hdr(h()), slice(0, &[], &[])],
        Code::InvalidArgument,
        "expected [2, 32, 32]",
    )
    .await;
    let mut nan = good.clone();
    nan[17] = Complex32::new(f32::NAN, 0.0);
    expect_stream_error(
        &mut c,
        vec![hdr(h()), slice(0, &[2, n, n], &nan)],
        Code::InvalidArgument,
        "non-finite",
    )
    .await;
    // mask not matching the k-space
    let bad_mask = pb::ReconHeader {
        sampling: Some(pb::Sampling {
            kind: Some(pb::sampling::Kind::Mask(tensor::encode_f32(
                &[n, n + 1],
                &vec![1.0; n * (n + 1)],
            ))),
        }),
        ..h()
    };
    expect_stream_error(
        &mut c,
        vec![hdr(bad_mask)],
        Code::InvalidArgument,
        "expected [32, 32] [ky, kx]",
    )
    .await;
    let non_binary = pb::ReconHeader {
        sampling: Some(pb::Sampling {
            kind: Some(pb::sampling::Kind::Mask(tensor::encode_f32(
                &[n, n],
                &vec![0.5; n * n],
            ))),
        }),
        ..h()
    };
    expect_stream_error(
        &mut c,
        vec![hdr(non_binary)],
        Code::InvalidArgument,
        "expected only 0",
    )
    .await;
    // out-of-order slices, too many slices, too few slices
    expect_stream_error(
        &mut c,
        vec![hdr(h()), slice(3, &[2, n, n], &good)],
        Code::InvalidArgument,
        "out of order or range",
    )
    .await;
    let (imgs, _, st) = exchange(
        &mut c,
        vec![
            hdr(h()),
            slice(0, &[2, n, n], &good),
            slice(1, &[2, n, n], &good),
        ],
    )
    .await;
    assert_eq!(imgs.len(), 1, "the valid slice is still answered");
    assert_eq!(st.unwrap_err().code(), Code::InvalidArgument);
    let (imgs, _, st) = exchange(
        &mut c,
        vec![
            hdr(pb::ReconHeader { slices: 2, ..h() }),
            slice(0, &[2, n, n], &good),
        ],
    )
    .await;
    assert_eq!(imgs.len(), 1);
    assert!(st
        .unwrap_err()
        .message()
        .contains("ended after 1 of the 2 slices"));
    // over the message limit (1 MiB): 2 coils x 256 x 256 complex64 = 1 MiB + framing
    let big = vec![Complex32::new(0.0, 0.0); 2 * 256 * 256];
    expect_stream_error(
        &mut c,
        vec![
            hdr(header(256, 256, 2, 1, 4.0)),
            slice(0, &[2, 256, 256], &big),
        ],
        Code::ResourceExhausted,
        "message length too large",
    )
    .await;
    let unary_big = pb::ReconstructSliceRequest {
        header: Some(header(256, 256, 2, 1, 4.0)),
        slice: Some(pb::KSpaceSlice {
            index: 0,
            kspace: Some(tensor::encode_c64(&[2, 256, 256], &big)),
            mask: None,
        }),
    };
    let s = c.reconstruct_slice(unary_big).await.unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{}", s.message());

    // a client that goes away mid-stream: send the header and one slice, then drop the call
    {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(hdr(pb::ReconHeader { slices: 5, ..h() }))
            .await
            .unwrap();
        tx.send(slice(0, &[2, n, n], &good)).await.unwrap();
        let mut c2 = client(&server.url).await;
        let call = c2
            .stream_reconstruct(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap();
        drop(call);
        drop(tx);
    }

    // after all that, a valid request still works
    let (imgs, progress, st) = exchange(&mut c, vec![hdr(h()), slice(0, &[2, n, n], &good)]).await;
    st.unwrap();
    assert_eq!((imgs.len(), progress), (1, 1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_and_recovers() {
    let n = 128;
    let server = TestServer::start(ServeConfig {
        queue_capacity: 1,
        max_batch: Some(1),
        ..ServeConfig::for_tests()
    })
    .await;
    let img = phantom::SyntheticMr::new(5).sample(n, n);
    let mut k = img.complex.clone();
    fft::fft2c(&mut k, n, n);
    let req = pb::ReconstructSliceRequest {
        header: Some(header(n, n, 1, 1, 4.0)),
        slice: Some(pb::KSpaceSlice {
            index: 0,
            kspace: Some(tensor::encode_c64(&[1, n, n], &k)),
            mask: None,
        }),
    };
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let (url, req) = (server.url.clone(), req.clone());
            tokio::spawn(async move { client(&url).await.reconstruct_slice(req).await })
        })
        .collect();
    let (ok, refused) = common::served_and_refused(calls, &["items waiting"]).await;
    assert!(ok >= 1 && refused >= 1, "{ok} served, {refused} refused");
    client(&server.url)
        .await
        .reconstruct_slice(req)
        .await
        .unwrap();
    server.stop().await;
}
