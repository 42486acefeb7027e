//! A durable outbox for DICOM instances on their way to a PACS, and the background delivery that
//! drains it.
//!
//! # Guarantees
//!
//! - **Write-ahead.** [`Outbox::put`] returns `Ok` only once the Part-10 file is on disk: written to
//!   `tmp/`, fsync'd, renamed into `pending/` and the directory fsync'd. A crash at any point before
//!   leaves at most a half-written file in `tmp/`, which the next [`Outbox::open`] removes; a crash
//!   after it loses nothing. The caller may answer its own client only after `put` succeeded.
//! - **Order.** Pending files are named `SEQUENCE-SOPINSTANCEUID.dcm` with a zero-padded sequence
//!   number; delivery sends them oldest first, also after a restart.
//! - **At-least-once to the PACS.** A file is removed from `pending/` only after the PACS answered
//!   the C-STORE for it with success or a warning. If the connection breaks after the PACS stored an
//!   instance but before its answer arrived (or if the process dies before the removal reaches the
//!   disk), the instance is sent again.
//! - **Exactly-once as observed in the PACS.** A PACS keys instances by SOP Instance UID, so a second
//!   C-STORE of the same instance replaces or ignores the copy it has: it never appears twice. Within
//!   the outbox, a second `put` of a SOP Instance UID that is still pending is a no-op.
//! - **Permanent refusals do not block the queue.** An instance the PACS refuses for good (failure
//!   statuses 0xA7xx, 0xA9xx, 0xCxxx, a SOP class it does not accept; see
//!   [`scu::classify`](super::scu::classify)) is moved to `failed/` next to a `.reason` text file,
//!   and the next instances go on. Transport failures (PACS down, network, timeouts) keep everything
//!   pending and are retried with exponential backoff.
//! - **Bounded.** The pending bytes never exceed `max_bytes`; a `put` that would exceed it fails with
//!   [`OutboxError::Full`] and writes nothing, so that a long PACS outage turns into back-pressure
//!   rather than a full disk.

use super::scu::{self, StatusClass, StoreOutcome};
use super::Route;
use crate::metrics::Metrics;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(thiserror::Error, Debug)]
pub enum OutboxError {
    #[error(
        "PACS outbox is full: {pending_bytes} of {max_bytes} bytes pending, {needed} more needed"
    )]
    Full {
        pending_bytes: u64,
        max_bytes: u64,
        needed: u64,
    },
    #[error("outbox I/O error: {0}")]
    Io(#[from] io::Error),
    /// A SOP Instance UID must be 1-64 characters of digits and dots (PS3.5 §9.1).
    #[error("invalid SOP Instance UID {0:?}: expected 1-64 digits and dots")]
    InvalidUid(String),
}

/// One file waiting in `pending/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingItem {
    /// Position in the queue: smaller is older.
    pub seq: u64,
    pub sop_instance_uid: String,
    pub bytes: u64,
    pub path: PathBuf,
}

#[derive(Default)]
struct State {
    next_seq: u64,
    /// Files in `pending/`, by sequence number.
    items: BTreeMap<u64, PendingItem>,
    /// UIDs in `items` and those being written.
    uids: HashSet<String>,
    /// Bytes in `items`.
    bytes: u64,
    /// Bytes of files being written (reserved against `max_bytes`).
    writing: u64,
    failed: usize,
}

/// The on-disk queue (see the module documentation). All methods take `&self`; share it as
/// `Arc<Outbox>` between the producers and one [`Delivery`].
pub struct Outbox {
    pending_dir: PathBuf,
    failed_dir: PathBuf,
    tmp_dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    metrics: OnceLock<Arc<Metrics>>,
    /// The running delivery's wake-up signal, so that a `put` wakes it even without `notify`.
    waker: Mutex<Option<Arc<Signal>>>,
    /// The trace of the request that produced each pending item, so that its delivery links to it
    /// (in memory only: items pending across a restart are delivered without links).
    traces: Mutex<HashMap<String, opentelemetry::trace::SpanContext>>,
}

/// Pending items whose request trace is remembered, at most (beyond it, no links).
const MAX_TRACES: usize = 16_384;

// Shared between request handlers and the delivery thread.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Outbox>();
    shared::<Delivery>();
};

fn valid_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= 64 && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

fn file_name(seq: u64, uid: &str) -> String {
    format!("{seq:016}-{uid}.dcm")
}

/// `SEQ-UID.dcm` → (seq, uid).
fn parse_name(name: &str) -> Option<(u64, String)> {
    let (seq, uid) = name.strip_suffix(".dcm")?.split_once('-')?;
    let seq = seq.parse().ok()?;
    valid_uid(uid).then(|| (seq, uid.to_string()))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Outbox {
    /// Opens (creating it if needed) the outbox in `dir`, with `pending/`, `failed/` and `tmp/`
    /// below it. Removes temporary files left by a crash during `put` and counts what is pending.
    pub fn open(dir: &Path, max_bytes: u64) -> anyhow::Result<Outbox> {
        use anyhow::Context;
        let pending_dir = dir.join("pending");
        let failed_dir = dir.join("failed");
        let tmp_dir = dir.join("tmp");
        for d in [&pending_dir, &failed_dir, &tmp_dir] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let mut removed = 0;
        for e in fs::read_dir(&tmp_dir)? {
            let e = e?;
            if e.file_type()?.is_file() {
                fs::remove_file(e.path())?;
                removed += 1;
            }
        }
        let mut st = State::default();
        for e in fs::read_dir(&pending_dir)
            .with_context(|| format!("reading {}", pending_dir.display()))?
        {
            let e = e?;
            let name = e.file_name();
            let Some((seq, uid)) = name.to_str().and_then(parse_name) else {
                tracing::warn!(file = ?name, "ignoring a file in the outbox that it did not write");
                continue;
            };
            let bytes = e.metadata()?.len();
            if !st.uids.insert(uid.clone()) {
                // The same instance twice (cannot come from `put`): one copy is enough.
                fs::remove_file(e.path())?;
                continue;
            }
            st.bytes += bytes;
            st.next_seq = st.next_seq.max(seq + 1);
            st.items.insert(
                seq,
                PendingItem {
                    seq,
                    sop_instance_uid: uid,
                    bytes,
                    path: e.path(),
                },
            );
        }
        st.failed = fs::read_dir(&failed_dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".dcm")))
            .count();
        tracing::info!(
            dir = %dir.display(),
            pending_items = st.items.len(),
            pending_bytes = st.bytes,
            failed_items = st.failed,
            removed_temp_files = removed,
            "PACS outbox opened"
        );
        Ok(Outbox {
            pending_dir,
            failed_dir,
            tmp_dir,
            max_bytes,
            state: Mutex::new(st),
            metrics: OnceLock::new(),
            waker: Mutex::new(None),
            traces: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic in another thread (no multi-step updates
        // spanning a panic point), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers the trace of the request that enqueued `sop_instance_uid` (see `traces`).
    pub fn remember_trace(&self, sop_instance_uid: &str, cx: opentelemetry::trace::SpanContext) {
        let mut traces = self.traces.lock().unwrap_or_else(|p| p.into_inner());
        if traces.len() < MAX_TRACES {
            traces.insert(sop_instance_uid.to_string(), cx);
        }
    }

    fn traces_of(&self, items: &[PendingItem]) -> Vec<opentelemetry::trace::SpanContext> {
        let traces = self.traces.lock().unwrap_or_else(|p| p.into_inner());
        items
            .iter()
            .filter_map(|i| traces.get(&i.sop_instance_uid).cloned())
            .collect()
    }

    /// Drops the remembered trace of `sop_instance_uid` (delivered, refused, or never enqueued).
    pub fn forget_trace(&self, sop_instance_uid: &str) {
        let mut traces = self.traces.lock().unwrap_or_else(|p| p.into_inner());
        traces.remove(sop_instance_uid);
    }

    /// Durably enqueues one Part-10 file (see the module documentation). A second put of a SOP
    /// Instance UID that is still pending is a no-op.
    pub fn put(&self, sop_instance_uid: &str, file: &[u8]) -> Result<(), OutboxError> {
        if !valid_uid(sop_instance_uid) {
            return Err(OutboxError::InvalidUid(sop_instance_uid.to_string()));
        }
        let needed = file.len() as u64;
        let seq = {
            let mut st = self.lock();
            if st.uids.contains(sop_instance_uid) {
                return Ok(());
            }
            let pending_bytes = st.bytes + st.writing;
            if pending_bytes + needed > self.max_bytes {
                return Err(OutboxError::Full {
                    pending_bytes,
                    max_bytes: self.max_bytes,
                    needed,
                });
            }
            st.uids.insert(sop_instance_uid.to_string());
            st.writing += needed;
            st.next_seq += 1;
            st.next_seq - 1
        };
        // The slow part (write, fsync, rename, fsync) runs without the lock.
        let written = self.write_durably(seq, sop_instance_uid, file);
        let mut st = self.lock();
        st.writing -= needed;
        match written {
            Ok(path) => {
                st.bytes += needed;
                st.items.insert(
                    seq,
                    PendingItem {
                        seq,
                        sop_instance_uid: sop_instance_uid.to_string(),
                        bytes: needed,
                        path,
                    },
                );
                self.publish(&st);
                drop(st);
                self.wake();
                Ok(())
            }
            Err(e) => {
                st.uids.remove(sop_instance_uid);
                Err(e.into())
            }
        }
    }

    fn write_durably(&self, seq: u64, uid: &str, file: &[u8]) -> io::Result<PathBuf> {
        let name = file_name(seq, uid);
        let tmp = self.tmp_dir.join(&name);
        let dest = self.pending_dir.join(&name);
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(file)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &dest)?;
            sync_dir(&self.pending_dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|_| dest)
    }

    /// Pending items and their total size in bytes.
    pub fn pending(&self) -> (usize, u64) {
        let st = self.lock();
        (st.items.len(), st.bytes)
    }

    /// Items moved to `failed/` (refused by the PACS for good), including earlier runs.
    pub fn failed(&self) -> usize {
        self.lock().failed
    }

    /// The directory of refused items and their `.reason` files.
    pub fn failed_dir(&self) -> &Path {
        &self.failed_dir
    }

    /// The oldest pending items: at most `max_items`, and at most `max_bytes` in total unless the
    /// oldest alone is larger.
    pub fn oldest(&self, max_items: usize, max_bytes: u64) -> Vec<PendingItem> {
        let st = self.lock();
        let mut out = Vec::new();
        let mut total = 0;
        for item in st.items.values().take(max_items) {
            if !out.is_empty() && total + item.bytes > max_bytes {
                break;
            }
            total += item.bytes;
            out.push(item.clone());
        }
        out
    }

    /// Removes a delivered item.
    pub fn remove(&self, item: &PendingItem) -> io::Result<()> {
        match fs::remove_file(&item.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // No directory fsync here: if the removal is lost in a crash, the instance is sent again
        // and the PACS keeps one copy.
        self.forget(item);
        Ok(())
    }

    /// Drops an item from the in-memory queue (its file is gone).
    fn forget(&self, item: &PendingItem) {
        let mut st = self.lock();
        if st.items.remove(&item.seq).is_some() {
            st.uids.remove(&item.sop_instance_uid);
            st.bytes -= item.bytes;
        }
        self.publish(&st);
        drop(st);
        self.forget_trace(&item.sop_instance_uid);
    }

    /// Moves a refused item to `failed/` with a `.reason` file next to it.
    pub fn fail(&self, item: &PendingItem, reason: &str) -> io::Result<()> {
        let name = file_name(item.seq, &item.sop_instance_uid);
        let when = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let text = format!(
            "SOP Instance UID: {}\nrefused at (unix time): {when}\n{reason}\n",
            item.sop_instance_uid
        );
        let mut f = File::create(self.failed_dir.join(format!("{name}.reason")))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&item.path, self.failed_dir.join(&name))?;
        sync_dir(&self.failed_dir)?;
        sync_dir(&self.pending_dir)?;
        {
            let mut st = self.lock();
            st.failed += 1;
        }
        self.forget(item);
        Ok(())
    }

    fn attach_metrics(&self, m: Arc<Metrics>) {
        let m = self.metrics.get_or_init(|| m);
        let st = self.lock();
        m.outbox_failed_items.set(st.failed as i64);
        self.publish(&st);
    }

    fn publish(&self, st: &State) {
        if let Some(m) = self.metrics.get() {
            m.outbox_pending_items.set(st.items.len() as i64);
            m.outbox_pending_bytes.set(st.bytes as i64);
            m.outbox_failed_items.set(st.failed as i64);
        }
    }

    fn wake(&self) {
        let w = self.waker.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(w) = w {
            w.wake();
        }
    }
}

/// Retry timing for transport failures: the n-th consecutive failure waits
/// `initial * 2^(n-1)`, capped at `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait after `failures` (≥ 1) consecutive failures.
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Instances per association. A PACS commits each instance on its own, so larger batches only save
/// association set-up (a few ms each).
pub const BATCH_ITEMS: usize = 32;
/// Bytes per association, to bound the memory held by one batch.
pub const BATCH_BYTES: u64 = 256 << 20;
/// A transient failure status (processing failure, cancel) for the same instance this many times in
/// a row moves it to `failed/`.
const MAX_TRANSIENT_STATUS: u32 = 5;

#[derive(Default)]
struct Flags {
    wake: bool,
    stop: bool,
}

struct Signal {
    flags: Mutex<Flags>,
    cv: Condvar,
}

impl Signal {
    fn lock(&self) -> MutexGuard<'_, Flags> {
        self.flags.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self) {
        self.lock().wake = true;
        self.cv.notify_all();
    }
}

/// The background sender of an [`Outbox`] (see the module documentation): one OS thread that sends
/// pending items oldest first, up to [`BATCH_ITEMS`] per association.
pub struct Delivery {
    signal: Arc<Signal>,
    outbox: Arc<Outbox>,
    thread: Option<JoinHandle<()>>,
}

impl Delivery {
    pub fn start(
        outbox: Arc<Outbox>,
        target: impl Into<Route>,
        backoff: Backoff,
        metrics: Option<Arc<Metrics>>,
    ) -> Delivery {
        let signal = Arc::new(Signal {
            flags: Mutex::new(Flags::default()),
            cv: Condvar::new(),
        });
        if let Some(m) = &metrics {
            outbox.attach_metrics(m.clone());
        }
        *outbox.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(signal.clone());
        let worker = Worker {
            outbox: outbox.clone(),
            target: target.into(),
            backoff,
            metrics,
            signal: signal.clone(),
            transient: HashMap::new(),
        };
        let thread = std::thread::Builder::new()
            .name("pacs-delivery".into())
            .spawn(move || worker.run())
            .expect("spawning the PACS delivery thread");
        Delivery {
            signal,
            outbox,
            thread: Some(thread),
        }
    }

    /// Wakes the delivery after a `put` (which also does it by itself). During a backoff wait after
    /// a transport failure this does not shorten the wait.
    pub fn notify(&self) {
        self.signal.wake();
    }

    /// Waits until nothing is pending; `false` if `timeout` passed first.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.outbox.pending().0 == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops after the current association (if one is open); pending items stay on disk. Blocks
    /// until the delivery thread has ended (at most one association, bounded by the target's
    /// timeout): from async code, call it (or drop the `Delivery`) inside `spawn_blocking`.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.signal.lock().stop = true;
        self.signal.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut w = self.outbox.waker.lock().unwrap_or_else(|p| p.into_inner());
        if w.as_ref().is_some_and(|s| Arc::ptr_eq(s, &self.signal)) {
            *w = None;
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Worker {
    outbox: Arc<Outbox>,
    target: Route,
    backoff: Backoff,
    metrics: Option<Arc<Metrics>>,
    signal: Arc<Signal>,
    /// Consecutive transient failure statuses per SOP Instance UID.
    transient: HashMap<String, u32>,
}

impl Worker {
    fn run(mut self) {
        tracing::info!(pacs = %self.target, "PACS delivery started");
        let mut failures = 0u32;
        loop {
            // Sleep until there is work or a stop.
            {
                let mut f = self.signal.lock();
                while !f.stop && !f.wake && self.outbox.pending().0 == 0 {
                    f = self.signal.cv.wait(f).unwrap_or_else(|p| p.into_inner());
                }
                if f.stop {
                    break;
                }
                f.wake = false;
            }
            let retry = match self.send_batch() {
                Ok(retry) => {
                    if let Some(m) = &self.metrics {
                        m.pacs_reachable.set(1);
                    }
                    failures = 0;
                    retry
                }
                Err(e) => {
                    failures += 1;
                    if let Some(m) = &self.metrics {
                        m.pacs_reachable.set(0);
                        m.outbox_retries.inc();
                    }
                    let (items, _) = self.outbox.pending();
                    tracing::warn!(
                        error = format!("{e:#}"),
                        pending_items = items,
                        retry_in_s = self.backoff.delay(failures).as_secs_f64(),
                        "PACS delivery failed"
                    );
                    true
                }
            };
            if retry && !self.pause(self.backoff.delay(failures.max(1))) {
                break;
            }
        }
        tracing::info!(pacs = %self.target, "PACS delivery stopped");
    }

    /// Waits for `d` unless stopped first; `false` on stop.
    fn pause(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut f = self.signal.lock();
        while !f.stop {
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            f = self
                .signal
                .cv
                .wait_timeout(f, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        false
    }

    /// Sends the oldest pending items over one association. `Ok(true)`: the PACS answered but some
    /// item should be retried later; `Err`: transport failure (all unanswered items stay pending).
    fn send_batch(&mut self) -> anyhow::Result<bool> {
        let batch = self.outbox.oldest(BATCH_ITEMS, BATCH_BYTES);
        let mut items = Vec::with_capacity(batch.len());
        let mut files = Vec::with_capacity(batch.len());
        for item in batch {
            match fs::read(&item.path) {
                Ok(b) => {
                    items.push(item);
                    files.push(b);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    tracing::warn!(sop_instance_uid = %item.sop_instance_uid, "pending file vanished from the outbox");
                    self.outbox.forget(&item);
                }
                Err(e) => return Err(anyhow::Error::new(e).context("reading a pending file")),
            }
        }
        if files.is_empty() {
            return Ok(false);
        }
        let bytes: u64 = items.iter().map(|i| i.bytes).sum();
        let span = tracing::info_span!(
            "pacs_delivery",
            items = items.len() as i64,
            bytes = bytes as i64
        );
        crate::telemetry::link(&span, self.outbox.traces_of(&items));
        let _span = span.enter();
        let started = Instant::now();
        let mut stored = 0usize;
        let mut refused = 0usize;
        let mut retry = false;
        let outbox = self.outbox.clone();
        let metrics = self.metrics.clone();
        let transient = &mut self.transient;
        let result = self.target.store_each(&files, |i, o: StoreOutcome| {
            let item = &items[i];
            match scu::classify(o.status) {
                StatusClass::Stored => {
                    transient.remove(&item.sop_instance_uid);
                    stored += 1;
                    if let Some(m) = &metrics {
                        m.outbox_stored.inc();
                    }
                    if let Err(e) = outbox.remove(item) {
                        tracing::error!(sop_instance_uid = %item.sop_instance_uid, error = %e, "cannot remove a delivered file; it will be sent again");
                    }
                }
                class => {
                    let n = transient.entry(item.sop_instance_uid.clone()).or_insert(0);
                    *n += 1;
                    if class == StatusClass::Transient && *n < MAX_TRANSIENT_STATUS {
                        retry = true;
                        return;
                    }
                    transient.remove(&item.sop_instance_uid);
                    refused += 1;
                    let reason = format!(
                        "DIMSE status: {:#06x} ({:?})\nerror comment: {}\nPACS: {}",
                        o.status,
                        class,
                        o.error_comment.as_deref().unwrap_or("-"),
                        self.target
                    );
                    tracing::warn!(sop_instance_uid = %item.sop_instance_uid, status = format!("{:#06x}", o.status), "PACS refused an instance; moved to failed/");
                    if let Err(e) = outbox.fail(item, &reason) {
                        tracing::error!(sop_instance_uid = %item.sop_instance_uid, error = %e, "cannot move a refused file to failed/");
                        retry = true;
                    }
                }
            }
        });
        tracing::info!(
            stored,
            refused,
            sent = files.len(),
            seconds = started.elapsed().as_secs_f64(),
            "PACS association finished"
        );
        result.map(|_| retry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn put_keeps_fifo_order_and_counts() {
        let d = tempfile::tempdir().unwrap();
        let o = Outbox::open(d.path(), 1 << 20).unwrap();
        assert_eq!(o.pending(), (0, 0));
        for (i, uid) in ["2.25.9", "2.25.1", "2.25.5"].iter().enumerate() {
            o.put(uid, &vec![i as u8; 100 + i]).unwrap();
        }
        assert_eq!(o.pending(), (3, 303));
        let uids: Vec<_> = o
            .oldest(10, u64::MAX)
            .into_iter()
            .map(|i| i.sop_instance_uid)
            .collect();
        assert_eq!(uids, ["2.25.9", "2.25.1", "2.25.5"]);
        assert_eq!(o.oldest(2, u64::MAX).len(), 2);
        // the byte cap stops a batch, but the oldest item always goes
        assert_eq!(o.oldest(10, 150).len(), 1);
        assert_eq!(o.oldest(10, 1).len(), 1);
        // on disk: sequence-prefixed, content intact, nothing left in tmp/
        let files = names(&d.path().join("pending"));
        assert_eq!(files.len(), 3);
        assert!(files[0].ends_with("-2.25.9.dcm"), "{files:?}");
        assert_eq!(
            fs::read(d.path().join("pending").join(&files[1])).unwrap(),
            vec![1u8; 101]
        );
        assert!(names(&d.path().join("tmp")).is_empty());
        // a reopened outbox sees the same queue, and appends after it
        drop(o);
        let o = Outbox::open(d.path(), 1 << 20).unwrap();
        assert_eq!(o.pending(), (3, 303));
        o.put("2.25.0", b"x").unwrap();
        let uids: Vec<_> = o
            .oldest(10, u64::MAX)
            .into_iter()
            .map(|i| i.sop_instance_uid)
            .collect();
        assert_eq!(uids, ["2.25.9", "2.25.1", "2.25.5", "2.25.0"]);
    }

    #[test]
    fn duplicate_put_is_a_no_op_until_delivered() {
        let d = tempfile::tempdir().unwrap();
        let o = Outbox::open(d.path(), 1 << 20).unwrap();
        o.put("1.2.3", b"first").unwrap();
        o.put("1.2.3", b"second, longer").unwrap();
        assert_eq!(o.pending(), (1, 5));
        let item = o.oldest(1, u64::MAX).remove(0);
        assert_eq!(fs::read(&item.path).unwrap(), b"first");
        o.remove(&item).unwrap();
        assert_eq!(o.pending(), (0, 0));
        assert!(names(&d.path().join("pending")).is_empty());
        // once delivered, the same UID may be queued again (e.g. a corrected image)
        o.put("1.2.3", b"again").unwrap();
        assert_eq!(o.pending(), (1, 5));
    }

    #[test]
    fn full_outbox_refuses_and_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let o = Outbox::open(d.path(), 1000).unwrap();
        o.put("2.25.1", &[0; 600]).unwrap();
        match o.put("2.25.2", &[0; 401]) {
            Err(OutboxError::Full {
                pending_bytes: 600,
                max_bytes: 1000,
                needed: 401,
            }) => {}
            other => panic!("expected Full, got {other:?}"),
        }
        assert_eq!(o.pending(), (1, 600));
        assert_eq!(names(&d.path().join("pending")).len(), 1);
        assert!(names(&d.path().join("tmp")).is_empty());
        o.put("2.25.2", &[0; 400]).unwrap();
        assert_eq!(o.pending(), (2, 1000));
        let msg = o.put("2.25.3", &[0]).unwrap_err().to_string();
        assert!(msg.contains("full"), "{msg}");
    }

    #[test]
    fn invalid_uids_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let o = Outbox::open(d.path(), 1000).unwrap();
        for bad in ["", "../etc", "1.2.a", &"1".repeat(65)] {
            assert!(
                matches!(o.put(bad, b"x"), Err(OutboxError::InvalidUid(_))),
                "{bad}"
            );
        }
        assert_eq!(o.pending(), (0, 0));
    }

    #[test]
    fn open_removes_temp_files_and_ignores_strangers() {
        let d = tempfile::tempdir().unwrap();
        {
            let o = Outbox::open(d.path(), 1 << 20).unwrap();
            o.put("2.25.7", b"kept").unwrap();
        }
        // a crash in the middle of a put leaves a half-written temp file
        fs::write(
            d.path().join("tmp").join("0000000000000001-2.25.8.dcm"),
            b"half",
        )
        .unwrap();
        fs::write(d.path().join("pending").join("notes.txt"), b"?").unwrap();
        let o = Outbox::open(d.path(), 1 << 20).unwrap();
        assert!(names(&d.path().join("tmp")).is_empty());
        assert_eq!(o.pending(), (1, 4));
        assert_eq!(o.oldest(9, u64::MAX)[0].sop_instance_uid, "2.25.7");
    }

    #[test]
    fn failed_items_move_aside_with_a_reason() {
        let d = tempfile::tempdir().unwrap();
        let o = Outbox::open(d.path(), 1 << 20).unwrap();
        o.put("2.25.1", b"a").unwrap();
        o.put("2.25.2", b"b").unwrap();
        let first = o.oldest(1, u64::MAX).remove(0);
        o.fail(&first, "DIMSE status: 0xa900").unwrap();
        assert_eq!((o.pending(), o.failed()), ((1, 1), 1));
        assert_eq!(o.oldest(9, u64::MAX)[0].sop_instance_uid, "2.25.2");
        let failed = names(o.failed_dir());
        assert_eq!(failed.len(), 2, "{failed:?}");
        let reason = fs::read_to_string(o.failed_dir().join(&failed[1])).unwrap();
        assert!(
            reason.contains("0xa900") && reason.contains("2.25.1"),
            "{reason}"
        );
        drop(o);
        assert_eq!(Outbox::open(d.path(), 1 << 20).unwrap().failed(), 1);
    }

    #[test]
    fn concurrent_puts_stay_within_the_limit() {
        let d = tempfile::tempdir().unwrap();
        let o = Arc::new(Outbox::open(d.path(), 10_000).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let o = o.clone();
                std::thread::spawn(move || {
                    (0..10)
                        .filter(|i| o.put(&format!("2.25.{t}.{i}"), &[0; 300]).is_ok())
                        .count()
                })
            })
            .collect();
        let ok: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(ok, 33);
        assert_eq!(o.pending(), (33, 9900));
        assert_eq!(names(&d.path().join("pending")).len(), 33);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff::default();
        let ms: Vec<u128> = (1..=9).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(
            ms,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(b.delay(1000), Duration::from_secs(30));
    }
}
