//! Scale: 1,000 WorkerPools of 10 replicas (10,000 pods) created at once on the sandbox. Part 1
//! runs the controller in this process exactly as `run` does; part 2 runs the release binary
//! `workerpool-operator run` as a process of its own against the sandbox API served over HTTP.
//! Prints the figures recorded in docs/benchmarks.md.
//!
//! `cargo bench --bench sandbox_scale` (`POOLS` changes the number of pools; `PART=sandbox` or
//! `PART=process` runs one part).

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use kube::runtime::watcher;
use serde_json::{Value, json};

use workerpool_core::controller::pod_cache::PodCache;
use workerpool_core::controller::watched::ViewedPod;
use workerpool_sandbox::apiserver::http::RequestRecord;
use workerpool_sandbox::apiserver::select::{FieldSelector, LabelSelector};
use workerpool_sandbox::apiserver::{ApiServer, RESOURCES, ServerConfig};
use workerpool_sandbox::meter::{CpuMeter, thread_cpu};
use workerpool_sandbox::scenario::Scenario;
use workerpool_sandbox::{Options, Sandbox};

/// Counts live heap bytes, to measure what a cache holds, over the allocator the binary uses.
struct Counting;

static BACKING: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { BACKING.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { BACKING.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { BACKING.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// CPU time of this thread (the sandbox runs on one) in nanoseconds.
fn cpu_ns() -> u64 {
    thread_cpu().as_nanos() as u64
}

/// `VmRSS` or `VmHWM` of a process (`self` for this one) in MiB.
fn memory_mib(process: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// User plus system CPU time of a process (all its threads) in milliseconds.
fn process_cpu_ms(pid: &str) -> f64 {
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name: state is the first, utime the 12th, stime the 13th.
            let rest = &stat[stat.rfind(')')? + 1..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) * 1000.0 / ticks_per_second)
        })
        .unwrap_or(0.0)
}

/// The controller as users run it: `workerpool-operator run` in a process of its own, talking
/// HTTP to the sandbox API through a kubeconfig, the sandbox on wall time in this process.
fn controller_process(pools: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let scenario = Scenario { boot_jitter: 0.1, ..Scenario::default() };
        let mut options = Options::new(scenario, 1);
        options.timeline_limit = 0;
        options.server = ServerConfig { history_limit: 20_000, seed: 1 };
        options.epoch = jiff::Timestamp::now();
        let mut sandbox = Sandbox::new(options);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(sandbox.server.clone().serve_http(listener, async move {
            let _ = stopped.await;
        }));
        let kubeconfig = std::env::temp_dir().join(format!("workerpool-bench-{}.kubeconfig", std::process::id()));
        std::fs::write(&kubeconfig, ApiServer::kubeconfig(address)).expect("kubeconfig");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_workerpool-operator"))
            .args(["run", "--metrics-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start workerpool-operator run");
        let child_id = child.id();
        let pid = child_id.to_string();
        // Its watches list the empty cluster and settle.
        sandbox.run_for(3).await;
        let idle_rss = memory_mib(&pid, "VmRSS");
        let cpu_start = process_cpu_ms(&pid);
        let requests_before = sandbox.server.request_count();
        let mut changes = sandbox.server.observe();
        let converged_after = create_and_converge(&mut sandbox, pools, 900, &CpuMeter::default()).await;
        let cpu_converge = process_cpu_ms(&pid) - cpu_start;
        // Every change of a watched kind reaches the controller as one watch event.
        let mut delivered: HashMap<&str, usize> = HashMap::new();
        while let Ok(change) = changes.try_recv() {
            let plural = change.resource.plural;
            if ["pods", "deployments", "poddisruptionbudgets", "workerpools", "jobs"].contains(&plural) {
                *delivered.entry(plural).or_default() += 1;
            }
        }
        drop(changes);
        let mut delivered: Vec<(&str, usize)> = delivered.into_iter().collect();
        delivered.sort();
        let mut mix: Vec<(String, usize)> = request_mix(&sandbox.server.requests()[requests_before..]).into_iter().collect();
        mix.sort();
        let peak_rss = memory_mib(&pid, "VmHWM");
        let cpu_quiet_start = process_cpu_ms(&pid);
        sandbox.run_for(60).await;
        let cpu_quiet = process_cpu_ms(&pid) - cpu_quiet_start;
        let steady_rss = memory_mib(&pid, "VmRSS");
        let fleet_latencies = creation_to_apply(&mut sandbox, pools, 100).await;

        // SAFETY: signals our own child process, which we then wait for.
        unsafe { libc::kill(child_id as i32, libc::SIGTERM) };
        let exited = child.wait();
        let _ = stop.send(());
        let _ = serving.await;
        let _ = std::fs::remove_file(&kubeconfig);

        println!();
        println!("controller as its own process (`workerpool-operator run` over HTTP, wall clock), {pools} pools:");
        println!("  converged after {converged_after:?} seconds; exit on SIGTERM: {exited:?}");
        println!("  CPU to converge: {cpu_converge:.0} ms = {:.3} ms per pool (user + system, all threads, 10 ms ticks)", cpu_converge / pools as f64);
        println!("  CPU in 60 quiet seconds: {cpu_quiet:.0} ms");
        println!(
            "  watch events to converge, per pool: {} (total {:.1})",
            delivered.iter().map(|(k, n)| format!("{k} {:.2}", *n as f64 / pools as f64)).collect::<Vec<_>>().join(", "),
            delivered.iter().map(|(_, n)| n).sum::<usize>() as f64 / pools as f64
        );
        println!("  requests to converge, per pool: {}", mix.iter().map(|(k, n)| format!("{k} {:.2}", *n as f64 / pools as f64)).collect::<Vec<_>>().join(", "));
        println!("  RSS: idle {idle_rss:.1} MiB, peak {peak_rss:.1} MiB, steady {steady_rss:.1} MiB");
        println!(
            "  pool created into the converged fleet → Deployment apply, over HTTP (wall time, {} pools one at a time): p50 {:.1} ms, p99 {:.1} ms",
            fleet_latencies.len(),
            percentile(&fleet_latencies, 50.0),
            percentile(&fleet_latencies, 99.0)
        );
    });
}

/// Creates `count` pools one at a time after the first `existing`, each given a second: the
/// wall time in milliseconds from each creation to its Deployment's apply, sorted.
async fn creation_to_apply(sandbox: &mut Sandbox, existing: usize, count: usize) -> Vec<f64> {
    let mut latencies = Vec::new();
    for i in existing..existing + count {
        let before = sandbox.server.request_count();
        let created = Instant::now();
        sandbox.add_pool(pool(i)).expect("pool");
        sandbox.run_for(1).await;
        let name = format!("pool-{i}");
        if let Some(applied) = sandbox.server.requests()[before..].iter().find(|r| {
            r.verb == "patch"
                && r.kind == "Deployment"
                && r.subresource.is_none()
                && r.name.as_deref() == Some(name.as_str())
        }) {
            latencies.push(applied.wall.duration_since(created).as_secs_f64() * 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

/// Requests by verb, kind and subresource; watches and pool creations (the benchmark's own) left out.
fn request_mix(requests: &[RequestRecord]) -> HashMap<String, usize> {
    let mut mix = HashMap::new();
    for r in requests
        .iter()
        .filter(|r| r.verb != "watch" && !(r.verb == "create" && r.kind == "WorkerPool"))
    {
        let key = match &r.subresource {
            Some(sub) => format!("{} {}/{sub}", r.verb, r.kind),
            None => format!("{} {}", r.verb, r.kind),
        };
        *mix.entry(key).or_default() += 1;
    }
    mix
}

/// Creates `pools` pools at once and runs second by second until every pod is ready and every
/// pool reports `Ready`; the seconds that took, or None after `limit` seconds. The benchmark's
/// own work (building and creating the pools, checking for convergence) is charged to
/// `harness`, so it is not counted as the controller's.
async fn create_and_converge(
    sandbox: &mut Sandbox,
    pools: usize,
    limit: u64,
    harness: &CpuMeter,
) -> Option<u64> {
    harness.measure(|| {
        let sample = sample();
        for i in 0..pools {
            sandbox.add_pool(pool_from(&sample, i)).expect("pool");
        }
    });
    for second in 0..limit {
        sandbox.run_for(1).await;
        let converged = harness.measure(|| {
            sandbox.all_ready()
                && sandbox.pools().iter().all(|(ns, name)| {
                    sandbox
                        .pool(ns, name)
                        .is_some_and(|p| p["status"]["phase"] == "Ready")
                })
        });
        if converged {
            return Some(second + 1);
        }
    }
    None
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The bundled `gunicorn-django` sample.
fn sample() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/samples/gunicorn-django.yaml"
    ))
    .expect("sample");
    serde_yaml::from_str(&text).expect("yaml")
}

/// Pool number `index`: the sample with 10 replicas, all booting at once, without its init Job.
fn pool_from(sample: &Value, index: usize) -> Value {
    let mut pool = sample.clone();
    pool["metadata"] =
        json!({"name": format!("pool-{index}"), "namespace": format!("team-{}", index % 50)});
    pool["spec"]["replicas"] = json!(10);
    pool["spec"]["policy"]["boot"]["maxConcurrent"] = json!(10);
    if let Some(policy) = pool["spec"]["policy"].as_object_mut() {
        policy.remove("init");
    }
    pool
}

fn pool(index: usize) -> Value {
    pool_from(&sample(), index)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing else either.
    let pools: usize = std::env::var("POOLS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1000);
    // PART=process runs only the second part, PART=sandbox only the first.
    let part = std::env::var("PART").unwrap_or_default();
    if part != "process" {
        in_one_process(pools);
    }
    if part != "sandbox" {
        controller_process(pools);
    }
}

/// Everything on one thread of this process, on the virtual clock.
fn in_one_process(pools: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let scenario = Scenario { boot_jitter: 0.1, ..Scenario::default() };
        let mut options = Options::new(scenario, 1);
        options.timeline_limit = 0;
        options.server = ServerConfig { history_limit: 20_000, seed: 1 };
        let mut sandbox = Sandbox::new(options);
        sandbox.start_operator();
        sandbox.run_for(1).await;

        let created_wall = Instant::now();
        let cpu_start = cpu_ns();
        let api_start = sandbox.server.cpu.total().as_nanos() as u64;
        let simulation_start = sandbox.simulation.total().as_nanos() as u64;
        let measurements_start =
            sandbox.server.cpu.measurements() + sandbox.simulation.measurements();
        let harness = CpuMeter::default();
        let wall_start = Instant::now();
        let converged_after = create_and_converge(&mut sandbox, pools, 600, &harness).await;
        let cpu_converge = cpu_ns() - cpu_start;
        let converge_reconciles = sandbox.metrics.reconciles.get();
        let simulation_ns = sandbox.simulation.total().as_nanos() as u64 - simulation_start;
        let harness_ns = harness.total().as_nanos() as u64;
        let api_ns = sandbox.server.cpu.total().as_nanos() as u64 - api_start;
        // Each measurement also costs CPU outside its meter's window, which would otherwise be
        // left in the controller's share.
        let measurements = sandbox.server.cpu.measurements() + sandbox.simulation.measurements()
            - measurements_start
            + harness.measurements();
        let outside = CpuMeter::cost_outside_a_measurement();
        let metering_ns = measurements * outside.as_nanos() as u64;
        let wall_converge = wall_start.elapsed();
        let requests = sandbox.server.requests();
        let mut writes: HashMap<String, usize> = HashMap::new();
        let mut first_apply: HashMap<(String, String), Instant> = HashMap::new();
        for r in &requests {
            if r.is_write() {
                let kind = match &r.subresource {
                    Some(sub) => format!("{} {}/{sub}", r.verb, r.kind),
                    None => format!("{} {}", r.verb, r.kind),
                };
                *writes.entry(kind).or_default() += 1;
            }
            if r.verb == "patch" && r.kind == "Deployment" && r.subresource.is_none() {
                first_apply
                    .entry((r.namespace.clone().unwrap_or_default(), r.name.clone().unwrap_or_default()))
                    .or_insert(r.wall);
            }
        }
        let mut latencies: Vec<f64> = first_apply
            .values()
            .map(|at| at.duration_since(created_wall).as_secs_f64() * 1000.0)
            .collect();
        latencies.sort_by(f64::total_cmp);
        let peak_rss = memory_mib("self", "VmHWM");

        // Steady state: ten quiet virtual minutes, then one forced reconcile of every pool.
        let before = sandbox.server.request_count();
        sandbox.run_for(600).await;
        let quiet: Vec<String> = sandbox.server.requests()[before..]
            .iter()
            .filter(|r| r.verb != "watch")
            .map(|r| format!("{} {}{}", r.verb, r.kind, r.subresource.as_deref().map(|s| format!("/{s}")).unwrap_or_default()))
            .collect();
        let before = sandbox.server.request_count();
        let reconciles_before = sandbox.metrics.reconciles.get();
        for (namespace, name) in sandbox.pools().to_vec() {
            let _ = sandbox.server.write(
                &RESOURCES[6],
                &namespace,
                &name,
                workerpool_sandbox::apiserver::Target::Main,
                workerpool_sandbox::apiserver::Write::Merge(json!({"metadata": {"annotations": {"bench/touch": "1"}}})),
                Some("bench"),
            );
        }
        sandbox.run_for(5).await;
        let forced = sandbox.metrics.reconciles.get() - reconciles_before;
        let forced_requests = sandbox.server.request_count() - before;
        let steady_rss = memory_mib("self", "VmRSS");

        // A pool created into the converged fleet, one at a time: creation → Deployment apply.
        let fleet_latencies = creation_to_apply(&mut sandbox, pools, 100).await;
        sandbox.run_for(120).await;

        // The controller's own heap: what is released when it stops (its caches, queues,
        // client and Event recorder), the API server's and the cluster's state staying put.
        let heap_running = LIVE.load(Ordering::Relaxed);
        sandbox.stop_operator().await;
        sandbox.run_for(5).await;
        let heap_stopped = LIVE.load(Ordering::Relaxed);
        let controller_heap = heap_running.saturating_sub(heap_stopped);

        // Heap per cached pod: the operator's pod cache, filled with this run's pods as the
        // watch delivers them.
        let (pods, _, _) = sandbox.server.list(&RESOURCES[0], None, &LabelSelector::default(), &FieldSelector::default(), None, None);
        let count = pods.len();
        let heap_before = LIVE.load(Ordering::Relaxed) as f64;
        let store = PodCache::default();
        for value in &pods {
            if let Ok(pod) = serde_json::from_value::<ViewedPod>((**value).clone()) {
                store.apply(watcher::Event::Apply(pod));
            }
        }
        let heap_per_pod = (LIVE.load(Ordering::Relaxed) as f64 - heap_before) / count.max(1) as f64;

        // Heap of one cached object of each kind, as its watch decodes it.
        {
            use workerpool_core::controller::watched::{Guarded, PackedBudget, PackedDeployment, PackedPool, Watched};
            use workerpool_core::api::WorkerPool;
            use k8s_openapi::api::apps::v1::Deployment;
            fn heap_of<T: serde::de::DeserializeOwned>(value: &Value) -> (isize, Option<T>) {
                let text = value.to_string();
                let before = LIVE.load(Ordering::Relaxed) as isize;
                let decoded = serde_json::from_str::<T>(&text).ok();
                (LIVE.load(Ordering::Relaxed) as isize - before, decoded)
            }
            let (ns, name) = sandbox.pools()[0].clone();
            let dep = sandbox.server.get(&RESOURCES[2], &ns, &name).map(|v| (*v).clone());
            let pdb = sandbox.server.get(&RESOURCES[4], &ns, &name).map(|v| (*v).clone());
            let pool = sandbox.server.get(&RESOURCES[6], &ns, &name).map(|v| (*v).clone());
            for (label, value) in [("deployment", &dep), ("pdb", &pdb), ("pool", &pool)] {
                if let Ok(v) = value { println!("JSON size of {label}: {} bytes", v.to_string().len()); }
            }
            if let Ok(v) = &dep {
                println!("heap of a cached Deployment: {} bytes (spec packed)", heap_of::<Watched<PackedDeployment>>(v).0);
                println!("heap of the same Deployment decoded whole: {} bytes", heap_of::<Watched<Deployment>>(v).0);
            }
            if let Ok(v) = &pdb { println!("heap of a cached PDB: {} bytes (spec, labels and annotations packed)", heap_of::<Watched<PackedBudget>>(v).0); }
            if let Ok(v) = &pool {
                println!("heap of a cached pool: {} bytes (spec and status packed)", heap_of::<Guarded<PackedPool>>(v).0);
                println!("heap of the same pool decoded whole: {} bytes", heap_of::<Guarded<WorkerPool>>(v).0);
            }
        }
        let total_writes: usize = writes.values().sum();
        let mut write_list: Vec<(String, usize)> = writes.into_iter().collect();
        write_list.sort();
        println!("pools: {pools}, pods: {count} (cache holds {})", store.len());
        println!("converged after {:?} virtual seconds", converged_after);
        println!("wall time to converge: {:.2?}", wall_converge);
        println!("CPU time to converge (whole sandbox: API, cluster, controller): {:.1} ms = {:.3} ms per pool", cpu_converge as f64 / 1e6, cpu_converge as f64 / 1e6 / pools as f64);
        let controller_ns =
            cpu_converge.saturating_sub(simulation_ns + api_ns + harness_ns + metering_ns);
        println!("  the simulated cluster: {:.1} ms; the API server: {:.1} ms; the benchmark itself (creating pools, checking for convergence): {:.1} ms; the meters outside their windows: {:.1} ms ({measurements} measurements × {} ns); the controller: {:.1} ms = {:.3} ms per pool", simulation_ns as f64 / 1e6, api_ns as f64 / 1e6, harness_ns as f64 / 1e6, metering_ns as f64 / 1e6, outside.as_nanos(), controller_ns as f64 / 1e6, controller_ns as f64 / 1e6 / pools as f64);
        println!("  the controller's share without subtracting the meters' cost outside their windows: {:.3} ms per pool", (controller_ns + metering_ns) as f64 / 1e6 / pools as f64);
        let noops: Vec<String> = requests
            .iter()
            .filter(|r| r.noop)
            .map(|r| format!("{} {}{} {}", r.verb, r.kind, r.subresource.as_deref().map(|s| format!("/{s}")).unwrap_or_default(), r.name.as_deref().unwrap_or_default()))
            .collect();
        println!("writes that changed nothing: {} {:?}", noops.len(), noops.iter().take(10).collect::<Vec<_>>());
        println!("reconciles during convergence: {converge_reconciles} = {:.1} per pool", converge_reconciles as f64 / pools as f64);
        println!("writes during convergence: {total_writes} = {:.2} per pool: {write_list:?}", total_writes as f64 / pools as f64);
        println!("creation → Deployment apply: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", percentile(&latencies, 50.0), percentile(&latencies, 99.0), percentile(&latencies, 100.0));
        println!("requests in 10 quiet virtual minutes (watches excluded): {} {:?}", quiet.len(), quiet.iter().take(5).collect::<Vec<_>>());
        println!("forced reconciles of converged pools: {forced}, requests they made: {forced_requests}");
        println!("RSS of the whole sandbox process: peak {peak_rss:.0} MiB, steady {steady_rss:.0} MiB");
        println!("new pool in the converged fleet, creation → Deployment apply ({} pools): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", fleet_latencies.len(), percentile(&fleet_latencies, 50.0), percentile(&fleet_latencies, 99.0), percentile(&fleet_latencies, 100.0));
        println!("controller heap at steady state (released when it stops): {:.1} MiB ({} pools, {} pods)", mib(controller_heap), pools + 100, count);
        println!("heap per cached pod: {heap_per_pod:.0} bytes");
    });
}
