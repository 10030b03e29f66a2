//! The abort ledger kept in `status.aborts`: counts each termination once, keeps counts for the
//! failure window and the last abort, and derives the `Degraded` condition. Pure.

use jiff::{SignedDuration, Timestamp};

use crate::api::{AbortCount, AbortRecord, AbortSummary, SeenAbort};

/// Most terminations remembered; counts in a window are of at most this many.
pub const MAX_RECENT: usize = 64;

/// Identity of one termination: pod uid, container and the restart count of the run that ended.
pub fn key(pod_uid: &str, container: &str, restart_count: i32) -> String {
    format!("{pod_uid}/{container}/{restart_count}")
}

/// An abort seen now, with its identity and when it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub key: String,
    pub at: Timestamp,
    /// `pod-template-hash` of the pod.
    pub revision: Option<String>,
    pub record: AbortRecord,
}

/// True when this abort is inside the window and not counted before.
pub fn is_news(
    old: Option<&AbortSummary>,
    observed: &Observed,
    now: Timestamp,
    window_seconds: i64,
) -> bool {
    let window = SignedDuration::from_secs(window_seconds);
    now.duration_since(observed.at) <= window
        && !old.is_some_and(|s| s.recent.iter().any(|seen| seen.key == observed.key))
}

/// When the oldest remembered abort leaves the window (and `Degraded` may clear).
pub fn next_expiry(
    summary: &AbortSummary,
    now: Timestamp,
    window_seconds: i64,
) -> Option<SignedDuration> {
    let window = SignedDuration::from_secs(window_seconds);
    summary
        .recent
        .iter()
        .filter_map(|seen| seen.time.parse::<Timestamp>().ok())
        .map(|t| window - now.duration_since(t))
        .filter(|left| left.is_positive())
        .min()
}

fn within(time: &str, now: Timestamp, window: SignedDuration) -> bool {
    time.parse::<Timestamp>()
        .is_ok_and(|t| now.duration_since(t) <= window)
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
    let mut recent: Vec<SeenAbort> = old
        .map(|s| {
            s.recent
                .iter()
                .filter(|seen| within(&seen.time, now, window))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut last = old.and_then(|s| s.last.clone());
    let mut fresh = Vec::new();
    let mut observed = observed;
    // A crash loop is the consequence of the exit beside it: the exit is the better `last`.
    // Ties go by identity, so `last` and the Event order do not depend on cache order.
    observed.sort_by(|a, b| {
        (a.at, a.record.reason != "CrashLoop", &a.key).cmp(&(
            b.at,
            b.record.reason != "CrashLoop",
            &b.key,
        ))
    });
    for o in observed {
        if !is_news(old, &o, now, window_seconds) || recent.iter().any(|seen| seen.key == o.key) {
            continue;
        }
        recent.push(SeenAbort {
            key: o.key,
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
    let mut counts: Vec<AbortCount> = Vec::new();
    for seen in &recent {
        match counts.iter_mut().find(|c| c.reason == seen.reason) {
            Some(c) => c.count += 1,
            None => counts.push(AbortCount {
                reason: seen.reason.clone(),
                count: 1,
            }),
        }
    }
    counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    (
        AbortSummary {
            counts,
            last,
            recent,
        },
        fresh,
    )
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

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("valid")
    }

    fn abort(pod: &str, restart: i32, reason: &str, secs: i64) -> Observed {
        Observed {
            key: key(&format!("uid-{pod}"), "app", restart),
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
}
