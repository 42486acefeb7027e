//! The batching policy as plain data: per-model queues with two priority levels, admission limits,
//! deadlines, dynamic batching and fairness between models. It owns no thread and reads no clock (the
//! caller passes `now`), so every rule is unit-tested below.
//!
//! Rules:
//! - **Admission**: a request's items enter all together or not at all; refused when the model's queue
//!   or the whole server would exceed its capacity. (Callers take dropped items out first, so that
//!   work nobody waits for does not hold places.)
//! - **Batching** (Triton's dynamic batcher): a model's batch starts at its oldest highest-priority
//!   item (the head) and takes the compatible items (same batch key, i.e. same tensor shape) behind it,
//!   high priority first, up to `max_batch`. The batch is released at once when full, otherwise when the
//!   head has waited `max_delay`; a delay of zero takes whatever is ready.
//! - **Priority**: a ready batch headed by high-priority work goes before any normal one.
//! - **Fairness**: among models with a ready batch at the same priority, turns go round-robin, so a
//!   slow model gets one batch per turn and cannot starve another.
//! - **Deadlines and cancellation**: an item whose deadline has passed, or whose client went away, is
//!   taken out before it reaches the device and handed back to the caller with the reason.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    High,
    Normal,
}

impl Priority {
    fn lane(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
        }
    }
}

/// Batching and admission settings of one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchConfig {
    /// Most items run through the model together.
    pub max_batch: usize,
    /// Longest a batch's first item waits for more compatible items.
    pub max_delay: Duration,
    /// Most items of this model waiting at once.
    pub capacity: usize,
}

/// Lets the policy see that an item's client has gone.
pub trait Waiting {
    fn abandoned(&self) -> bool;
}

/// Items with equal keys may share a batch (for tensors: their shape).
pub type BatchKey = Vec<usize>;

#[derive(Debug)]
pub struct Entry<T> {
    pub item: T,
    pub key: BatchKey,
    pub priority: Priority,
    pub enqueued: Instant,
    pub deadline: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rejected {
    /// The model's queue would exceed its capacity.
    ModelFull { waiting: usize, capacity: usize },
    /// The server-wide limit would be exceeded.
    ServerFull { waiting: usize, capacity: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The deadline passed while the item waited.
    Expired,
    /// The client went away.
    Abandoned,
}

#[derive(Debug)]
pub enum Next<T> {
    /// Run these items of model `model` as one batch.
    Batch {
        model: usize,
        entries: Vec<Entry<T>>,
    },
    /// Nothing is ready; poll again at this instant (or when something is pushed).
    WaitUntil(Instant),
    /// Nothing is waiting.
    Idle,
}

struct ModelQueue<T> {
    config: BatchConfig,
    /// One lane per priority, oldest first.
    lanes: [VecDeque<Entry<T>>; 2],
}

impl<T> ModelQueue<T> {
    fn len(&self) -> usize {
        self.lanes[0].len() + self.lanes[1].len()
    }

    fn head(&self) -> Option<&Entry<T>> {
        self.lanes[0].front().or_else(|| self.lanes[1].front())
    }

    fn compatible(&self, key: &BatchKey) -> usize {
        self.lanes
            .iter()
            .flatten()
            .filter(|e| &e.key == key)
            .take(self.config.max_batch)
            .count()
    }

    /// When the head's batch becomes ready: `None` if empty, a time in the past if ready now.
    fn ready_at(&self) -> Option<Instant> {
        let head = self.head()?;
        if self.compatible(&head.key) >= self.config.max_batch {
            Some(head.enqueued)
        } else {
            Some(head.enqueued + self.config.max_delay)
        }
    }

    fn take_batch(&mut self) -> Vec<Entry<T>> {
        let Some(key) = self.head().map(|h| h.key.clone()) else {
            return Vec::new();
        };
        let mut batch = Vec::with_capacity(self.config.max_batch);
        for lane in &mut self.lanes {
            let mut i = 0;
            while i < lane.len() && batch.len() < self.config.max_batch {
                if lane[i].key == key {
                    batch.extend(lane.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        batch
    }
}

/// All models' queues and the server-wide limit.
pub struct Queues<T> {
    models: Vec<ModelQueue<T>>,
    capacity: usize,
    /// The model whose turn comes first next time (round-robin).
    next_turn: usize,
    /// Normal work that has waited this long is served as high priority, so a steady stream of
    /// high-priority requests cannot starve it (`None`: strict priority).
    aging: Option<Duration>,
}

impl<T: Waiting> Queues<T> {
    /// One queue per model (indexed like `configs`), at most `capacity` items in all.
    pub fn new(configs: &[BatchConfig], capacity: usize) -> Self {
        Queues {
            models: configs
                .iter()
                .map(|&config| ModelQueue {
                    config,
                    lanes: [VecDeque::new(), VecDeque::new()],
                })
                .collect(),
            capacity,
            next_turn: 0,
            aging: None,
        }
    }

    /// Adds a queue for one more model; returns its index.
    pub fn add(&mut self, config: BatchConfig) -> usize {
        self.models.push(ModelQueue {
            config,
            lanes: [VecDeque::new(), VecDeque::new()],
        });
        self.models.len() - 1
    }

    pub fn len(&self) -> usize {
        self.models.iter().map(ModelQueue::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn model_len(&self, model: usize) -> usize {
        self.models[model].len()
    }

    pub fn config(&self, model: usize) -> &BatchConfig {
        &self.models[model].config
    }

    /// Queues all `entries` for `model`, or none of them.
    pub fn push(&mut self, model: usize, entries: Vec<Entry<T>>) -> Result<(), Rejected> {
        let n = entries.len();
        let total = self.len();
        if total + n > self.capacity {
            return Err(Rejected::ServerFull {
                waiting: total,
                capacity: self.capacity,
            });
        }
        let q = &mut self.models[model];
        if q.len() + n > q.config.capacity {
            return Err(Rejected::ModelFull {
                waiting: q.len(),
                capacity: q.config.capacity,
            });
        }
        for e in entries {
            q.lanes[e.priority.lane()].push_back(e);
        }
        Ok(())
    }

    /// Takes out the items that expired (deadline passed) or were abandoned: (model, item, reason).
    pub fn remove_dropped(&mut self, now: Instant) -> Vec<(usize, Entry<T>, DropReason)> {
        let mut dropped = Vec::new();
        for (m, lane) in self
            .models
            .iter_mut()
            .enumerate()
            .flat_map(|(m, q)| q.lanes.iter_mut().map(move |l| (m, l)))
        {
            let mut i = 0;
            while i < lane.len() {
                let reason = if lane[i].item.abandoned() {
                    Some(DropReason::Abandoned)
                } else if lane[i].deadline.is_some_and(|d| d <= now) {
                    Some(DropReason::Expired)
                } else {
                    None
                };
                match reason {
                    Some(r) => dropped.extend(lane.remove(i).map(|e| (m, e, r))),
                    None => i += 1,
                }
            }
        }
        dropped
    }

    /// Serves normal work that has waited `after` as high priority (`None`: strict priority).
    pub fn with_aging(mut self, after: Option<Duration>) -> Self {
        self.aging = after;
        self
    }

    /// Moves normal work that has waited past the ageing limit into the high-priority lane, in
    /// arrival order.
    fn promote(&mut self, now: Instant) {
        let Some(after) = self.aging else { return };
        for q in &mut self.models {
            while q.lanes[1]
                .front()
                .is_some_and(|e| now.saturating_duration_since(e.enqueued) >= after)
            {
                let mut e = q.lanes[1].pop_front().expect("front exists");
                e.priority = Priority::High;
                let at = q.lanes[0].partition_point(|h| h.enqueued <= e.enqueued);
                q.lanes[0].insert(at, e);
            }
        }
    }

    /// The next batch to run, or when to look again. Call [`Queues::remove_dropped`] first so that
    /// expired work never reaches the device.
    pub fn next_batch(&mut self, now: Instant) -> Next<T> {
        self.promote(now);
        let n = self.models.len();
        for level in [Priority::High, Priority::Normal] {
            for step in 0..n {
                let m = (self.next_turn + step) % n;
                let q = &self.models[m];
                let head_level = q.head().map(|h| h.priority);
                if head_level == Some(level) && q.ready_at().is_some_and(|t| t <= now) {
                    self.next_turn = (m + 1) % n;
                    return Next::Batch {
                        model: m,
                        entries: self.models[m].take_batch(),
                    };
                }
            }
        }
        let ready = self.models.iter().filter_map(ModelQueue::ready_at);
        let deadlines = self
            .models
            .iter()
            .flat_map(|q| q.lanes.iter().flatten())
            .filter_map(|e| e.deadline);
        match ready.chain(deadlines).min() {
            Some(t) => Next::WaitUntil(t),
            None => Next::Idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A test item: an id and a flag the test flips to simulate a client leaving.
    #[derive(Debug, Clone)]
    struct Item(u32, Rc<Cell<bool>>);

    impl Waiting for Item {
        fn abandoned(&self) -> bool {
            self.1.get()
        }
    }

    fn cfg(max_batch: usize, delay_ms: u64) -> BatchConfig {
        BatchConfig {
            max_batch,
            max_delay: Duration::from_millis(delay_ms),
            capacity: 100,
        }
    }

    fn entry(id: u32, key: usize, priority: Priority, at: Instant) -> Entry<Item> {
        Entry {
            item: Item(id, Rc::new(Cell::new(false))),
            key: vec![key],
            priority,
            enqueued: at,
            deadline: None,
        }
    }

    fn ids(next: Next<Item>) -> (usize, Vec<u32>) {
        match next {
            Next::Batch { model, entries } => {
                (model, entries.into_iter().map(|e| e.item.0).collect())
            }
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn fifo_order_and_max_batch() {
        let t0 = Instant::now();
        let mut q = Queues::new(&[cfg(3, 0)], 100);
        let entries = (0..5).map(|i| entry(i, 1, Priority::Normal, t0)).collect();
        q.push(0, entries).unwrap();
        assert_eq!(ids(q.next_batch(t0)), (0, vec![0, 1, 2]));
        assert_eq!(ids(q.next_batch(t0)), (0, vec![3, 4]));
        assert!(matches!(q.next_batch(t0), Next::Idle));
    }

    #[test]
    fn only_compatible_shapes_share_a_batch() {
        let t0 = Instant::now();
        let mut q = Queues::new(&[cfg(4, 0)], 100);
        for (i, key) in [(0, 64), (1, 128), (2, 64), (3, 128)] {
            q.push(0, vec![entry(i, key, Priority::Normal, t0)])
                .unwrap();
        }
        assert_eq!(ids(q.next_batch(t0)), (0, vec![0, 2]));
        assert_eq!(ids(q.next_batch(t0)), (0, vec![1, 3]));
    }

    #[test]
    fn waits_at_most_the_delay_for_a_fuller_batch() {
        let t0 = Instant::now();
        let mut q = Queues::new(&[cfg(4, 10)], 100);
        q.push(0, vec![entry(0, 1, Priority::Normal, t0)]).unwrap();
        match q.next_batch(t0 + ms(2)) {
            Next::WaitUntil(t) => assert_eq!(t, t0 + ms(10)),
            other => panic!("expected to wait, got {other:?}"),
        }
        q.push(0, vec![entry(1, 1, Priority::Normal, t0 + ms(3))])
            .unwrap();
        assert!(matches!(q.next_batch(t0 + ms(9)), Next::WaitUntil(_)));
        assert_eq!(ids(q.next_batch(t0 + ms(10))), (0, vec![0, 1]));
    }

    #[test]
    fn a_full_batch_goes_before_the_delay() {
        let t0 = Instant::now();
        let mut q = Queues::new(&[cfg(2, 1000)], 100);
        q.push(0, vec![entry(0, 1, Priority::Normal, t0)]).unwrap();
        assert!(matches!(q.next_batch(t0), Next::WaitUntil(_)));
        q.push(0, vec![entry(1, 1, Priority::Normal, t0)]).unwrap();
        assert_eq!(ids(q.next_batch(t0)), (0, vec![0, 1]));
    }

    #[test]
    fn high_priority_first_within_and_across_models() {
        let t0 = Instant::now();
        let mut q = Queues::new(&[cfg(2, 0), cfg(2, 0)], 100);
        q.push(0, vec![entry(0, 1, Priority::Normal, t0)]).unwrap();
        q.push(0, vec![entry(1, 1, Priority::Normal, t0)]).unwrap();
        q.push(1, vec![entry(2, 1, Priority::High, t0 + ms(1))])
            .unwrap();
        q.push(0, vec![entry(3, 1, Priority::High, t0 + ms(2))])
            .unwrap();
        // Both models have high-priority heads; model 0 has the turn. Its high item leads the batch.
        assert_eq!(ids(q.next_batch(t0 + ms(3))), (0, vec![3, 0]));
        assert_eq!(ids(q.next_batch(t0 + ms(3))), (1, vec![2]));
        assert_eq!(ids(q.next_batch(t0 + ms(3))), (0, vec![1]));
    }

    #[test]
    fn expired_and_abandoned_work_is_taken_out_before_the_device() {
        let t0 = Instant::now();
        let mut q = Queues::new(&[cfg(4, 0)], 100);
        let mut late = entry(0, 1, Priority::Normal, t0);
        late.deadline = Some(t0 + ms(5));
        let gone = entry(1, 1, Priority::Normal, t0);
        let flag = gone.item.1.clone();
        let mut fine = entry(2, 1, Priority::Normal, t0);
        fine.deadline = Some(t0 + ms(50));
        q.push(0, vec![late, gone, fine]).unwrap();
        flag.set(true);
        let dropped: Vec<(u32, DropReason)> = q
            .remove_dropped(t0 + ms(6))
            .into_iter()
            .map(|(_, e, r)| (e.item.0, r))
            .collect();
        assert_eq!(
            dropped,
            vec![(0, DropReason::Expired), (1, DropReason::Abandoned)]
        );
        assert_eq!(ids(q.next_batch(t0 + ms(6))), (0, vec![2]));
    }

    #[test]
    fn wakes_for_the_earliest_deadline() {
        let t0 = Instant::now();
        let mut q = Queues::new(&[cfg(4, 100)], 100);
        let mut e = entry(0, 1, Priority::Normal, t0);
        e.deadline = Some(t0 + ms(20));
        q.push(0, vec![e]).unwrap();
        match q.next_batch(t0) {
            Next::WaitUntil(t) => assert_eq!(t, t0 + ms(20)),
            other => panic!("expected to wait, got {other:?}"),
        }
    }

    #[test]
    fn normal_work_ages_into_high_priority_and_is_not_starved() {
        let t0 = Instant::now();
        let mut strict = Queues::new(&[cfg(1, 0)], 100);
        let mut aging = Queues::new(&[cfg(1, 0)], 100).with_aging(Some(ms(100)));
        for q in [&mut strict, &mut aging] {
            q.push(0, vec![entry(0, 1, Priority::Normal, t0)]).unwrap();
            // high-priority work keeps arriving after the normal item
            for i in 1..4 {
                q.push(0, vec![entry(i, 1, Priority::High, t0 + ms(50 * i as u64))])
                    .unwrap();
            }
        }
        let now = t0 + ms(200);
        assert_eq!(
            ids(strict.next_batch(now)),
            (0, vec![1]),
            "strict: high first"
        );
        // aged past 100 ms, the normal item is the oldest high-priority item now
        assert_eq!(ids(aging.next_batch(now)), (0, vec![0]));
        assert_eq!(ids(aging.next_batch(now)), (0, vec![1]));
        // not yet aged: order unchanged
        let mut young = Queues::new(&[cfg(1, 0)], 100).with_aging(Some(ms(100)));
        young
            .push(0, vec![entry(0, 1, Priority::Normal, t0)])
            .unwrap();
        young
            .push(0, vec![entry(1, 1, Priority::High, t0 + ms(10))])
            .unwrap();
        assert_eq!(ids(young.next_batch(t0 + ms(50))), (0, vec![1]));
    }

    #[test]
    fn models_take_turns() {
        let t0 = Instant::now();
        let mut q = Queues::new(&[cfg(1, 0), cfg(1, 0), cfg(1, 0)], 100);
        for i in 0..4 {
            q.push(0, vec![entry(i, 1, Priority::Normal, t0)]).unwrap();
        }
        q.push(1, vec![entry(10, 1, Priority::Normal, t0 + ms(5))])
            .unwrap();
        q.push(2, vec![entry(20, 1, Priority::Normal, t0 + ms(6))])
            .unwrap();
        let order: Vec<usize> = (0..6).map(|_| ids(q.next_batch(t0 + ms(7))).0).collect();
        // Model 0 arrived first with four items, yet the others are served within one round.
        assert_eq!(order, vec![0, 1, 2, 0, 0, 0]);
    }

    #[test]
    fn admission_is_all_or_nothing_against_both_limits() {
        let t0 = Instant::now();
        let small = BatchConfig {
            capacity: 3,
            ..cfg(4, 0)
        };
        let mut q = Queues::new(&[small, cfg(4, 0)], 5);
        let batch = |n: u32| (0..n).map(|i| entry(i, 1, Priority::Normal, t0)).collect();
        q.push(0, batch(2)).unwrap();
        assert_eq!(
            q.push(0, batch(2)),
            Err(Rejected::ModelFull {
                waiting: 2,
                capacity: 3
            })
        );
        assert_eq!(q.model_len(0), 2);
        q.push(1, batch(3)).unwrap();
        assert_eq!(
            q.push(1, batch(1)),
            Err(Rejected::ServerFull {
                waiting: 5,
                capacity: 5
            })
        );
    }

    #[test]
    fn dropped_items_free_their_place() {
        let t0 = Instant::now();
        let mut q = Queues::new(
            &[BatchConfig {
                capacity: 1,
                ..cfg(4, 0)
            }],
            10,
        );
        let e = entry(0, 1, Priority::Normal, t0);
        let flag = e.item.1.clone();
        q.push(0, vec![e]).unwrap();
        assert!(q.push(0, vec![entry(1, 1, Priority::Normal, t0)]).is_err());
        flag.set(true);
        assert_eq!(q.remove_dropped(t0).len(), 1);
        q.push(0, vec![entry(2, 1, Priority::Normal, t0)]).unwrap();
        assert_eq!(ids(q.next_batch(t0)), (0, vec![2]));
    }
}
