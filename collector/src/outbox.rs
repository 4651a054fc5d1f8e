//! The reports waiting for the aggregator's ack, oldest first. Bounded: when it is
//! full the oldest report is dropped and counted, and the count travels in the next
//! report so the aggregator knows data was lost.

use connwatch_shared::wire::Report;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::watch;

/// A bounded queue of unacknowledged reports, shared by the scheduler and the uplink.
pub struct Outbox {
    inner: Mutex<Inner>,
    newest: watch::Sender<u64>,
}

struct Inner {
    queue: VecDeque<Report>,
    max: usize,
    dropped: u64,
}

impl Outbox {
    /// An empty outbox holding at most `max` reports.
    pub fn new(max: usize) -> Outbox {
        Outbox {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                max: max.max(1),
                dropped: 0,
            }),
            newest: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a report, dropping the oldest if the outbox is full.
    pub fn push(&self, report: Report) {
        let seq = report.seq;
        {
            let mut inner = self.lock();
            while inner.queue.len() >= inner.max {
                inner.queue.pop_front();
                inner.dropped += 1;
            }
            inner.queue.push_back(report);
        }
        self.newest.send_replace(seq);
    }

    /// Forgets every report up to and including `seq`: acks arrive in order.
    pub fn ack(&self, seq: u64) {
        let mut inner = self.lock();
        while inner.queue.front().is_some_and(|r| r.seq <= seq) {
            inner.queue.pop_front();
        }
    }

    /// The queued reports with a sequence number above `seq`, in order.
    pub fn after(&self, seq: u64) -> Vec<Report> {
        self.lock()
            .queue
            .iter()
            .filter(|r| r.seq > seq)
            .cloned()
            .collect()
    }

    /// How many reports were dropped because the outbox was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// How many reports wait for an ack.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether nothing waits for an ack.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A receiver that wakes when a report is queued.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(seq: u64) -> Report {
        Report {
            seq,
            ..Default::default()
        }
    }

    #[test]
    fn full_outbox_drops_the_oldest_and_counts() {
        let o = Outbox::new(2);
        for seq in 1..=3 {
            o.push(report(seq));
        }
        assert_eq!(o.dropped(), 1);
        assert_eq!(o.after(0).iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3]);
        o.ack(2);
        assert_eq!(o.after(0).iter().map(|r| r.seq).collect::<Vec<_>>(), [3]);
        assert_eq!(o.after(3).len(), 0);
    }
}
