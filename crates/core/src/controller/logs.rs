//! Reading container log tails, behind a trait so tests and the sandbox can supply the logs.

use std::num::NonZeroU32;
use std::time::Duration;

use futures::future::BoxFuture;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, LogParams};

use crate::aborts::loghints::{self, TAIL_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("the kubelet did not answer within {0:?}")]
    TimedOut(Duration),
}

pub trait LogReader: Send + Sync {
    /// At most [`TAIL_BYTES`] of the end of a container's log; `previous` reads the run that ended.
    fn tail<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a str,
        container: &'a str,
        previous: bool,
    ) -> BoxFuture<'a, Result<String, LogError>>;
}

/// Lines asked for first: a traceback and the app server's last words.
const TAIL_LINES: i64 = 200;

/// Bytes the kubelet may send per request. It applies `limitBytes` from the *start* of the
/// `tailLines` it picked, so a cut answer has lost the end: that is re-read with fewer lines.
const READ_LIMIT: i64 = 4 * TAIL_BYTES as i64;

/// A kubelet that does not answer must not hold up the pool's reconcile.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads `pods/log` from the API server.
pub struct ApiLogs(pub Client);

impl ApiLogs {
    async fn read_end(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<String, kube::Error> {
        let api: Api<Pod> = Api::namespaced(self.0.clone(), namespace);
        let mut lines = TAIL_LINES;
        loop {
            let params = LogParams {
                container: Some(container.to_string()),
                previous,
                tail_lines: Some(lines),
                limit_bytes: Some(READ_LIMIT),
                ..LogParams::default()
            };
            let text = api.logs(pod, &params).await?;
            match loghints::fewer_lines(lines, text.len(), READ_LIMIT as usize) {
                Some(fewer) => lines = fewer,
                None => return Ok(loghints::last_bytes(&text, TAIL_BYTES).to_string()),
            }
        }
    }
}

impl LogReader for ApiLogs {
    fn tail<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a str,
        container: &'a str,
        previous: bool,
    ) -> BoxFuture<'a, Result<String, LogError>> {
        Box::pin(async move {
            tokio::time::timeout(
                READ_TIMEOUT,
                self.read_end(namespace, pod, container, previous),
            )
            .await
            .map_err(|_| LogError::TimedOut(READ_TIMEOUT))?
            .map_err(LogError::from)
        })
    }
}

/// Running logs sampled per second by the whole operator, at most; and at most this many at once.
pub const SAMPLES_PER_SECOND: NonZeroU32 = NonZeroU32::new(5).expect("not zero");
pub const SAMPLE_BURST: NonZeroU32 = NonZeroU32::new(20).expect("not zero");

/// The fleet's budget of log samples. Each pool reads at most a few per reconcile, but a fleet
/// rolling out at once, its pods slow to become ready, would have every booting container
/// sampled every interval: on a real control plane 1,000 pools of 10 pods read 20,859 logs while
/// they were created. Hints of terminations are not counted: each is read once.
pub struct SampleBudget(DefaultDirectRateLimiter);

impl Default for SampleBudget {
    fn default() -> Self {
        SampleBudget(RateLimiter::direct(
            Quota::per_second(SAMPLES_PER_SECOND).allow_burst(SAMPLE_BURST),
        ))
    }
}

impl SampleBudget {
    /// How many of `wanted` samples may be read now; those are spent.
    pub fn grant(&self, wanted: usize) -> usize {
        (0..wanted).take_while(|_| self.0.check().is_ok()).count()
    }
}
