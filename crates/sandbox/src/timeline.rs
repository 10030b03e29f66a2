//! The run's timeline: what happened, when, on the virtual clock.

use serde::Serialize;

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Seconds since the run started.
    pub at: f64,
    /// `pool`, `event`, `deployment`, `job` or `pod`.
    pub source: &'static str,
    pub object: String,
    pub message: String,
}

/// Entries in time order, bounded so a run at scale does not keep millions of lines.
#[derive(Debug, Default)]
pub struct Timeline {
    entries: Vec<Entry>,
    limit: usize,
    dropped: usize,
}

impl Timeline {
    pub fn new(limit: usize) -> Self {
        Timeline {
            entries: Vec::new(),
            limit,
            dropped: 0,
        }
    }

    pub fn push(
        &mut self,
        at: f64,
        source: &'static str,
        object: impl Into<String>,
        message: impl Into<String>,
    ) {
        if self.entries.len() >= self.limit {
            self.dropped += 1;
            return;
        }
        self.entries.push(Entry {
            at: (at * 10.0).round() / 10.0,
            source,
            object: object.into(),
            message: message.into(),
        });
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Entries left out because the limit was reached.
    pub fn dropped(&self) -> usize {
        self.dropped
    }
}
