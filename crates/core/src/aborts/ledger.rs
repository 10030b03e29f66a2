//! The abort ledger kept in `status.aborts`: counts each abort once (at any number of them, by
//! remembering per pod and container which of its aborts were counted), keeps counts for the
//! failure window and the last abort, and derives the `Degraded` condition. Pure.

use std::fmt;

use jiff::{SignedDuration, Timestamp};

use crate::api::{
    AbortCount, AbortRecord, AbortSummary, CountedSource, SeenAbort, TallyBucket, Window,
    parse_time,
};

/// Most aborts listed one by one in `recent`; counting does not depend on it.
pub const MAX_RECENT: usize = 64;

/// Run restart counts remembered one by one per container; older ones fold into a watermark.
/// Only a run still unsettled while this many newer runs ended would be missed, and settling
/// takes seconds while every restart takes at least ten.
const MAX_RUNS: usize = 16;

/// Slices of the window in the tally: counts leave the window to a tenth of it.
const TALLY_SLICES: i64 = 10;

/// Which abort it is: what it happened to, and which occurrence there.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// `podUid/container`, or `podUid` for an abort of the pod itself.
    pub source: String,
    pub occurrence: Occurrence,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Occurrence {
    /// The end of the run with this restart count.
    Run(i32),
    /// A worker killed inside the run with this restart count, while the container kept running.
    Worker { run: i32, pid: u32 },
    /// A lasting state (a crash loop, a failed pull, an eviction): once per window.
    State(String),
}

/// Where a container's aborts are counted: `podUid/container`.
pub fn container_source(pod_uid: &str, container: &str) -> String {
    format!("{pod_uid}/{container}")
}

/// The source of a counted abort's key ([`Identity`] as written): `podUid/container` of
/// `podUid/container/3`, `podUid/container/3/worker-9` and `podUid/container/CrashLoop`.
pub fn source_of_key(key: &str) -> &str {
    let key = match key.rsplit_once('/') {
        Some((rest, last)) if last.starts_with("worker-") => rest,
        _ => key,
    };
    key.rsplit_once('/').map_or(key, |(source, _)| source)
}

impl Identity {
    pub fn run(pod_uid: &str, container: &str, restart_count: i32) -> Self {
        Identity {
            source: container_source(pod_uid, container),
            occurrence: Occurrence::Run(restart_count),
        }
    }

    pub fn worker(pod_uid: &str, container: &str, run: i32, pid: u32) -> Self {
        Identity {
            source: container_source(pod_uid, container),
            occurrence: Occurrence::Worker { run, pid },
        }
    }

    /// A lasting state of a container, or of the pod when `container` is `None`.
    pub fn state(pod_uid: &str, container: Option<&str>, reason: &str) -> Self {
        Identity {
            source: container.map_or_else(|| pod_uid.to_string(), |c| format!("{pod_uid}/{c}")),
            occurrence: Occurrence::State(reason.to_string()),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.occurrence {
            Occurrence::Run(run) => write!(f, "{}/{run}", self.source),
            Occurrence::Worker { run, pid } => write!(f, "{}/{run}/worker-{pid}", self.source),
            Occurrence::State(reason) => write!(f, "{}/{reason}", self.source),
        }
    }
}

/// An abort seen now, with its identity and when it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub identity: Identity,
    pub at: Timestamp,
    /// `pod-template-hash` of the pod.
    pub revision: Option<String>,
    pub record: AbortRecord,
}

fn within(time: &str, now: Timestamp, window: SignedDuration) -> bool {
    Window {
        now,
        length: window,
    }
    .contains_time(time)
}

/// Where `source` is in `counted`, which is kept sorted by source.
fn find(counted: &[CountedSource], source: &str) -> Result<usize, usize> {
    counted.binary_search_by(|c| c.source.as_str().cmp(source))
}

/// Whether `source` already holds `occurrence`.
fn holds(source: &CountedSource, occurrence: &Occurrence) -> bool {
    match occurrence {
        Occurrence::Run(run) => {
            source.runs.contains(run) || source.runs_through.is_some_and(|t| *run <= t)
        }
        Occurrence::Worker { run, pid } => {
            source.worker_run == Some(*run) && source.worker_pids.contains(pid)
        }
        Occurrence::State(reason) => source.states.contains(reason),
    }
}

/// Notes `occurrence` as counted in `source`.
fn note(source: &mut CountedSource, occurrence: &Occurrence, at: Timestamp) {
    match occurrence {
        Occurrence::Run(run) => {
            let place = source.runs.partition_point(|r| r < run);
            source.runs.insert(place, *run);
            if source.runs.len() > MAX_RUNS {
                let folded: Vec<i32> = source.runs.drain(..source.runs.len() - MAX_RUNS).collect();
                source.runs_through = folded.last().copied().max(source.runs_through);
            }
        }
        Occurrence::Worker { run, pid } => {
            if source.worker_run != Some(*run) {
                source.worker_run = Some(*run);
                source.worker_pids.clear();
            }
            source.worker_pids.push(*pid);
        }
        Occurrence::State(reason) => source.states.push(reason.clone()),
    }
    if parse_time(&source.time).is_none_or(|t| at > t) {
        source.time = at.to_string();
    }
}

/// True when the aborts `counted` before hold `identity` (an entry whose latest abort left the
/// window holds nothing: what it held is outside the window too).
fn is_counted(
    counted: &[CountedSource],
    recent: &[SeenAbort],
    identity: &Identity,
    now: Timestamp,
    window: SignedDuration,
) -> bool {
    let key = identity.to_string();
    find(counted, &identity.source).is_ok_and(|i| {
        within(&counted[i].time, now, window) && holds(&counted[i], &identity.occurrence)
    }) || recent
        .iter()
        .any(|seen| seen.key == key && within(&seen.time, now, window))
}

/// What the ledger counted of `source` (`podUid/container`), while its latest abort is inside
/// the window (an entry past it holds nothing: what it held is outside the window too).
pub fn counted_in_window<'a>(
    summary: &'a AbortSummary,
    source: &str,
    now: Timestamp,
    window_seconds: i64,
) -> Option<&'a CountedSource> {
    let entry = &summary.counted[find(&summary.counted, source).ok()?];
    within(&entry.time, now, SignedDuration::from_secs(window_seconds)).then_some(entry)
}

/// The run of `source` after the last one counted inside the window: every run from there on
/// ended after a counted one, so inside the window too.
pub fn run_after_counted(
    old: Option<&AbortSummary>,
    source: &str,
    now: Timestamp,
    window_seconds: i64,
) -> Option<i32> {
    let entry = counted_in_window(old?, source, now, window_seconds)?;
    let last = entry.runs.last().copied().max(entry.runs_through)?;
    Some(last.saturating_add(1))
}

/// True when this abort is inside the window and not counted before.
pub fn is_news(
    old: Option<&AbortSummary>,
    observed: &Observed,
    now: Timestamp,
    window_seconds: i64,
) -> bool {
    let window = SignedDuration::from_secs(window_seconds);
    Window::new(now, window_seconds).contains(observed.at)
        && !old.is_some_and(|s| is_counted(&s.counted, &s.recent, &observed.identity, now, window))
}

/// The slice of the window an abort at `at` is tallied in: its start, in seconds.
fn slice_start(at: Timestamp, window_seconds: i64) -> i64 {
    let width = (window_seconds / TALLY_SLICES).max(1);
    at.as_second().div_euclid(width) * width
}

/// Whether a slice starting at `start` still overlaps the window.
fn slice_in_window(start: &str, now: Timestamp, window_seconds: i64) -> bool {
    let width = (window_seconds / TALLY_SLICES).max(1);
    parse_time(start).is_some_and(|s| s.as_second() + width > now.as_second() - window_seconds)
}

/// When the window next changes by itself: a slice of the tally leaves it (and `Degraded` may
/// clear), or a remembered abort does.
pub fn next_expiry(
    summary: &AbortSummary,
    now: Timestamp,
    window_seconds: i64,
) -> Option<SignedDuration> {
    let width = (window_seconds / TALLY_SLICES).max(1);
    summary
        .tally
        .iter()
        .filter_map(|b| parse_time(&b.start))
        .map(|start| {
            SignedDuration::from_secs(start.as_second() + width + window_seconds - now.as_second())
        })
        .chain(summary.recent.iter().filter_map(|seen| {
            let t = parse_time(&seen.time)?;
            Some(SignedDuration::from_secs(window_seconds) - now.duration_since(t))
        }))
        .filter(|left| left.is_positive())
        .min()
}

/// Adds the aborts not counted before; returns the new ledger and the newly counted aborts
/// (each of which deserves one Event and one metric increment).
pub fn record(
    old: Option<&AbortSummary>,
    observed: Vec<Observed>,
    now: Timestamp,
    window_seconds: i64,
) -> (AbortSummary, Vec<AbortRecord>) {
    let window = SignedDuration::from_secs(window_seconds);
    let old_recent = old.map_or(&[][..], |s| &s.recent);
    let mut recent: Vec<SeenAbort> = old_recent
        .iter()
        .filter(|seen| within(&seen.time, now, window))
        .cloned()
        .collect();
    let mut counted: Vec<CountedSource> = old
        .map_or(&[][..], |s| &s.counted)
        .iter()
        .filter(|source| within(&source.time, now, window))
        .cloned()
        .collect();
    counted.sort_by(|a, b| a.source.cmp(&b.source));
    let mut tally: Vec<TallyBucket> = match old {
        // A ledger written before the tally existed: its recent aborts are what it counted.
        Some(s) if s.tally.is_empty() => tally_of(&recent, window_seconds),
        Some(s) => s.tally.clone(),
        None => Vec::new(),
    };
    tally.retain(|b| slice_in_window(&b.start, now, window_seconds));
    let mut last = old.and_then(|s| s.last.clone());
    let mut fresh = Vec::new();
    let mut observed = observed;
    // A crash loop is the consequence of the exit beside it: the exit is the better `last`.
    // Ties go by identity, so `last` and the Event order do not depend on cache order.
    observed.sort_by(|a, b| {
        (a.at, a.record.reason != "CrashLoop", &a.identity).cmp(&(
            b.at,
            b.record.reason != "CrashLoop",
            &b.identity,
        ))
    });
    for o in observed {
        if now.duration_since(o.at) > window
            || is_counted(&counted, &recent, &o.identity, now, window)
        {
            continue;
        }
        let index = find(&counted, &o.identity.source).unwrap_or_else(|place| {
            let source = CountedSource {
                source: o.identity.source.clone(),
                ..CountedSource::default()
            };
            counted.insert(place, source);
            place
        });
        note(&mut counted[index], &o.identity.occurrence, o.at);
        add_to_tally(&mut tally, &o.record.reason, o.at, window_seconds);
        recent.push(SeenAbort {
            key: o.identity.to_string(),
            reason: o.record.reason.clone(),
            time: o.at.to_string(),
            revision: o.revision,
        });
        last = Some(o.record.clone());
        fresh.push(o.record);
    }
    if recent.len() > MAX_RECENT {
        recent.drain(..recent.len() - MAX_RECENT);
    }
    let counts = counts_of(&tally);
    (
        AbortSummary {
            counts,
            last,
            recent,
            counted,
            tally,
        },
        fresh,
    )
}

fn add_to_tally(tally: &mut Vec<TallyBucket>, reason: &str, at: Timestamp, window_seconds: i64) {
    let start = Timestamp::from_second(slice_start(at, window_seconds))
        .unwrap_or(at)
        .to_string();
    match tally
        .iter_mut()
        .find(|b| b.reason == reason && b.start == start)
    {
        Some(bucket) => bucket.count += 1,
        None => {
            let place =
                tally.partition_point(|b| (&b.start, &b.reason) < (&start, &reason.to_string()));
            tally.insert(
                place,
                TallyBucket {
                    reason: reason.to_string(),
                    start,
                    count: 1,
                },
            );
        }
    }
}

fn tally_of(recent: &[SeenAbort], window_seconds: i64) -> Vec<TallyBucket> {
    let mut tally = Vec::new();
    for seen in recent {
        if let Some(at) = parse_time(&seen.time) {
            add_to_tally(&mut tally, &seen.reason, at, window_seconds);
        }
    }
    tally
}

/// Aborts per reason, most first.
fn counts_of(tally: &[TallyBucket]) -> Vec<AbortCount> {
    let mut counts: Vec<AbortCount> = Vec::new();
    for bucket in tally {
        match counts.iter_mut().find(|c| c.reason == bucket.reason) {
            Some(c) => c.count += bucket.count,
            None => counts.push(AbortCount {
                reason: bucket.reason.clone(),
                count: bucket.count,
            }),
        }
    }
    counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    counts
}

/// `Degraded`: `(true, reason of the latest abort, message)` while aborts are in the window.
pub fn degraded(summary: &AbortSummary, window_seconds: i64) -> Option<(String, String)> {
    if summary.counts.is_empty() {
        return None;
    }
    let last = summary.last.as_ref()?;
    let total: i64 = summary.counts.iter().map(|c| c.count).sum();
    let breakdown = summary
        .counts
        .iter()
        .map(|c| format!("{} {}", c.count, c.reason))
        .collect::<Vec<_>>()
        .join(", ");
    let exit = last
        .exit_code
        .map(|c| format!(", exit {c}"))
        .unwrap_or_default();
    let hint = last
        .hint
        .as_ref()
        .map(|h| format!(": {h}"))
        .unwrap_or_default();
    Some((
        last.reason.clone(),
        format!(
            "{total} aborts in the last {}s ({breakdown}); latest: pod {} container {}{exit}{hint}",
            window_seconds, last.pod, last.container
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_of_every_kind_of_key_is_its_container() {
        for identity in [
            Identity::run("u", "app", 3),
            Identity::worker("u", "app", 3, 9),
            Identity::state("u", Some("app"), "BrokerUnreachable"),
        ] {
            assert_eq!(source_of_key(&identity.to_string()), "u/app", "{identity}");
        }
        assert_eq!(
            source_of_key(&Identity::state("u", None, "Evicted").to_string()),
            "u"
        );
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("valid")
    }

    fn abort(pod: &str, restart: i32, reason: &str, secs: i64) -> Observed {
        Observed {
            identity: Identity::run(&format!("uid-{pod}"), "app", restart),
            at: at(secs),
            revision: Some("rev1".into()),
            record: AbortRecord {
                pod: pod.into(),
                container: "app".into(),
                reason: reason.into(),
                exit_code: Some(3),
                signal: None,
                restart_count: restart,
                time: Some(at(secs).to_string()),
                message: None,
                hint: Some("gunicorn: Worker failed to boot".into()),
                inferred: false,
            },
        }
    }

    #[test]
    fn each_termination_is_counted_once() {
        let (first, fresh) = record(None, vec![abort("a", 0, "BootFailed", 0)], at(1), 600);
        assert_eq!(fresh.len(), 1);
        let (again, fresh) = record(
            Some(&first),
            vec![abort("a", 0, "BootFailed", 0)],
            at(5),
            600,
        );
        assert!(
            fresh.is_empty(),
            "seen before, also after a restart of the operator"
        );
        assert_eq!(again, first);
        let (next, fresh) = record(
            Some(&again),
            vec![
                abort("a", 0, "BootFailed", 0),
                abort("a", 1, "BootFailed", 30),
            ],
            at(31),
            600,
        );
        assert_eq!(fresh.len(), 1);
        assert_eq!(
            next.counts,
            vec![AbortCount {
                reason: "BootFailed".into(),
                count: 2
            }]
        );
    }

    #[test]
    fn window_expiry_clears_degraded() {
        let (s, _) = record(
            None,
            vec![
                abort("a", 0, "OOMKilled", 0),
                abort("b", 0, "BootFailed", 10),
            ],
            at(20),
            600,
        );
        let (reason, message) = degraded(&s, 600).expect("degraded");
        assert_eq!(reason, "BootFailed");
        assert!(message.starts_with("2 aborts in the last 600s (1 BootFailed, 1 OOMKilled); latest: pod b container app, exit 3"), "{message}");
        assert_eq!(
            next_expiry(&s, at(20), 600),
            Some(SignedDuration::from_secs(580))
        );
        let (later, fresh) = record(Some(&s), vec![], at(700), 600);
        assert_eq!(next_expiry(&later, at(700), 600), None);
        assert!(fresh.is_empty());
        assert_eq!(degraded(&later, 600), None);
        assert!(later.recent.is_empty());
    }

    #[test]
    fn old_terminations_are_not_news_and_the_ledger_is_bounded() {
        let (s, fresh) = record(None, vec![abort("a", 0, "BootFailed", 0)], at(10_000), 600);
        assert!(fresh.is_empty() && s.counts.is_empty());
        let many: Vec<Observed> = (0..200)
            .map(|i| abort("a", i, "CrashLoop", i.into()))
            .collect();
        let (s, fresh) = record(None, many, at(300), 600);
        assert_eq!(fresh.len(), 200);
        assert_eq!(s.recent.len(), MAX_RECENT);
        assert_eq!(s.last.as_ref().map(|l| l.restart_count), Some(199));
    }

    #[test]
    fn simultaneous_aborts_pick_the_same_last_whatever_the_input_order() {
        let pick = |observed: Vec<Observed>| {
            let (summary, fresh) = record(None, observed, at(20), 600);
            let pods: Vec<String> = fresh.into_iter().map(|r| r.pod).collect();
            (summary.last.map(|l| l.pod), pods)
        };
        let forward = pick(vec![
            abort("a", 0, "BootFailed", 10),
            abort("b", 0, "BootFailed", 10),
        ]);
        let backward = pick(vec![
            abort("b", 0, "BootFailed", 10),
            abort("a", 0, "BootFailed", 10),
        ]);
        assert_eq!(forward, backward);
        assert_eq!(forward.0.as_deref(), Some("b"));
    }

    fn worker(pod: &str, run: i32, pid: u32, secs: i64) -> Observed {
        Observed {
            identity: Identity::worker(&format!("uid-{pod}"), "app", run, pid),
            record: AbortRecord {
                reason: "WorkerTimeout".into(),
                exit_code: None,
                ..abort(pod, run, "WorkerTimeout", secs).record
            },
            ..abort(pod, run, "WorkerTimeout", secs)
        }
    }

    fn crash_loop(pod: &str, secs: i64) -> Observed {
        Observed {
            identity: Identity::state(&format!("uid-{pod}"), Some("app"), "CrashLoop"),
            ..abort(pod, 0, "CrashLoop", secs)
        }
    }

    fn total(summary: &AbortSummary) -> i64 {
        summary.counts.iter().map(|c| c.count).sum()
    }

    #[test]
    fn each_abort_is_counted_once_at_any_number_of_them() {
        let seen: Vec<Observed> = (0..300)
            .flat_map(|i| {
                let pod = format!("p{i}");
                [
                    abort(&pod, 0, "BootFailed", 10),
                    abort(&pod, 1, "BootFailed", 40),
                    crash_loop(&pod, 45),
                    worker(&pod, 2, 9, 50),
                    worker(&pod, 2, 12, 50),
                ]
            })
            .collect();
        let (first, fresh) = record(None, seen.clone(), at(60), 600);
        assert_eq!(fresh.len(), 1500);
        assert_eq!(total(&first), 1500);
        assert_eq!(first.recent.len(), MAX_RECENT);
        assert_eq!(first.counted.len(), 300, "one entry per container");
        // Seen again, in any order, also by a restarted operator reading the status back.
        let reread: AbortSummary =
            serde_json::from_value(serde_json::to_value(&first).unwrap()).unwrap();
        let mut again = seen.clone();
        again.reverse();
        for o in &again {
            assert!(!is_news(Some(&reread), o, at(90), 600), "{}", o.identity);
        }
        let (second, fresh) = record(Some(&reread), again, at(90), 600);
        assert!(fresh.is_empty(), "{} counted again", fresh.len());
        assert_eq!(total(&second), 1500);
        // A new run and a new worker of one pod are news; nothing else is.
        let (third, fresh) = record(
            Some(&second),
            [
                seen,
                vec![abort("p7", 2, "BootFailed", 100), worker("p7", 2, 15, 100)],
            ]
            .concat(),
            at(110),
            600,
        );
        assert_eq!(fresh.len(), 2);
        assert_eq!(total(&third), 1502);
    }

    #[test]
    fn a_long_crash_loop_folds_old_runs_and_still_counts_each_once() {
        let runs: Vec<Observed> = (0..40)
            .map(|r| abort("a", r, "BootFailed", r.into()))
            .collect();
        let (s, fresh) = record(None, runs.clone(), at(50), 600);
        assert_eq!(fresh.len(), 40);
        assert_eq!(s.counted[0].runs.len(), MAX_RUNS);
        assert_eq!(s.counted[0].runs_through, Some(23));
        let (s, fresh) = record(Some(&s), runs, at(55), 600);
        assert!(fresh.is_empty());
        assert_eq!(total(&s), 40);
    }

    #[test]
    fn counts_leave_the_window_by_slices_and_wake_the_controller() {
        let (s, _) = record(None, vec![abort("a", 0, "OOMKilled", 5)], at(20), 600);
        assert_eq!(total(&s), 1);
        // The slice [0 s, 60 s) overlaps the window until 660 s.
        let (s, _) = record(Some(&s), vec![], at(650), 600);
        assert_eq!(total(&s), 1);
        assert_eq!(
            next_expiry(&s, at(650), 600),
            Some(SignedDuration::from_secs(10))
        );
        let (s, _) = record(Some(&s), vec![], at(661), 600);
        assert_eq!(total(&s), 0);
        assert_eq!(degraded(&s, 600), None);
    }

    #[test]
    fn a_ledger_without_a_tally_keeps_its_counts() {
        let (mut s, _) = record(None, vec![abort("a", 0, "BootFailed", 5)], at(20), 600);
        s.tally.clear();
        s.counted.clear();
        let (s, fresh) = record(Some(&s), vec![abort("a", 0, "BootFailed", 5)], at(30), 600);
        assert!(fresh.is_empty());
        assert_eq!(total(&s), 1);
    }
}
