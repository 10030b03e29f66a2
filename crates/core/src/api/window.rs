//! The failure window (`policy.failure.windowSeconds`) and the times the status writes. Pure.

use jiff::{SignedDuration, Timestamp};

/// A time as the status writes it (RFC 3339); None for one that does not parse.
pub fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

/// The last `length` before `now`: an abort that ended inside it counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub now: Timestamp,
    pub length: SignedDuration,
}

impl Window {
    pub fn new(now: Timestamp, seconds: i64) -> Self {
        Window {
            now,
            length: SignedDuration::from_secs(seconds),
        }
    }

    pub fn contains(&self, at: Timestamp) -> bool {
        self.now.duration_since(at) <= self.length
    }

    /// [`Window::contains`] of a written time; one that does not parse is outside.
    pub fn contains_time(&self, time: &str) -> bool {
        parse_time(time).is_some_and(|at| self.contains(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_holds_its_edge_and_nothing_unreadable() {
        let now: Timestamp = "2026-11-22T10:10:00Z".parse().expect("time");
        let window = Window::new(now, 600);
        assert!(
            window.contains_time("2026-11-22T10:00:00Z"),
            "the edge counts"
        );
        assert!(!window.contains_time("2026-11-22T09:59:59Z"));
        assert!(window.contains(now));
        assert!(!window.contains_time("yesterday"));
        assert_eq!(parse_time("yesterday"), None);
    }
}
