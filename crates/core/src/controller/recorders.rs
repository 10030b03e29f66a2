//! One Event recorder per pool. kube's `Recorder` remembers recent Events to fold repeats into a
//! series, and on every publish it sweeps its whole memory for expired ones: shared by a fleet,
//! each Event would cost a pass over every pool's recent Events.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, Recorder, Reporter};

/// Whether repeats of an Event (same type, reason, action and related object) become one series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fold {
    /// A repeat bumps the series' count; the series keeps its first note.
    Series,
    /// Every publish is an Event of its own, with its own note.
    Never,
}

pub struct Recorders {
    client: Client,
    reporter: Reporter,
    by_pool: Mutex<HashMap<(String, String), Recorder>>,
}

impl Recorders {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Recorders {
            client,
            reporter,
            by_pool: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes an Event about `pool`, folded with that pool's recent repeats when `fold` asks.
    pub async fn publish(
        &self,
        event: &Event,
        pool: &ObjectReference,
        fold: Fold,
    ) -> Result<(), kube::Error> {
        if fold == Fold::Never {
            let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
            return recorder.publish(event, pool).await;
        }
        let key = (
            pool.namespace.clone().unwrap_or_default(),
            pool.name.clone().unwrap_or_default(),
        );
        let recorder = match self.by_pool.lock() {
            Ok(mut by_pool) => by_pool
                .entry(key)
                .or_insert_with(|| Recorder::new(self.client.clone(), self.reporter.clone()))
                .clone(),
            Err(_) => Recorder::new(self.client.clone(), self.reporter.clone()),
        };
        recorder.publish(event, pool).await
    }

    /// Drops a deleted pool's recorder and the Events it remembers.
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut by_pool) = self.by_pool.lock() {
            by_pool.remove(&(namespace.to_owned(), name.to_owned()));
        }
    }

    /// Pools with a recorder (for tests and sizing).
    pub fn pools(&self) -> usize {
        self.by_pool.lock().map(|r| r.len()).unwrap_or(0)
    }
}
