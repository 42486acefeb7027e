//! DICOM on the client side: the output and delivery options of `inferd recon`, and `inferd pacs`
//! (C-ECHO a PACS; send .dcm files or an outbox's leftovers to it).
//!
//! `inferd recon --format dicom` asks the server for one MR Image per slice and writes them to
//! `--out`; `--pacs HOST:PORT` also delivers them from this machine through a durable outbox in
//! `--out/outbox` (an image is on disk before it is sent, and removed only when the PACS confirms
//! it; whatever the PACS did not take in time is sent by the next `inferd recon` or
//! `inferd pacs send --outbox` with the same outbox). `--store` instead asks the server to deliver
//! to the PACS it is configured with.

use crate::io::acquisition::AcquisitionInfo;
use crate::pacs::outbox::{Backoff, Delivery, Outbox};
use crate::pacs::{scu, PacsTarget};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// recon.npy, zero_filled.npy and PNG previews.
    Npy,
    /// The same plus one DICOM MR Image per slice (IM_0001.dcm, …).
    Dicom,
}

/// Where the PACS is and who we are to it.
#[derive(Debug, Clone, clap::Args)]
pub struct PacsArgs {
    /// PACS DICOM address, HOST:PORT.
    #[arg(long = "pacs")]
    pub pacs: Option<String>,
    /// The PACS's AE title (called AE title).
    #[arg(long, default_value = crate::pacs::DEFAULT_CALLED_AET)]
    pub pacs_aet: String,
    /// Our AE title (calling AE title), as configured in the PACS.
    #[arg(long, default_value = crate::pacs::DEFAULT_CALLING_AET)]
    pub pacs_calling_aet: String,
}

impl PacsArgs {
    pub fn target(&self) -> anyhow::Result<Option<PacsTarget>> {
        self.pacs
            .as_deref()
            .map(|a| PacsTarget::parse(a, &self.pacs_aet, &self.pacs_calling_aet))
            .transpose()
    }
}

/// DICOM options of `inferd recon`.
#[derive(Debug, Clone, clap::Args)]
pub struct DicomArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "npy")]
    pub format: OutputFormat,
    #[command(flatten)]
    pub pacs: PacsArgs,
    /// Ask the server to store the images in the PACS it is configured with (its --pacs).
    #[arg(long)]
    pub store: bool,
    /// Seconds to wait for the PACS to confirm every image (what is left stays in the outbox).
    #[arg(long, default_value_t = 120)]
    pub pacs_wait_s: u64,
    /// Patient and study attributes; they override what the input file's header says.
    #[arg(long)]
    pub patient_name: Option<String>,
    #[arg(long)]
    pub patient_id: Option<String>,
    /// YYYYMMDD.
    #[arg(long)]
    pub patient_birth_date: Option<String>,
    /// M, F or O.
    #[arg(long)]
    pub patient_sex: Option<String>,
    #[arg(long)]
    pub study_instance_uid: Option<String>,
    #[arg(long)]
    pub accession_number: Option<String>,
    #[arg(long)]
    pub study_description: Option<String>,
    #[arg(long)]
    pub series_description: Option<String>,
}

impl Default for DicomArgs {
    fn default() -> Self {
        DicomArgs {
            format: OutputFormat::Npy,
            pacs: PacsArgs {
                pacs: None,
                pacs_aet: crate::pacs::DEFAULT_CALLED_AET.into(),
                pacs_calling_aet: crate::pacs::DEFAULT_CALLING_AET.into(),
            },
            store: false,
            pacs_wait_s: 120,
            patient_name: None,
            patient_id: None,
            patient_birth_date: None,
            patient_sex: None,
            study_instance_uid: None,
            accession_number: None,
            study_description: None,
            series_description: None,
        }
    }
}

impl DicomArgs {
    /// Whether the server should produce DICOM.
    pub fn wanted(&self) -> bool {
        self.format == OutputFormat::Dicom || self.pacs.pacs.is_some() || self.store
    }

    /// The file's acquisition metadata with the command line's overrides.
    pub fn info(&self, mut info: AcquisitionInfo) -> AcquisitionInfo {
        let set = |field: &mut Option<String>, v: &Option<String>| {
            if v.is_some() {
                *field = v.clone();
            }
        };
        set(&mut info.patient_name, &self.patient_name);
        set(&mut info.patient_id, &self.patient_id);
        set(&mut info.patient_birth_date, &self.patient_birth_date);
        set(&mut info.patient_sex, &self.patient_sex);
        set(&mut info.study_instance_uid, &self.study_instance_uid);
        set(&mut info.accession_number, &self.accession_number);
        set(&mut info.study_description, &self.study_description);
        set(&mut info.series_description, &self.series_description);
        info
    }
}

/// Client-side delivery of one run: the outbox and its delivery thread.
pub struct ClientDelivery {
    pub outbox: Arc<Outbox>,
    delivery: Delivery,
    pub target: PacsTarget,
}

/// Outbox size limit on the client side.
const CLIENT_OUTBOX_BYTES: u64 = 16 << 30;

impl ClientDelivery {
    /// Checks the PACS with a C-ECHO (a warning when it does not answer: the images wait in the
    /// outbox) and starts delivering what the outbox holds.
    pub fn start(target: PacsTarget, outbox_dir: &Path) -> anyhow::Result<ClientDelivery> {
        if let Err(e) = scu::echo(&target) {
            eprintln!(
                "warning: {target} did not answer C-ECHO ({e:#}); images wait in {} until it does",
                outbox_dir.display()
            );
        }
        let outbox = Arc::new(Outbox::open(outbox_dir, CLIENT_OUTBOX_BYTES)?);
        let delivery = Delivery::start(outbox.clone(), target.clone(), Backoff::default(), None);
        Ok(ClientDelivery {
            outbox,
            delivery,
            target,
        })
    }

    pub fn put(&self, sop_instance_uid: &str, file: &[u8]) -> anyhow::Result<()> {
        self.outbox
            .put(sop_instance_uid, file)
            .map_err(|e| anyhow::anyhow!("outbox: {e}"))
    }

    /// Waits for the PACS to confirm everything; reports what is left otherwise.
    pub fn finish(self, wait: Duration) -> anyhow::Result<()> {
        let done = self.delivery.wait_idle(wait);
        let (items, _) = self.outbox.pending();
        let failed = self.outbox.failed();
        self.delivery.shutdown();
        if !done {
            bail!(
                "{items} image(s) not yet confirmed by {} after {} s; they stay in the outbox and are sent by the next run with the same outbox (or `inferd pacs send --outbox DIR`)",
                self.target,
                wait.as_secs()
            );
        }
        if failed > 0 {
            bail!(
                "the PACS refused {failed} image(s) for good; see {}",
                self.outbox.failed_dir().display()
            );
        }
        Ok(())
    }
}

/// `inferd pacs`.
#[derive(Debug, clap::Args)]
pub struct PacsCommand {
    #[command(subcommand)]
    pub what: PacsAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum PacsAction {
    /// Check a PACS with a DICOM C-ECHO.
    Echo {
        #[command(flatten)]
        pacs: PacsArgs,
    },
    /// Send DICOM files (and whatever the outbox still holds) to a PACS through a durable outbox.
    Send {
        #[command(flatten)]
        pacs: PacsArgs,
        /// Outbox folder.
        #[arg(long, default_value = "inferd-outbox")]
        outbox: PathBuf,
        /// Seconds to wait for the PACS to confirm every image.
        #[arg(long, default_value_t = 120)]
        wait_s: u64,
        /// .dcm files to send.
        files: Vec<PathBuf>,
    },
}

pub fn run(cmd: PacsCommand) -> anyhow::Result<()> {
    let need = |p: &PacsArgs| p.target()?.context("--pacs HOST:PORT is required");
    match cmd.what {
        PacsAction::Echo { pacs } => {
            let t = need(&pacs)?;
            scu::echo(&t).with_context(|| format!("C-ECHO to {t}"))?;
            println!("{t} answered C-ECHO");
            Ok(())
        }
        PacsAction::Send {
            pacs,
            outbox,
            wait_s,
            files,
        } => {
            let t = need(&pacs)?;
            let d = ClientDelivery::start(t, &outbox)?;
            for f in &files {
                let bytes =
                    std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
                let uid = sop_instance_uid(&bytes)
                    .with_context(|| format!("{}: not a DICOM Part-10 file", f.display()))?;
                d.put(&uid, &bytes)?;
            }
            let n = d.outbox.pending().0;
            d.finish(Duration::from_secs(wait_s))?;
            println!("{n} image(s) confirmed by the PACS");
            Ok(())
        }
    }
}

/// The SOP Instance UID of a Part-10 file.
fn sop_instance_uid(bytes: &[u8]) -> anyhow::Result<String> {
    anyhow::ensure!(
        bytes.len() > 132 && &bytes[128..132] == b"DICM",
        "no DICM magic at byte 128"
    );
    let obj = dicom_object::from_reader(&bytes[128..])?;
    Ok(obj
        .element(dicom_dictionary_std::tags::SOP_INSTANCE_UID)?
        .to_str()?
        .trim_end_matches('\0')
        .trim()
        .to_string())
}
