//! DICOM output of reconstruction streams: each slice's magnitude becomes an MR Image object of
//! the stream's series; it is returned on the stream, written durably to the PACS outbox, or both.
//! A slice is answered only after its object is in the outbox, so an acknowledged image is never
//! lost: the delivery thread sends it when the PACS is reachable, across restarts.

use super::config::PacsConfig;
use crate::api::dicom::DicomPlan;
use crate::api::validate::ReconPlan;
use crate::error::{Error, Result};
use crate::io::acquisition::{centre_crop, SlicePlacement};
use crate::metrics::Metrics;
use crate::pacs::dicom::{Provenance, Series};
use crate::pacs::outbox::{Backoff, Delivery, Outbox, OutboxError};
use crate::pacs::stow::{StowAuth, StowTarget};
use crate::pacs::uid::UidRoot;
use crate::pacs::{scu, PacsTarget, Route};
use std::sync::Arc;
use std::time::Duration;

/// The server's DICOM settings and, when a PACS is configured, its outbox and delivery thread.
pub struct DicomOut {
    pub uid_root: UidRoot,
    pub pacs: Option<Pacs>,
}

pub struct Pacs {
    pub outbox: Arc<Outbox>,
    /// Taken at shutdown.
    delivery: std::sync::Mutex<Option<Delivery>>,
}

impl Pacs {
    fn delivery(&self) -> std::sync::MutexGuard<'_, Option<Delivery>> {
        self.delivery.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One encoded slice, as the stream reports it.
pub struct Emitted {
    pub sop_instance_uid: String,
    pub file: Option<Vec<u8>>,
    pub queued: bool,
}

/// The STOW-RS credentials the configuration names (read from their files).
fn stow_auth(cfg: &PacsConfig) -> anyhow::Result<StowAuth> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
    };
    Ok(
        match (
            &cfg.stow_token_file,
            &cfg.stow_user,
            &cfg.stow_password_file,
        ) {
            (Some(t), _, _) => StowAuth::Bearer(read(t)?),
            (None, Some(user), Some(p)) => StowAuth::Basic {
                user: user.clone(),
                password: read(p)?,
            },
            _ => StowAuth::None,
        },
    )
}

impl DicomOut {
    /// Opens the outbox (sending what a previous run left in it), checks the PACS with a C-ECHO
    /// in the background (logged; an unreachable PACS does not stop the server: images wait in
    /// the outbox) and starts delivery.
    pub fn start(cfg: &PacsConfig, metrics: Arc<Metrics>) -> anyhow::Result<DicomOut> {
        let route = match (&cfg.pacs_addr, &cfg.stow_url) {
            (None, None) => None,
            (Some(addr), _) => {
                let target = PacsTarget::parse(addr, &cfg.called_aet, &cfg.calling_aet)?;
                let echo_target = target.clone();
                std::thread::spawn(move || match scu::echo(&echo_target) {
                    Ok(()) => tracing::info!(pacs = %echo_target, "PACS answered C-ECHO"),
                    Err(e) => {
                        tracing::warn!(pacs = %echo_target, error = %e, "PACS did not answer C-ECHO; images wait in the outbox until it does")
                    }
                });
                Some(Route::CStore(target))
            }
            (None, Some(url)) => Some(Route::Stow(StowTarget::new(
                url,
                stow_auth(cfg)?,
                cfg.stow_ca.as_deref(),
            )?)),
        };
        let pacs = match route {
            None => None,
            Some(route) => {
                let outbox = Arc::new(Outbox::open(&cfg.outbox, cfg.outbox_max_mb * 1024 * 1024)?);
                let (items, bytes) = outbox.pending();
                tracing::info!(pacs = %route, outbox = %cfg.outbox.display(), pending_items = items, pending_bytes = bytes, "PACS delivery enabled");
                let backoff = Backoff {
                    max: Duration::from_secs_f64(cfg.retry_max_s.clamp(0.05, 3600.0)),
                    ..Backoff::default()
                };
                let delivery = Delivery::start(outbox.clone(), route, backoff, Some(metrics));
                Some(Pacs {
                    outbox,
                    delivery: std::sync::Mutex::new(Some(delivery)),
                })
            }
        };
        Ok(DicomOut {
            uid_root: cfg.uid_root.clone(),
            pacs,
        })
    }

    /// The series of a reconstruction that asked for DICOM output.
    pub fn series(&self, plan: &ReconPlan, model: &str) -> Result<Option<Arc<Series>>> {
        let Some(d) = &plan.dicom else {
            return Ok(None);
        };
        if d.store && self.pacs.is_none() {
            return Err(Error::FailedPrecondition(
                "dicom.store asks for PACS delivery, but this server has no PACS configured (--pacs HOST:PORT or --pacs-stow-url URL)".into(),
            ));
        }
        let sampling = if plan.trajectory.is_some() {
            "radial"
        } else {
            "Cartesian"
        };
        let acceleration = plan.mask.as_ref().and_then(|m| {
            let sampled = m.iter().filter(|&&v| v != 0.0).count();
            (sampled > 0).then(|| m.len() as f32 / sampled as f32)
        });
        let provenance = Provenance {
            model: model.to_string(),
            acceleration,
            sampling: sampling.into(),
            data_consistency: plan.dc.describe().into(),
        };
        Series::new(
            d.info.clone(),
            &self.uid_root,
            d.series_number,
            &provenance,
            plan.slices,
        )
        .map(|s| Some(Arc::new(s)))
        .map_err(|e| Error::InvalidArgument(format!("dicom: {e}")))
    }

    /// Encodes slice `index` and, when asked, stores it in the outbox (on a blocking thread: the
    /// outbox syncs to disk). `plane`: the slice's own plane when the series does not know it (see
    /// [`Series::encode_placed`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn emit(
        &self,
        series: Arc<Series>,
        d: &DicomPlan,
        index: usize,
        magnitude: Vec<f32>,
        ny: usize,
        nx: usize,
        plane: Option<SlicePlacement>,
    ) -> Result<Emitted> {
        let crop = d.crop;
        let store = d.store;
        let outbox = self.pacs.as_ref().map(|p| p.outbox.clone());
        let span = tracing::info_span!(
            "dicom_encode",
            image = index as i64,
            queued_for_pacs = store && outbox.is_some()
        );
        let (uid, file, queued) = tokio::task::spawn_blocking(move || -> Result<_> {
            let _span = span.enter();
            let (image, rows, cols) = match crop {
                Some([r, c]) => (centre_crop(&magnitude, ny, nx, r, c), r, c),
                None => (magnitude, ny, nx),
            };
            let enc = series
                .encode_placed(index, &image, rows, cols, plane)
                .map_err(|e| Error::Internal(format!("DICOM encoding failed: {e}")))?;
            let queued = match (store, outbox) {
                (true, Some(outbox)) => {
                    // remembered before the item is visible to the delivery thread
                    if let Some(cx) = crate::telemetry::span_context(&span) {
                        outbox.remember_trace(&enc.sop_instance_uid, cx);
                    }
                    outbox
                        .put(&enc.sop_instance_uid, &enc.file)
                        .map_err(|e| {
                            outbox.forget_trace(&enc.sop_instance_uid);
                            match e {
                                OutboxError::Full { .. } => Error::ResourceExhausted(format!(
                                    "the PACS outbox is full ({e}); images are delivered as the PACS accepts them, retry later"
                                )),
                                other => Error::Internal(format!("writing to the PACS outbox failed: {other}")),
                            }
                        })?;
                    true
                }
                _ => false,
            };
            Ok((enc.sop_instance_uid, enc.file, queued))
        })
        .await
        .map_err(|e| Error::Internal(format!("DICOM output task failed: {e}")))??;
        if queued {
            if let Some(p) = &self.pacs {
                if let Some(d) = p.delivery().as_ref() {
                    d.notify();
                }
            }
        }
        Ok(Emitted {
            sop_instance_uid: uid,
            file: d.return_dicom.then_some(file),
            queued,
        })
    }

    /// Whether a PACS is configured (`--pacs`).
    pub fn has_pacs(&self) -> bool {
        self.pacs.is_some()
    }

    /// Stops delivery after the current association; pending images stay in the outbox.
    pub fn shutdown(&self) {
        if let Some(d) = self.pacs.as_ref().and_then(|p| p.delivery().take()) {
            d.shutdown();
        }
    }
}
