//! Everything this process keeps of each pool between its reconciles: one record per pool, keyed
//! by the pool's uid (a pool deleted and created again under its name starts with nothing). The
//! pool watch keeps the records: [`Pools::apply`] for a pool it delivers, [`Pools::delete`] for one
//! deleted, [`Pools::reset`] after a relist; forgetting a pool is removing its record, and the
//! labels it returns name the metric series that go with it.
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
//! - `series`: the abort Event series this process bumped. Lost: the next repeat reads the series
//!   from the API server before it bumps it.
//! - `verified`: the live children last found to hold what the pool derives, each by a print of
//!   what the drift check reads of it. Lost: the next reconcile serializes those children once
//!   more to check them.
//! - `labels`: the pool's namespace and name, its metric series' labels. Lost with the record.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use jiff::Timestamp;
use kube::core::ObjectMeta;

use crate::aborts::reads::ReadMemory;
use crate::api::WorkerPoolStatus;
use crate::pool::drift::Verified;

/// Versions of the pool older than a status write are remembered up to this many; more writes
/// ahead of the cache than this is unusual.
const SUPERSEDED_LIMIT: usize = 8;

/// A pool's namespace and name: the labels of its metric series.
pub type Labels = (String, String);

/// What this process knows of one Event series: its count, and when it last bumped it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known {
    pub count: i32,
    pub at: Timestamp,
}

/// A series not bumped for this long is forgotten here; the API server's Events live an hour.
const FORGET_SERIES_AFTER: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);

#[derive(Default)]
struct PoolRecord {
    labels: Labels,
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
    /// Abort Event series by Event name.
    series: HashMap<String, Known>,
    /// The live children the last reconcile found current.
    verified: Vec<Verified>,
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
pub struct Pools(Mutex<HashMap<String, PoolRecord>>);

fn labels_of(meta: &ObjectMeta) -> Labels {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl Pools {
    fn pools(&self) -> MutexGuard<'_, HashMap<String, PoolRecord>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A pool as its watch delivered it (or a reconcile read it): its record, made when it has
    /// none yet; once the cache holds the last status write, that write's copy is let go.
    pub fn apply(&self, cached: &ObjectMeta) {
        let Some(uid) = cached.uid.as_deref() else {
            return;
        };
        let mut pools = self.pools();
        match pools.get_mut(uid) {
            Some(record) => {
                if record
                    .written
                    .as_ref()
                    .is_some_and(|written| !written.is_ahead_of(cached))
                {
                    record.written = None;
                }
            }
            None => {
                let record = PoolRecord {
                    labels: labels_of(cached),
                    ..PoolRecord::default()
                };
                pools.insert(uid.to_owned(), record);
            }
        }
    }

    /// Forgets a deleted pool; returns its labels.
    pub fn delete(&self, uid: &str) -> Option<Labels> {
        self.pools().remove(uid).map(|record| record.labels)
    }

    /// After a relist: forgets every pool but those `listed` (by uid), deleted while the watch
    /// was away; returns the labels no pool kept holds.
    pub fn reset(&self, listed: &HashSet<String>) -> Vec<Labels> {
        let mut pools = self.pools();
        let mut gone = Vec::new();
        pools.retain(|uid, record| {
            let keep = listed.contains(uid);
            if !keep {
                gone.push(std::mem::take(&mut record.labels));
            }
            keep
        });
        // A pool deleted and created again under its name keeps the series of that name.
        gone.retain(|labels| !pools.values().any(|record| record.labels == *labels));
        gone
    }

    /// Runs `f` on the pool's record, made when it has none yet.
    fn with_record<R>(&self, uid: &str, f: impl FnOnce(&mut PoolRecord) -> R) -> R {
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

    /// Notes a status write made from a reconcile of `base` (the pool as cached) at `now`:
    /// `based_on_memory` when [`Pools::status_ahead_of_cache`] supplied the old status.
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

    /// The live children the pool's last reconcile found current.
    pub fn verified(&self, uid: &str) -> Vec<Verified> {
        self.pools()
            .get(uid)
            .map(|record| record.verified.clone())
            .unwrap_or_default()
    }

    pub fn set_verified(&self, uid: &str, verified: Vec<Verified>) {
        if let Some(record) = self.pools().get_mut(uid) {
            record.verified = verified;
        }
    }

    /// The revision and size the pool was last announced Ready at.
    pub fn announced_ready(&self, uid: &str) -> Option<(String, i32)> {
        self.pools().get(uid)?.announced_ready.clone()
    }

    pub fn set_announced_ready(&self, uid: &str, mark: (String, i32)) {
        self.with_record(uid, |record| record.announced_ready = Some(mark));
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

    /// The series this process bumped last, forgetting those of the pool not bumped for long.
    pub fn series(&self, uid: &str, name: &str, now: Timestamp) -> Option<Known> {
        let mut pools = self.pools();
        let series = &mut pools.get_mut(uid)?.series;
        series.retain(|_, known| now.duration_since(known.at) < FORGET_SERIES_AFTER);
        series.get(name).copied()
    }

    /// Notes a bump of the pool's series `name`.
    pub fn bumped(&self, uid: &str, name: String, known: Known) {
        self.with_record(uid, |record| record.series.insert(name, known));
    }

    /// Pools with an Event series remembered (for tests and sizing).
    pub fn folded_pools(&self) -> usize {
        self.pools()
            .values()
            .filter(|r| !r.series.is_empty())
            .count()
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
        let pools = Pools::default();
        pools.wrote_status(&meta("a", "1"), false, at(0), Some("2".into()), status(3));
        let written = pools.status_ahead_of_cache(&meta("a", "1"));
        assert_eq!(written.map(|s| s.ready_replicas), Some(3));
        assert_eq!(pools.written_pools(), 1);
        pools.apply(&meta("a", "2"));
        assert_eq!(pools.written_pools(), 0);
        assert_eq!(pools.status_ahead_of_cache(&meta("a", "2")), None);
    }

    #[test]
    fn a_write_based_on_memory_supersedes_the_versions_before_it() {
        let pools = Pools::default();
        pools.wrote_status(&meta("a", "1"), false, at(0), Some("2".into()), status(1));
        pools.wrote_status(&meta("a", "1"), true, at(1), Some("3".into()), status(2));
        for behind in ["1", "2"] {
            let written = pools.status_ahead_of_cache(&meta("a", behind));
            assert_eq!(written.map(|s| s.ready_replicas), Some(2), "at {behind}");
        }
        assert_eq!(pools.status_ahead_of_cache(&meta("a", "3")), None);
    }

    #[test]
    fn another_pool_of_the_same_name_reads_nothing_of_the_first() {
        let pools = Pools::default();
        pools.wrote_status(&meta("a", "1"), false, at(0), Some("2".into()), status(1));
        pools.set_announced_ready("a", ("r1".into(), 3));
        assert_eq!(pools.status_ahead_of_cache(&meta("b", "1")), None);
        assert_eq!(pools.announced_ready("b"), None);
        assert_eq!(pools.announced_ready("a"), Some(("r1".into(), 3)));
    }

    #[test]
    fn the_last_write_counts_only_while_the_status_is_that_write() {
        let pools = Pools::default();
        pools.wrote_status(&meta("a", "1"), false, at(5), Some("2".into()), status(1));
        assert_eq!(pools.last_write(&meta("a", "2"), false), Some(at(5)));
        assert_eq!(pools.last_write(&meta("a", "1"), true), Some(at(5)));
        assert_eq!(
            pools.last_write(&meta("a", "9"), false),
            None,
            "someone else wrote since"
        );
    }

    #[test]
    fn failures_count_in_a_row_and_a_success_resets_them() {
        let pools = Pools::default();
        assert_eq!(pools.failed("a"), 1);
        assert_eq!(pools.failed("a"), 2);
        pools.succeeded("a");
        assert_eq!(pools.failed("a"), 1);
    }

    #[test]
    fn a_forgotten_pool_leaves_nothing() {
        let pools = Pools::default();
        pools.wrote_status(&meta("a", "1"), false, at(0), Some("2".into()), status(1));
        pools.set_announced_ready("a", ("r1".into(), 3));
        pools.failed("a");
        assert_eq!(pools.delete("a"), Some(Labels::default()));
        assert_eq!(pools.written_pools(), 0);
        assert_eq!(pools.paced_pools(), 0);
        assert!(pools.0.lock().expect("lock").is_empty());
    }

    fn named(uid: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            namespace: Some("shop".into()),
            name: Some(name.into()),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_relist_forgets_the_pools_it_no_longer_holds_and_names_their_series() {
        let pools = Pools::default();
        pools.apply(&named("a", "api"));
        pools.apply(&named("b", "worker"));
        pools.apply(&named("c", "beat"));
        // `api` was deleted and created again while the watch was away: its series stay.
        pools.apply(&named("a2", "api"));
        let listed: HashSet<String> = ["a2", "c"].map(String::from).into();
        let gone = pools.reset(&listed);
        assert_eq!(gone, [("shop".to_string(), "worker".to_string())]);
        assert_eq!(pools.pools().len(), 2);
        assert_eq!(pools.delete("c"), Some(("shop".into(), "beat".into())));
        assert_eq!(pools.delete("c"), None, "forgotten once");
    }

    #[test]
    fn a_series_not_bumped_for_an_hour_is_forgotten() {
        let pools = Pools::default();
        pools.apply(&named("a", "api"));
        let known = Known {
            count: 3,
            at: at(0),
        };
        pools.bumped("a", "api.1".into(), known);
        assert_eq!(pools.series("a", "api.1", at(60)), Some(known));
        assert_eq!(pools.folded_pools(), 1);
        assert_eq!(pools.series("a", "api.1", at(3600)), None);
        assert_eq!(pools.folded_pools(), 0);
    }
}
