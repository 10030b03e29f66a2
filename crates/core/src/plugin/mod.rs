//! What `kubectl workerpool` shows, decided without a client: a pool as a tree ([`tree`]), the
//! rules an unmanaged Deployment breaks ([`audit`]), the WorkerPool that replaces one
//! ([`convert`]), and how a workload's app server is recognised ([`workload`]). The binary reads
//! the cluster and hands these functions what it read.

pub mod audit;
pub mod convert;
pub mod tree;
pub mod workload;

/// An age as kubectl prints one: `45s`, `12m`, `3h`, `4d`.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}
