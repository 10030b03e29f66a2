//! The sandbox: the real controller against an embedded API server and a simulated cluster, on
//! a virtual clock.

pub mod apiserver;
pub mod cluster;
pub mod scenario;
pub mod timeline;

use crate::controller::Clock;

/// Where every sandbox run starts on the virtual clock, so runs are reproducible.
pub const EPOCH: jiff::Timestamp = jiff::Timestamp::constant(1_767_258_000, 0);

/// Wall time derived from tokio's clock: with the runtime's clock paused it jumps from timer to
/// timer, so simulated minutes pass in milliseconds while every component sees a consistent now.
pub fn virtual_clock() -> Clock {
    let start = tokio::time::Instant::now();
    std::sync::Arc::new(move || {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(start);
        EPOCH
            .checked_add(elapsed)
            .unwrap_or(EPOCH)
    })
}
