//! Scheduling: admission, per-model queues with dynamic batching and priorities (the rules live in
//! [`policy`], a plain struct), and the device worker threads that own the models.
//!
//! The gRPC layer calls [`Scheduler::submit`] and awaits one oneshot reply per item. A full queue
//! refuses at once (RESOURCE_EXHAUSTED); work whose deadline passes or whose client leaves while it
//! waits is dropped before it reaches the device. No candle work runs on the async runtime.
//!
//! Models come and go at run time (the model repository): each loaded model version gets a queue of
//! its own ([`Scheduler::add`]) and every queued item holds its model ([`ModelHandle`]), so a version
//! that is unloaded still finishes the work it admitted, and its memory goes with the last item.

pub mod clients;
pub mod policy;
mod worker;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::models::{Engine, Input, ModelInfo, Output};
pub use policy::Priority;
use policy::{BatchConfig, Entry, Queues, Rejected, Waiting};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The result of one item, with its timings.
pub struct Done {
    pub output: Output,
    pub queue_seconds: f32,
    /// The batch's compute time divided by its size.
    pub compute_seconds: f32,
    pub batch_size: usize,
}

pub type Reply = oneshot::Receiver<Result<Done>>;

/// How a request's items are scheduled.
#[derive(Debug, Clone)]
pub struct JobOptions {
    pub priority: Priority,
    /// Work not started by then is dropped with DEADLINE_EXCEEDED.
    pub deadline: Option<Instant>,
    /// The client the items count against ([`clients`]; `None`: not counted).
    pub client: Option<clients::ClientTicket>,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            priority: Priority::Normal,
            deadline: None,
            client: None,
        }
    }
}

/// A loaded model version and its queue: what a request resolves a model name to. Cloning it keeps
/// the model in memory.
#[derive(Clone)]
pub struct ModelHandle {
    pub queue: usize,
    pub engine: Arc<dyn Engine>,
}

impl ModelHandle {
    pub fn info(&self) -> &ModelInfo {
        self.engine.info()
    }
}

impl std::fmt::Debug for ModelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let info = self.info();
        write!(
            f,
            "{} version {} (queue {})",
            info.name, info.version, self.queue
        )
    }
}

struct Job {
    input: Input,
    engine: Arc<dyn Engine>,
    reply: oneshot::Sender<Result<Done>>,
    /// The request's span, entered on the worker so its logs carry the request's fields.
    span: tracing::Span,
    /// Open while the item waits for the device (a child of `span`).
    queued: tracing::Span,
    /// The client's place for this item, held until the item is answered or dropped.
    _client: Option<clients::ClientSlot>,
}

impl Waiting for Job {
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

struct State {
    queues: Queues<Job>,
    /// Each queue's model version (metric labels), indexed like the queues.
    labels: Vec<crate::metrics::ModelLabel>,
    closed: bool,
}

impl State {
    fn label(&self, model: usize) -> &crate::metrics::ModelLabel {
        &self.labels[model]
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queues inconsistent (every mutation is a
        // single push or remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes expired and abandoned items out of the queues, answering the expired ones.
    fn remove_dropped(&self, state: &mut State, now: Instant) {
        for (model, entry, reason) in state.queues.remove_dropped(now) {
            worker::drop_entry(self, entry, reason);
            self.record_depth(state, model);
        }
    }

    fn record_depth(&self, state: &State, model: usize) {
        self.metrics
            .queue_depth
            .get_or_create(state.label(model))
            .set(state.queues.model_len(model) as i64);
    }
}

/// The handle the API layer holds: cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

/// Scheduler settings: the server-wide queue limit and the number of worker threads.
pub struct SchedulerConfig {
    pub capacity: usize,
    pub workers: usize,
    /// Normal work waiting this long is served as high priority (`None`: strict priority).
    pub priority_aging: Option<Duration>,
}

impl Scheduler {
    /// Starts `config.workers` device worker threads; models are added with [`Scheduler::add`].
    pub fn start(config: SchedulerConfig, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queues: Queues::new(&[], config.capacity.max(1)).with_aging(config.priority_aging),
                labels: Vec::new(),
                closed: false,
            }),
            wake: Condvar::new(),
            metrics,
        });
        for id in 0..config.workers.max(1) {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("inferd-worker-{id}"))
                .spawn(move || worker::run(&shared))?;
        }
        Ok(Scheduler { shared })
    }

    /// Gives a loaded model version a queue of its own. Queues are never reused, so items of two
    /// models never share a batch.
    pub fn add(&self, engine: Arc<dyn Engine>, batching: BatchConfig) -> ModelHandle {
        let mut state = self.shared.lock();
        let queue = state.queues.add(batching);
        state.labels.push(Metrics::model(engine.info()));
        ModelHandle { queue, engine }
    }

    pub fn batch_config(&self, model: &ModelHandle) -> BatchConfig {
        *self.shared.lock().queues.config(model.queue)
    }

    /// Queues all `inputs` of one request for `model`, or refuses them all at once.
    pub fn submit(
        &self,
        model: &ModelHandle,
        inputs: Vec<Input>,
        options: JobOptions,
    ) -> Result<Vec<Reply>> {
        let now = Instant::now();
        if options.deadline.is_some_and(|d| d <= now) {
            return Err(Error::DeadlineExceeded(
                "the request's deadline passed before it was queued".into(),
            ));
        }
        let span = tracing::Span::current();
        let (name, version) = (&model.info().name, &model.info().version);
        let mut slots = match &options.client {
            Some(ticket) => ticket
                .acquire(inputs.len())?
                .into_iter()
                .map(Some)
                .collect(),
            None => Vec::new(),
        };
        let mut replies = Vec::with_capacity(inputs.len());
        let entries = inputs
            .into_iter()
            .map(|input| {
                let (reply, rx) = oneshot::channel();
                replies.push(rx);
                Entry {
                    key: input.batch_key(),
                    item: Job {
                        input,
                        engine: model.engine.clone(),
                        reply,
                        queued: tracing::info_span!(parent: &span, "queue", model = %name, version = %version),
                        span: span.clone(),
                        _client: slots.pop().flatten(),
                    },
                    priority: options.priority,
                    enqueued: now,
                    deadline: options.deadline,
                }
            })
            .collect();
        let mut state = self.shared.lock();
        if state.closed {
            return Err(Error::Unavailable("the server is shutting down".into()));
        }
        self.shared.remove_dropped(&mut state, now);
        let (queue, name) = (model.queue, model.info().name.as_str());
        state.queues.push(queue, entries).map_err(|r| match r {
            Rejected::ModelFull { waiting, capacity } => Error::ResourceExhausted(format!(
                "model {name} has {waiting} items waiting (limit {capacity}); retry later"
            )),
            Rejected::ServerFull { waiting, capacity } => Error::ResourceExhausted(format!(
                "the server has {waiting} items waiting (limit {capacity}); retry later"
            )),
        })?;
        self.shared.record_depth(&state, queue);
        drop(state);
        self.shared.wake.notify_all();
        Ok(replies)
    }

    /// Stops the workers once the queued work is done; later submissions are refused.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}
