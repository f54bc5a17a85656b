//! Docker's event stream: what happened to containers and networks, kept for the last
//! 256 events (dockerd's own bound) so `docker events --since` replays them, and sent
//! to every reader as it happens. In memory only: a restarted daemon starts a new
//! history, as dockerd does.
use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::sync::broadcast;

/// How many past events `since` can reach back to (dockerd's `eventsLimit`).
pub const HISTORY: usize = 256;

/// One event, in Docker's terms: the object's type, what happened to it, the object
/// (its id and attributes) and when, in nanoseconds since the epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `container` or `network`.
    pub kind: &'static str,
    /// Docker's scope: `local`, or `global` for events of cluster-wide networks.
    pub scope: &'static str,
    /// create, start, die, destroy, connect, disconnect, ...
    pub action: String,
    pub actor: String,
    pub attributes: BTreeMap<String, String>,
    pub time_nano: u128,
}

impl Event {
    pub fn new(kind: &'static str, action: &str, actor: &str) -> Event {
        Event {
            kind,
            scope: "local",
            action: action.into(),
            actor: actor.into(),
            attributes: BTreeMap::new(),
            time_nano: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<String>) -> Event {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// The time in seconds, as `since` and `until` are given.
    pub fn secs(&self) -> f64 {
        self.time_nano as f64 / 1e9
    }
}

/// The history and the live feed. Sending under the history's lock keeps a new
/// reader's replay and its live feed from overlapping or leaving a gap.
pub struct Hub {
    history: Mutex<VecDeque<Arc<Event>>>,
    live: broadcast::Sender<Arc<Event>>,
    listeners: Arc<AtomicUsize>,
}

/// A reader's share of the hub: the events before it came, the feed from then on.
/// Counted as a listener (Docker's NEventsListener) until dropped.
pub struct Subscription {
    pub past: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
    listeners: Arc<AtomicUsize>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.listeners.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            live: broadcast::channel(1024).0,
            listeners: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Hub {
    pub fn emit(&self, e: Event) {
        let e = Arc::new(e);
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(e.clone());
        // No reader is no error.
        let _ = self.live.send(e);
    }

    pub fn subscribe(&self) -> Subscription {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        self.listeners.fetch_add(1, Ordering::Relaxed);
        Subscription {
            past: h.iter().cloned().collect(),
            live: self.live.subscribe(),
            listeners: self.listeners.clone(),
        }
    }

    pub fn listeners(&self) -> usize {
        self.listeners.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_bounded_and_readers_see_the_rest_live() {
        let hub = Hub::default();
        for i in 0..HISTORY + 10 {
            hub.emit(Event::new("container", "create", &i.to_string()));
        }
        let mut s = hub.subscribe();
        assert_eq!(hub.listeners(), 1);
        assert_eq!(s.past.len(), HISTORY);
        assert_eq!(s.past[0].actor, "10", "the oldest went first");
        hub.emit(Event::new("network", "connect", "n").with("container", "c"));
        let e = s.live.try_recv().unwrap();
        assert_eq!((e.kind, e.action.as_str()), ("network", "connect"));
        assert_eq!(e.attributes["container"], "c");
        drop(s);
        assert_eq!(hub.listeners(), 0);
    }
}
