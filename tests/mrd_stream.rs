//! The MRD streaming port (`--mrd-addr`) with the ISMRMRD project's own Python package as the
//! scanner-side client (`tests/reference/mrd_client.py`, `ismrmrd.serialization`): scans written
//! by `ismrmrd_generate_cartesian_shepp_logan` (multi-coil, noise scans, 2× and 4× with calibration
//! lines, several repetitions) and a golden-angle radial scan made by BART come back as images equal
//! to the gRPC path's on the same data, with their geometry, counters and series; two clients at
//! once; every malformed session ends with `ERR` and the server keeps serving.

mod common;

use common::TestServer;
use inferd::api::{pb, tensor};
use inferd::io::{mrd, npy, npz};
use inferd::serve::ServeConfig;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What a session sent back: images in arrival order with their headers, and TEXT messages.
struct Returned {
    images: Vec<(Value, npy::NpyArray)>,
    texts: Vec<String>,
}

fn client_command(addr: SocketAddr, input: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = common::python();
    c.arg(common::repo().join("tests/reference/mrd_client.py"))
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(input)
        .arg(out)
        .args(extra);
    c
}

fn returned(out: &Path) -> Returned {
    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{}.json", out.display())).unwrap())
            .unwrap();
    let arrays = npz::read(out).unwrap_or_default();
    let images = j["images"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(k, h)| (h.clone(), arrays[&format!("img_{k:03}")].clone()))
        .collect();
    let texts = j["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    Returned { images, texts }
}

/// Streams `input` to the server with the ISMRMRD Python client.
fn stream(addr: SocketAddr, input: &Path, out: &Path, extra: &[&str]) -> Returned {
    common::run(&mut client_command(addr, input, out, extra));
    returned(out)
}

fn f32s(a: &npy::NpyArray) -> &[f32] {
    match &a.data {
        npy::NpyData::F32(v) => v,
        other => panic!("expected float32 pixels, got {other:?}"),
    }
}

/// The gRPC path's magnitude of one slice: header with the mask (Cartesian) or trajectory, one slice.
async fn grpc_magnitude(
    url: &str,
    model: &str,
    ny: usize,
    nx: usize,
    coils: usize,
    sampling: pb::sampling::Kind,
    kspace: pb::Tensor,
) -> Vec<f32> {
    let reqs = vec![
        pb::ReconRequest {
            msg: Some(pb::recon_request::Msg::Header(pb::ReconHeader {
                model: model.to_string(),
                height: ny as u32,
                width: nx as u32,
                coils: coils as u32,
                slices: 1,
                sampling: Some(pb::Sampling {
                    kind: Some(sampling),
                }),
                ..Default::default()
            })),
        },
        pb::ReconRequest {
            msg: Some(pb::recon_request::Msg::Slice(pb::KSpaceSlice {
                index: 0,
                kspace: Some(kspace),
                mask: None,
            })),
        },
    ];
    let images = common::reconstruct(url, reqs).await.unwrap();
    tensor::decode_f32(
        images[0].magnitude.as_ref().unwrap(),
        "magnitude",
        &[ny, nx],
        "[ny, nx]",
    )
    .unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn peak(a: &[f32]) -> f32 {
    a.iter().fold(0.0, |m, &v| m.max(v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cartesian_scans_stream_back_the_grpc_images_with_their_geometry() {
    let server = TestServer::start_with_mrd(ServeConfig::for_tests()).await;
    let addr = server.mrd_addr.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // 8 coils, 2× with 16 calibration lines and a noise scan; 4 coils, 4× with 24 calibration lines.
    // The generator shifts the sampled lines between repetitions (acceleration × repetitions of them).
    let scans = [
        common::shepp_logan_mrd(
            dir.path(),
            "r2.h5",
            &["-m", "128", "-c", "8", "-a", "2", "-w", "16", "-C"],
        ),
        common::shepp_logan_mrd(
            dir.path(),
            "r4.h5",
            &["-m", "128", "-c", "4", "-a", "4", "-w", "24", "-r", "1"],
        ),
    ];
    // two scanners at once
    let clients: Vec<_> = scans
        .iter()
        .enumerate()
        .map(|(k, input)| {
            let out = dir.path().join(format!("out{k}.npz"));
            let mut c = client_command(
                addr,
                input,
                &out,
                &["--params", r#"{"pixeltype": "float"}"#],
            );
            std::thread::spawn(move || {
                common::run(&mut c);
                returned(&out)
            })
        })
        .collect();
    let results: Vec<Returned> = clients.into_iter().map(|t| t.join().unwrap()).collect();

    for (input, got) in scans.iter().zip(&results) {
        assert!(got.texts.is_empty(), "{:?}", got.texts);
        let reps = got.images.len();
        assert!(reps >= 2, "one image per repetition, got {reps}");
        // slices run side by side, so images may arrive out of order; image_index numbers them
        let mut indices: Vec<u64> = got
            .images
            .iter()
            .map(|(h, _)| h["index"].as_u64().unwrap())
            .collect();
        indices.sort();
        assert_eq!(indices, (1..=reps as u64).collect::<Vec<_>>());
        for (h, img) in &got.images {
            let rep = h["repetition"].as_u64().unwrap() as u32;
            assert_eq!(h["series"], 1);
            assert_eq!(
                h["index"].as_u64().unwrap() as u32,
                rep + 1,
                "the generator sends one slice per repetition, in order"
            );
            assert_eq!(h["matrix"], serde_json::json!([128, 128, 1]));
            assert_eq!(h["fov"], serde_json::json!([300.0, 300.0, 6.0]));
            assert_eq!(h["data_type"], 5, "float magnitude");
            assert_eq!(h["image_type"], 1);
            assert_eq!(h["meta"]["Keep_image_geometry"], "1");
            assert!(h["meta"]["SeriesDescription"]
                .as_str()
                .unwrap()
                .contains("inferd"));
            // the same repetition through inferd's MRD file reader and the gRPC API
            let raw = mrd::read(
                input,
                mrd::Selection {
                    repetition: rep,
                    ..Default::default()
                },
            )
            .unwrap();
            let (ny, nx) = (raw.ny, raw.nx);
            let grpc = grpc_magnitude(
                &server.url,
                "",
                ny,
                nx,
                raw.coils,
                pb::sampling::Kind::Mask(tensor::encode_f32(&[ny, nx], raw.mask.as_ref().unwrap())),
                tensor::encode_c64(&[raw.coils, ny, nx], &raw.data),
            )
            .await;
            assert_eq!(img.shape, vec![ny, nx]);
            let d = max_abs_diff(f32s(img), &grpc);
            assert!(
                d <= 1e-5 * peak(&grpc),
                "{}: repetition {rep}: MRD vs gRPC differ by {d} (peak {})",
                input.display(),
                peak(&grpc)
            );
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn radial_scan_from_bart_keeps_orientation_and_equals_the_grpc_path() {
    let server = TestServer::start_with_mrd(ServeConfig::for_tests()).await;
    let addr = server.mrd_addr.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = 96;
    common::run(
        common::python()
            .arg(common::repo().join("tests/reference/mrd_radial.py"))
            .arg(dir.path())
            .arg(n.to_string())
            .arg("60"),
    );
    let out = dir.path().join("radial.npz");
    let got = stream(
        addr,
        &dir.path().join("radial.h5"),
        &out,
        &[
            "--params",
            r#"{"pixeltype": "float", "complex": true, "zerofilled": true, "seriesdescription": "radial test"}"#,
        ],
    );
    assert!(got.texts.is_empty(), "{:?}", got.texts);
    let series: Vec<u64> = got
        .images
        .iter()
        .map(|(h, _)| h["series"].as_u64().unwrap())
        .collect();
    assert_eq!(
        series,
        [1, 2, 3],
        "magnitude, complex and zero-filled series"
    );
    let (h, img) = &got.images[0];
    assert_eq!(h["position"], serde_json::json!([0.0, 0.0, 12.5]));
    assert_eq!(h["measurement_uid"], 77);
    assert_eq!(
        h["acquisition_time_stamp"], 1000,
        "the slice's first acquisition"
    );
    assert_eq!(h["meta"]["SeriesDescription"], "radial test");
    assert_eq!(got.images[1].0["data_type"], 7, "complex float");
    assert_eq!(
        got.images[2].0["meta"]["SeriesDescription"],
        "radial test zero-filled"
    );

    // the gRPC path on the same samples: trajectory (k0, k1) in grid units, as BART gives it
    let traj = npy::read(&dir.path().join("traj.npy")).unwrap();
    let ksp = npy::read(&dir.path().join("ksp.npy")).unwrap();
    let (npy::NpyData::F32(t), npy::NpyData::C64(k)) = (&traj.data, &ksp.data) else {
        panic!("unexpected dtypes")
    };
    let samples = traj.shape[0];
    // the `inferd` pipeline serves non-Cartesian scans with recon-radial
    let grpc = grpc_magnitude(
        &server.url,
        "recon-radial",
        n,
        n,
        1,
        pb::sampling::Kind::Trajectory(tensor::encode_f32(&[samples, 2], t)),
        tensor::encode_c64(&[1, samples], k),
    )
    .await;
    let mine = f32s(img);
    let d = max_abs_diff(mine, &grpc);
    assert!(d <= 1e-5 * peak(&grpc), "MRD vs gRPC differ by {d}");

    // orientation: the image is the test image, not its transpose or a flip
    let truth = npy::read(&dir.path().join("truth.npy")).unwrap();
    let truth = match &truth.data {
        npy::NpyData::F32(v) => v.clone(),
        _ => panic!(),
    };
    let corr = |a: &[f32], b: &[f32]| {
        let (ma, mb) = (
            a.iter().sum::<f32>() / a.len() as f32,
            b.iter().sum::<f32>() / b.len() as f32,
        );
        let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
        for (x, y) in a.iter().zip(b) {
            let (x, y) = ((x - ma) as f64, (y - mb) as f64);
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        ab / (aa * bb).sqrt()
    };
    let transposed: Vec<f32> = (0..n * n).map(|i| truth[(i % n) * n + i / n]).collect();
    let flipped: Vec<f32> = (0..n * n)
        .map(|i| truth[(n - 1 - i / n) * n + i % n])
        .collect();
    let (c, ct, cf) = (
        corr(mine, &truth),
        corr(mine, &transposed),
        corr(mine, &flipped),
    );
    assert!(
        c > 0.95 && c > ct + 0.2 && c > cf + 0.2,
        "corr {c}, transposed {ct}, flipped {cf}"
    );
    server.stop().await;
}

/// Sends raw bytes, half-closes, and reads everything the server answers.
fn raw_session(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The `ERR` text of a refused session (TEXT then CLOSE).
fn err_text(answer: &[u8]) -> String {
    assert!(answer.len() >= 8, "expected TEXT + CLOSE, got {answer:?}");
    assert_eq!(u16::from_le_bytes([answer[0], answer[1]]), 5, "TEXT first");
    let n = u32::from_le_bytes(answer[2..6].try_into().unwrap()) as usize;
    let text = String::from_utf8(answer[6..6 + n].to_vec()).unwrap();
    assert_eq!(
        &answer[6 + n..],
        &4u16.to_le_bytes(),
        "then CLOSE, nothing else"
    );
    assert!(text.starts_with("ERR "), "{text}");
    text
}

fn config_file(name: &str) -> Vec<u8> {
    let mut m = 1u16.to_le_bytes().to_vec();
    let mut body = name.as_bytes().to_vec();
    body.resize(1024, 0);
    m.extend(body);
    m
}

fn text_message(id: u16, text: &str) -> Vec<u8> {
    let mut m = id.to_le_bytes().to_vec();
    m.extend((text.len() as u32).to_le_bytes());
    m.extend(text.as_bytes());
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_sessions_end_with_err_and_the_server_keeps_serving() {
    let server = TestServer::start_with_mrd(ServeConfig::for_tests()).await;
    let addr = server.mrd_addr.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let scan = common::shepp_logan_mrd(
        dir.path(),
        "sl.h5",
        &["-m", "64", "-c", "2", "-a", "2", "-w", "8"],
    );
    let header = {
        let f = inferd::io::h5::H5File::open(&scan).unwrap();
        f.dataset("/dataset/xml").unwrap().read_string().unwrap()
    };

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "unknown config",
            config_file("gadgetron_default"),
            "unknown config",
        ),
        (
            "parameters that are not JSON",
            text_message(2, "<gadgetronStreamConfiguration/>"),
            "not JSON",
        ),
        (
            "an unknown parameter",
            text_message(2, r#"{"lambda": 2, "colour": "red"}"#),
            "unknown parameter",
        ),
        (
            "a bad data consistency",
            text_message(2, r#"{"dc": "magic"}"#),
            "not one of",
        ),
        (
            "a header that is not MRD XML",
            text_message(3, "<html/>"),
            "HEADER",
        ),
        (
            "an unknown message id",
            4242u16.to_le_bytes().to_vec(),
            "unknown message id 4242",
        ),
        (
            "an oversized declared text",
            [2u16.to_le_bytes().to_vec(), u32::MAX.to_le_bytes().to_vec()].concat(),
            "at most",
        ),
        (
            "an image sent to a reconstruction server",
            1022u16.to_le_bytes().to_vec(),
            "IMAGE",
        ),
        (
            "acquisitions before the header",
            {
                let mut m = 1008u16.to_le_bytes().to_vec();
                m.extend(vec![0u8; 340]);
                m
            },
            "before HEADER",
        ),
        (
            "an acquisition declaring 65535 × 65535 samples",
            {
                let mut h = vec![0u8; 340];
                h[34..36].copy_from_slice(&u16::MAX.to_le_bytes());
                h[38..40].copy_from_slice(&u16::MAX.to_le_bytes());
                [text_message(3, &header), 1008u16.to_le_bytes().to_vec(), h].concat()
            },
            "at most",
        ),
        (
            "an acquisition whose line is outside the matrix",
            {
                let mut h = vec![0u8; 340];
                h[34..36].copy_from_slice(&128u16.to_le_bytes()); // samples
                h[38..40].copy_from_slice(&1u16.to_le_bytes()); // channels
                h[172..174].copy_from_slice(&64u16.to_le_bytes()); // centre sample
                h[242..244].copy_from_slice(&500u16.to_le_bytes()); // line 500 of 64
                [
                    text_message(3, &header),
                    1008u16.to_le_bytes().to_vec(),
                    h,
                    vec![0u8; 128 * 8],
                ]
                .concat()
            },
            "falls outside",
        ),
        (
            "an acquisition with more coils than the server takes",
            {
                let mut h = vec![0u8; 340];
                h[34..36].copy_from_slice(&1u16.to_le_bytes());
                h[38..40].copy_from_slice(&129u16.to_le_bytes());
                [
                    text_message(3, &header),
                    1008u16.to_le_bytes().to_vec(),
                    h,
                    vec![0u8; 129 * 8],
                ]
                .concat()
            },
            "at most 128",
        ),
        (
            "a scan that opens slices and never finishes them",
            {
                let mut m = text_message(3, &header);
                for slice in 0..70u16 {
                    let mut h = vec![0u8; 340];
                    h[34..36].copy_from_slice(&128u16.to_le_bytes());
                    h[38..40].copy_from_slice(&1u16.to_le_bytes());
                    h[172..174].copy_from_slice(&64u16.to_le_bytes());
                    h[242 + 6..242 + 8].copy_from_slice(&slice.to_le_bytes());
                    m.extend(1008u16.to_le_bytes());
                    m.extend(h);
                    m.extend(vec![0u8; 128 * 8]);
                }
                m
            },
            "incomplete at once",
        ),
    ];
    for (what, bytes, expected) in cases {
        let answer = tokio::task::spawn_blocking(move || raw_session(addr, &bytes))
            .await
            .unwrap();
        let text = err_text(&answer);
        assert!(text.contains(expected), "{what}: {text}");
    }

    // a message cut off mid-way, and a client vanishing mid-scan: no answer, nothing held
    let cut = [
        text_message(3, &header),
        1008u16.to_le_bytes().to_vec(),
        vec![0u8; 100],
    ]
    .concat();
    let answer = tokio::task::spawn_blocking(move || raw_session(addr, &cut))
        .await
        .unwrap();
    assert!(answer.is_empty(), "{answer:?}");
    let out = dir.path().join("gone.npz");
    let gone = stream(addr, &scan, &out, &["--stop-after", "20"]);
    assert!(gone.images.is_empty());

    // still serving, over MRD and gRPC
    let ok = stream(
        addr,
        &scan,
        &dir.path().join("ok.npz"),
        &[
            "--params",
            r#"{"pixeltype": "uint16", "dc": "cg", "lambda": "5"}"#,
        ],
    );
    assert!(ok.texts.is_empty(), "{:?}", ok.texts);
    assert!(!ok.images.is_empty());
    for (h, img) in &ok.images {
        assert_eq!(h["data_type"], 1, "uint16");
        assert!(peak(f32s(img)) <= 65535.0 && peak(f32s(img)) > 100.0);
    }
    common::health(&server.url).await;
    let m = server.metrics();
    assert!(m.contains("protocol=\"mrd\""), "MRD sessions are counted");
    // every session above has ended, however it ended: nothing stays reserved
    let mut reserved = f64::NAN;
    for _ in 0..100 {
        reserved = common::metric(&server.metrics(), &["inferd_memory_reserved_bytes"]);
        if reserved == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        reserved, 0.0,
        "memory still reserved after every session ended"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn returned_images_become_valid_dicom_with_inferds_writer() {
    use inferd::io::acquisition::AcquisitionInfo;
    use inferd::pacs::dicom::{Provenance, Series};
    let server = TestServer::start_with_mrd(ServeConfig::for_tests()).await;
    let addr = server.mrd_addr.unwrap();
    let dir = tempfile::tempdir().unwrap();
    common::run(
        common::python()
            .arg(common::repo().join("tests/reference/mrd_radial.py"))
            .arg(dir.path())
            .arg("64")
            .arg("40"),
    );
    let mrd_out = dir.path().join("images.h5");
    let got = stream(
        addr,
        &dir.path().join("radial.h5"),
        &dir.path().join("out.npz"),
        &["--mrd-out", mrd_out.to_str().unwrap()],
    );
    assert!(
        mrd_out.exists(),
        "the client wrote the images into an MRD file"
    );
    let (h, img) = &got.images[0];
    let v3 = |k: &str| -> [f64; 3] {
        let a = h[k].as_array().unwrap();
        [0, 1, 2].map(|i| a[i].as_f64().unwrap())
    };
    let [cols, rows] = [0, 1].map(|i| h["matrix"][i].as_u64().unwrap() as usize);
    let fov = [h["fov"][0].as_f64().unwrap(), h["fov"][1].as_f64().unwrap()];
    let placement = mrd::plane(
        v3("position"),
        v3("read_dir"),
        v3("phase_dir"),
        fov,
        rows,
        cols,
    )
    .expect("the image carries its orientation");
    let info = AcquisitionInfo {
        fov_mm: Some([fov[1], fov[0]]),
        slice_thickness_mm: Some(5.0),
        series_description: h["meta"]["SeriesDescription"].as_str().map(String::from),
        slices: vec![placement],
        ..Default::default()
    };
    let series = Series::new(
        info,
        &Default::default(),
        1,
        &Provenance {
            model: "recon-radial".into(),
            sampling: "radial".into(),
            ..Default::default()
        },
        1,
    )
    .unwrap();
    let dcm = series.encode(0, f32s(img), rows, cols).unwrap();
    let path = dir.path().join("image.dcm");
    std::fs::write(&path, &dcm.file).unwrap();
    let out = Command::new("dciodvfy")
        .arg(&path)
        .output()
        .expect("dciodvfy (dicom3tools) must be installed; see scripts/test.sh");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("Error")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_port_serves_clients_with_certificates_and_refuses_plaintext() {
    let pki = common::pki::Pki::new();
    let mut config = ServeConfig::for_tests();
    config.tls_cert = Some(pki.path("server.pem"));
    config.tls_key = Some(pki.path("server.key"));
    config.tls_client_ca = Some(pki.path("ca.pem"));
    let server = TestServer::start_with_mrd(config).await;
    let addr = server.mrd_addr.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let scan = common::shepp_logan_mrd(dir.path(), "sl.h5", &["-m", "64", "-c", "2"]);
    let tls = |who: &str| {
        vec![
            "--tls-ca".to_string(),
            pki.path("ca.pem").display().to_string(),
            "--tls-cert".to_string(),
            pki.path(&format!("{who}.pem")).display().to_string(),
            "--tls-key".to_string(),
            pki.path(&format!("{who}.key")).display().to_string(),
        ]
    };
    let args = tls("client");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let got = stream(addr, &scan, &dir.path().join("tls.npz"), &args);
    assert!(got.texts.is_empty(), "{:?}", got.texts);
    assert_eq!(got.images.len(), 1);
    // a client certificate from another CA, and plaintext, get no session
    let args = tls("intruder");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = client_command(addr, &scan, &dir.path().join("x.npz"), &args)
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "a foreign certificate must fail the handshake"
    );
    let plain = tokio::task::spawn_blocking(move || raw_session(addr, &config_file("inferd")))
        .await
        .unwrap();
    assert!(
        plain.is_empty() || plain[0] == 0x15,
        "TLS alert or nothing: {plain:?}"
    );
    let args = tls("client");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let again = stream(addr, &scan, &dir.path().join("again.npz"), &args);
    assert_eq!(again.images.len(), 1, "still serving");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scan_in_progress_finishes_when_the_server_drains() {
    let server = TestServer::start_with_mrd(ServeConfig::for_tests()).await;
    let addr = server.mrd_addr.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let scan = common::shepp_logan_mrd(dir.path(), "sl.h5", &["-m", "64", "-c", "2", "-a", "2"]);
    let out = dir.path().join("drain.npz");
    let mut c = client_command(addr, &scan, &out, &["--pause-before-close", "3"]);
    let client = std::thread::spawn(move || {
        common::run(&mut c);
        returned(&out)
    });
    // shut down while the client holds its session open
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopped = tokio::spawn(server.stop());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        TcpStream::connect(addr).is_err(),
        "no new MRD sessions while draining"
    );
    let got = tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap();
    assert!(got.texts.is_empty(), "{:?}", got.texts);
    assert_eq!(
        got.images.len(),
        2,
        "every slice of the scan came back, then CLOSE"
    );
    stopped.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn images_also_go_to_the_pacs_when_the_session_asks() {
    use common::orthanc::{Orthanc, AET};
    let dir = tempfile::tempdir().unwrap();
    let scan = common::shepp_logan_mrd(dir.path(), "sl.h5", &["-m", "64", "-c", "2", "-a", "2"]);
    // a server without a PACS refuses the parameter, saying why
    let plain = TestServer::start_with_mrd(ServeConfig::for_tests()).await;
    let refused = stream(
        plain.mrd_addr.unwrap(),
        &scan,
        &dir.path().join("refused.npz"),
        &["--params", r#"{"pacs": true}"#],
    );
    assert!(
        refused
            .texts
            .iter()
            .any(|t| t.contains("no PACS configured")),
        "{:?}",
        refused.texts
    );
    plain.stop().await;

    let o = Orthanc::start(&dir.path().join("orthanc"));
    let mut config = ServeConfig::for_tests();
    config.pacs.pacs_addr = Some(o.dicom_addr());
    config.pacs.called_aet = AET.into();
    config.pacs.outbox = dir.path().join("outbox");
    let server = TestServer::start_with_mrd(config).await;
    let got = stream(
        server.mrd_addr.unwrap(),
        &scan,
        &dir.path().join("pacs.npz"),
        &[
            "--params",
            r#"{"pacs": true, "seriesdescription": "mrd to pacs"}"#,
        ],
    );
    assert!(got.texts.is_empty(), "{:?}", got.texts);
    let n = got.images.len();
    assert_eq!(n, 2);
    for _ in 0..300 {
        if o.instances().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids = o.instances();
    assert_eq!(
        ids.len(),
        n,
        "every magnitude image arrived in the PACS once"
    );
    let tags: Vec<Value> = ids.iter().map(|id| o.instance_tags(id)).collect();
    for t in &tags {
        assert_eq!(t["SeriesDescription"], "mrd to pacs recon-unrolled");
        assert_eq!(t["Rows"], "64");
        assert_eq!(
            t["SeriesInstanceUID"], tags[0]["SeriesInstanceUID"],
            "one series"
        );
    }
    let mut numbers: Vec<&str> = tags
        .iter()
        .map(|t| t["InstanceNumber"].as_str().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(numbers, ["1", "2"]);
    server.stop().await;
}

/// Orthanc with its DICOMweb plugin (Debian's orthanc-dicomweb) and HTTP basic authentication.
fn orthanc_dicomweb(dir: &Path) -> common::orthanc::Orthanc {
    common::orthanc::Orthanc::start_with(
        dir,
        serde_json::json!({
            "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
            "AuthenticationEnabled": true,
            "RegisteredUsers": { "inferd": "s3cret" },
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stow_rs_delivers_to_a_dicomweb_archive_and_keeps_images_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    let scan = common::shepp_logan_mrd(dir.path(), "sl.h5", &["-m", "64", "-c", "2", "-a", "2"]);
    let o = orthanc_dicomweb(&dir.path().join("orthanc"));
    let url = format!("http://127.0.0.1:{}/dicom-web", o.http_port());
    let start = |password: &str, outbox: &str| {
        let pw = dir.path().join(format!("{outbox}.pw"));
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        let mut config = ServeConfig::for_tests();
        config.pacs.stow_url = Some(url.clone());
        config.pacs.stow_user = Some("inferd".into());
        config.pacs.stow_password_file = Some(pw);
        config.pacs.outbox = dir.path().join(outbox);
        config.pacs.retry_max_s = 0.2;
        TestServer::start_with_mrd(config)
    };
    let params = ["--params", r#"{"pacs": true}"#];

    // wrong credentials: the archive answers 401, nothing is lost, the images wait in the outbox
    let server = start("wrong", "outbox-a").await;
    let got = stream(
        server.mrd_addr.unwrap(),
        &scan,
        &dir.path().join("a.npz"),
        &params,
    );
    assert!(got.texts.is_empty(), "{:?}", got.texts);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(o.instances().is_empty());
    let waiting = std::fs::read_dir(dir.path().join("outbox-a/pending"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "dcm")
        })
        .count();
    assert_eq!(waiting, 2, "both images wait in the outbox");
    server.stop().await;

    // the right ones: delivered by STOW-RS, once each
    let server = start("s3cret", "outbox-b").await;
    let got = stream(
        server.mrd_addr.unwrap(),
        &scan,
        &dir.path().join("b.npz"),
        &params,
    );
    assert!(got.texts.is_empty(), "{:?}", got.texts);
    for _ in 0..300 {
        if o.instances().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(o.instances().len(), 2, "see {}", o.log_path().display());
    for id in o.instances() {
        assert_eq!(o.instance_tags(&id)["Modality"], "MR");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stow_rs_over_https_with_a_bearer_token() {
    let pki = common::pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let received = dir.path().join("received");
    std::fs::create_dir_all(&received).unwrap();
    let port_file = dir.path().join("port");
    let mut peer = common::python()
        .arg(common::repo().join("tests/reference/stow_server.py"))
        .arg(&port_file)
        .arg(pki.path("server.pem"))
        .arg(pki.path("server.key"))
        .arg("t0ken")
        .arg(&received)
        .spawn()
        .unwrap();
    let mut port = String::new();
    for _ in 0..300 {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            port = p;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!port.is_empty(), "the STOW-RS peer did not start");
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let mut config = ServeConfig::for_tests();
    config.pacs.stow_url = Some(format!("https://127.0.0.1:{port}/dicom-web/"));
    config.pacs.stow_token_file = Some(token);
    config.pacs.stow_ca = Some(pki.path("ca.pem"));
    config.pacs.outbox = dir.path().join("outbox");
    let server = TestServer::start_with_mrd(config).await;
    let scan = common::shepp_logan_mrd(dir.path(), "sl.h5", &["-m", "64", "-c", "2", "-a", "2"]);
    let got = stream(
        server.mrd_addr.unwrap(),
        &scan,
        &dir.path().join("out.npz"),
        &["--params", r#"{"pacs": true}"#],
    );
    assert!(got.texts.is_empty(), "{:?}", got.texts);
    let count = || std::fs::read_dir(&received).unwrap().count();
    for _ in 0..300 {
        if count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = peer.kill();
    let _ = peer.wait();
    assert_eq!(
        count(),
        2,
        "both images arrived over HTTPS, read back by pydicom"
    );
    server.stop().await;
}
