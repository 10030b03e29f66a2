//! Coalesces a pool's reconcile triggers: the first starts a reconcile at once, all that follow
//! within a window become one more at the window's end, unless a reconcile of the pool started
//! after the last of them (it read what they announced).
//!
//! A pool's pods and Deployment change many times while it rolls out (each pod is created,
//! scheduled, started, becomes ready), usually a few hundred milliseconds apart: too far apart for
//! the controller's debounce to merge, which would also hold a busy pool back for as long as it
//! stays busy. Here a pool is reconciled at most once per window after its first trigger, however
//! busy, and a trigger is never lost: the last state is always looked at.

use std::collections::HashMap;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::stream::{Fuse, StreamExt};
use tokio_util::time::DelayQueue;

/// How long the triggers of a busy pool are gathered into one reconcile: as long as its progress
/// waits between two status writes, so that a busy pool is looked at about as often as what it
/// shows can change. An abort in a quiet pool is still seen at once.
pub const WINDOW: Duration = crate::status::PROGRESS_INTERVAL;

/// The open windows, shared with the reconciles, which say when they start.
pub struct Windows<K> {
    inner: Arc<Mutex<Open<K>>>,
}

impl<K> Clone for Windows<K> {
    fn clone(&self) -> Self {
        Windows {
            inner: self.inner.clone(),
        }
    }
}

impl<K> Default for Windows<K> {
    fn default() -> Self {
        Windows {
            inner: Arc::new(Mutex::new(Open {
                by_key: HashMap::new(),
                clock: 0,
            })),
        }
    }
}

struct Open<K> {
    by_key: HashMap<K, Marks>,
    /// Orders triggers and reconcile starts.
    clock: u64,
}

/// When, on [`Open::clock`], a window's last trigger came and its last reconcile started.
#[derive(Default)]
struct Marks {
    triggered: Option<u64>,
    looked: u64,
}

impl<K: Eq + Hash> Open<K> {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

impl<K: Eq + Hash> Windows<K> {
    /// A reconcile of `key` starts: it reads every change announced so far.
    pub fn look_started(&self, key: &K) {
        let mut open = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let now = open.tick();
        if let Some(marks) = open.by_key.get_mut(key) {
            marks.looked = now;
        }
    }
}

/// The stream of `triggers`, coalesced per key over `window`; reconciles tell `windows` when
/// they start.
pub fn coalesce<S>(triggers: S, window: Duration, windows: Windows<S::Item>) -> Coalesce<S>
where
    S: Stream,
    S::Item: Clone + Eq + Hash,
{
    Coalesce {
        triggers: triggers.fuse(),
        window,
        windows,
        closing: DelayQueue::new(),
    }
}

/// See [`coalesce`].
pub struct Coalesce<S: Stream> {
    triggers: Fuse<S>,
    window: Duration,
    /// The keys whose window is open.
    windows: Windows<S::Item>,
    /// When each open window closes.
    closing: DelayQueue<S::Item>,
}

impl<S> Stream for Coalesce<S>
where
    S: Stream + Unpin,
    S::Item: Clone + Eq + Hash + Unpin,
{
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        let mut open = this
            .windows
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A window that closes with a trigger no reconcile has read yields it and opens the next.
        while let Poll::Ready(Some(closed)) = this.closing.poll_expired(cx) {
            let key = closed.into_inner();
            let unread = open
                .by_key
                .remove(&key)
                .is_some_and(|marks| marks.triggered.is_some_and(|t| t > marks.looked));
            if unread {
                this.closing.insert(key.clone(), this.window);
                open.by_key.insert(key.clone(), Marks::default());
                return Poll::Ready(Some(key));
            }
        }
        loop {
            match this.triggers.poll_next_unpin(cx) {
                Poll::Ready(Some(key)) => {
                    let now = open.tick();
                    match open.by_key.get_mut(&key) {
                        Some(marks) => marks.triggered = Some(now),
                        None => {
                            this.closing.insert(key.clone(), this.window);
                            open.by_key.insert(key.clone(), Marks::default());
                            return Poll::Ready(Some(key));
                        }
                    }
                }
                // The controller is shutting down: what is still gathered no longer matters.
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use futures::channel::mpsc;

    const W: Duration = Duration::from_secs(1);

    /// What the stream yields now, without waiting.
    fn ready(stream: &mut (impl Stream<Item = &'static str> + Unpin)) -> Vec<&'static str> {
        let mut out = Vec::new();
        while let Some(Some(key)) = stream.next().now_or_never() {
            out.push(key);
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_pool_is_reconciled_at_once_then_once_a_window_and_its_last_trigger_is_kept() {
        let (send, receive) = mpsc::unbounded();
        let mut stream = coalesce(receive, W, Windows::default());
        let send = |key| {
            send.unbounded_send(key)
                .expect("the stream holds the receiver")
        };
        let at = |ms| tokio::time::sleep(Duration::from_millis(ms));

        send("a");
        assert_eq!(
            ready(&mut stream),
            ["a"],
            "the first trigger is let through at once"
        );
        for _ in 0..5 {
            send("a");
        }
        send("b");
        assert_eq!(ready(&mut stream), ["b"], "another pool has its own window");
        at(999).await;
        assert!(
            ready(&mut stream).is_empty(),
            "gathered until the window ends"
        );
        at(1).await;
        assert_eq!(ready(&mut stream), ["a"], "the five became one; b had none");
        // The window after that one closes with nothing in it: no reconcile, and the next
        // trigger is let through at once again.
        at(1000).await;
        assert!(ready(&mut stream).is_empty());
        send("a");
        assert_eq!(ready(&mut stream), ["a"]);
        stream.triggers.get_mut().close();
        assert_eq!(stream.next().await, None, "ends with its triggers");
    }

    #[tokio::test(start_paused = true)]
    async fn triggers_a_reconcile_started_after_have_been_read() {
        let (send, receive) = mpsc::unbounded();
        let windows = Windows::default();
        let mut stream = coalesce(receive, W, windows.clone());
        let send = |key| {
            send.unbounded_send(key)
                .expect("the stream holds the receiver")
        };
        send("a");
        assert_eq!(ready(&mut stream), ["a"]);
        send("a");
        assert!(ready(&mut stream).is_empty());
        windows.look_started(&"a");
        tokio::time::sleep(W).await;
        assert!(
            ready(&mut stream).is_empty(),
            "the reconcile that started after the trigger read it"
        );
        send("a");
        assert_eq!(ready(&mut stream), ["a"], "the window had closed");
        windows.look_started(&"a");
        send("a");
        assert!(ready(&mut stream).is_empty());
        tokio::time::sleep(W).await;
        assert_eq!(
            ready(&mut stream),
            ["a"],
            "a trigger after the reconcile started is still owed a look"
        );
        windows.look_started(&"b");
        assert!(
            !windows
                .inner
                .lock()
                .expect("lock")
                .by_key
                .contains_key(&"b"),
            "a reconcile outside any window leaves nothing behind"
        );
    }
}
