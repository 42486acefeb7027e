//! DICOM output end to end: MR Image objects from real reconstructions validated by dicom3tools'
//! `dciodvfy` (zero errors) and read back by pydicom with the same pixels; delivery to a real PACS
//! (Orthanc, started here on loopback) through the durable outbox, including a PACS outage while
//! inferd is killed and restarted.

mod common;

use common::orthanc::Orthanc;
use common::TestServer;
use inferd::api::pb::{self, recon_request, reconstruction_client::ReconstructionClient};
use inferd::api::tensor;
use inferd::mri::{fft, phantom};
use inferd::serve::ServeConfig;
use num_complex::Complex32;
use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tonic::Code;

const N: usize = 64;

/// Fully sampled single-coil k-space of Shepp–Logan phantoms, scaled per slice.
fn volume(slices: usize) -> Vec<Vec<Complex32>> {
    (0..slices)
        .map(|s| {
            let img = phantom::shepp_logan(N, N);
            let scale = 1.0 - 0.1 * s as f32;
            let mut k: Vec<Complex32> = img
                .iter()
                .map(|&v| Complex32::new(v * scale, 0.0))
                .collect();
            fft::fft2c(&mut k, N, N);
            k
        })
        .collect()
}

fn patient_study() -> pb::PatientStudy {
    pb::PatientStudy {
        patient_name: "Test^Patient^Ä".into(),
        patient_id: "INFERD-TEST-001".into(),
        patient_birth_date: "19700101".into(),
        patient_sex: "O".into(),
        study_instance_uid: "2.25.123456789012345678901234567890".into(),
        study_id: "S1".into(),
        accession_number: "ACC42".into(),
        study_description: "inferd DICOM output test".into(),
        referring_physician_name: "Ref^Doc".into(),
        study_date: "20261130".into(),
        study_time: "101500".into(),
    }
}

fn requests(slices: usize, dicom: pb::DicomOutput) -> Vec<pb::ReconRequest> {
    let header = pb::ReconHeader {
        height: N as u32,
        width: N as u32,
        coils: 1,
        slices: slices as u32,
        sampling: Some(pb::Sampling::variable_density(4.0, 3)),
        request_id: "dicom-test".into(),
        dicom: Some(dicom),
        ..Default::default()
    };
    let shaped: Vec<_> = volume(slices)
        .into_iter()
        .map(|k| (vec![1, N, N], k))
        .collect();
    common::recon_requests(header, &shaped)
}

/// dciodvfy's error lines for a file (warnings are allowed).
fn dciodvfy_errors(path: &Path) -> Vec<String> {
    let out = Command::new("dciodvfy")
        .arg(path)
        .output()
        .expect("dciodvfy (dicom3tools) must be installed; see scripts/test.sh");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.starts_with("Error"))
        .map(str::to_string)
        .collect()
}

/// The geometry the test asks for: oblique slices 5 mm apart.
fn geometry(slices: usize) -> pb::ImageGeometry {
    let (c, s) = (0.3f64.cos(), 0.3f64.sin());
    pb::ImageGeometry {
        fov_rows_mm: 192.0,
        fov_columns_mm: 128.0,
        slice_thickness_mm: 4.0,
        slices: (0..slices)
            .map(|i| pb::SlicePlacement {
                position: vec![-60.0, -90.0 + 5.0 * s * i as f64, 10.0 + 5.0 * c * i as f64],
                row_direction: vec![1.0, 0.0, 0.0],
                column_direction: vec![0.0, c, -s],
            })
            .collect(),
        rows: 0,
        columns: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returned_dicom_passes_dciodvfy_and_reads_back_in_pydicom() {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let slices = 3;
    let dicom = pb::DicomOutput {
        return_dicom: true,
        patient_study: Some(patient_study()),
        geometry: Some(geometry(slices)),
        acquisition: Some(pb::AcquisitionParameters {
            manufacturer: "Synthetic".into(),
            field_strength_t: 3.0,
            repetition_time_ms: 2000.0,
            echo_time_ms: 30.0,
            flip_angle_deg: 90.0,
            ..Default::default()
        }),
        series_number: 5,
        ..Default::default()
    };
    let images = common::reconstruct(&server.url, requests(slices, dicom))
        .await
        .unwrap();
    assert_eq!(images.len(), slices);
    let dir = tempfile::tempdir().unwrap();
    let mut sops = HashSet::new();
    for img in &images {
        assert!(!img.dicom.is_empty(), "slice {} has no DICOM", img.index);
        assert!(!img.queued_for_pacs);
        assert!(sops.insert(img.sop_instance_uid.clone()));
        let path = dir.path().join(format!("{}.dcm", img.index));
        std::fs::write(&path, &img.dicom).unwrap();
        let errors = dciodvfy_errors(&path);
        assert!(
            errors.is_empty(),
            "dciodvfy errors for slice {}: {errors:#?}",
            img.index
        );
        let (_, mag) = tensor::to_f32(img.magnitude.as_ref().unwrap()).unwrap();
        inferd::io::npy::write_f32(
            &dir.path().join(format!("{}.npy", img.index)),
            &[N, N],
            &mag,
        )
        .unwrap();
    }
    // pydicom: pixels × the recorded slope equal the returned magnitude within half a step;
    // patient, study, series and geometry attributes as requested.
    let script = r#"
import sys, json, numpy as np, pydicom
d, n = sys.argv[1], int(sys.argv[2])
series, out = set(), []
for i in range(n):
    ds = pydicom.dcmread(f"{d}/{i}.dcm")
    mag = np.load(f"{d}/{i}.npy")
    rwv = ds.RealWorldValueMappingSequence[0]
    slope = float(rwv.RealWorldValueSlope)
    px = ds.pixel_array.astype(np.float64)
    err = np.abs(px * slope - mag).max()
    assert err <= slope * 0.5 + 1e-6 * mag.max(), (i, err, slope)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert str(ds.PatientName) == "Test^Patient^Ä", ds.PatientName
    assert ds.PatientID == "INFERD-TEST-001" and ds.PatientSex == "O"
    assert ds.StudyInstanceUID == "2.25.123456789012345678901234567890"
    assert ds.AccessionNumber == "ACC42" and ds.StudyDate == "20261130"
    assert int(ds.InstanceNumber) == i + 1 and int(ds.SeriesNumber) == 5
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "OTHER", "RECONSTRUCTION"]
    assert [float(v) for v in ds.PixelSpacing] == [3.0, 2.0], ds.PixelSpacing
    assert abs(float(ds.SliceThickness) - 4.0) < 1e-9
    assert float(ds.MagneticFieldStrength) == 3.0 and float(ds.EchoTime) == 30.0
    assert "recon-unrolled" in ds.SeriesDescription and "R=" in ds.SeriesDescription, ds.SeriesDescription
    assert "recon-unrolled" in ds.DerivationDescription
    assert ds.Rows == 64 and ds.Columns == 64 and ds.BitsStored == 16
    assert 0 < float(ds.WindowWidth) <= 65536
    series.add(ds.SeriesInstanceUID)
    out.append([float(v) for v in ds.ImagePositionPatient])
assert len(series) == 1
print(json.dumps(out))
"#;
    let out = common::run(common::python().args([
        "-c",
        script,
        dir.path().to_str().unwrap(),
        &slices.to_string(),
    ]));
    let positions: Vec<Vec<f64>> = serde_json::from_str(out.trim()).unwrap();
    for (i, p) in positions.iter().enumerate() {
        let want = &geometry(slices).slices[i].position;
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "slice {i}: {p:?} vs {want:?}");
        }
    }

    // A single slice over the unary RPC carries DICOM too, and a centre crop applies to it.
    let mut reqs = requests(
        1,
        pb::DicomOutput {
            return_dicom: true,
            geometry: Some(pb::ImageGeometry {
                rows: 48,
                columns: 32,
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let header = match reqs.remove(0).msg {
        Some(recon_request::Msg::Header(h)) => h,
        _ => unreachable!(),
    };
    let slice = match reqs.remove(0).msg {
        Some(recon_request::Msg::Slice(s)) => s,
        _ => unreachable!(),
    };
    let mut c = ReconstructionClient::connect(server.url.clone())
        .await
        .unwrap();
    let img = c
        .reconstruct_slice(pb::ReconstructSliceRequest {
            header: Some(header),
            slice: Some(slice),
        })
        .await
        .unwrap()
        .into_inner();
    let path = dir.path().join("single.dcm");
    std::fs::write(&path, &img.dicom).unwrap();
    assert!(dciodvfy_errors(&path).is_empty());
    let dims = common::run(common::python().args([
        "-c",
        "import sys, pydicom; d = pydicom.dcmread(sys.argv[1]); print(d.Rows, d.Columns, d.PatientName == '')",
        path.to_str().unwrap(),
    ]));
    assert_eq!(dims.trim(), "48 32 True");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dicom_requests_are_checked() {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    // Storing needs a PACS this server does not have.
    let store = pb::DicomOutput {
        store: true,
        ..Default::default()
    };
    let e = common::reconstruct(&server.url, requests(1, store))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("--pacs"), "{}", e.message());
    let bad = [
        (
            pb::DicomOutput {
                return_dicom: true,
                patient_study: Some(pb::PatientStudy {
                    patient_birth_date: "1970-01-01".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "YYYYMMDD",
        ),
        (
            pb::DicomOutput {
                return_dicom: true,
                geometry: Some(geometry(1)),
                ..Default::default()
            },
            "slice placements",
        ),
        (
            pb::DicomOutput {
                return_dicom: true,
                patient_study: Some(pb::PatientStudy {
                    study_instance_uid: "1.2.03".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "study instance UID",
        ),
        (
            pb::DicomOutput {
                return_dicom: true,
                geometry: Some(pb::ImageGeometry {
                    rows: 100,
                    columns: 10,
                    ..Default::default()
                }),
                ..Default::default()
            },
            "crop",
        ),
    ];
    for (dicom, expected) in bad {
        let e = common::reconstruct(&server.url, requests(2, dicom))
            .await
            .unwrap_err();
        common::assert_invalid(&e, expected);
    }
    // Still serving.
    let ok = common::reconstruct(&server.url, requests(1, pb::DicomOutput::default()))
        .await
        .unwrap();
    assert!(ok[0].dicom.is_empty() && ok[0].sop_instance_uid.is_empty());
    server.stop().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The inferd binary serving with PACS delivery to `orthanc` and the outbox in `outbox`.
struct Inferd {
    child: std::process::Child,
    url: String,
    metrics_url: String,
}

impl Inferd {
    fn start(orthanc_port: u16, outbox: &Path, log: &Path) -> Inferd {
        let (port, metrics_port) = (free_port(), free_port());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_inferd"))
            .args(["serve", "--device", "cpu"])
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--pacs", &format!("127.0.0.1:{orthanc_port}")])
            .args(["--pacs-aet", "ORTHANC", "--pacs-calling-aet", "INFERD"])
            .args(["--pacs-retry-max-s", "0.5"])
            .arg("--outbox")
            .arg(outbox)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let metrics_url = format!("http://127.0.0.1:{metrics_port}");
        let ready = format!("{metrics_url}/ready");
        wait_for("inferd readiness", Duration::from_secs(120), || {
            common::http_request(&ready).is_some_and(|(c, _)| c == 200)
        });
        Inferd {
            child,
            url: format!("http://127.0.0.1:{port}"),
            metrics_url,
        }
    }

    fn metric(&self, name: &str) -> f64 {
        common::metric(
            &common::http_get(&format!("{}/metrics", self.metrics_url)),
            &[name],
        )
    }

    /// SIGKILL: no chance to flush anything.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Inferd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn store_request(slices: usize) -> Vec<pb::ReconRequest> {
    requests(
        slices,
        pb::DicomOutput {
            store: true,
            return_dicom: false,
            patient_study: Some(patient_study()),
            geometry: Some(geometry(slices)),
            ..Default::default()
        },
    )
}

fn pending_files(outbox: &Path) -> usize {
    walk(outbox)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .filter(|p| !p.components().any(|c| c.as_os_str() == "failed"))
        .count()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_series_arrive_in_orthanc_exactly_once_across_an_outage_and_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut orthanc = Orthanc::start(&tmp.path().join("orthanc"));
    let outbox = tmp.path().join("outbox");
    let log = tmp.path().join("inferd.log");
    let inferd = Inferd::start(orthanc.dicom_port(), &outbox, &log);

    // 1. PACS up: a 4-slice series is acknowledged and arrives with its patient, study and series.
    let first = common::reconstruct(&inferd.url, store_request(4))
        .await
        .unwrap();
    assert!(first
        .iter()
        .all(|i| i.queued_for_pacs && i.dicom.is_empty()));
    let first_uids: BTreeSet<String> = first.iter().map(|i| i.sop_instance_uid.clone()).collect();
    wait_for(
        "the first series in Orthanc",
        Duration::from_secs(30),
        || orthanc.instances().len() == 4,
    );
    for id in orthanc.instances() {
        let tags = orthanc.instance_tags(&id);
        assert_eq!(tags["PatientID"], "INFERD-TEST-001");
        assert_eq!(tags["PatientName"], "Test^Patient^Ä");
        assert_eq!(
            tags["StudyInstanceUID"],
            "2.25.123456789012345678901234567890"
        );
        assert_eq!(tags["Modality"], "MR");
        assert!(first_uids.contains(tags["SOPInstanceUID"].as_str().unwrap()));
        // The stored object is byte-for-byte what inferd wrote (pixel data included).
        let file = orthanc.instance_file(&id);
        assert!(file.len() > N * N * 2);
        let obj = dicom_object::from_reader(&file[128..]).unwrap();
        assert_eq!(
            obj.element(dicom_dictionary_std::tags::PIXEL_DATA)
                .unwrap()
                .to_bytes()
                .unwrap()
                .len(),
            N * N * 2
        );
    }
    wait_for("an empty outbox", Duration::from_secs(10), || {
        pending_files(&outbox) == 0
    });
    assert_eq!(inferd.metric("inferd_outbox_pending_items"), 0.0);

    // 2. PACS down: the next series is acknowledged (it is on disk) but cannot be delivered.
    orthanc.stop();
    let second = common::reconstruct(&inferd.url, store_request(5))
        .await
        .unwrap();
    assert_eq!(second.len(), 5);
    assert!(second.iter().all(|i| i.queued_for_pacs));
    assert_eq!(pending_files(&outbox), 5);
    wait_for("delivery retries", Duration::from_secs(20), || {
        inferd.metric("inferd_outbox_retries_total") >= 1.0
    });
    assert_eq!(inferd.metric("inferd_outbox_pending_items"), 5.0);

    // 3. inferd crashes (SIGKILL) and restarts while the PACS is still down; 4. the PACS comes
    // back: everything acknowledged arrives, each instance exactly once.
    inferd.kill();
    assert_eq!(pending_files(&outbox), 5, "the outbox survives a crash");
    let inferd = Inferd::start(orthanc.dicom_port(), &outbox, &log);
    assert_eq!(inferd.metric("inferd_outbox_pending_items"), 5.0);
    orthanc.restart();
    wait_for(
        "all 9 instances in Orthanc",
        Duration::from_secs(60),
        || orthanc.instances().len() >= 9,
    );
    wait_for("an empty outbox", Duration::from_secs(20), || {
        pending_files(&outbox) == 0
    });
    std::thread::sleep(Duration::from_secs(1));
    let ids = orthanc.instances();
    let arrived: Vec<String> = ids
        .iter()
        .map(|id| {
            orthanc.instance_tags(id)["SOPInstanceUID"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let unique: BTreeSet<String> = arrived.iter().cloned().collect();
    assert_eq!(arrived.len(), unique.len(), "duplicates in the PACS");
    let expected: BTreeSet<String> = first
        .iter()
        .chain(&second)
        .map(|i| i.sop_instance_uid.clone())
        .collect();
    assert_eq!(unique, expected, "every acknowledged image, none other");
    assert_eq!(inferd.metric("inferd_outbox_pending_items"), 0.0);
    assert!(inferd.metric("inferd_outbox_stored_total") >= 5.0);
    // No patient identifiers in inferd's log.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("INFERD-TEST-001") && !text.contains("Test^Patient"));
    drop(inferd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_turns_mrd_raw_data_into_dicom_files_and_delivers_them() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("meas.h5");
    common::run(
        Command::new("ismrmrd_generate_cartesian_shepp_logan").args([
            "-m",
            "64",
            "-c",
            "4",
            "-a",
            "2",
            "-w",
            "16",
            "-o",
            raw.to_str().unwrap(),
        ]),
    );
    let orthanc = Orthanc::start(&tmp.path().join("orthanc"));
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let out = tmp.path().join("out");
    let (url, raw2, out2, port) = (
        server.url.clone(),
        raw.clone(),
        out.clone(),
        orthanc.dicom_port(),
    );
    let stdout = tokio::task::spawn_blocking(move || {
        common::run(
            Command::new(env!("CARGO_BIN_EXE_inferd"))
                .args(["recon", "--server", &url, "--format", "dicom"])
                .arg("--input")
                .arg(&raw2)
                .arg("--out")
                .arg(&out2)
                .args([
                    "--pacs",
                    &format!("127.0.0.1:{port}"),
                    "--pacs-aet",
                    "ORTHANC",
                ])
                .args(["--patient-id", "CLI-PATIENT", "--accession-number", "A-7"]),
        )
    })
    .await
    .unwrap();
    assert!(stdout.contains("confirmed every image"), "{stdout}");
    let files: Vec<_> = walk(&out)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .filter(|p| !p.components().any(|c| c.as_os_str() == "outbox"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    for f in &files {
        let errors = dciodvfy_errors(f);
        assert!(errors.is_empty(), "{}: {errors:#?}", f.display());
    }
    assert_eq!(pending_files(&out.join("outbox")), 0);
    let ids = orthanc.instances();
    assert_eq!(ids.len(), 1);
    let tags = orthanc.instance_tags(&ids[0]);
    assert_eq!(tags["PatientID"], "CLI-PATIENT");
    assert_eq!(tags["AccessionNumber"], "A-7");
    assert_eq!(tags["Rows"], "64");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_refuses_with_resource_exhausted_and_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::for_tests();
    // A PACS that is not there and an outbox that holds nothing.
    config.pacs.pacs_addr = Some(format!("127.0.0.1:{}", free_port()));
    config.pacs.outbox = tmp.path().join("outbox");
    config.pacs.outbox_max_mb = 0;
    let server = TestServer::start(config).await;
    let store = pb::DicomOutput {
        store: true,
        ..Default::default()
    };
    let e = common::reconstruct(&server.url, requests(2, store))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("outbox is full"), "{}", e.message());
    assert_eq!(pending_files(&tmp.path().join("outbox")), 0);
    // Returning DICOM needs no outbox and still works.
    let ok = common::reconstruct(
        &server.url,
        requests(
            1,
            pb::DicomOutput {
                return_dicom: true,
                ..Default::default()
            },
        ),
    )
    .await
    .unwrap();
    assert!(!ok[0].dicom.is_empty());
    server.stop().await;
}
