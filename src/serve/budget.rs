//! The server-wide memory budget: every request reserves the peak memory its header declares (see
//! `validate::slice_bytes` and `validate::graph_bytes`) before anything is allocated, and gives it
//! back when it ends, however it ends (the reservation is released on drop). A request that does
//! not fit next to the ones in progress is refused at once with RESOURCE_EXHAUSTED; nothing waits.
//!
//! The budget is `--memory-budget-mb`, or by default 80 % of the container's cgroup memory limit
//! (cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`), or of the machine's memory without one.

use crate::api::validate;
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const MIB: f64 = (1u64 << 20) as f64;

#[derive(Debug)]
pub struct MemoryBudget {
    total: u64,
    per_request: u64,
    used: AtomicU64,
}

/// Bytes held from the budget until dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl MemoryBudget {
    /// `total` bytes for all requests together, at most `per_request` for one (capped at `total`).
    pub fn new(total: u64, per_request: u64) -> Arc<Self> {
        let total = total.max(1);
        Arc::new(MemoryBudget {
            total,
            per_request: per_request.clamp(1, total),
            used: AtomicU64::new(0),
        })
    }

    /// The budget for `budget_mb` (0: derived from the cgroup or machine memory).
    pub fn from_config(budget_mb: u64, per_request_mb: u64) -> Arc<Self> {
        let total = if budget_mb > 0 {
            budget_mb.saturating_mul(1 << 20)
        } else {
            available_memory().map_or(u64::MAX / 2, |m| m / 5 * 4)
        };
        Self::new(total, per_request_mb.max(1).saturating_mul(1 << 20))
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn per_request(&self) -> u64 {
        self.per_request
    }

    /// Bytes reserved by requests in progress.
    pub fn in_use(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Checks one request's peak (`None`: beyond any count) against the per-request limit and
    /// reserves it.
    pub fn admit(self: &Arc<Self>, what: &str, bytes: Option<u64>) -> Result<Reservation> {
        validate::admit(what, bytes, self.per_request)?;
        self.reserve(what, bytes.unwrap_or(u64::MAX))
    }

    /// Reserves `bytes` next to the requests in progress (the per-request limit is the caller's).
    pub fn reserve(self: &Arc<Self>, what: &str, bytes: u64) -> Result<Reservation> {
        let span = tracing::info_span!(
            "admission",
            // u64::MAX stands for "beyond any count" (see `admit`)
            bytes = i64::try_from(bytes).unwrap_or(i64::MAX),
            admitted = tracing::field::Empty
        );
        let taken = self.take(what, bytes);
        span.record("admitted", taken.is_ok());
        taken?;
        Ok(Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    fn take(&self, what: &str, bytes: u64) -> Result<()> {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            let next = used
                .checked_add(bytes)
                .filter(|&n| n <= self.total)
                .ok_or_else(|| {
                    Error::ResourceExhausted(format!(
                        "{what} needs about {:.0} MiB; {:.0} of the server's {:.0} MiB memory budget \
                         are reserved by requests in progress (--memory-budget-mb); retry later",
                        bytes as f64 / MIB,
                        used as f64 / MIB,
                        self.total as f64 / MIB
                    ))
                })?;
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Grows the reservation to `bytes` (a stream that learns its size as it arrives), checking the
    /// per-request limit first; never shrinks.
    pub fn grow_to(&mut self, what: &str, bytes: Option<u64>) -> Result<()> {
        validate::admit(what, bytes, self.budget.per_request)?;
        let bytes = bytes.unwrap_or(u64::MAX);
        if bytes > self.bytes {
            self.budget.take(what, bytes - self.bytes)?;
            self.bytes = bytes;
        }
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The container's memory limit (cgroup v2, then v1), else the machine's memory, in bytes.
fn available_memory() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&b| b < 1 << 60); // "max" or v1's "no limit" (2^63 rounded to pages)
    cgroup.or_else(|| {
        let info = read("/proc/meminfo")?;
        let kb: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        kb.checked_mul(1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_add_up_and_are_released_on_drop() {
        let b = MemoryBudget::new(100, 60);
        let r1 = b.admit("a", Some(50)).unwrap();
        assert_eq!(b.in_use(), 50);
        let e = b.admit("b", Some(60)).unwrap_err().to_string();
        assert!(
            e.contains("--memory-budget-mb") && e.contains("retry later"),
            "{e}"
        );
        assert!(b
            .admit("c", Some(61))
            .unwrap_err()
            .to_string()
            .contains("--max-request-mb"));
        assert!(
            b.admit("d", None).is_err(),
            "an overflowing size is refused"
        );
        let mut r2 = b.admit("e", Some(30)).unwrap();
        assert!(r2.grow_to("e", Some(60)).is_err(), "50 + 60 > 100");
        r2.grow_to("e", Some(50)).unwrap();
        assert_eq!((b.in_use(), r2.bytes()), (100, 50));
        drop(r1);
        drop(r2);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn the_per_request_limit_never_exceeds_the_budget() {
        let b = MemoryBudget::new(10 << 20, 1 << 40);
        assert_eq!(b.per_request(), 10 << 20);
        assert!(MemoryBudget::from_config(0, 2048).total() > 0);
    }
}
