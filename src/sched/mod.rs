//! Scheduling: a bounded queue in front of one device worker thread that owns the candle models.
//!
//! The gRPC layer submits [`Job`]s and awaits each job's oneshot reply. A full queue refuses at once
//! (RESOURCE_EXHAUSTED) instead of growing without bound; jobs whose client has gone are skipped before
//! they reach the device. Compatible jobs waiting in the queue (same model and image size) are run as
//! one network batch.

mod worker;

pub use worker::{spawn_worker, WorkerConfig};

use crate::error::{Error, Result};
use crate::mri::{
    dc::DcMode,
    recon::{CartesianSlice, SliceOutput},
};
use tokio::sync::{mpsc, oneshot};

/// A reconstruction of one Cartesian slice.
pub struct ReconJob {
    pub model: String,
    pub slice: CartesianSlice,
    pub dc: DcMode,
}

/// The result returned to the handler.
pub struct ReconResult {
    pub output: SliceOutput,
    pub compute_seconds: f32,
}

pub struct Job {
    pub work: ReconJob,
    pub reply: oneshot::Sender<Result<ReconResult>>,
    /// The request's span, entered on the worker so its logs carry the request id.
    pub span: tracing::Span,
}

/// The handle the API layer holds: cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    tx: mpsc::Sender<Job>,
}

impl Scheduler {
    pub fn new(tx: mpsc::Sender<Job>) -> Self {
        Scheduler { tx }
    }

    /// Queues a job, refusing at once when the queue is full. The receiver yields the result.
    pub fn submit(&self, work: ReconJob) -> Result<oneshot::Receiver<Result<ReconResult>>> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            work,
            reply,
            span: tracing::Span::current(),
        };
        match self.tx.try_send(job) {
            Ok(()) => Ok(rx),
            Err(mpsc::error::TrySendError::Full(_)) => Err(Error::ResourceExhausted(format!(
                "the reconstruction queue is full ({} jobs waiting); retry later",
                self.tx.max_capacity()
            ))),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(Error::Unavailable("the device worker has stopped".into()))
            }
        }
    }
}
