/// Why a reconcile failed. Each variant says what was being done; `category` is a bounded label
/// for metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {kind} {name}: {source}")]
    Read {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// A create-only write found an object of that name the watch caches do not hold.
    #[error(
        "creating {kind} {name}: an object of that name exists that the watch caches do not hold"
    )]
    Unseen { kind: String, name: String },
    #[error("writing status of WorkerPool {name}: {source}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("WorkerPool has no {0}")]
    Metadata(&'static str),
    #[error("serializing a child object: {0}")]
    Serialize(#[source] serde_json::Error),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Read { .. } => "read",
            Error::Apply { .. } | Error::Unseen { .. } => "apply",
            Error::Status { .. } => "status",
            Error::Metadata(_) => "metadata",
            Error::Serialize(_) => "serialize",
        }
    }
}
