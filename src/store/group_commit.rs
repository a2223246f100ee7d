//! The queue behind group commit of the order journal: journal writes waiting for a commit,
//! which caller leads (commits batches), and how the lead passes on. It knows nothing of the
//! database; [`super::journal`] commits what it hands out. Apart from the store so that the
//! store can hold it without the two importing each other.
//!
//! There is no writer task: a caller that finds fewer commits in flight than allowed leads — it
//! commits batches until its own write is answered, then hands the lead to the oldest caller
//! still waiting. So the first write never waits for a timer, batches grow only with load, and
//! nothing depends on which runtime created the store. An order is in at most one batch in
//! flight: its next write waits until the one before is answered.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::domain::{JournalEntry, Order, OrderId};

/// One write to the journal: a new order with its first entry, or an order's next entries
/// with the order as they leave it.
pub(super) enum Write {
    Create {
        order: Order,
        entry: JournalEntry,
    },
    Append {
        after: Order,
        entries: Vec<JournalEntry>,
    },
}

impl Write {
    pub(super) fn order(&self) -> &Order {
        match self {
            Write::Create { order, .. } => order,
            Write::Append { after, .. } => after,
        }
    }

    pub(super) fn entries(&self) -> &[JournalEntry] {
        match self {
            Write::Create { entry, .. } => std::slice::from_ref(entry),
            Write::Append { entries, .. } => entries,
        }
    }

    /// The version the order's row must still be at (appends); `None` for a new order.
    pub(super) fn expected_version(&self) -> Option<i64> {
        match self {
            Write::Create { .. } => None,
            Write::Append { entries, .. } => entries.first().map(|first| first.seq - 1),
        }
    }

    fn order_id(&self) -> OrderId {
        self.order().id
    }
}

/// A write waiting for a commit, and where its answer `A` goes.
pub(super) struct Pending<A> {
    pub write: Write,
    pub done: oneshot::Sender<A>,
    /// Told when it is its caller's turn to lead; dropped once the write is in a batch.
    lead: Option<oneshot::Sender<()>>,
}

/// A queued write's caller's side.
pub(super) struct Ticket<A> {
    answer: oneshot::Receiver<A>,
    turn: Option<oneshot::Receiver<()>>,
}

/// How a wait for a write's answer ended.
pub(super) enum Waited<A> {
    Answered(A),
    /// The caller is to lead now.
    Lead,
    /// Whoever held the write went away without answering: it may or may not have committed.
    Abandoned,
}

impl<A> Ticket<A> {
    /// Waits until the write is answered or its caller is to lead.
    pub(super) async fn wait(&mut self) -> Waited<A> {
        loop {
            tokio::select! {
                biased;
                answered = &mut self.answer => {
                    return answered.map_or(Waited::Abandoned, Waited::Answered);
                }
                told = async { self.turn.as_mut().expect("polled only while waiting").await },
                    if self.turn.is_some() =>
                {
                    match told {
                        Ok(()) => return Waited::Lead,
                        // Taken into a batch: only the answer is left to wait for.
                        Err(_) => self.turn = None,
                    }
                }
            }
        }
    }

    /// The answer, if it has come (for a leader between batches).
    pub(super) fn answered(&mut self) -> Option<Waited<A>> {
        match self.answer.try_recv() {
            Ok(answer) => Some(Waited::Answered(answer)),
            Err(oneshot::error::TryRecvError::Closed) => Some(Waited::Abandoned),
            Err(oneshot::error::TryRecvError::Empty) => None,
        }
    }
}

/// The writes waiting, and whether a caller is leading (committing them).
pub(super) struct GroupQueue<A> {
    /// Most writes in one commit; 1 means no grouping (a transaction per write).
    batch_max: usize,
    /// Most commits in flight at once (callers leading).
    leaders_max: usize,
    state: Mutex<QueueState<A>>,
    /// Journal transactions run so far.
    commits: AtomicU64,
}

struct QueueState<A> {
    waiting: VecDeque<Pending<A>>,
    leaders: usize,
    /// Orders with a write in a batch being committed.
    in_flight: HashSet<OrderId>,
}

impl<A> GroupQueue<A> {
    pub(super) fn new(batch_max: usize, leaders_max: usize) -> Self {
        GroupQueue {
            batch_max: batch_max.max(1),
            leaders_max: leaders_max.max(1),
            state: Mutex::new(QueueState {
                waiting: VecDeque::new(),
                leaders: 0,
                in_flight: HashSet::new(),
            }),
            commits: AtomicU64::new(0),
        }
    }

    /// Whether writes are grouped at all.
    pub(super) fn grouped(&self) -> bool {
        self.batch_max > 1
    }

    pub(super) fn count_commit(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn state(&self) -> MutexGuard<'_, QueueState<A>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `write`; the ticket, and whether its caller leads now (no commit was in flight).
    pub(super) fn enqueue(&self, write: Write) -> (Ticket<A>, bool) {
        let (done, answer) = oneshot::channel();
        let (lead, turn) = oneshot::channel();
        let mut state = self.state();
        let leads = state.leaders < self.leaders_max;
        if leads {
            state.leaders += 1;
        }
        state.waiting.push_back(Pending {
            write,
            done,
            lead: (!leads).then_some(lead),
        });
        let ticket = Ticket {
            answer,
            turn: (!leads).then_some(turn),
        };
        (ticket, leads)
    }

    /// The oldest waiting writes, at most `batch_max`, one per order and none of an order with
    /// a write in flight: a later write of such an order waits for a later batch (with every
    /// write of that order after it), so an order's writes commit in the order they came.
    fn take_batch(&self) -> Vec<Pending<A>> {
        let mut state = self.state();
        let mut batch = Vec::with_capacity(state.waiting.len().min(self.batch_max));
        let mut blocked = HashSet::new();
        let mut later = VecDeque::new();
        while let Some(mut pending) = state.waiting.pop_front() {
            if batch.len() == self.batch_max {
                later.push_back(pending);
                later.extend(state.waiting.drain(..));
                break;
            }
            let order = pending.write.order_id();
            if !blocked.contains(&order) && state.in_flight.insert(order) {
                pending.lead = None;
                batch.push(pending);
            } else {
                blocked.insert(order);
                later.push_back(pending);
            }
        }
        state.waiting = later;
        batch
    }

    fn landed(&self, orders: &[OrderId]) {
        let mut state = self.state();
        for order in orders {
            state.in_flight.remove(order);
        }
    }

    /// The leader is done: the oldest caller still waiting leads next, or nobody if none is.
    fn hand_off(&self) {
        let mut state = self.state();
        loop {
            let Some(lead) = state.waiting.iter_mut().find_map(|p| p.lead.take()) else {
                state.leaders -= 1;
                return;
            };
            if lead.send(()).is_ok() {
                return;
            }
            // That caller is gone (its future dropped); its write is still committed by
            // whoever leads, so try the next.
        }
    }
}

/// Held by a leader: takes batches, and however its future ends (answered, or dropped half-way)
/// releases the orders of its batch and hands the lead on.
pub(super) struct Leading<'a, A> {
    queue: &'a GroupQueue<A>,
    /// The orders of the batch being committed.
    batch: Vec<OrderId>,
}

/// How long a leader whose next writes are all of orders in another batch waits before looking
/// again (an order's writes only meet so after its actor was restarted mid-write).
const BLOCKED_RETRY: Duration = Duration::from_millis(1);

impl<'a, A> Leading<'a, A> {
    pub(super) fn new(queue: &'a GroupQueue<A>) -> Self {
        Leading {
            queue,
            batch: Vec::new(),
        }
    }

    /// The next batch; empty (after a short wait) when every waiting write is blocked.
    pub(super) async fn take_batch(&mut self) -> Vec<Pending<A>> {
        self.landed();
        let batch = self.queue.take_batch();
        if batch.is_empty() {
            tokio::time::sleep(BLOCKED_RETRY).await;
        }
        self.batch = batch.iter().map(|p| p.write.order_id()).collect();
        batch
    }

    /// The batch taken last has been answered.
    pub(super) fn landed(&mut self) {
        if !self.batch.is_empty() {
            self.queue.landed(&self.batch);
            self.batch.clear();
        }
    }
}

impl<A> Drop for Leading<'_, A> {
    fn drop(&mut self) {
        self.landed();
        self.queue.hand_off();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Cents, MerchantId, NewOrder, Position, UserId};

    fn write() -> Write {
        let here = Position {
            lat: 60.17,
            lon: 24.94,
        };
        let (order, entry) = Order::place(
            NewOrder {
                id: OrderId::new(),
                merchant_id: MerchantId::new(),
                customer_id: UserId::new(),
                items: vec![],
                delivery_fee_cents: Cents(0),
                total_cents: Cents(100),
                pickup: here,
                dropoff: here,
                dropoff_address: String::new(),
                pickup_address: String::new(),
            },
            "r".into(),
            chrono::Utc::now(),
        );
        Write::Create { order, entry }
    }

    fn again(write: &Write) -> Write {
        Write::Append {
            after: write.order().clone(),
            entries: write.entries().to_vec(),
        }
    }

    #[test]
    fn callers_lead_up_to_the_commits_allowed_in_flight_and_the_others_wait() {
        let queue = GroupQueue::<u8>::new(8, 2);
        assert!(queue.enqueue(write()).1);
        assert!(queue.enqueue(write()).1);
        let (_third, leads) = queue.enqueue(write());
        assert!(!leads, "two commits are in flight");
    }

    #[test]
    fn a_batch_is_bounded_and_takes_an_orders_writes_one_at_a_time_in_order() {
        let queue = GroupQueue::<u8>::new(3, 1);
        let a = write();
        let a_again = again(&a);
        let a_id = a.order_id();
        let (b, c, d) = (write(), write(), write());
        let ids = [b.order_id(), c.order_id(), d.order_id()];
        let _tickets: Vec<_> = [a, a_again, b, c, d]
            .into_iter()
            .map(|w| queue.enqueue(w))
            .collect();
        let first: Vec<OrderId> = queue
            .take_batch()
            .iter()
            .map(|p| p.write.order_id())
            .collect();
        assert_eq!(first, [a_id, ids[0], ids[1]]);
        let second: Vec<OrderId> = queue
            .take_batch()
            .iter()
            .map(|p| p.write.order_id())
            .collect();
        assert_eq!(
            second,
            [ids[2]],
            "a's second write waits while its first is in flight"
        );
        queue.landed(&first);
        let third: Vec<OrderId> = queue
            .take_batch()
            .iter()
            .map(|p| p.write.order_id())
            .collect();
        assert_eq!(third, [a_id], "then it goes");
        assert!(queue.take_batch().is_empty());
    }

    #[tokio::test]
    async fn the_lead_passes_to_the_oldest_caller_still_waiting_or_to_nobody() {
        let queue = GroupQueue::<u8>::new(8, 1);
        let (_leader, _) = queue.enqueue(write());
        let (gone, _) = queue.enqueue(write());
        let (mut next, _) = queue.enqueue(write());
        drop(gone);
        drop(Leading::new(&queue));
        assert!(
            matches!(next.wait().await, Waited::Lead),
            "the caller gone is skipped"
        );
        // Everything answered: nobody leads, so the next caller does.
        let mut leading = Leading::new(&queue);
        for pending in leading.take_batch().await {
            let _ = pending.done.send(1);
        }
        drop(leading);
        assert!(queue.enqueue(write()).1);
    }
}
