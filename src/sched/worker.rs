//! The device worker loop: take the next batch from the policy, run it on the model, answer each
//! item. Several workers may share the queues (CPU); each runs one batch at a time.

use super::policy::{DropReason, Entry, Next};
use super::{Done, Job, Shared};
use crate::error::Error;
use crate::metrics::{DropLabels, Metrics};
use std::time::Instant;

pub(super) fn run(shared: &Shared) {
    while let Some(entries) = next_batch(shared) {
        run_batch(shared, entries);
    }
}

/// Blocks until a batch is ready; `None` once the scheduler is closed and drained.
fn next_batch(shared: &Shared) -> Option<Vec<Entry<Job>>> {
    let mut state = shared.lock();
    loop {
        let now = Instant::now();
        shared.remove_dropped(&mut state, now);
        match state.queues.next_batch(now) {
            Next::Batch { model, entries } => {
                shared.record_depth(&state, model);
                return Some(entries);
            }
            Next::WaitUntil(t) => {
                let wait = t.saturating_duration_since(now);
                state = shared
                    .wake
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            Next::Idle if state.closed => return None,
            Next::Idle => {
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

pub(super) fn drop_entry(shared: &Shared, entry: Entry<Job>, reason: DropReason) {
    let reason_label = match reason {
        DropReason::Expired => "expired",
        DropReason::Abandoned => "abandoned",
    };
    shared
        .metrics
        .dropped
        .get_or_create(&DropLabels {
            model: entry.item.engine.info().name.clone(),
            version: entry.item.engine.info().version.clone(),
            reason: reason_label.to_string(),
        })
        .inc();
    let job = entry.item;
    let _g = job.span.enter();
    tracing::debug!(
        reason = reason_label,
        "queued item dropped before the device"
    );
    if reason == DropReason::Expired {
        let _ = job.reply.send(Err(Error::DeadlineExceeded(format!(
            "the deadline passed after {:.3} s in the queue, before the work started",
            entry.enqueued.elapsed().as_secs_f32()
        ))));
    }
}

fn run_batch(shared: &Shared, entries: Vec<Entry<Job>>) {
    // a queue holds one model version's items: they share its engine
    let Some(first) = entries.first() else { return };
    let engine = first.item.engine.clone();
    let info = engine.info();
    let name = info.name.as_str();
    let label = Metrics::model(info);
    let start = Instant::now();
    let n = entries.len();
    let mut inputs = Vec::with_capacity(n);
    let mut waiting = Vec::with_capacity(n);
    let mut queue_times = Vec::with_capacity(n);
    for e in entries {
        let waited = start.duration_since(e.enqueued);
        let queued = waited.as_secs_f32();
        shared
            .metrics
            .queue_seconds
            .get_or_create(&label)
            .observe(queued as f64);
        drop(e.item.queued);
        inputs.push(e.item.input);
        waiting.push((e.item.reply, e.item.span, queued));
        queue_times.push(waited);
    }
    let compute = compute_spans(waiting.iter().map(|(_, span, _)| span), info);
    shared
        .metrics
        .batch_size
        .get_or_create(&label)
        .observe(n as f64);
    // the leader's span is current while the engine runs, so the engine's own spans (network, data
    // consistency) nest under it
    let outcome = compute[0]
        .in_scope(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.run(inputs))));
    drop(compute);
    let ok = matches!(&outcome, Ok(Ok(outputs)) if outputs.len() == n);
    shared
        .metrics
        .record_batch(name, &info.version, &queue_times, start.elapsed(), ok);
    let elapsed = start.elapsed().as_secs_f32();
    shared
        .metrics
        .compute_seconds
        .get_or_create(&label)
        .observe(elapsed as f64);
    let per_item = elapsed / n as f32;
    match outcome {
        Ok(Ok(outputs)) if outputs.len() == n => {
            for (output, (reply, span, queued)) in outputs.into_iter().zip(waiting) {
                let _g = span.enter();
                tracing::debug!(
                    model = name,
                    seconds = per_item,
                    queued,
                    batch = n,
                    "item done"
                );
                let _ = reply.send(Ok(Done {
                    output,
                    queue_seconds: queued,
                    compute_seconds: per_item,
                    batch_size: n,
                }));
            }
        }
        Ok(Ok(outputs)) => fail_all(
            waiting,
            Error::Internal(format!(
                "model {name} returned {} outputs for {n} inputs",
                outputs.len()
            )),
        ),
        Ok(Err(e)) => {
            tracing::warn!(model = name, error = %e, "batch failed");
            fail_all(waiting, e);
        }
        Err(_) => {
            tracing::error!(model = name, "batch panicked; the worker continues");
            fail_all(
                waiting,
                Error::Internal("inference failed unexpectedly (internal error)".into()),
            );
        }
    }
}

/// One `compute` span per item (children of the items' request spans, `parents`), each in its own
/// request's trace; the first item is the batch's leader and the others link to its span.
fn compute_spans<'a>(
    parents: impl ExactSizeIterator<Item = &'a tracing::Span>,
    info: &crate::models::ModelInfo,
) -> Vec<tracing::Span> {
    let n = parents.len() as i64;
    let spans: Vec<tracing::Span> = parents
        .enumerate()
        .map(|(i, parent)| {
            tracing::info_span!(parent: parent, "compute", model = %info.name, version = %info.version, batch.size = n, batch.leader = i == 0)
        })
        .collect();
    if let Some(leader) = spans.first().and_then(crate::telemetry::span_context) {
        for s in &spans[1..] {
            crate::telemetry::link(s, [leader.clone()]);
        }
    }
    spans
}

fn fail_all(
    waiting: Vec<(
        tokio::sync::oneshot::Sender<crate::error::Result<Done>>,
        tracing::Span,
        f32,
    )>,
    e: Error,
) {
    for (reply, _, _) in waiting {
        let _ = reply.send(Err(e.clone()));
    }
}
