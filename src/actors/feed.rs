//! Bounded subscriptions. An actor publishes to every subscriber without ever waiting; a
//! subscriber that falls behind is dropped (its stream ends, and the socket above it closes)
//! instead of slowing the actor or growing memory.

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// Messages one subscriber may have waiting before it counts as too slow and is dropped.
pub const FEED_CAPACITY: usize = 256;

/// The subscribers of one actor's updates.
pub struct Feed<T> {
    /// Label for metrics: `order`, `board` or `driver`.
    name: &'static str,
    subscribers: Vec<mpsc::Sender<T>>,
}

impl<T: Clone> Feed<T> {
    pub fn new(name: &'static str) -> Self {
        Feed {
            name,
            subscribers: Vec::new(),
        }
    }

    /// A new subscriber's stream of updates.
    pub fn subscribe(&mut self) -> mpsc::Receiver<T> {
        let (tx, rx) = mpsc::channel(FEED_CAPACITY);
        self.subscribers.push(tx);
        rx
    }

    /// A new subscriber that first receives `initial` (what it missed, e.g. the last location).
    pub fn subscribe_with(&mut self, initial: impl IntoIterator<Item = T>) -> mpsc::Receiver<T> {
        let (tx, rx) = mpsc::channel(FEED_CAPACITY);
        for item in initial {
            let _ = tx.try_send(item);
        }
        self.subscribers.push(tx);
        rx
    }

    /// Sends `item` to every subscriber that can take it now; drops the ones that are full or
    /// gone.
    pub fn publish(&mut self, item: &T) {
        let name = self.name;
        self.subscribers
            .retain(|tx| match tx.try_send(item.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    metrics::counter!("feed_subscribers_dropped_total", "feed" => name)
                        .increment(1);
                    false
                }
                Err(TrySendError::Closed(_)) => false,
            });
    }

    /// Whether anyone is still listening.
    pub fn has_subscribers(&mut self) -> bool {
        self.subscribers.retain(|tx| !tx.is_closed());
        !self.subscribers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subscriber_gets_each_item() {
        let mut feed = Feed::new("test");
        let mut a = feed.subscribe();
        let mut b = feed.subscribe();
        feed.publish(&1);
        feed.publish(&2);
        assert_eq!((a.try_recv(), a.try_recv()), (Ok(1), Ok(2)));
        assert_eq!((b.try_recv(), b.try_recv()), (Ok(1), Ok(2)));
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_dropped_without_blocking() {
        let mut feed = Feed::new("test");
        let mut slow = feed.subscribe();
        let mut fast = feed.subscribe();
        for i in 0..FEED_CAPACITY + 10 {
            feed.publish(&i);
            assert_eq!(fast.try_recv(), Ok(i));
        }
        // The slow one got what fitted, then its stream ended.
        let mut received = 0;
        while slow.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, FEED_CAPACITY);
        assert!(slow.is_closed() || slow.try_recv().is_err());
        assert!(feed.has_subscribers());
    }

    #[test]
    fn gone_subscribers_are_forgotten() {
        let mut feed = Feed::<u8>::new("test");
        drop(feed.subscribe());
        assert!(!feed.has_subscribers());
    }
}
