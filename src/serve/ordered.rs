//! Ordered streaming with bounded work in flight, shared by every streaming RPC (reconstruction
//! streams, KServe's ModelStreamInfer, bridge samples): a reader submits each piece of work as it
//! arrives, already running (handed to the scheduler or spawned), as a future of its result; at most
//! `inflight` wait to be collected (further submissions wait, which in turn stops reading the client's
//! stream: HTTP/2 flow control pushes back). A writer collects the results in submission order.

use std::future::Future;
use std::pin::Pin;
use tokio::sync::mpsc;

type Work<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The reader's end.
pub struct Submit<T>(mpsc::Sender<Work<T>>);

/// The writer's end.
pub struct Results<T>(mpsc::Receiver<Work<T>>);

/// A pipeline holding at most `inflight` results not yet collected (plus the one being awaited).
pub fn pipeline<T: Send + 'static>(inflight: usize) -> (Submit<T>, Results<T>) {
    let (tx, rx) = mpsc::channel(inflight.max(1));
    (Submit(tx), Results(rx))
}

impl<T> Submit<T> {
    /// Queues `work` behind everything submitted before it, waiting while the pipeline is full.
    /// False when the writer has gone (client away or stream failed): stop submitting.
    pub async fn submit(&self, work: impl Future<Output = T> + Send + 'static) -> bool {
        self.0.send(Box::pin(work)).await.is_ok()
    }
}

impl<T> Results<T> {
    /// The next result in submission order; `None` once the reader has finished and every result
    /// was collected.
    pub async fn next(&mut self) -> Option<T> {
        let work = self.0.recv().await?;
        Some(work.await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Results come out in submission order even when later work finishes first, and the reader
    /// waits once `inflight` results are uncollected.
    #[tokio::test]
    async fn results_in_submission_order_with_bounded_work() {
        let (submit, mut results) = pipeline::<u32>(2);
        let reader = tokio::spawn(async move {
            for i in 0..6u32 {
                let delay = Duration::from_millis(u64::from(30 - 5 * i));
                assert!(
                    submit
                        .submit(async move {
                            tokio::time::sleep(delay).await;
                            i
                        })
                        .await
                );
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!reader.is_finished(), "the reader ran ahead of the bound");
        let mut got = Vec::new();
        while let Some(i) = results.next().await {
            got.push(i);
        }
        assert_eq!(got, [0, 1, 2, 3, 4, 5]);
        reader.await.unwrap();
    }

    #[tokio::test]
    async fn a_gone_writer_stops_the_reader() {
        let (submit, results) = pipeline::<u32>(1);
        drop(results);
        assert!(!submit.submit(async { 1 }).await);
    }
}
