//! Fairness between clients: how many items each client has waiting or running, so one client cannot
//! fill a model's queue and shut everyone else out.
//!
//! A request's items each hold a [`ClientSlot`] from the moment they are queued until the worker has
//! answered them (or dropped them: deadline passed, client gone); the slot gives the count back when
//! it is dropped. A submission that would take a client over its limit is refused whole, before
//! anything is queued.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The per-client counts, shared by every request.
#[derive(Debug)]
pub struct ClientQuotas {
    /// Items one client may have waiting or running, all models together (0: no limit).
    limit: usize,
    /// Clients with items in flight (a client leaves the map when its last item ends, so the map
    /// holds at most as many entries as there are items in the server).
    counts: Mutex<HashMap<Arc<str>, usize>>,
}

/// Who sends a request, and the quotas it is counted against.
#[derive(Debug, Clone)]
pub struct ClientTicket {
    quotas: Arc<ClientQuotas>,
    id: Arc<str>,
}

/// One queued or running item of a client; gives its place back when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    quotas: Arc<ClientQuotas>,
    id: Arc<str>,
}

impl ClientQuotas {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(ClientQuotas {
            limit,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// The ticket of client `id` (an identity such as `ip:10.0.0.7` or `cert:3fa2…`).
    pub fn ticket(self: &Arc<Self>, id: &str) -> ClientTicket {
        ClientTicket {
            quotas: self.clone(),
            id: id.into(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, usize>> {
        // Every mutation is one insert, add or remove: a poisoned lock is still consistent.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Items client `id` has waiting or running now.
    #[cfg(test)]
    fn in_flight(&self, id: &str) -> usize {
        self.lock().get(id).copied().unwrap_or(0)
    }
}

impl ClientTicket {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Takes `n` places for this client, or refuses all of them with RESOURCE_EXHAUSTED.
    pub fn acquire(&self, n: usize) -> Result<Vec<ClientSlot>> {
        let q = &self.quotas;
        let mut counts = q.lock();
        let held = counts.get(&self.id).copied().unwrap_or(0);
        if q.limit > 0 && held.saturating_add(n) > q.limit {
            return Err(Error::ResourceExhausted(format!(
                "this client ({}) has {held} items waiting or running and asks for {n} more; the \
                 limit per client is {} (--client-queue-limit); retry when earlier requests finish",
                self.id, q.limit
            )));
        }
        *counts.entry(self.id.clone()).or_insert(0) += n;
        Ok((0..n)
            .map(|_| ClientSlot {
                quotas: q.clone(),
                id: self.id.clone(),
            })
            .collect())
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.quotas.lock();
        if let Some(c) = counts.get_mut(&self.id) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                counts.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_over_its_limit_is_refused_and_others_are_not() {
        let quotas = ClientQuotas::new(3);
        let (a, b) = (quotas.ticket("ip:10.0.0.1"), quotas.ticket("ip:10.0.0.2"));
        let first = a.acquire(2).unwrap();
        let e = a.acquire(2).unwrap_err();
        assert!(matches!(e, Error::ResourceExhausted(_)), "{e}");
        assert!(e.to_string().contains("limit per client is 3"), "{e}");
        assert_eq!(
            quotas.in_flight("ip:10.0.0.1"),
            2,
            "a refusal takes nothing"
        );
        let other = b.acquire(3).unwrap();
        let one_more = a.acquire(1).unwrap();
        drop(first);
        assert_eq!(quotas.in_flight("ip:10.0.0.1"), 1);
        drop((other, one_more));
        assert!(quotas.lock().is_empty(), "finished clients leave the map");
        // 0: no limit
        assert_eq!(
            ClientQuotas::new(0)
                .ticket("x")
                .acquire(10_000)
                .unwrap()
                .len(),
            10_000
        );
    }
}
