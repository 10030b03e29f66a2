//! The sandbox: the real controller against an embedded API server and a simulated cluster, on
//! a virtual clock.
//!
//! [`Sandbox`] owns the API server and the simulated cluster and runs the controller exactly as
//! `run` does (`controller::run::control`), with a `kube::Client` whose requests the embedded
//! server answers in-process. On a runtime with a paused clock, simulated minutes take
//! milliseconds.

pub mod apiserver;
pub mod cluster;
pub mod meter;
pub mod report;
pub mod scenario;
pub mod timeline;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use apiserver::{ApiServer, RESOURCES, ResourceType, ServerConfig, Target, Write};
use cluster::Cluster;
use meter::CpuMeter;
use scenario::Scenario;
use workerpool_core::controller::Clock;
use workerpool_core::controller::metrics::Metrics;
use workerpool_core::controller::run::{Scope, control};

/// Where every sandbox run starts on the virtual clock, so runs are reproducible.
pub const EPOCH: jiff::Timestamp = jiff::Timestamp::constant(1_767_258_000, 0);

const POOLS: &ResourceType = &RESOURCES[6];

/// Wall time derived from tokio's clock: with the runtime's clock paused it jumps from timer to
/// timer, so simulated minutes pass in milliseconds while every component sees a consistent now.
pub fn virtual_clock() -> Clock {
    clock_from(EPOCH)
}

/// tokio's clock from `epoch`; on a runtime whose clock is not paused this is wall time.
pub fn clock_from(epoch: jiff::Timestamp) -> Clock {
    let start = tokio::time::Instant::now();
    Arc::new(move || {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(start);
        epoch.checked_add(elapsed).unwrap_or(epoch)
    })
}

#[derive(Clone, Debug)]
pub struct Options {
    pub scenario: Scenario,
    pub seed: u64,
    /// Timeline entries kept; runs at scale keep few.
    pub timeline_limit: usize,
    pub server: ServerConfig,
    /// Where the sandbox clock starts; a controller in another process needs the real time.
    pub epoch: jiff::Timestamp,
}

impl Options {
    pub fn new(scenario: Scenario, seed: u64) -> Self {
        Options {
            scenario,
            seed,
            timeline_limit: 5_000,
            server: ServerConfig {
                seed,
                ..ServerConfig::default()
            },
            epoch: EPOCH,
        }
    }
}

struct Operator {
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

pub struct Sandbox {
    pub server: Arc<ApiServer>,
    pub cluster: Cluster,
    pub scenario: Scenario,
    seed: u64,
    clock: Clock,
    started: tokio::time::Instant,
    elapsed: u64,
    operator: Option<Operator>,
    /// Metrics of the current operator instance.
    pub metrics: Arc<Metrics>,
    pools: Vec<(String, String)>,
    next_action: usize,
    all_ready_after: Option<u64>,
    /// CPU time of the simulated cluster, its own writes to the API server included.
    pub simulation: CpuMeter,
}

impl Sandbox {
    /// Must be called inside a tokio runtime; with its clock paused the run is virtual.
    pub fn new(options: Options) -> Self {
        let clock = clock_from(options.epoch);
        let server = ApiServer::new(clock.clone(), options.server);
        let cluster = Cluster::new(
            server.clone(),
            options.scenario.clone(),
            options.seed,
            options.timeline_limit,
            options.epoch,
        );
        Sandbox {
            server,
            cluster,
            scenario: options.scenario,
            seed: options.seed,
            clock,
            started: tokio::time::Instant::now(),
            elapsed: 0,
            operator: None,
            metrics: Arc::new(Metrics::default()),
            pools: Vec::new(),
            next_action: 0,
            all_ready_after: None,
            simulation: CpuMeter::default(),
        }
    }

    /// Creates a WorkerPool as `kubectl create` would.
    pub fn add_pool(&mut self, mut pool: Value) -> Result<(), String> {
        let namespace = pool
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        pool["metadata"]["namespace"] = json!(namespace);
        let created = self
            .server
            .create(POOLS, &namespace, pool, Some("kubectl-create"))
            .map_err(|e| e.message)?;
        let name = created
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        self.pools.push((namespace, name));
        Ok(())
    }

    /// Starts the controller, as a new operator process would.
    pub fn start_operator(&mut self) {
        if self.operator.is_some() {
            return;
        }
        let (stop, mut stopped) = watch::channel(false);
        let client = self.server.client();
        let metrics = Arc::new(Metrics::default());
        self.metrics = metrics.clone();
        let clock = self.clock.clone();
        let handle = tokio::spawn(async move {
            let scope = Scope {
                namespace: None,
                identity: "sandbox".into(),
                concurrency: 16,
            };
            let stop = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            control(
                client,
                &scope,
                metrics,
                clock,
                Arc::new(AtomicBool::new(false)),
                stop,
            )
            .await;
        });
        self.operator = Some(Operator { stop, handle });
    }

    /// Stops the controller and waits for it to finish its in-flight reconciles.
    pub async fn stop_operator(&mut self) {
        if let Some(operator) = self.operator.take() {
            let _ = operator.stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(60), operator.handle).await;
        }
    }

    /// Seconds simulated so far.
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Advances the simulation second by second; the controller runs whenever it has work.
    pub async fn run_for(&mut self, seconds: u64) {
        for _ in 0..seconds {
            self.elapsed += 1;
            tokio::time::sleep_until(self.started + Duration::from_secs(self.elapsed)).await;
            let simulation = std::mem::take(&mut self.simulation);
            simulation.measure(|| {
                self.run_actions();
                self.cluster.tick(self.elapsed as f64);
                if self.all_ready_after.is_none() && self.all_ready() {
                    self.all_ready_after = Some(self.elapsed);
                }
            });
            self.simulation = simulation;
        }
    }

    fn run_actions(&mut self) {
        while let Some(action) = self.scenario.actions.get(self.next_action) {
            if action.at_seconds > self.elapsed {
                break;
            }
            let action = action.clone();
            self.next_action += 1;
            for (namespace, name) in self.pools.clone() {
                let Some(current) = self.pool(&namespace, &name) else {
                    continue;
                };
                let replicas = current
                    .pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                let target = match (action.replicas, action.scale_factor) {
                    (Some(r), _) => i64::from(r),
                    (None, Some(f)) => (replicas as f64 * f).floor() as i64,
                    (None, None) => replicas,
                };
                let _ = self.server.write(
                    POOLS,
                    &namespace,
                    &name,
                    Target::Scale,
                    Write::Merge(json!({"spec": {"replicas": target}})),
                    Some("kubectl"),
                );
            }
        }
    }

    /// Every pool has exactly its desired replicas, all ready and on the current template.
    pub fn all_ready(&self) -> bool {
        !self.pools.is_empty()
            && self.pools.iter().all(|(namespace, name)| {
                let desired = self
                    .pool(namespace, name)
                    .and_then(|p| p.pointer("/spec/replicas").and_then(Value::as_i64))
                    .unwrap_or(1) as usize;
                self.cluster
                    .ready_current(namespace, name)
                    .is_some_and(|(ready, total)| ready == desired && total == desired)
            })
    }

    pub fn pool(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.server.get(POOLS, namespace, name).ok()
    }

    pub fn pools(&self) -> &[(String, String)] {
        &self.pools
    }

    pub fn all_ready_after(&self) -> Option<u64> {
        self.all_ready_after
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }
}
