//! The listener's connection slots. There is a fixed number of them, but a connection still sending its request
//! head only borrows one: when every slot is taken, the oldest connection still reading its head is closed to
//! make room (counted), as the sensor server and the collector do with unidentified links. So connections that
//! trickle their heads byte by byte cannot keep `/health`, the operator's commands or the live view out; only
//! connections being served (a response, a live stream) hold their slot.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;

use crate::telemetry::Counter;

pub struct Slots {
    cap: usize,
    table: Mutex<Table>,
    evicted: Counter,
}

#[derive(Default)]
struct Table {
    used: usize,
    next: u64,
    /// Connections still reading their head, oldest (lowest id) first, with the token that closes each.
    reading: BTreeMap<u64, CancellationToken>,
}

/// One connection's slot; given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    serving: bool,
    closed: CancellationToken,
}

impl Slots {
    pub fn new(cap: usize, evicted: Counter) -> Arc<Self> {
        Arc::new(Slots { cap, table: Mutex::new(Table::default()), evicted })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table is consistent after every statement, so a panic elsewhere while holding it leaves it usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a newly accepted connection, taken from the oldest one still reading its head if all are in
    /// use; None when every slot is held by a connection being served.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut t = self.lock();
        if t.used < self.cap {
            t.used += 1;
        } else {
            let (_, oldest) = t.reading.pop_first()?;
            oldest.cancel();
            self.evicted.inc();
        }
        let id = t.next;
        t.next += 1;
        let closed = CancellationToken::new();
        t.reading.insert(id, closed.clone());
        Some(Slot { slots: Arc::clone(self), id, serving: false, closed })
    }

    #[cfg(test)]
    fn used(&self) -> usize {
        self.lock().used
    }
}

impl Slot {
    /// The head is in: from now on the slot is this connection's until it ends. False if it was already given
    /// to a newer connection (the connection should close).
    pub fn serving(&mut self) -> bool {
        if !self.serving {
            self.serving = self.slots.lock().reading.remove(&self.id).is_some();
        }
        self.serving
    }

    /// Cancelled when the slot is taken for a newer connection while this one still reads its head.
    pub fn evicted(&self) -> &CancellationToken {
        &self.closed
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.slots.lock();
        // An evicted connection's slot already went to the one that evicted it.
        if self.serving || t.reading.remove(&self.id).is_some() {
            t.used -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Registry;

    #[test]
    fn the_oldest_head_reader_makes_room_and_served_connections_keep_theirs() {
        let evicted = Registry::new().counter("t_evicted", "test", &[]);
        let slots = Slots::new(3, evicted.clone());
        let mut a = slots.admit().unwrap();
        let b = slots.admit().unwrap();
        let c = slots.admit().unwrap();
        assert!(a.serving());
        // Full: the oldest still reading (b) gives way, then c, and a (being served) never does.
        let d = slots.admit().unwrap();
        assert!(b.evicted().is_cancelled() && !c.evicted().is_cancelled());
        let mut e = slots.admit().unwrap();
        assert!(c.evicted().is_cancelled());
        assert_eq!(evicted.get(), 2);
        assert_eq!(slots.used(), 3);
        drop((b, c));
        assert_eq!(slots.used(), 3, "evicted connections gave their slots away already");
        assert!(e.serving());
        let mut d = d;
        assert!(d.serving());
        assert!(slots.admit().is_none(), "every slot is being served");
        assert!(!a.evicted().is_cancelled());
        drop(a);
        let f = slots.admit().unwrap();
        drop((d, e, f));
        assert_eq!(slots.used(), 0);
    }

    #[test]
    fn an_evicted_connection_cannot_start_serving() {
        let slots = Slots::new(1, Registry::new().counter("t_evicted", "test", &[]));
        let mut a = slots.admit().unwrap();
        let _b = slots.admit().unwrap();
        assert!(!a.serving());
        drop(a);
        assert_eq!(slots.used(), 1);
    }
}
