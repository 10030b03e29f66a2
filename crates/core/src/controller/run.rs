//! `workerpool-operator run`: watches, leader election, the HTTP endpoints and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::{FutureExt, StreamExt, TryStreamExt};

use k8s_openapi::api::batch::v1::Job;
use kube::api::Api;
use kube::runtime::controller::Error as ControllerError;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::ExponentialBackoff;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Client, Resource};
use tokio::sync::watch;

use super::coalesce::{self, coalesce};
use super::metrics::Metrics;
use super::pod_cache::{PodCache, looks};
use super::triggers::{Changes, Fingerprint};
use super::{Caches, Clock, Context, error_policy, reconcile};
use crate::api::{MANAGER_NAME, POOL_LABEL};
use crate::controller::watched::{
    Guarded, PackedBudget, PackedDeployment, PackedPool, ViewedPod, Watched,
};

#[derive(Clone, Debug)]
pub struct RunConfig {
    /// What the controller watches, how it names itself, how many pools at once.
    pub scope: Scope,
    pub metrics_addr: SocketAddr,
    pub leader_election: bool,
    pub lease_name: String,
    /// Namespace of the Lease; the client's default namespace when None.
    pub lease_namespace: Option<String>,
    /// A kubeconfig file; else `KUBECONFIG`, `~/.kube/config` or the in-cluster ServiceAccount.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// A context of the kubeconfig other than its current one.
    pub context: Option<String>,
}

/// The client for the cluster the configuration names, or one line that says how to name one.
async fn connect(config: &RunConfig) -> anyhow::Result<Client> {
    let client_config = client_config(config.kubeconfig.as_deref(), config.context.clone()).await?;
    Ok(Client::try_from(client_config)?)
}

/// The client configuration kubectl would use: `--kubeconfig`, else `KUBECONFIG` or
/// `~/.kube/config`, else the pod's ServiceAccount; `context` instead of the current one.
pub async fn client_config(
    kubeconfig: Option<&std::path::Path>,
    context: Option<String>,
) -> anyhow::Result<kube::Config> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let options = KubeConfigOptions {
        context: context.clone(),
        ..KubeConfigOptions::default()
    };
    Ok(match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("reading --kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer().await.map_err(|e| {
            anyhow::anyhow!(
                "no cluster to connect to: pass --kubeconfig FILE, set KUBECONFIG, or run in a pod with a ServiceAccount ({e})"
            )
        })?,
    })
}

/// Objects of one namespace, or of all when `namespace` is None.
pub fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The watched objects whose change a reconcile would read; every event has already updated the
/// cache upstream. A watch error is logged here and goes no further: each watch retries on its own
/// back-off, while kube's controller would pause all of its trigger streams on any one's error
/// (after an API server restart, every watch stood still for minutes, one error at a time).
fn admitted<K, S>(
    events: S,
    synced: CacheSynced,
) -> impl futures::Stream<Item = Result<K, watcher::Error>>
where
    K: Resource + Fingerprint,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let mut changes = Changes::default();
    events.filter_map(move |event| {
        if matches!(event, Ok(watcher::Event::InitDone)) {
            synced.mark();
        }
        futures::future::ready(succeeded(synced.name, event).and_then(|e| changes.admit(e).map(Ok)))
    })
}

/// A watch's event, or None when the watch failed: the error is logged here and goes no further,
/// since each watch retries on its own back-off.
/// A failure repeated on every retry (an API server away, a CRD deleted) is logged once, and
/// once more when the watch recovers: when the server answers with an object or a finished list,
/// not at the `Init` a relist announces before it even asks.
fn succeeded<K>(
    watch: &str,
    event: Result<watcher::Event<K>, watcher::Error>,
) -> Option<watcher::Event<K>> {
    let Ok(mut failing) = FAILING.lock() else {
        return event.ok();
    };
    let known = failing.iter().position(|(w, _)| w == watch);
    match event {
        Ok(event) => {
            if let Some(i) = known.filter(|_| !matches!(event, watcher::Event::Init)) {
                failing.swap_remove(i);
                tracing::info!(watch, "watch recovered");
            }
            Some(event)
        }
        Err(error) => {
            let text = watch_failure(&error);
            match known {
                Some(i) if failing[i].1 == text => {
                    tracing::debug!(watch, "watch failed again: {text}")
                }
                Some(i) => {
                    tracing::warn!(watch, "watch failed, retrying: {text}");
                    failing[i].1 = text;
                }
                None => {
                    tracing::warn!(watch, "watch failed, retrying: {text}");
                    failing.push((watch.to_string(), text));
                }
            }
            None
        }
    }
}

/// Watches whose last event was a failure, with what it said.
static FAILING: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

#[cfg(test)]
fn failing_watches() -> Vec<(String, String)> {
    FAILING.lock().map(|f| f.clone()).unwrap_or_default()
}

/// What a watch failure means to whoever reads the log.
fn watch_failure(error: &watcher::Error) -> String {
    let text = error.to_string();
    let not_found = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 404,
        watcher::Error::WatchError(status) => status.code == 404,
        // A watch whose resource went away answers with a Status (`"code": 404`), which does
        // not decode as a watch event.
        _ => text.contains("integer `404`") || text.contains("integer 404"),
    };
    if not_found {
        "the resource is not served (was its CRD deleted? kubectl apply -f crds/); waiting for it"
            .to_string()
    } else {
        text
    }
}

/// Counts the watch caches whose first list is complete and turns `/readyz` on with the last.
/// It follows the watch streams themselves: kube's `Store::wait_until_ready` wakes only the last
/// task that polled it, and the controller's runner polls it too, so a second waiter may never
/// wake.
#[derive(Clone)]
struct CacheSync {
    remaining: Arc<std::sync::atomic::AtomicUsize>,
    ready: Arc<AtomicBool>,
}

impl CacheSync {
    fn new(caches: usize, ready: Arc<AtomicBool>) -> Self {
        CacheSync {
            remaining: Arc::new(std::sync::atomic::AtomicUsize::new(caches)),
            ready,
        }
    }

    /// The handle one cache marks itself synced with, once.
    fn cache(&self, name: &'static str) -> CacheSynced {
        CacheSynced {
            sync: self.clone(),
            name,
            done: Arc::new(AtomicBool::new(false)),
        }
    }
}

#[derive(Clone)]
struct CacheSynced {
    sync: CacheSync,
    name: &'static str,
    done: Arc<AtomicBool>,
}

impl CacheSynced {
    /// Called on every InitDone; only the first counts (a relist after 410 Gone is one too).
    fn mark(&self) {
        if self.done.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::debug!(cache = self.name, "watch cache synced");
        if self.sync.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.sync.ready.store(true, Ordering::Release);
            tracing::info!("watch caches synced");
        }
    }
}

/// How a failed watch is retried: from 0.8 s, doubling, with jitter, like kube's default, but at
/// most 5 s apart instead of 30 s. After an API server restart every stream fails a few times and
/// then meets a 410 that costs one more retry; at 30 s a pool's ramp stood still for two minutes
/// (seen on the real server).
fn watch_backoff() -> ResetTimerBackoff<ExponentialBackoff> {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(800))
        .with_max_delay(std::time::Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(exponential.into(), std::time::Duration::from_secs(120))
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::warn!("cannot listen for SIGTERM: {e}");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Relaxed);
                async move {
                    if ready {
                        (StatusCode::OK, "ready").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced").into_response()
                    }
                }
            }),
        );
    let mut stop = stop;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}

/// Waits until this replica holds the Lease; returns a receiver that flips to false when it is lost.
async fn acquire_leadership(client: &Client, config: &RunConfig) -> anyhow::Result<Leadership> {
    // Building the manager reads or creates the Lease: while the API server cannot be reached it
    // is retried with back-off, as the watches are, rather than ending the process.
    let mut attempts = 0;
    let manager = loop {
        // One field manager per replica: the Lease is taken by a server-side apply, and only a
        // manager of its own makes a second replica's apply conflict instead of both leading.
        let mut builder =
            kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &config.lease_name)
                .with_identity(&config.scope.identity)
                .with_field_manager(format!("{MANAGER_NAME}-{}", config.scope.identity));
        if let Some(ns) = &config.lease_namespace {
            builder = builder.with_namespace(ns);
        }
        match builder.build().await {
            Ok(manager) => break manager,
            Err(error) => {
                attempts += 1;
                let wait = super::backoff(attempts).min(std::time::Duration::from_secs(30));
                tracing::warn!(lease = %config.lease_name, attempts, "reading the Lease failed, retrying in {wait:?}: {error}");
                tokio::time::sleep(wait).await;
            }
        }
    };
    let (mut channel, task) = manager.watch().await;
    tracing::info!(lease = %config.lease_name, identity = %config.scope.identity, "waiting for leadership");
    while !*channel.borrow_and_update() {
        channel.changed().await?;
    }
    tracing::info!("acquired leadership");
    Ok((channel, task))
}

/// Selects rustls' ring provider for TLS to the API server. Without an explicit choice rustls
/// panics when a build enables more than one provider.
pub fn install_tls_provider() {
    // Err only when a provider is already installed, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The Lease this process holds (its leadership channel and the task that renews it).
type Leadership = (
    watch::Receiver<bool>,
    tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
);

pub async fn run(config: RunConfig) -> anyhow::Result<()> {
    install_tls_provider();
    let client = connect(&config).await?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Bound before anything starts, so a taken port ends the process with an error that names it.
    let listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("listening on --metrics-addr {}", config.metrics_addr))?;
    tracing::info!(addr = %config.metrics_addr, "serving /metrics, /healthz and /readyz");
    let server = tokio::spawn(serve(listener, metrics.clone(), ready.clone(), stop_rx));

    let shutdown = shutdown_signal().shared();
    let leadership = if config.leader_election {
        match lead(&client, &config, &ready, shutdown.clone()).await? {
            Some(leadership) => Some(leadership),
            None => {
                let _ = stop_tx.send(true);
                return Ok(());
            }
        }
    } else {
        None
    };
    let lost = leadership_lost(leadership.as_ref().map(|(c, _)| c.clone()));
    let stop = {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                _ = shutdown => {}
                _ = lost => {}
            }
        }
    }
    .shared();

    let under_way = metrics.clone();
    let controller = control(
        client,
        &config.scope,
        metrics,
        Arc::new(jiff::Timestamp::now),
        ready,
        stop.clone(),
    );
    tokio::select! {
        _ = controller => {}
        drained = drained(stop, &under_way) => if !drained {
            tracing::warn!("in-flight reconciles did not end within {SHUTDOWN_BOUND:?} of the signal; stopping anyway");
        },
    }

    tracing::info!("controller stopped");
    let _ = stop_tx.send(true);
    if let Some(leadership) = leadership {
        release(leadership).await;
    }
    let _ = server.await;
    Ok(())
}

/// Waits for the Lease; None when the process is told to stop first. A standby is ready: it
/// works and waits on the Lease (were it not, a rolling upgrade of a leader-elected operator, or
/// `helm install --wait`, would wait on it forever); the leader is ready once its watch caches
/// are filled.
async fn lead(
    client: &Client,
    config: &RunConfig,
    ready: &AtomicBool,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Option<Leadership>> {
    ready.store(true, Ordering::Release);
    let acquired = tokio::select! {
        acquired = acquire_leadership(client, config) => acquired?,
        _ = shutdown => return Ok(None),
    };
    ready.store(false, Ordering::Release);
    Ok(Some(acquired))
}

/// Resolves when the Lease is lost; never without leader election.
async fn leadership_lost(channel: Option<watch::Receiver<bool>>) {
    match channel {
        Some(mut channel) => {
            let _ = channel.wait_for(|leader| !*leader).await;
            tracing::warn!("lost leadership; stopping");
        }
        None => futures::future::pending::<()>().await,
    }
}

/// After `stop`: whether the reconciles under way ended within [`SHUTDOWN_BOUND`]. Nothing (an
/// API server that does not answer, say) holds the process past the bound, and with none under
/// way it stops at once.
async fn drained(stop: impl std::future::Future<Output = ()>, metrics: &Metrics) -> bool {
    stop.await;
    let deadline = tokio::time::Instant::now() + SHUTDOWN_BOUND;
    while metrics.in_flight.get() > 0 {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    true
}

/// Releases the Lease, so a standby takes over at once; an API server that does not answer only
/// delays that to the Lease's expiry.
async fn release((channel, task): Leadership) {
    drop(channel);
    let release = async {
        if let Ok(Ok(manager)) = task.await {
            let _ = manager.release().await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_BOUND, release).await.is_err() {
        tracing::warn!("could not release the Lease within {SHUTDOWN_BOUND:?}");
    }
}

/// The watch of the children the operator manages of one kind, feeding its cache.
fn owned_children<K>(
    client: &Client,
    namespace: Option<&str>,
    writer: reflector::store::Writer<K>,
    synced: CacheSynced,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + use<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Fingerprint
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
{
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER_NAME}"));
    admitted(
        watcher(api::<K>(client, namespace), owned)
            .backoff(watch_backoff())
            .reflect(writer),
        synced,
    )
}

/// What the pool watch tells the context: a pool seen, a pool deleted, and after a relist every
/// pool the list no longer holds (deleted while the watch was away, with no Delete event).
struct PoolEvents {
    context: Arc<Context>,
    /// The pools of a relist under way.
    listed: Option<Vec<kube::core::ObjectMeta>>,
}

impl PoolEvents {
    fn new(context: Arc<Context>) -> Self {
        PoolEvents {
            context,
            listed: None,
        }
    }

    fn on(&mut self, event: &watcher::Event<Guarded<PackedPool>>) {
        match event {
            watcher::Event::Delete(pool) => self.context.pool_deleted(pool.meta()),
            watcher::Event::Apply(pool) => self.context.pool_seen(pool.meta()),
            watcher::Event::Init => self.listed = Some(Vec::new()),
            watcher::Event::InitApply(pool) => {
                let meta = pool.meta();
                self.context.pool_seen(meta);
                if let Some(listed) = self.listed.as_mut() {
                    listed.push(kube::core::ObjectMeta {
                        name: meta.name.clone(),
                        namespace: meta.namespace.clone(),
                        uid: meta.uid.clone(),
                        ..Default::default()
                    });
                }
            }
            watcher::Event::InitDone => {
                if let Some(listed) = self.listed.take() {
                    self.context.pools_relisted(&listed);
                }
            }
        }
    }
}

/// How long reconciles under way may run on after SIGTERM, well inside a pod's default 30 s grace.
pub const SHUTDOWN_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

/// A pool's reconcile waits until its watched objects have been quiet this long. A rollout or a
/// failing dependency changes many pods and the Deployment within milliseconds; one reconcile
/// then reads them all instead of one reconcile (and status write) each. Short enough that a
/// pool can hardly change this often for long, which would hold its reconcile back.
pub const DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(30);

/// What one controller instance watches and how it names itself.
#[derive(Clone, Debug)]
pub struct Scope {
    /// Watch only this namespace; all namespaces when None.
    pub namespace: Option<String>,
    /// Reported as the Events' reporting instance, and the identity in the Lease (usually the
    /// pod name).
    pub identity: String,
    /// Pools reconciled at once.
    pub concurrency: u16,
}

/// The controller itself: watches, caches, and the reconcile loop until `stop` resolves.
/// `run` drives it against a real cluster and the sandbox against its embedded API.
pub async fn control(
    client: Client,
    scope: &Scope,
    metrics: Arc<Metrics>,
    clock: Clock,
    ready: Arc<AtomicBool>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = scope.namespace.as_deref();
    let (deployments, deployment_writer) = reflector::store::<Watched<PackedDeployment>>();
    let (pdbs, pdb_writer) = reflector::store::<Watched<PackedBudget>>();
    let (jobs, job_writer) = reflector::store::<Watched<Job>>();
    let (pools, pool_writer) = reflector::store::<Guarded<PackedPool>>();
    let pods = PodCache::default();
    let reporter = Reporter {
        controller: MANAGER_NAME.into(),
        instance: Some(scope.identity.clone()),
    };
    let context = Arc::new(Context::new(
        client.clone(),
        Caches {
            deployments: deployments.clone(),
            pdbs: pdbs.clone(),
            pods: pods.clone(),
            jobs: jobs.clone(),
        },
        reporter,
        metrics,
        clock.clone(),
    ));

    let sync = CacheSync::new(5, ready);
    let deployment_stream =
        owned_children(&client, ns, deployment_writer, sync.cache("Deployment"));
    let job_stream = owned_children(&client, ns, job_writer, sync.cache("Job"));
    let pdb_stream = owned_children(&client, ns, pdb_writer, sync.cache("PodDisruptionBudget"));
    let pod_triggers = pod_triggers(&client, ns, pods.clone(), clock, sync.cache("Pod"));
    let pool_stream = admitted(
        watcher(
            api::<Guarded<PackedPool>>(&client, ns),
            watcher::Config::default(),
        )
        .backoff(watch_backoff())
        .reflect(pool_writer)
        .inspect_ok({
            let mut told = PoolEvents::new(context.clone());
            move |event| told.on(event)
        }),
        sync.cache("WorkerPool"),
    );

    // What a rollout moves many times over (pods, the Deployment's counts) is gathered per pool.
    let deployment_triggers = deployment_stream.filter_map(|deployment| {
        futures::future::ready(deployment.ok().and_then(|d| owning_pool(d.meta())))
    });
    let progress = coalesce(
        futures::stream::select(pod_triggers, deployment_triggers).boxed(),
        coalesce::WINDOW,
        context.windows.clone(),
    );
    Controller::for_stream(pool_stream, pools)
        .owns_stream(pdb_stream)
        .owns_stream(job_stream)
        .reconcile_on(progress)
        .with_config(
            kube::runtime::controller::Config::default()
                .concurrency(scope.concurrency)
                .debounce(DEBOUNCE),
        )
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move { log_outcome(result) })
        .await;
}

/// The pool an object belongs to, by its owner reference.
fn owning_pool(meta: &kube::core::ObjectMeta) -> Option<ObjectRef<Guarded<PackedPool>>> {
    let namespace = meta.namespace.as_deref();
    meta.owner_references
        .iter()
        .flatten()
        .find_map(|owner| ObjectRef::from_owner_ref(namespace, owner, ()))
}

/// Pods are kept only as views; a pool is reconciled when one of its pods reads differently,
/// and when a pod that started quietly still boots as its first log sample falls due.
fn pod_triggers(
    client: &Client,
    namespace: Option<&str>,
    pods: PodCache,
    clock: Clock,
    synced: CacheSynced,
) -> impl futures::Stream<Item = ObjectRef<Guarded<PackedPool>>> + use<> {
    let cache = pods.clone();
    let moves = watcher(
        api::<ViewedPod>(client, namespace),
        watcher::Config::default().labels(POOL_LABEL),
    )
    .backoff(watch_backoff())
    .filter_map(move |event| {
        match &event {
            Ok(watcher::Event::InitDone) => synced.mark(),
            Err(watcher::Error::WatchError(status)) if status.code == 410 => pods.expired(),
            _ => {}
        }
        futures::future::ready(succeeded("Pod", event).map(|event| pods.apply(event)))
    })
    .boxed();
    looks(moves, cache, clock).map(|(namespace, pool)| ObjectRef::new(&pool).within(&namespace))
}

/// What the controller runtime reports of each reconcile, as far as it is not logged already.
fn log_outcome<T, E>(result: Result<T, ControllerError<E, watcher::Error>>)
where
    E: std::error::Error + 'static,
{
    match result {
        // A failed reconcile is logged by `error_policy`.
        Err(ControllerError::ReconcilerFailed(..)) | Ok(_) => {}
        // A pool deleted after its reconcile was queued.
        Err(error @ ControllerError::ObjectNotFound(_)) => tracing::debug!("{error}"),
        // A watch that fails (a missing CRD, a verb the RBAC lacks) stops the pools from
        // converging: it must be seen.
        Err(error) => tracing::warn!("{error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WorkerPool;

    fn status(code: u16, message: &str) -> Box<kube::core::Status> {
        Box::new(
            serde_json::from_value(serde_json::json!({"code": code, "message": message}))
                .unwrap_or_default(),
        )
    }

    #[test]
    fn a_failure_repeated_between_relists_is_one_failure() {
        let refused = || {
            Err(watcher::Error::InitialListFailed(kube::Error::Api(status(
                503,
                "the API server is away",
            ))))
        };
        let watch = "a_failure_repeated_between_relists";
        assert!(succeeded::<WorkerPool>(watch, refused()).is_none());
        // A relist announces itself before it asks: no answer yet, so no recovery.
        assert!(succeeded::<WorkerPool>(watch, Ok(watcher::Event::Init)).is_some());
        let still_failing = |failing: &[(String, String)]| failing.iter().any(|(w, _)| w == watch);
        assert!(still_failing(&failing_watches()));
        assert!(succeeded::<WorkerPool>(watch, refused()).is_none());
        assert!(succeeded::<WorkerPool>(watch, Ok(watcher::Event::InitDone)).is_some());
        assert!(
            !still_failing(&failing_watches()),
            "the finished list is the recovery"
        );
    }

    #[test]
    fn a_watch_of_a_resource_no_longer_served_says_so_in_words() {
        let gone = watcher::Error::InitialListFailed(kube::Error::Api(status(
            404,
            "the server could not find the requested resource",
        )));
        assert!(watch_failure(&gone).contains("was its CRD deleted?"));
        let stream = watcher::Error::WatchError(status(404, "not found"));
        assert!(watch_failure(&stream).contains("was its CRD deleted?"));
        // What a running watch reads when the CRD is deleted under it (seen on a 1.37 server).
        let decode = serde_json::from_str::<kube::core::WatchEvent<WorkerPool>>("404")
            .map(|_| ())
            .expect_err("a bare 404 is no watch event");
        let deleted = watcher::Error::WatchFailed(kube::Error::SerdeError(decode));
        assert!(watch_failure(&deleted).contains("was its CRD deleted?"));
        let other = watcher::Error::InitialListFailed(kube::Error::Api(status(500, "etcd down")));
        assert!(watch_failure(&other).contains("etcd down"));
    }
}
