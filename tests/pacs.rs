//! DICOM delivery against a real PACS (Orthanc): C-ECHO, C-STORE over one association, large
//! instances, transfer syntax conversion, and the durable outbox through PACS outages, process
//! restarts and permanent refusals. Test images are synthetic (random pixels, fresh 2.25 UIDs).

mod common;

use common::metric;
use common::orthanc::{free_port, Orthanc, AET};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};
use inferd::metrics::Metrics;
use inferd::pacs::outbox::{Backoff, Delivery, Outbox};
use inferd::pacs::scu::{self, STATUS_SOP_CLASS_NOT_SUPPORTED};
use inferd::pacs::PacsTarget;
use rand::Rng;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
const MULTIFRAME_WORD_SC: &str = "1.2.840.10008.5.1.4.1.1.7.3";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";

fn new_uid() -> String {
    format!("2.25.{}", rand::rng().random::<u128>())
}

/// A synthetic image: what was built and its Part-10 bytes.
struct TestImage {
    sop_instance_uid: String,
    series_instance_uid: String,
    pixels: Vec<u8>,
    file: Vec<u8>,
}

/// A grayscale 16-bit image of `frames` frames with random pixels, in the given SOP class and
/// transfer syntax.
fn image(sop_class: &str, ts: &str, rows: u16, cols: u16, frames: u32, series: &str) -> TestImage {
    let sop = new_uid();
    let mut rng = rand::rng();
    let n = rows as usize * cols as usize * frames as usize;
    let words: Vec<u16> = (0..n).map(|_| rng.random_range(0..4096)).collect();
    let pixels: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut obj = InMemDicomObject::new_empty();
    let s = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    obj.put(s(tags::SOP_CLASS_UID, VR::UI, sop_class));
    obj.put(s(tags::SOP_INSTANCE_UID, VR::UI, &sop));
    obj.put(s(tags::STUDY_INSTANCE_UID, VR::UI, "2.25.1234567890"));
    obj.put(s(tags::SERIES_INSTANCE_UID, VR::UI, series));
    obj.put(s(tags::PATIENT_NAME, VR::PN, "Phantom^Test"));
    obj.put(s(tags::PATIENT_ID, VR::LO, "INFERD-TEST"));
    obj.put(s(tags::MODALITY, VR::CS, "MR"));
    obj.put(s(tags::INSTANCE_NUMBER, VR::IS, "1"));
    obj.put(s(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"));
    let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
    obj.put(us(tags::SAMPLES_PER_PIXEL, 1));
    obj.put(us(tags::ROWS, rows));
    obj.put(us(tags::COLUMNS, cols));
    obj.put(us(tags::BITS_ALLOCATED, 16));
    obj.put(us(tags::BITS_STORED, 12));
    obj.put(us(tags::HIGH_BIT, 11));
    obj.put(us(tags::PIXEL_REPRESENTATION, 0));
    if frames > 1 {
        obj.put(s(tags::NUMBER_OF_FRAMES, VR::IS, &frames.to_string()));
    }
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(words.into()),
    ));
    let obj = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(ts))
        .unwrap();
    let mut file = Vec::new();
    obj.write_all(&mut file).unwrap();
    TestImage {
        sop_instance_uid: sop,
        series_instance_uid: series.to_string(),
        pixels,
        file,
    }
}

fn mr(series: &str) -> TestImage {
    image(MR_IMAGE_STORAGE, EXPLICIT_VR_LE, 64, 48, 1, series)
}

fn target(o: &Orthanc) -> PacsTarget {
    PacsTarget::parse(&o.dicom_addr(), AET, "INFERD").unwrap()
}

fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    }
}

/// The pixel data of a Part-10 file, as bytes.
fn pixel_bytes(file: &[u8]) -> Vec<u8> {
    let obj = OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Always)
        .from_reader(file)
        .unwrap();
    obj.element(tags::PIXEL_DATA)
        .unwrap()
        .to_bytes()
        .unwrap()
        .into_owned()
}

/// Asserts that Orthanc holds exactly `images` (by SOP Instance UID, each once) with their pixels.
fn assert_stored_exactly(o: &Orthanc, images: &[TestImage]) {
    let ids = o.instances();
    let uids = o.sop_instance_uids();
    let want: HashSet<&str> = images.iter().map(|i| i.sop_instance_uid.as_str()).collect();
    let got: HashSet<&str> = uids.iter().map(|s| s.as_str()).collect();
    assert_eq!(got, want, "SOP Instance UIDs in the PACS");
    assert_eq!(ids.len(), images.len(), "instances in the PACS");
    for id in &ids {
        let tags = o.instance_tags(id);
        let uid = tags["SOPInstanceUID"].as_str().unwrap();
        let img = images.iter().find(|i| i.sop_instance_uid == uid).unwrap();
        assert_eq!(tags["SeriesInstanceUID"], img.series_instance_uid.as_str());
        assert_eq!(tags["PatientID"], "INFERD-TEST");
        assert_eq!(tags["Modality"], "MR");
        assert!(
            pixel_bytes(&o.instance_file(id)) == img.pixels,
            "pixel data of {uid} differs"
        );
    }
}

#[test]
fn echo_succeeds_and_failures_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let o = Orthanc::start(dir.path());
    scu::echo(&target(&o)).unwrap();

    let closed = PacsTarget::parse(&format!("127.0.0.1:{}", free_port()), AET, "INFERD").unwrap();
    let e = format!("{:#}", scu::echo(&closed).unwrap_err());
    assert!(e.contains("cannot connect to PACS"), "{e}");
    assert!(e.to_lowercase().contains("refused"), "{e}");

    let wrong = PacsTarget::parse(&o.dicom_addr(), "NOT-ORTHANC", "INFERD").unwrap();
    let e = format!("{:#}", scu::echo(&wrong).unwrap_err());
    assert!(e.contains("rejected the association"), "{e}");
    assert!(e.contains("called AE title not recognized"), "{e}");

    // dcmtk's echoscu agrees on the same server (when installed)
    if let Ok(out) = std::process::Command::new("echoscu")
        .args(["-aec", AET, "-aet", "DCMTK", "127.0.0.1"])
        .arg(o.dicom_port().to_string())
        .output()
    {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn stores_a_batch_over_one_association() {
    let dir = tempfile::tempdir().unwrap();
    let o = Orthanc::start(dir.path());
    let t = target(&o);
    let series = new_uid();
    let images: Vec<TestImage> = (0..20).map(|_| mr(&series)).collect();
    let files: Vec<Vec<u8>> = images.iter().map(|i| i.file.clone()).collect();

    let started = Instant::now();
    let out = scu::store(&t, &files).unwrap();
    let one_association = started.elapsed();
    assert_eq!(out.len(), 20);
    for (o, i) in out.iter().zip(&images) {
        assert_eq!(o.sop_instance_uid, i.sop_instance_uid);
        assert_eq!(o.status, 0, "{o:?}");
        assert!(o.stored);
    }
    assert_stored_exactly(&o, &images);

    // the same number of fresh instances, one association each, for comparison
    let series2 = new_uid();
    let more: Vec<TestImage> = (0..20).map(|_| mr(&series2)).collect();
    let started = Instant::now();
    for i in &more {
        assert!(scu::store(&t, std::slice::from_ref(&i.file)).unwrap()[0].stored);
    }
    let separate = started.elapsed();
    eprintln!(
        "C-STORE of 20 small MR instances: one association {:.1} ms ({:.0}/s), one association each {:.1} ms ({:.0}/s)",
        one_association.as_secs_f64() * 1e3,
        20.0 / one_association.as_secs_f64(),
        separate.as_secs_f64() * 1e3,
        20.0 / separate.as_secs_f64()
    );
    assert_eq!(o.instances().len(), 40);

    // dcmtk's storescu sends 20 more the same way (when installed): same PACS, same behaviour
    let series3 = new_uid();
    let third: Vec<TestImage> = (0..20).map(|_| mr(&series3)).collect();
    let files_dir = dir.path().join("dcmtk");
    std::fs::create_dir_all(&files_dir).unwrap();
    let paths: Vec<_> = third
        .iter()
        .enumerate()
        .map(|(n, i)| {
            let p = files_dir.join(format!("{n}.dcm"));
            std::fs::write(&p, &i.file).unwrap();
            p
        })
        .collect();
    let started = Instant::now();
    if let Ok(out) = std::process::Command::new("storescu")
        .args(["-aec", AET, "-aet", "DCMTK", "127.0.0.1"])
        .arg(o.dicom_port().to_string())
        .args(&paths)
        .output()
    {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "dcmtk storescu, 20 small MR instances over one association: {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        assert_eq!(o.instances().len(), 60);
    }
    let count = o.instances().len();

    // storing the same instance again leaves one copy in the PACS
    let again = scu::store(&t, &files[..3]).unwrap();
    assert!(again.iter().all(|o| o.stored), "{again:?}");
    assert_eq!(o.instances().len(), count);
}

#[test]
fn large_multiframe_instance_is_fragmented_and_arrives_intact() {
    let dir = tempfile::tempdir().unwrap();
    let o = Orthanc::start(dir.path());
    // 512 x 512 x 16 bit x 20 frames = 10 MiB of pixel data; Orthanc accepts PDUs of 16 KiB
    let img = image(MULTIFRAME_WORD_SC, EXPLICIT_VR_LE, 512, 512, 20, &new_uid());
    assert!(img.file.len() > 10 << 20);
    let started = Instant::now();
    let out = scu::store(&target(&o), std::slice::from_ref(&img.file)).unwrap();
    let took = started.elapsed();
    assert!(out[0].stored, "{out:?}");
    eprintln!(
        "C-STORE of one {:.1} MB instance: {:.0} ms ({:.0} MB/s)",
        img.file.len() as f64 / 1e6,
        took.as_secs_f64() * 1e3,
        img.file.len() as f64 / 1e6 / took.as_secs_f64()
    );
    let ids = o.instances();
    assert_eq!(ids.len(), 1);
    assert_eq!(o.instance_tags(&ids[0])["NumberOfFrames"], "20");
    assert!(pixel_bytes(&o.instance_file(&ids[0])) == img.pixels);
}

#[test]
fn data_sets_are_reencoded_to_the_accepted_transfer_syntax() {
    let dir = tempfile::tempdir().unwrap();
    // this PACS only takes Implicit VR Little Endian
    let o = Orthanc::start_with(
        dir.path(),
        serde_json::json!({ "AcceptedTransferSyntaxes": [IMPLICIT_VR_LE] }),
    );
    let series = new_uid();
    let images = vec![
        image(MR_IMAGE_STORAGE, EXPLICIT_VR_LE, 32, 32, 1, &series),
        image(MR_IMAGE_STORAGE, IMPLICIT_VR_LE, 32, 32, 1, &series),
        image(MR_IMAGE_STORAGE, "1.2.840.10008.1.2.2", 32, 32, 1, &series),
    ];
    let files: Vec<_> = images.iter().map(|i| i.file.clone()).collect();
    let out = scu::store(&target(&o), &files).unwrap();
    assert!(out.iter().all(|o| o.stored), "{out:?}");
    assert_stored_exactly(&o, &images);
    for id in o.instances() {
        let meta = o.get_json(&format!("/instances/{id}/metadata?expand"));
        assert_eq!(meta["TransferSyntax"], IMPLICIT_VR_LE, "{meta}");
    }
}

#[test]
fn refused_sop_class_is_reported_per_instance() {
    let dir = tempfile::tempdir().unwrap();
    let o = Orthanc::start(dir.path());
    let series = new_uid();
    let good = mr(&series);
    // not a storage SOP class: Orthanc refuses the presentation context
    let odd = image(
        "1.2.826.0.1.3680043.2.1396.999",
        EXPLICIT_VR_LE,
        8,
        8,
        1,
        &series,
    );
    let out = scu::store(&target(&o), &[odd.file.clone(), good.file.clone()]).unwrap();
    assert_eq!(out[0].status, STATUS_SOP_CLASS_NOT_SUPPORTED, "{out:?}");
    assert!(!out[0].stored);
    assert!(out[1].stored, "{out:?}");
    // alone, it leaves no presentation context at all: still a per-instance answer
    let out = scu::store(&target(&o), std::slice::from_ref(&odd.file)).unwrap();
    assert_eq!(out[0].status, STATUS_SOP_CLASS_NOT_SUPPORTED, "{out:?}");
    assert_stored_exactly(&o, std::slice::from_ref(&good));
}

#[test]
fn outbox_delivers_after_the_pacs_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Orthanc::start(&dir.path().join("orthanc"));
    o.stop();
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox"), 1 << 30).unwrap());
    let metrics = Arc::new(Metrics::default());
    let delivery = Delivery::start(
        outbox.clone(),
        target(&o),
        fast_backoff(),
        Some(metrics.clone()),
    );
    let series = new_uid();
    let images: Vec<TestImage> = (0..12).map(|_| mr(&series)).collect();
    for i in &images {
        outbox.put(&i.sop_instance_uid, &i.file).unwrap();
        delivery.notify();
    }
    // a duplicate put changes nothing
    outbox
        .put(&images[0].sop_instance_uid, &images[0].file)
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(outbox.pending().0, 12);
    assert!(!delivery.wait_idle(Duration::from_millis(10)));
    let text = metrics.render();
    assert!(
        metric(&text, &["inferd_outbox_retries_total"]) >= 3.0,
        "{text}"
    );
    assert_eq!(metric(&text, &["inferd_outbox_pending_items"]), 12.0);
    assert_eq!(metric(&text, &["inferd_pacs_reachable"]), 0.0);

    o.restart();
    assert!(
        delivery.wait_idle(Duration::from_secs(60)),
        "outbox did not drain"
    );
    assert_stored_exactly(&o, &images);
    let text = metrics.render();
    assert_eq!(metric(&text, &["inferd_outbox_stored_total"]), 12.0);
    assert_eq!(metric(&text, &["inferd_outbox_pending_items"]), 0.0);
    assert_eq!(metric(&text, &["inferd_outbox_pending_bytes"]), 0.0);
    assert_eq!(metric(&text, &["inferd_pacs_reachable"]), 1.0);

    // once running, a put is delivered right away
    let late = mr(&series);
    let started = Instant::now();
    outbox.put(&late.sop_instance_uid, &late.file).unwrap();
    assert!(delivery.wait_idle(Duration::from_secs(10)));
    eprintln!(
        "outbox put to PACS confirmation of one instance: {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    delivery.shutdown();
    assert_eq!(o.instances().len(), 13);
}

#[test]
fn outbox_survives_a_restart_of_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let outbox_dir = dir.path().join("outbox");
    let mut o = Orthanc::start(&dir.path().join("orthanc"));
    o.stop();
    let series = new_uid();
    let images: Vec<TestImage> = (0..8).map(|_| mr(&series)).collect();
    {
        let outbox = Arc::new(Outbox::open(&outbox_dir, 1 << 30).unwrap());
        let delivery = Delivery::start(outbox.clone(), target(&o), fast_backoff(), None);
        for i in &images {
            outbox.put(&i.sop_instance_uid, &i.file).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        delivery.shutdown();
        assert_eq!(outbox.pending().0, 8);
    }
    // a crash during a put leaves a temp file behind
    std::fs::write(outbox_dir.join("tmp").join("junk.dcm"), b"half a file").unwrap();

    o.restart();
    let outbox = Arc::new(Outbox::open(&outbox_dir, 1 << 30).unwrap());
    assert_eq!(outbox.pending().0, 8);
    assert_eq!(
        std::fs::read_dir(outbox_dir.join("tmp")).unwrap().count(),
        0
    );
    let delivery = Delivery::start(outbox.clone(), target(&o), fast_backoff(), None);
    assert!(delivery.wait_idle(Duration::from_secs(60)));
    delivery.shutdown();
    assert_stored_exactly(&o, &images);
    assert_eq!(
        std::fs::read_dir(outbox_dir.join("pending"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn permanent_refusal_goes_to_failed_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let o = Orthanc::start(&dir.path().join("orthanc"));
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox"), 1 << 30).unwrap());
    let metrics = Arc::new(Metrics::default());
    let series = new_uid();
    let first = mr(&series);
    let odd = image(
        "1.2.826.0.1.3680043.2.1396.999",
        EXPLICIT_VR_LE,
        8,
        8,
        1,
        &series,
    );
    let last = mr(&series);
    // queued before the delivery starts, so that all three go in one association
    for i in [&first, &odd, &last] {
        outbox.put(&i.sop_instance_uid, &i.file).unwrap();
    }
    let delivery = Delivery::start(
        outbox.clone(),
        target(&o),
        fast_backoff(),
        Some(metrics.clone()),
    );
    assert!(delivery.wait_idle(Duration::from_secs(30)));
    // the refused one alone in a second association (no context accepted at all)
    let odd2 = image(
        "1.2.826.0.1.3680043.2.1396.999",
        EXPLICIT_VR_LE,
        8,
        8,
        1,
        &series,
    );
    outbox.put(&odd2.sop_instance_uid, &odd2.file).unwrap();
    assert!(delivery.wait_idle(Duration::from_secs(30)));
    delivery.shutdown();

    assert_stored_exactly(&o, &[first, last]);
    assert_eq!(outbox.failed(), 2);
    let names: Vec<String> = std::fs::read_dir(outbox.failed_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    let reason = names
        .iter()
        .find(|n| n.contains(&odd.sop_instance_uid) && n.ends_with(".reason"))
        .unwrap();
    let text = std::fs::read_to_string(outbox.failed_dir().join(reason)).unwrap();
    assert!(text.contains("0x0122"), "{text}");
    let m = metrics.render();
    assert_eq!(metric(&m, &["inferd_outbox_failed_items"]), 2.0);
    assert_eq!(metric(&m, &["inferd_outbox_stored_total"]), 2.0);
    assert_eq!(metric(&m, &["inferd_outbox_retries_total"]), 0.0);
}
