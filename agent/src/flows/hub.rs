//! The agent's side of the stream: a window of the most recent records (what `palisade
//! flows` without `--follow` prints) and a broadcast to the clients following. Both are
//! bounded; a client that falls more than [`LIVE`] records behind is told how many it
//! missed and goes on from the newest.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::record::StreamItem;

/// How many records the agent keeps for clients that do not follow.
pub const RECENT: usize = 4096;
/// How far a following client may fall behind before it loses records.
pub const LIVE: usize = 8192;

pub struct FlowHub {
    recent: Mutex<VecDeque<Arc<StreamItem>>>,
    live: broadcast::Sender<Arc<StreamItem>>,
}

impl FlowHub {
    pub fn new() -> Arc<FlowHub> {
        Arc::new(FlowHub {
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            live: broadcast::channel(LIVE).0,
        })
    }

    /// Adds a record to the window and sends it to the clients following (none: it is only
    /// kept).
    pub fn push(&self, item: StreamItem) {
        let item = Arc::new(item);
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(Arc::clone(&item));
        // Sent under the lock, so that `subscribe` sees each record in exactly one of the
        // window and the receiver. An error only means nobody follows.
        let _ = self.live.send(item);
    }

    /// The window as it is, and a receiver of every record pushed after it.
    pub fn subscribe(&self) -> (Vec<Arc<StreamItem>>, broadcast::Receiver<Arc<StreamItem>>) {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        (recent.iter().cloned().collect(), self.live.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::record::{Lost, LostSource};

    fn item(n: u64) -> StreamItem {
        StreamItem::Lost(Lost {
            time: String::new(),
            time_ns: n,
            source: LostSource::Kernel,
            events: n,
            since: None,
        })
    }

    #[test]
    fn keeps_a_bounded_window_and_splits_it_from_the_live_records() {
        let hub = FlowHub::new();
        for n in 0..(RECENT as u64 + 10) {
            hub.push(item(n));
        }
        let (window, mut live) = hub.subscribe();
        assert_eq!(window.len(), RECENT);
        assert_eq!(window[0].time_ns(), 10);
        hub.push(item(99_999));
        assert_eq!(live.try_recv().unwrap().time_ns(), 99_999);
    }

    #[test]
    fn a_slow_follower_is_told_how_many_it_lost() {
        let hub = FlowHub::new();
        let (_, mut live) = hub.subscribe();
        for n in 0..(LIVE as u64 + 5) {
            hub.push(item(n));
        }
        match live.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(missed)) => assert_eq!(missed, 5),
            other => panic!("{other:?}"),
        }
        assert_eq!(live.try_recv().unwrap().time_ns(), 5);
    }
}
