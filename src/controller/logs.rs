//! Reading container log tails, behind a trait so tests and the sandbox can supply the logs.

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, LogParams};

use crate::loghints::TAIL_BYTES;

pub trait LogReader: Send + Sync {
    /// At most [`TAIL_BYTES`] of the end of a container's log; `previous` reads the run that ended.
    fn tail<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a str,
        container: &'a str,
        previous: bool,
    ) -> BoxFuture<'a, Result<String, kube::Error>>;
}

/// Reads `pods/log` from the API server.
pub struct ApiLogs(pub Client);

impl LogReader for ApiLogs {
    fn tail<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a str,
        container: &'a str,
        previous: bool,
    ) -> BoxFuture<'a, Result<String, kube::Error>> {
        Box::pin(async move {
            let api: Api<Pod> = Api::namespaced(self.0.clone(), namespace);
            let params = LogParams {
                container: Some(container.to_string()),
                previous,
                // tailLines picks the end of the run, limitBytes bounds what is transferred.
                limit_bytes: Some(TAIL_BYTES),
                tail_lines: Some(200),
                ..LogParams::default()
            };
            api.logs(pod, &params).await
        })
    }
}

/// No logs at all, for contexts where reading them is not possible.
pub struct NoLogs;

impl LogReader for NoLogs {
    fn tail<'a>(
        &'a self,
        _namespace: &'a str,
        _pod: &'a str,
        _container: &'a str,
        _previous: bool,
    ) -> BoxFuture<'a, Result<String, kube::Error>> {
        Box::pin(async { Ok(String::new()) })
    }
}
