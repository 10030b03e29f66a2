//! What the controller remembers of each pool between its reconciles, one record per pool, keyed
//! by the pool's uid (a pool deleted and created again under its name starts with nothing).
//!
//! Invariant: everything here may be lost at any moment (a restart, a new leader) without a wrong
//! status, a second count or a missed write; losing it costs only requests or a repeated Event.
//! What each part is for, and what it costs to lose:
//!
//! - `written`: correctness while the watch lags. Held only from a status write until the watch
//!   delivers a pool version newer than those it replaced; a reconcile in between starts from it
//!   instead of the stale cache, which would recount aborts. Lost: the next reconcile recomputes
//!   from the server's copy once the watch catches up, and the ledger there counts nothing twice.
//! - `last_write`: pacing of progress-only writes. Lost: one write comes early.
//! - `failed_attempts`: the retry back-off. Lost: back-off starts again at 5 s.
//! - `reads`: at most one log read per unhealthy container per interval, one Event list per
//!   settling termination. Lost: one early read or one repeated list.
//! - `announced_ready`: one `Ready` Event per revision and size. Lost: one repeated Event.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use jiff::Timestamp;
use kube::core::ObjectMeta;

use crate::aborts::reads::ReadMemory;
use crate::api::WorkerPoolStatus;

/// Versions of the pool older than a status write are remembered up to this many; more writes
/// ahead of the cache than this is unusual.
const SUPERSEDED_LIMIT: usize = 8;

#[derive(Default)]
struct PoolMemory {
    /// The status last written, kept only until the watch delivers it (a fleet at rest keeps no
    /// second copy of its statuses).
    written: Option<Box<Written>>,
    /// When this process last wrote the status and the version that write produced, for
    /// pacing writes that only report progress.
    last_write: Option<(Timestamp, Option<String>)>,
    /// Reconciles that failed in a row.
    failed_attempts: u32,
    /// What the pool's Event and log reads remember.
    reads: ReadMemory,
    /// The revision and replica count the pool was last announced Ready at.
    announced_ready: Option<(String, i32)>,
}

/// A status this process wrote. Until the watch delivers that write, the cached pool still shows
/// one of the versions it replaced; reading the cache then would recount aborts and send a
/// patch the server already holds.
struct Written {
    /// Versions of the pool older than this write.
    superseded: Vec<String>,
    /// The version the write produced.
    version: Option<String>,
    status: WorkerPoolStatus,
}

impl Written {
    /// Whether this write is newer than the pool version the cache holds.
    fn is_ahead_of(&self, cached: &ObjectMeta) -> bool {
        cached
            .resource_version
            .as_ref()
            .is_some_and(|version| self.superseded.contains(version))
    }
}

/// Every pool's record.
#[derive(Default)]
pub struct Memory(Mutex<HashMap<String, PoolMemory>>);

impl Memory {
    fn pools(&self) -> MutexGuard<'_, HashMap<String, PoolMemory>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the pool's record, made when it has none yet.
    fn with_record<R>(&self, uid: &str, f: impl FnOnce(&mut PoolMemory) -> R) -> R {
        let mut pools = self.pools();
        if let Some(record) = pools.get_mut(uid) {
            return f(record);
        }
        f(pools.entry(uid.to_owned()).or_default())
    }

    /// The pool's status as the server holds it when the cache has not caught up with this
    /// process's last write yet; once it has, the written copy is let go.
    pub fn status_ahead_of_cache(&self, cached: &ObjectMeta) -> Option<WorkerPoolStatus> {
        let mut pools = self.pools();
        let record = pools.get_mut(cached.uid.as_deref()?)?;
        let written = record.written.as_ref()?;
        if written.is_ahead_of(cached) {
            Some(written.status.clone())
        } else {
            record.written = None;
            None
        }
    }

    /// A pool as its watch delivered it: once the cache holds the last write, that write's copy
    /// is let go, also for pools no reconcile looks at again.
    pub fn observed(&self, cached: &ObjectMeta) {
        let Some(uid) = cached.uid.as_deref() else {
            return;
        };
        if let Some(record) = self.pools().get_mut(uid)
            && record
                .written
                .as_ref()
                .is_some_and(|written| !written.is_ahead_of(cached))
        {
            record.written = None;
        }
    }

    /// Notes a status write made from a reconcile of `base` (the pool as cached) at `now`:
    /// `based_on_memory` when [`Memory::status_ahead_of_cache`] supplied the old status.
    pub fn wrote_status(
        &self,
        base: &ObjectMeta,
        based_on_memory: bool,
        now: Timestamp,
        version: Option<String>,
        status: WorkerPoolStatus,
    ) {
        let Some(uid) = base.uid.as_deref() else {
            return;
        };
        self.with_record(uid, |record| {
            let mut superseded = match record.written.take() {
                Some(previous) if based_on_memory => {
                    let Written {
                        mut superseded,
                        version,
                        ..
                    } = *previous;
                    superseded.extend(version);
                    superseded
                }
                _ => Vec::new(),
            };
            superseded.extend(base.resource_version.clone());
            if superseded.len() > SUPERSEDED_LIMIT {
                superseded.drain(..superseded.len() - SUPERSEDED_LIMIT);
            }
            record.last_write = Some((now, version.clone()));
            record.written = Some(Box::new(Written {
                superseded,
                version,
                status,
            }));
        });
    }

    /// When this process last wrote the pool's status, if the status a reconcile starts from is
    /// that write: `ahead` when it is the remembered write itself (the cache has not caught up),
    /// else when the cached pool is still at the version the write produced. A status someone
    /// else changed since has no time here, so it is set right at once.
    pub fn last_write(&self, cached: &ObjectMeta, ahead: bool) -> Option<Timestamp> {
        let pools = self.pools();
        let (at, version) = pools.get(cached.uid.as_deref()?)?.last_write.as_ref()?;
        (ahead || (version.is_some() && *version == cached.resource_version)).then_some(*at)
    }

    /// Counts a failed reconcile; returns the failures in a row, this one included.
    pub fn failed(&self, uid: &str) -> u32 {
        self.with_record(uid, |record| {
            record.failed_attempts = record.failed_attempts.saturating_add(1);
            record.failed_attempts
        })
    }

    pub fn succeeded(&self, uid: &str) {
        if let Some(record) = self.pools().get_mut(uid) {
            record.failed_attempts = 0;
        }
    }

    /// True (and noted) when the pool turning Ready at this revision and size is news. A pod that
    /// lost its readiness and regained it (after a crash or an OOM kill) is reported as an abort;
    /// announcing Ready again on each such recovery would bury the Events that explain it.
    pub fn ready_is_news(&self, uid: &str, revision: &str, replicas: i32) -> bool {
        self.with_record(uid, |record| {
            let mark = (revision.to_owned(), replicas);
            if record.announced_ready.as_ref() == Some(&mark) {
                return false;
            }
            record.announced_ready = Some(mark);
            true
        })
    }

    /// What the pool's reads remember (taken out for one reconcile; pools are reconciled one
    /// at a time).
    pub fn reads(&self, uid: &str) -> ReadMemory {
        self.pools()
            .get(uid)
            .map(|record| record.reads.clone())
            .unwrap_or_default()
    }

    /// Keeps what the pool's reads remember, without a record for a pool that needs none.
    pub fn set_reads(&self, uid: &str, reads: ReadMemory) {
        let mut pools = self.pools();
        match pools.get_mut(uid) {
            Some(record) => record.reads = reads,
            None if reads.is_empty() => {}
            None => {
                pools.entry(uid.to_owned()).or_default().reads = reads;
            }
        }
    }

    /// Drops everything remembered of every pool but those `listed` (by uid).
    pub fn keep(&self, listed: &HashSet<String>) {
        self.pools().retain(|uid, _| listed.contains(uid));
    }

    /// Drops everything remembered of a deleted pool.
    pub fn forget(&self, uid: &str) {
        self.pools().remove(uid);
    }

    /// Pools whose last written status is kept until the cache holds it (for tests and sizing).
    pub fn written_pools(&self) -> usize {
        self.pools()
            .values()
            .filter(|r| r.written.is_some())
            .count()
    }

    /// Pools whose last status write time is remembered (for tests and sizing).
    pub fn paced_pools(&self) -> usize {
        self.pools()
            .values()
            .filter(|r| r.last_write.is_some())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: &str, version: &str) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            resource_version: Some(version.into()),
            ..ObjectMeta::default()
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("timestamp")
    }

    fn status(ready: i32) -> WorkerPoolStatus {
        WorkerPoolStatus {
            ready_replicas: ready,
            ..WorkerPoolStatus::default()
        }
    }

    #[test]
    fn a_write_is_the_status_until_the_cache_delivers_it() {
        let memory = Memory::default();
        memory.wrote_status(&meta("a", "1"), false, at(0), Some("2".into()), status(3));
        let written = memory.status_ahead_of_cache(&meta("a", "1"));
        assert_eq!(written.map(|s| s.ready_replicas), Some(3));
        assert_eq!(memory.written_pools(), 1);
        memory.observed(&meta("a", "2"));
        assert_eq!(memory.written_pools(), 0);
        assert_eq!(memory.status_ahead_of_cache(&meta("a", "2")), None);
    }

    #[test]
    fn a_write_based_on_memory_supersedes_the_versions_before_it() {
        let memory = Memory::default();
        memory.wrote_status(&meta("a", "1"), false, at(0), Some("2".into()), status(1));
        memory.wrote_status(&meta("a", "1"), true, at(1), Some("3".into()), status(2));
        for behind in ["1", "2"] {
            let written = memory.status_ahead_of_cache(&meta("a", behind));
            assert_eq!(written.map(|s| s.ready_replicas), Some(2), "at {behind}");
        }
        assert_eq!(memory.status_ahead_of_cache(&meta("a", "3")), None);
    }

    #[test]
    fn another_pool_of_the_same_name_reads_nothing_of_the_first() {
        let memory = Memory::default();
        memory.wrote_status(&meta("a", "1"), false, at(0), Some("2".into()), status(1));
        assert!(memory.ready_is_news("a", "r1", 3));
        assert_eq!(memory.status_ahead_of_cache(&meta("b", "1")), None);
        assert!(memory.ready_is_news("b", "r1", 3));
        assert!(!memory.ready_is_news("a", "r1", 3));
    }

    #[test]
    fn the_last_write_counts_only_while_the_status_is_that_write() {
        let memory = Memory::default();
        memory.wrote_status(&meta("a", "1"), false, at(5), Some("2".into()), status(1));
        assert_eq!(memory.last_write(&meta("a", "2"), false), Some(at(5)));
        assert_eq!(memory.last_write(&meta("a", "1"), true), Some(at(5)));
        assert_eq!(
            memory.last_write(&meta("a", "9"), false),
            None,
            "someone else wrote since"
        );
    }

    #[test]
    fn failures_count_in_a_row_and_a_success_resets_them() {
        let memory = Memory::default();
        assert_eq!(memory.failed("a"), 1);
        assert_eq!(memory.failed("a"), 2);
        memory.succeeded("a");
        assert_eq!(memory.failed("a"), 1);
    }

    #[test]
    fn ready_is_news_once_per_revision_and_size() {
        let memory = Memory::default();
        assert!(memory.ready_is_news("a", "r1", 3));
        assert!(!memory.ready_is_news("a", "r1", 3), "a pod that recovered");
        assert!(memory.ready_is_news("a", "r1", 4), "a scale");
        assert!(memory.ready_is_news("a", "r2", 4), "a rollout");
        assert!(memory.ready_is_news("b", "r2", 4), "another pool");
    }

    #[test]
    fn a_forgotten_pool_leaves_nothing() {
        let memory = Memory::default();
        memory.wrote_status(&meta("a", "1"), false, at(0), Some("2".into()), status(1));
        memory.ready_is_news("a", "r1", 3);
        memory.failed("a");
        memory.forget("a");
        assert_eq!(memory.written_pools(), 0);
        assert_eq!(memory.paced_pools(), 0);
        assert!(memory.0.lock().expect("lock").is_empty());
    }
}
