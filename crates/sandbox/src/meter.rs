//! CPU time by part. The sandbox runs the API server, the simulated cluster and the controller
//! on one thread; metering the server's and the cluster's share leaves the controller's.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// CPU time the calling thread has used.
pub fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; the call only writes to it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// CPU time spent in one part of the sandbox.
#[derive(Debug, Default)]
pub struct CpuMeter {
    nanos: AtomicU64,
    measurements: AtomicU64,
}

impl CpuMeter {
    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }

    /// How many times work was measured.
    pub fn measurements(&self) -> u64 {
        self.measurements.load(Ordering::Relaxed)
    }

    fn add(&self, spent: Duration) {
        let nanos = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        self.measurements.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `work`, charging its CPU time to this meter.
    pub fn measure<T>(&self, work: impl FnOnce() -> T) -> T {
        let start = thread_cpu();
        let result = work();
        self.add(thread_cpu().saturating_sub(start));
        result
    }

    /// CPU time one measurement costs beyond what it charges to its meter: the halves of the two
    /// clock reads that fall outside the measured window. What is left after subtracting the
    /// meters from a thread's time includes this much per measurement.
    pub fn cost_outside_a_measurement() -> Duration {
        const ROUNDS: u32 = 20_000;
        let scratch = CpuMeter::default();
        let start = thread_cpu();
        for _ in 0..ROUNDS {
            scratch.measure(|| ());
        }
        thread_cpu()
            .saturating_sub(start)
            .saturating_sub(scratch.total())
            / ROUNDS
    }

    /// Charges every poll of `future` to this meter.
    pub fn metered<'a, F: Future + Send + 'a>(&'a self, future: F) -> Metered<'a, F::Output> {
        Metered {
            future: Box::pin(future),
            meter: self,
        }
    }
}

pub struct Metered<'a, T> {
    future: Pin<Box<dyn Future<Output = T> + Send + 'a>>,
    meter: &'a CpuMeter,
}

impl<T> Future for Metered<'_, T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = &mut *self;
        this.meter.measure(|| this.future.as_mut().poll(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(for_at_least: Duration) -> u64 {
        let start = thread_cpu();
        let mut x = 0u64;
        while thread_cpu() - start < for_at_least {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        x
    }

    #[test]
    fn work_is_charged_to_its_meter_only() {
        let (busy, idle) = (CpuMeter::default(), CpuMeter::default());
        busy.measure(|| spin(Duration::from_millis(20)));
        idle.measure(|| std::thread::sleep(Duration::from_millis(20)));
        assert!(
            busy.total() >= Duration::from_millis(20),
            "{:?}",
            busy.total()
        );
        assert!(
            idle.total() < Duration::from_millis(10),
            "sleeping is not CPU: {:?}",
            idle.total()
        );
    }

    #[tokio::test]
    async fn a_metered_future_is_charged_for_its_polls_not_its_waits() {
        let meter = CpuMeter::default();
        meter
            .metered(async {
                spin(Duration::from_millis(10));
                tokio::time::sleep(Duration::from_millis(30)).await;
                spin(Duration::from_millis(10));
            })
            .await;
        let total = meter.total();
        assert!(total >= Duration::from_millis(20), "{total:?}");
        assert!(total < Duration::from_millis(45), "{total:?}");
        assert_eq!(meter.measurements(), 2, "one per poll");
    }

    #[test]
    fn a_measurement_costs_something_outside_its_window_and_not_much() {
        let outside = CpuMeter::cost_outside_a_measurement();
        assert!(outside > Duration::ZERO);
        assert!(outside < Duration::from_micros(50), "{outside:?}");
    }
}
