//! The reads a pool's classification asks for: which pods' kubelet Events to list and which log
//! tails to read, within a budget per reconcile, and what they add once read. Pure: the
//! controller does the reading in between and keeps [`ReadMemory`] from one reconcile to the next.

use std::collections::{HashMap, HashSet};

use jiff::{SignedDuration, Timestamp};

use crate::aborts::classify::KubeletEvent;
use crate::aborts::detect::{
    self, Found, PodFindings, SAMPLE_INTERVAL, SETTLE, WorkerLimits, earliest,
};
use crate::aborts::ledger::{self, Observed};
use crate::aborts::loghints;
use crate::aborts::podview::{ContainerView, PodView};
use crate::api::{AbortSummary, Runtime};

/// Log tails read per reconcile, so a pool with many failing pods cannot flood the API server.
pub const MAX_LOG_READS: usize = 4;

/// A look that samples a log also samples the logs due within this long.
pub const SAMPLE_GATHER: SignedDuration = SignedDuration::from_secs(5);

/// Pods whose Events are listed per reconcile, for the same reason; the others wait for the next.
pub const MAX_EVENT_READS: usize = 4;

/// What a pool's reads remember between reconciles. Losing it costs at most one repeated Event
/// list or one early log read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadMemory {
    /// Settling terminations whose pod's Events were read when they were first seen.
    pub sighted: HashSet<String>,
    /// When each unhealthy container's log (by pod uid and container name) was last sampled.
    pub sampled: HashMap<String, Timestamp>,
}

impl ReadMemory {
    pub fn is_empty(&self) -> bool {
        self.sighted.is_empty() && self.sampled.is_empty()
    }

    /// How long until this container's log may be sampled: one interval into its run, then once
    /// per interval; zero or less when it is due.
    pub fn sample_wait(
        &self,
        container_key: &str,
        running_since: Option<Timestamp>,
        now: Timestamp,
    ) -> SignedDuration {
        match self.sampled.get(container_key).copied().or(running_since) {
            Some(last) => SAMPLE_INTERVAL - now.duration_since(last),
            None => SignedDuration::ZERO,
        }
    }
}

/// The pods whose Events to list: those with a new termination a probe kill could explain, once
/// when it is first seen (the kubelet's `Killing` usually precedes the status that shows the
/// exit, so a fast crash loop cannot replace it unexplained) and again once it has settled, if
/// still uncounted. At most [`MAX_EVENT_READS`].
pub fn events_to_read(
    findings: &PodFindings,
    old: Option<&AbortSummary>,
    now: Timestamp,
    window_seconds: i64,
    memory: &mut ReadMemory,
) -> Vec<String> {
    let settled = findings
        .found
        .iter()
        .filter(|f| f.probe_kill_possible && ledger::is_news(old, &f.observed, now, window_seconds))
        .map(|f| f.observed.record.pod.as_str());
    let first_seen: Vec<&str> = findings
        .settling
        .iter()
        .filter(|(_, key)| memory.sighted.insert(key.clone()))
        .map(|(pod, _)| pod.as_str())
        .collect();
    let settling: HashSet<&str> = findings.settling.iter().map(|(_, k)| k.as_str()).collect();
    memory.sighted.retain(|key| settling.contains(key.as_str()));
    let mut wanted: Vec<String> = Vec::new();
    for pod in settled.chain(first_seen) {
        if !wanted.iter().any(|w| w == pod) {
            wanted.push(pod.to_string());
        }
    }
    wanted.truncate(MAX_EVENT_READS);
    wanted
}

/// The pods' findings once `events` of the pods in `read` are known: a termination a probe kill
/// could explain whose pod's Events were not read waits for the next reconcile rather than being
/// misread as a plain exit.
pub fn with_events(
    runtime: Runtime,
    pods: &[&PodView],
    first: PodFindings,
    events: &[KubeletEvent],
    read: &HashSet<String>,
    now: Timestamp,
) -> PodFindings {
    let mut findings = if events.is_empty() {
        first
    } else {
        detect::pod_aborts(runtime, pods, events, now)
    };
    let before = findings.found.len();
    findings
        .found
        .retain(|f| !f.probe_kill_possible || read.contains(&f.observed.record.pod));
    if findings.found.len() < before {
        findings.settle_after = earliest(findings.settle_after, Some(SETTLE));
    }
    findings
}

/// What a log tail is read for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogUse {
    /// The hint of the termination `found[i]`.
    Hint(usize),
    /// Worker aborts in the running log of `pods[i]`'s container.
    Sample(usize),
}

/// One log tail to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRead {
    pub pod: String,
    pub container: String,
    /// The log of the run that ended rather than the current one.
    pub previous: bool,
    pub purpose: LogUse,
}

/// The log tails to read, at most [`MAX_LOG_READS`]: first the ended runs of new terminations
/// (for their hints), then the running logs of unhealthy containers (booting or unready), each
/// once per [`SAMPLE_INTERVAL`], or up to [`SAMPLE_GATHER`] sooner when another of the pool's
/// samples is read anyway. `next_sample` says when the next of the unhealthy
/// containers' samples falls due, so that the pool is looked at again then: a container still
/// booting is sampled one interval into its run, not one interval after the last look.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogPlan {
    pub reads: Vec<LogRead>,
    pub next_sample: Option<SignedDuration>,
}

/// `read_logs` is the pool's `policy.logs.read`: without it nothing is read or remembered.
pub fn logs_to_read(
    findings: &PodFindings,
    pods: &[&PodView],
    old: Option<&AbortSummary>,
    now: Timestamp,
    window_seconds: i64,
    read_logs: bool,
    memory: &mut ReadMemory,
) -> LogPlan {
    let mut plan = LogPlan::default();
    if !read_logs {
        memory.sampled.clear();
        return plan;
    }
    for (i, found) in findings.found.iter().enumerate() {
        if let Some(tail) = found.log.as_ref().filter(|_| {
            plan.reads.len() < MAX_LOG_READS
                && ledger::is_news(old, &found.observed, now, window_seconds)
        }) {
            plan.reads.push(LogRead {
                pod: tail.pod.clone(),
                container: tail.container.clone(),
                previous: tail.previous,
                purpose: LogUse::Hint(i),
            });
        }
    }
    let unhealthy: Vec<(usize, &PodView, &ContainerView, String)> = pods
        .iter()
        .enumerate()
        .flat_map(|(i, pod)| {
            detect::unhealthy_containers(pod)
                .into_iter()
                .map(move |c| (i, *pod, c, format!("{}/{}", pod.uid, c.name)))
        })
        .collect();
    let wait = |memory: &ReadMemory, key: &str, container: &ContainerView| {
        memory.sample_wait(key, container.running_since, now)
    };
    // A look that samples one log reads those falling due soon with it: a pool's pods started
    // together are sampled in one look per interval, not one look each.
    let sampling = unhealthy
        .iter()
        .any(|(_, _, c, key)| wait(memory, key, c) <= SignedDuration::ZERO);
    for (i, pod, container, key) in &unhealthy {
        let left = wait(memory, key, container);
        let due = left <= SignedDuration::ZERO || (sampling && left <= SAMPLE_GATHER);
        if due && plan.reads.len() < MAX_LOG_READS {
            memory.sampled.insert(key.clone(), now);
            plan.reads.push(LogRead {
                pod: pod.name.to_string(),
                container: container.name.clone(),
                previous: false,
                purpose: LogUse::Sample(*i),
            });
        }
        // A sample due but left for the next look (MAX_LOG_READS) is taken a second later.
        let next =
            wait(memory, key, container).clamp(SignedDuration::from_secs(1), SAMPLE_INTERVAL);
        plan.next_sample = Some(plan.next_sample.map_or(next, |n| n.min(next)));
    }
    let unhealthy: HashSet<&str> = unhealthy.iter().map(|(.., key)| key.as_str()).collect();
    memory
        .sampled
        .retain(|key, _| unhealthy.contains(key.as_str()));
    plan
}

impl LogPlan {
    /// The running logs the plan samples.
    pub fn samples(&self) -> usize {
        self.reads
            .iter()
            .filter(|r| matches!(r.purpose, LogUse::Sample(_)))
            .count()
    }

    /// Keeps the first `allowed` samples and every hint: the fleet's budget for samples had room
    /// for no more. A sample left out waits for its container's next interval, as if read.
    pub fn keep_samples(&mut self, allowed: usize) {
        let mut kept = 0;
        self.reads.retain(|read| match read.purpose {
            LogUse::Hint(_) => true,
            LogUse::Sample(_) => {
                kept += 1;
                kept <= allowed
            }
        });
    }
}

/// Everything observed of the pods: runs that ended unseen, the terminations with the hints their
/// logs gave, and the worker aborts the sampled logs show. `texts[i]` is what `plan.reads[i]`
/// read, None when the read failed.
pub fn observed(
    findings: Vec<Found>,
    unseen: Vec<Observed>,
    pods: &[&PodView],
    plan: &LogPlan,
    texts: &[Option<String>],
    limits: &WorkerLimits,
    now: Timestamp,
) -> Vec<Observed> {
    let text_of = |purpose: &LogUse| {
        plan.reads
            .iter()
            .zip(texts)
            .find(|(read, _)| read.purpose == *purpose)
            .and_then(|(_, text)| text.as_deref())
    };
    let mut observed = unseen;
    observed.reserve(findings.len());
    for (i, found) in findings.into_iter().enumerate() {
        let Some(text) = text_of(&LogUse::Hint(i)) else {
            observed.push(found.observed);
            continue;
        };
        let log = loghints::scan(text);
        // A run that ended while its worker could not reach the broker: that is why.
        observed.extend(detect::broker_state(&found.observed, &log));
        observed.push(detect::with_log_hint(found.observed, &log, limits));
    }
    for (read, text) in plan.reads.iter().zip(texts) {
        if let (LogUse::Sample(i), Some(text)) = (&read.purpose, text)
            && let Some(pod) = pods.get(*i)
        {
            observed.extend(detect::log_aborts(pod, &read.container, text, limits, now));
        }
    }
    observed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("time")
    }

    /// Pod `api-{n}`, its one container booting since `started`.
    fn booting_pod(n: usize, started: i64) -> PodView {
        use crate::aborts::podview::State;
        PodView {
            name: format!("api-{n}").into(),
            uid: format!("uid-{n}").into(),
            phase: Some("Running".into()),
            containers: vec![ContainerView {
                name: "app".into(),
                state: State::Running,
                running_since: Some(at(started)),
                ..ContainerView::default()
            }],
            ..PodView::default()
        }
    }

    fn sample_plan(pods: &[&PodView], now: i64, memory: &mut ReadMemory) -> LogPlan {
        logs_to_read(
            &PodFindings::default(),
            pods,
            None,
            at(now),
            600,
            true,
            memory,
        )
    }

    #[test]
    fn the_pool_is_looked_at_again_when_a_booting_containers_sample_falls_due() {
        let booting = |started| booting_pod(1, started);
        let plan =
            |pod: &PodView, now: i64, memory: &mut ReadMemory| sample_plan(&[pod], now, memory);
        let mut memory = ReadMemory::default();
        // Looked at 2 s after the container started: its first sample is due 28 s later, not 30.
        let pod = booting(0);
        let first = plan(&pod, 2, &mut memory);
        assert!(first.reads.is_empty());
        assert_eq!(first.next_sample, Some(SignedDuration::from_secs(28)));
        let due = plan(&pod, 30, &mut memory);
        assert_eq!(due.reads.len(), 1);
        assert_eq!(
            due.next_sample,
            Some(SAMPLE_INTERVAL),
            "then once per interval"
        );
        // A ready container is not sampled, and asks for no look.
        let mut ready = booting(0);
        ready.containers[0].ready = true;
        assert_eq!(plan(&ready, 40, &mut memory).next_sample, None);
    }

    #[test]
    fn a_budget_short_of_the_samples_keeps_the_first_and_every_hint() {
        let read = |pod: &str, purpose| LogRead {
            pod: pod.into(),
            container: "app".into(),
            previous: matches!(purpose, LogUse::Hint(_)),
            purpose,
        };
        let mut plan = LogPlan {
            reads: vec![
                read("a", LogUse::Hint(0)),
                read("b", LogUse::Sample(0)),
                read("c", LogUse::Sample(1)),
                read("d", LogUse::Sample(2)),
            ],
            next_sample: Some(SAMPLE_INTERVAL),
        };
        assert_eq!(plan.samples(), 3);
        plan.keep_samples(1);
        let pods: Vec<&str> = plan.reads.iter().map(|r| r.pod.as_str()).collect();
        assert_eq!(pods, ["a", "b"]);
        plan.keep_samples(0);
        assert_eq!(plan.samples(), 0);
        assert_eq!(plan.reads.len(), 1, "the hint stays");
        assert_eq!(plan.next_sample, Some(SAMPLE_INTERVAL));
    }

    #[test]
    fn a_log_is_sampled_one_interval_into_the_run_then_once_per_interval() {
        let interval = SAMPLE_INTERVAL.as_secs();
        let pod = booting_pod(1, 0);
        let mut memory = ReadMemory::default();
        let samples = |now, memory: &mut ReadMemory| sample_plan(&[&pod], now, memory).samples();
        assert_eq!(samples(interval - 1, &mut memory), 0);
        assert_eq!(samples(interval, &mut memory), 1);
        assert_eq!(samples(2 * interval - 1, &mut memory), 0);
        assert_eq!(samples(2 * interval, &mut memory), 1);
        let mut unknown_start = booting_pod(2, 0);
        unknown_start.containers[0].running_since = None;
        assert_eq!(
            sample_plan(&[&unknown_start], 0, &mut ReadMemory::default()).samples(),
            1,
            "a container of unknown start is sampled at once"
        );
    }

    #[test]
    fn a_look_that_samples_reads_the_logs_falling_due_soon_with_it() {
        let gather = SAMPLE_GATHER.as_secs();
        let (first, close, later) = (
            booting_pod(1, 0),
            booting_pod(2, gather),
            booting_pod(3, gather + 1),
        );
        let pods = [&first, &close, &later];
        let mut memory = ReadMemory::default();
        let due = sample_plan(&pods, SAMPLE_INTERVAL.as_secs(), &mut memory);
        let read: Vec<&str> = due.reads.iter().map(|r| r.pod.as_str()).collect();
        assert_eq!(read, ["api-1", "api-2"], "api-2 was due within {gather}s");
        assert_eq!(
            due.next_sample,
            Some(SignedDuration::from_secs(gather + 1)),
            "api-3 when its own sample falls due"
        );
        // A look that samples nothing pulls no sample forward.
        let mut fresh = ReadMemory::default();
        let early = sample_plan(&pods, SAMPLE_INTERVAL.as_secs() - 1, &mut fresh);
        assert_eq!(early.samples(), 0);
        assert_eq!(early.next_sample, Some(SignedDuration::from_secs(1)));
    }

    #[test]
    fn a_settling_termination_has_its_pods_events_read_once_when_first_seen() {
        let mut memory = ReadMemory::default();
        let settling = |keys: &[(&str, &str)]| PodFindings {
            settling: keys
                .iter()
                .map(|(pod, key)| (pod.to_string(), key.to_string()))
                .collect(),
            ..PodFindings::default()
        };
        let first = settling(&[("api-a", "a/app/1"), ("api-b", "b/app/1")]);
        assert_eq!(
            events_to_read(&first, None, at(0), 600, &mut memory),
            ["api-a", "api-b"]
        );
        assert!(events_to_read(&first, None, at(1), 600, &mut memory).is_empty());
        // Settled (gone from the settling list), its sighting is forgotten.
        let later = settling(&[("api-b", "b/app/1")]);
        assert!(events_to_read(&later, None, at(2), 600, &mut memory).is_empty());
        assert_eq!(memory.sighted, HashSet::from(["b/app/1".to_string()]));
        // At most MAX_EVENT_READS pods per reconcile.
        let many: Vec<(String, String)> = (0..10)
            .map(|i| (format!("api-{i}"), format!("{i}/app/1")))
            .collect();
        let many = PodFindings {
            settling: many,
            ..PodFindings::default()
        };
        assert_eq!(
            events_to_read(&many, None, at(3), 600, &mut ReadMemory::default()).len(),
            MAX_EVENT_READS
        );
    }
}
