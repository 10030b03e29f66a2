//! The whole controller loop — watches, caches, reconcile, status, Events — on the sandbox's
//! embedded API and simulated cluster, one test per scenario plus faults and restarts.

use serde_json::{Value, json};

use workerpool_sandbox::apiserver::http::Fault;
use workerpool_sandbox::apiserver::{RESOURCES, ServerConfig};
use workerpool_sandbox::report::Report;
use workerpool_sandbox::scenario::Scenario;
use workerpool_sandbox::{Options, Sandbox};

fn sample() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/samples/gunicorn-django.yaml"
    ))
    .expect("sample");
    serde_yaml::from_str(&text).expect("yaml")
}

/// The sample with `replicas` and `maxConcurrent` set.
fn pool(replicas: i64, max_concurrent: i64) -> Value {
    let mut pool = sample();
    pool["spec"]["replicas"] = json!(replicas);
    pool["spec"]["policy"]["boot"]["maxConcurrent"] = json!(max_concurrent);
    pool
}

fn sandbox(pool: Value, scenario: Scenario) -> Sandbox {
    let mut sandbox = Sandbox::new(Options::new(scenario, 1));
    sandbox.add_pool(pool).expect("pool");
    sandbox.start_operator();
    sandbox
}

fn scenario(name: &str) -> Scenario {
    Scenario::built_in(name).expect(name)
}

fn status(report: &Report) -> &Value {
    &report.pool["status"]
}

fn abort_count(report: &Report, reason: &str) -> i64 {
    status(report)["aborts"]["counts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["reason"] == reason)
        .and_then(|c| c["count"].as_i64())
        .unwrap_or(0)
}

fn condition<'a>(report: &'a Report, kind: &str) -> &'a Value {
    status(report)["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .unwrap_or(&Value::Null)
}

/// Container exits in the timeline with this text: the ground truth the counts are checked against.
fn exits(report: &Report, text: &str) -> i64 {
    report
        .timeline
        .iter()
        .filter(|e| e.source == "pod" && e.message.contains(text))
        .count() as i64
}

fn writes(sandbox: &Sandbox) -> usize {
    sandbox
        .server
        .requests()
        .iter()
        .filter(|r| r.is_write())
        .count()
}

#[tokio::test(start_paused = true)]
async fn healthy_pool_ramps_in_steps_converges_and_then_writes_nothing() {
    let mut sandbox = sandbox(pool(6, 2), scenario("healthy"));
    sandbox.run_for(300).await;
    let report = Report::of(&sandbox);
    assert!(
        report.max_booting <= 2,
        "{} booting at once",
        report.max_booting
    );
    assert!(
        report.all_ready_after_seconds.is_some_and(|s| s < 200),
        "{:?}",
        report.all_ready_after_seconds
    );
    assert_eq!(status(&report)["phase"], "Ready");
    assert_eq!(condition(&report, "Ready")["status"], "True");
    let steps: Vec<&str> = report
        .timeline
        .iter()
        .filter(|e| e.source == "deployment" && e.message.starts_with("replicas"))
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(steps, ["replicas 2 -> 4", "replicas 4 -> 6"]);
    assert!(status(&report)["aborts"].is_null() || abort_count(&report, "BootFailed") == 0);
    // Its children were created without a read: the caches answered, and a create-only apply
    // would have been refused had their names been taken.
    let child_reads: Vec<String> = sandbox
        .server
        .requests()
        .iter()
        .filter(|r| {
            r.verb == "get" && ["deployments", "poddisruptionbudgets", "jobs"].contains(&r.resource)
        })
        .map(|r| format!("{} {} {}", r.verb, r.resource, r.code))
        .collect();
    assert!(child_reads.is_empty(), "{child_reads:?}");

    // Converged: five more minutes, watches renewed, and not a single write.
    let before = writes(&sandbox);
    let requests_before = sandbox.server.request_count();
    sandbox.run_for(300).await;
    assert_eq!(
        writes(&sandbox),
        before,
        "a converged pool must not be written"
    );
    let requests = sandbox.server.request_count() - requests_before;
    assert!(
        requests <= 20,
        "{requests} requests in 5 idle minutes: a hot loop"
    );
    sandbox.stop_operator().await;
}

#[tokio::test(start_paused = true)]
async fn slow_boot_is_a_startup_timeout_and_opens_the_circuit() {
    let mut sandbox = sandbox(pool(6, 2), scenario("slow-boot"));
    sandbox.run_for(400).await;
    let report = Report::of(&sandbox);
    assert!(
        abort_count(&report, "StartupTimeout") >= 3,
        "{}",
        status(&report)
    );
    assert_eq!(
        abort_count(&report, "StartupTimeout"),
        exits(&report, "startup probe failed")
    );
    assert!(report.all_ready_after_seconds.is_none());
    assert_eq!(
        condition(&report, "Stalled")["reason"],
        "BootFailureThreshold"
    );
    let last = &status(&report)["aborts"]["last"];
    assert!(
        last["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Startup probe failed"),
        "{last}"
    );
    // Two pods were started, and the ramp never went further.
    assert!(report.max_booting <= 2);
    sandbox.stop_operator().await;
}

#[tokio::test(start_paused = true)]
async fn boot_failure_shows_boot_failed_and_pauses_the_rollout() {
    let mut sandbox = sandbox(pool(6, 2), scenario("boot-failure"));
    sandbox.run_for(300).await;
    let report = Report::of(&sandbox);
    assert!(abort_count(&report, "BootFailed") >= 3);
    assert_eq!(
        abort_count(&report, "BootFailed"),
        exits(&report, "exited with code 3")
    );
    assert_eq!(status(&report)["circuit"]["open"], true);
    assert_eq!(condition(&report, "Stalled")["status"], "True");
    assert_eq!(
        status(&report)["aborts"]["last"]["hint"],
        "gunicorn: Worker failed to boot"
    );
    let deployment = sandbox
        .server
        .get(&RESOURCES[2], "shop", "shop-api")
        .expect("deployment");
    assert_eq!(deployment["spec"]["paused"], true);
    assert_eq!(
        deployment["spec"]["replicas"], 2,
        "the ramp holds at its first step"
    );
    assert!(
        report
            .events
            .iter()
            .any(|e| e["reason"] == "BootFailed" && e["type"] == "Warning")
    );
    // A crash loop's repeats are folded into one Event series per pod, not one Event each.
    let requests = sandbox.server.requests();
    let events = |verb: &str| {
        requests
            .iter()
            .filter(|r| r.kind == "Event" && r.verb == verb)
            .count() as i64
    };
    let boot_failed_events = report
        .events
        .iter()
        .filter(|e| e["reason"] == "BootFailed")
        .count() as i64;
    assert!(
        boot_failed_events <= 2,
        "one BootFailed Event per crash-looping pod: {boot_failed_events}"
    );
    assert!(
        events("patch") >= abort_count(&report, "BootFailed") - boot_failed_events,
        "each repeat counts on its series: {} patches",
        events("patch")
    );
    sandbox.stop_operator().await;
}

#[tokio::test(start_paused = true)]
async fn oom_shows_oom_killed_counted_once_each() {
    let mut sandbox = sandbox(pool(4, 2), scenario("oom"));
    sandbox.run_for(420).await;
    let report = Report::of(&sandbox);
    let kills = exits(&report, "(OOMKilled)");
    assert!(kills >= 4, "{kills} OOM kills in the timeline");
    assert_eq!(abort_count(&report, "OOMKilled"), kills);
    assert_eq!(status(&report)["aborts"]["last"]["reason"], "OOMKilled");
    assert_eq!(condition(&report, "Degraded")["status"], "True");
    sandbox.stop_operator().await;
}

#[tokio::test(start_paused = true)]
async fn ignore_sigterm_shows_grace_period_exceeded_on_scale_down() {
    let mut sandbox = sandbox(pool(6, 2), scenario("ignore-sigterm"));
    sandbox.run_for(239).await;
    let before = Report::of(&sandbox);
    assert_eq!(abort_count(&before, "GracePeriodExceeded"), 0);
    assert_eq!(status(&before)["phase"], "Ready");
    sandbox.run_for(100).await;
    let report = Report::of(&sandbox);
    assert_eq!(exits(&report, "SIGKILL: still running"), 3);
    assert_eq!(abort_count(&report, "GracePeriodExceeded"), 3);
    let hint = status(&report)["aborts"]["last"]["hint"]
        .as_str()
        .unwrap_or_default();
    assert!(hint.contains("exec"), "{hint}");
    sandbox.stop_operator().await;
}

#[tokio::test(start_paused = true)]
async fn boot_storm_kills_an_all_at_once_rollout_and_the_default_policy_converges() {
    // Like a plain Deployment: every replica boots at once.
    let mut storm = sandbox(pool(12, 12), scenario("boot-storm"));
    storm.run_for(600).await;
    let stormed = Report::of(&storm);
    storm.stop_operator().await;
    assert!(stormed.max_booting >= 10, "{}", stormed.max_booting);
    let timeouts = abort_count(&stormed, "StartupTimeout") + abort_count(&stormed, "WorkerTimeout");
    assert!(timeouts >= 3, "{}", status(&stormed));
    assert!(stormed.all_ready_after_seconds.is_none());

    let mut staggered = sandbox(pool(12, 2), scenario("boot-storm"));
    staggered.run_for(600).await;
    let calm = Report::of(&staggered);
    staggered.stop_operator().await;
    assert!(calm.max_booting <= 2);
    assert!(calm.all_ready_after_seconds.is_some(), "{}", status(&calm));
    assert_eq!(
        abort_count(&calm, "StartupTimeout") + abort_count(&calm, "WorkerTimeout"),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn gunicorn_preload_imports_in_the_master_and_the_command_line_timeout_wins() {
    // A 45 s import and --timeout 20 on the command line, which beats GUNICORN_CMD_ARGS.
    let slow_import = Scenario::from_yaml("name: slow-import\nbootSeconds: 45\nbootJitter: 0\n")
        .expect("scenario");
    let with_timeout = |preload: bool| {
        let mut pool = pool(2, 2);
        pool["spec"]["policy"]["boot"] =
            json!({"timeoutSeconds": 120, "maxConcurrent": 2, "preload": preload});
        pool["spec"]["policy"]["requests"] = json!({"timeoutSeconds": 20});
        pool["spec"]["template"]["spec"]["containers"][0]["command"] =
            json!(["gunicorn", "--timeout", "20", "shop.wsgi"]);
        pool
    };

    // With --preload the master imports the app before any worker exists: no worker timeout.
    let mut preloaded = sandbox(with_timeout(true), slow_import.clone());
    preloaded.run_for(300).await;
    let report = Report::of(&preloaded);
    preloaded.stop_operator().await;
    assert!(
        report.all_ready_after_seconds.is_some(),
        "{}",
        status(&report)
    );
    assert_eq!(
        abort_count(&report, "WorkerTimeout"),
        0,
        "{}",
        status(&report)
    );
    assert_eq!(
        exits(&report, "WORKER TIMEOUT") + exits(&report, "--timeout"),
        0
    );

    // Without it each worker imports the app against --timeout 20 and never finishes.
    let mut forked = sandbox(with_timeout(false), slow_import);
    forked.run_for(300).await;
    let report = Report::of(&forked);
    forked.stop_operator().await;
    assert!(
        report.all_ready_after_seconds.is_none(),
        "{}",
        status(&report)
    );
    assert!(
        exits(&report, "--timeout 20s") >= 2,
        "{:?}",
        report.timeline.len()
    );
}

#[tokio::test(start_paused = true)]
async fn a_user_scenario_with_failing_liveness_shows_liveness_timeouts() {
    let scenario =
        Scenario::from_yaml("name: hangs\nbootSeconds: 10\nlivenessFailsAfterSeconds: 60\n")
            .expect("scenario");
    let mut sandbox = sandbox(pool(2, 2), scenario);
    sandbox.run_for(400).await;
    let report = Report::of(&sandbox);
    assert!(
        abort_count(&report, "LivenessTimeout") >= 2,
        "{}",
        status(&report)
    );
    let last = &status(&report)["aborts"]["last"];
    assert!(
        last["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Liveness probe failed"),
        "{last}"
    );
    sandbox.stop_operator().await;
}

#[tokio::test(start_paused = true)]
async fn conflicts_throttling_and_server_errors_do_not_stop_convergence_or_double_count() {
    let mut sandbox = Sandbox::new(Options::new(scenario("boot-failure"), 3));
    sandbox.add_pool(pool(6, 2)).expect("pool");
    for (verb, kind, code) in [
        (Some("patch"), Some("Deployment"), 409),
        (Some("patch"), Some("WorkerPool"), 429),
        (Some("create"), Some("Job"), 500),
        (Some("list"), None, 500),
        (Some("get"), Some("Pod"), 500),
    ] {
        sandbox.server.inject(Fault {
            verb,
            kind,
            code,
            times: 2,
            ..Fault::default()
        });
    }
    sandbox.start_operator();
    // Each failure doubles the pool's retry delay (5 s, 10 s, 20 s, …) until a reconcile succeeds.
    sandbox.run_for(500).await;
    let report = Report::of(&sandbox);
    let failed: Vec<u16> = sandbox
        .server
        .requests()
        .iter()
        .map(|r| r.code)
        .filter(|c| *c >= 400)
        .collect();
    assert!(failed.len() >= 8, "the faults were served: {failed:?}");
    assert_eq!(
        abort_count(&report, "BootFailed"),
        exits(&report, "exited with code 3")
    );
    assert_eq!(status(&report)["circuit"]["open"], true);
    sandbox.stop_operator().await;
}

#[tokio::test(start_paused = true)]
async fn dropped_watches_and_an_operator_restart_mid_ramp_still_converge() {
    let mut sandbox = Sandbox::new(Options::new(scenario("healthy"), 5));
    sandbox.add_pool(pool(8, 2)).expect("pool");
    sandbox.start_operator();
    sandbox.run_for(45).await;
    assert!(sandbox.server.drop_watches() >= 5);
    sandbox.run_for(15).await;
    // The operator process goes away in the middle of the ramp and comes back.
    sandbox.stop_operator().await;
    sandbox.run_for(20).await;
    sandbox.start_operator();
    sandbox.server.drop_watches();
    sandbox.run_for(300).await;
    let report = Report::of(&sandbox);
    assert!(report.max_booting <= 2, "{}", report.max_booting);
    assert!(
        report.all_ready_after_seconds.is_some(),
        "{}",
        status(&report)
    );
    assert_eq!(status(&report)["phase"], "Ready");
    let before = writes(&sandbox);
    sandbox.run_for(200).await;
    assert_eq!(writes(&sandbox), before);
    sandbox.stop_operator().await;
}

#[tokio::test(start_paused = true)]
async fn a_restarted_operator_counts_no_abort_twice() {
    let mut sandbox = Sandbox::new(Options {
        server: ServerConfig {
            history_limit: 200,
            seed: 9,
        },
        ..Options::new(scenario("oom"), 9)
    });
    sandbox.add_pool(pool(4, 2)).expect("pool");
    sandbox.start_operator();
    sandbox.run_for(250).await;
    sandbox.stop_operator().await;
    sandbox.start_operator();
    sandbox.run_for(150).await;
    let report = Report::of(&sandbox);
    let kills = exits(&report, "(OOMKilled)");
    assert!(kills >= 2);
    assert_eq!(abort_count(&report, "OOMKilled"), kills);
    sandbox.stop_operator().await;
}

/// Each pod's readiness as the kubelet writes it and each Deployment status's ready count, with
/// the time of the write.
fn readiness_writes(
    changes: &mut tokio::sync::mpsc::UnboundedReceiver<
        std::sync::Arc<workerpool_sandbox::apiserver::Change>,
    >,
) -> (Vec<jiff::Timestamp>, Vec<(jiff::Timestamp, i64)>) {
    let (mut pods_ready, mut deployment_ready) = (Vec::new(), Vec::new());
    while let Ok(change) = changes.try_recv() {
        let Some(new) = &change.new else { continue };
        let ready = |object: &Value| {
            object["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        };
        match change.resource.kind {
            "Pod" if ready(new) && !change.old.as_deref().is_some_and(ready) => {
                pods_ready.push(change.at)
            }
            "Deployment" => {
                let count = new["status"]["readyReplicas"].as_i64().unwrap_or(0);
                let before = change
                    .old
                    .as_deref()
                    .and_then(|o| o["status"]["readyReplicas"].as_i64())
                    .unwrap_or(0);
                if count != before {
                    deployment_ready.push((change.at, count));
                }
            }
            _ => {}
        }
    }
    (pods_ready, deployment_ready)
}

#[tokio::test(start_paused = true)]
async fn the_deployment_counts_a_ready_pod_in_the_second_the_kubelet_reports_it() {
    let mut sandbox = Sandbox::new(Options::new(scenario("healthy"), 1));
    let mut changes = sandbox.server.observe();
    sandbox.add_pool(pool(3, 3)).expect("pool");
    sandbox.start_operator();
    sandbox.run_for(120).await;
    sandbox.stop_operator().await;

    let (pods_ready, deployment_ready) = readiness_writes(&mut changes);
    assert_eq!(pods_ready.len(), 3, "every pod becomes ready once");
    assert_eq!(
        deployment_ready.last().map(|(_, count)| *count),
        Some(3),
        "{deployment_ready:?}"
    );
    // As in a cluster, the Deployment's status follows a pod's readiness within the moment,
    // not one simulated second later.
    for at in &pods_ready {
        assert!(
            deployment_ready.iter().any(|(counted, _)| counted == at),
            "a pod became ready at {at}, the Deployment counted it at {deployment_ready:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_kubelet_writes_times_on_the_clock_the_sandbox_was_started_with() {
    let mut options = Options::new(scenario("healthy"), 1);
    // A controller in another process reads the real time; the sandbox then starts its clock there.
    options.epoch = "2031-03-04T05:06:07Z".parse().expect("epoch");
    let mut sandbox = Sandbox::new(options);
    let mut changes = sandbox.server.observe();
    sandbox.add_pool(pool(3, 3)).expect("pool");
    sandbox.start_operator();
    sandbox.run_for(60).await;
    sandbox.stop_operator().await;

    let mut started = 0;
    while let Ok(change) = changes.try_recv() {
        let Some(new) = change
            .new
            .as_deref()
            .filter(|_| change.resource.kind == "Pod")
        else {
            continue;
        };
        for container in new["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(at) = container["state"]["running"]["startedAt"].as_str() else {
                continue;
            };
            let at: jiff::Timestamp = at.parse().expect("startedAt");
            let lag = change.at.duration_since(at);
            assert!(
                lag >= jiff::SignedDuration::ZERO && lag <= jiff::SignedDuration::from_secs(60),
                "a container started at {at}, written at {}",
                change.at
            );
            started += 1;
        }
    }
    assert!(started >= 3, "every pod's container runs");
    // Boots of about 20 s are younger than one log sample interval: no log is read.
    let log_reads = sandbox
        .server
        .requests()
        .iter()
        .filter(|r| r.subresource.as_deref() == Some("log"))
        .count();
    assert_eq!(log_reads, 0);
}

/// The pool's pods (not its init Job's), as the server holds them.
fn pool_pods(sandbox: &Sandbox) -> Vec<std::sync::Arc<Value>> {
    use k8s_openapi::api::core::v1::Pod;
    use workerpool_sandbox::apiserver::resource_of;
    use workerpool_sandbox::apiserver::select::{FieldSelector, LabelSelector};

    let pods = sandbox.server.list(
        resource_of::<Pod>(),
        Some("shop"),
        &LabelSelector::default(),
        &FieldSelector::default(),
        None,
        None,
    );
    pods.0
        .into_iter()
        .filter(|p| p["metadata"]["ownerReferences"][0]["kind"] != "Job")
        .collect()
}

/// Writes the readiness of every container of `pod`, as its kubelet would.
fn set_ready(sandbox: &Sandbox, pod: &Value, ready: bool) {
    use k8s_openapi::api::core::v1::Pod;
    use workerpool_sandbox::apiserver::{Target, Write, resource_of};

    let name = pod["metadata"]["name"].as_str().expect("name");
    let mut status = pod["status"].clone();
    for container in status["containerStatuses"]
        .as_array_mut()
        .expect("containers")
    {
        container["ready"] = json!(ready);
    }
    sandbox
        .server
        .write(
            resource_of::<Pod>(),
            "shop",
            name,
            Target::Status,
            Write::Merge(json!({ "status": status })),
            Some("kubelet"),
        )
        .expect("pod status");
}

/// A healthy pool of four pods, converged, and its pods.
async fn converged_pool_of_four() -> (Sandbox, Vec<std::sync::Arc<Value>>) {
    let mut sandbox = sandbox(pool(4, 4), scenario("healthy"));
    sandbox.run_for(120).await;
    let pods = pool_pods(&sandbox);
    assert_eq!(pods.len(), 4, "the pool converged");
    (sandbox, pods)
}

#[tokio::test(start_paused = true)]
async fn pod_changes_within_a_moment_cost_one_reconcile() {
    let (mut sandbox, pods) = converged_pool_of_four().await;
    let before = sandbox.metrics.reconciles.get();
    // Four pods turn unready within 40 ms, as when a shared dependency fails.
    for pod in &pods {
        set_ready(&sandbox, pod, false);
        // The changes reach the controller one by one, as from the kubelets of several nodes.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    sandbox.run_for(1).await;
    assert_eq!(sandbox.metrics.reconciles.get() - before, 1);
    // The changes after the first were gathered until the pool's window ended; the reconcile
    // started after the last of them had read them all, so none is owed another.
    sandbox.run_for(2).await;
    sandbox.stop_operator().await;
    assert_eq!(sandbox.metrics.reconciles.get() - before, 1);
}

#[tokio::test(start_paused = true)]
async fn a_pool_whose_pods_keep_changing_is_reconciled_once_a_window_and_not_held_back() {
    let (mut sandbox, pods) = converged_pool_of_four().await;
    let before = sandbox.metrics.reconciles.get();
    // For 10 s one of the pods turns unready or ready again every 100 ms.
    for step in 0..100 {
        let pod = &pods[step % 4];
        set_ready(&sandbox, pod, step / 4 % 2 == 1);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let busy = sandbox.metrics.reconciles.get() - before;
    // One at the first change, then one per 2 s window: neither one per change nor none
    // until the pods are quiet.
    assert!(
        (5..=7).contains(&busy),
        "{busy} reconciles in 10 busy seconds"
    );
    // The simulation's clock stood still meanwhile: the operator's alone moves on.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    sandbox.stop_operator().await;
    let after = sandbox.metrics.reconciles.get() - before - busy;
    assert_eq!(
        after, 1,
        "the last window's changes are read once the pods are quiet"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_request_is_cut_by_a_sync_workers_timeout_and_by_no_other_class() {
    // Requests of 120 s against the sample's --timeout 90: sync kills the worker, gthread lets
    // them run.
    let slow = Scenario::from_yaml(
        "name: slow-requests\nbootSeconds: 10\nbootJitter: 0\nslowRequestSeconds: 120\n",
    )
    .expect("scenario");
    let with_class = |class: &str| {
        let mut pool = pool(1, 1);
        pool["spec"]["template"]["spec"]["containers"][0]["command"] =
            json!(["gunicorn", "-k", class, "shop.wsgi"]);
        pool
    };

    let mut sync = sandbox(with_class("sync"), slow.clone());
    sync.run_for(300).await;
    let report = Report::of(&sync);
    sync.stop_operator().await;
    assert!(
        exits(
            &report,
            "in the middle of a 120s request after --timeout 90s"
        ) >= 2,
        "{:?}",
        report.timeline
    );
    assert_eq!(exits(&report, "ran to its end"), 0);

    let mut threaded = sandbox(with_class("gthread"), slow);
    threaded.run_for(300).await;
    let report = Report::of(&threaded);
    threaded.stop_operator().await;
    assert_eq!(
        exits(&report, "in the middle of"),
        0,
        "{:?}",
        report.timeline
    );
    assert_eq!(
        exits(
            &report,
            "a 120s request ran to its end: under worker class gthread, --timeout 90s is a heartbeat"
        ),
        1
    );
    // The pool says why: a warning on the pool, not a stall.
    let conflict = condition(&report, "PolicyConflict");
    assert_eq!(conflict["status"], "True", "{conflict}");
    assert!(
        conflict["message"]
            .as_str()
            .is_some_and(|m| m.contains("heartbeat")),
        "{conflict}"
    );
    assert_eq!(condition(&report, "Stalled")["status"], "False");
}

/// A healthy sandbox whose server keeps only 20 changes: a watch away for more cannot resume
/// (410 Gone) and relists.
fn forgetful(seed: u64) -> Sandbox {
    Sandbox::new(Options {
        server: ServerConfig {
            history_limit: 20,
            seed,
        },
        ..Options::new(scenario("healthy"), seed)
    })
}

#[tokio::test(start_paused = true)]
async fn a_pool_deleted_while_the_watch_was_away_leaves_no_metric_behind() {
    use workerpool_sandbox::apiserver::{Target, Write};
    let pools = &RESOURCES[6];
    let mut sandbox = forgetful(3);
    let mut web = pool(2, 2);
    web["metadata"]["name"] = json!("web");
    sandbox.add_pool(pool(2, 2)).expect("pool");
    sandbox.add_pool(web).expect("web");
    sandbox.start_operator();
    sandbox.run_for(90).await;
    let series = |sandbox: &Sandbox, pool: &str| {
        let text = sandbox.metrics.encode();
        text.lines()
            .filter(|l| l.contains(&format!("pool=\"{pool}\"")))
            .count()
    };
    assert!(series(&sandbox, "web") > 0);
    // The watches drop; before they are back, `web` is deleted and more changes than the server
    // keeps follow, so no watch can resume where it was (410 Gone): the pool watch relists and
    // no Delete event ever tells of `web`.
    sandbox.server.drop_watches();
    sandbox
        .server
        .delete(pools, "shop", "web", None, None)
        .expect("deleted");
    for n in 0..30 {
        sandbox
            .server
            .write(
                pools,
                "shop",
                "shop-api",
                Target::Main,
                Write::Merge(json!({"metadata": {"annotations": {"touch": n.to_string()}}})),
                Some("kubectl"),
            )
            .expect("touched");
    }
    sandbox.run_for(30).await;
    assert_eq!(series(&sandbox, "web"), 0, "{}", sandbox.metrics.encode());
    assert!(series(&sandbox, "shop-api") > 0);
    sandbox.stop_operator().await;
}

#[tokio::test(start_paused = true)]
async fn a_pool_is_not_judged_on_pods_the_watch_is_relisting() {
    use workerpool_sandbox::apiserver::{Target, Write};
    let pools = &RESOURCES[6];
    let mut sandbox = forgetful(4);
    sandbox.add_pool(pool(4, 2)).expect("pool");
    sandbox.start_operator();
    sandbox.run_for(200).await;
    let before = Report::of(&sandbox);
    assert_eq!(status(&before)["phase"], "Ready");
    // The watches drop and cannot resume (more changes than the server keeps, 410 Gone), and the
    // pods cannot be listed again for a while; meanwhile the pool's template changes.
    sandbox.server.inject(Fault {
        verb: Some("list"),
        kind: Some("Pod"),
        code: 500,
        times: u32::MAX,
        ..Fault::default()
    });
    sandbox.server.drop_watches();
    for n in 0..30 {
        let template = json!({"spec": {"template": {"metadata": {"annotations": {"rollout": n.to_string()}}}}});
        sandbox
            .server
            .write(
                pools,
                "shop",
                "shop-api",
                Target::Main,
                Write::Merge(template),
                Some("kubectl"),
            )
            .expect("changed");
    }
    let writes_before = writes(&sandbox);
    sandbox.run_for(60).await;
    assert_eq!(
        writes(&sandbox),
        writes_before,
        "nothing is written on pods known to be out of date"
    );
    let waiting = Report::of(&sandbox);
    assert_eq!(status(&waiting)["revision"], status(&before)["revision"]);
    assert_eq!(status(&waiting)["phase"], "Ready");

    sandbox.server.clear_faults();
    sandbox.run_for(400).await;
    let after = Report::of(&sandbox);
    assert_ne!(status(&after)["revision"], status(&before)["revision"]);
    assert_eq!(status(&after)["phase"], "Ready", "{}", status(&after));
    sandbox.stop_operator().await;
}

/// The bundled celery sample with `replicas` and a warm shutdown of `graceful` seconds.
fn celery(replicas: i64, graceful: i64) -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/samples/celery-worker.yaml"
    ))
    .expect("sample");
    let mut pool: Value = serde_yaml::from_str(&text).expect("yaml");
    pool["spec"]["replicas"] = json!(replicas);
    pool["spec"]["policy"]["boot"]["maxConcurrent"] = json!(replicas);
    pool["spec"]["policy"]["shutdown"]["gracefulTimeoutSeconds"] = json!(graceful);
    pool
}

#[tokio::test(start_paused = true)]
async fn a_warm_shutdown_shorter_than_the_task_is_cut_and_said_and_a_long_enough_one_is_nothing() {
    // Tasks of 240 s; the pool is halved after 5 minutes, in the middle of the second task.
    let mut short = Sandbox::new(Options::new(scenario("long-tasks"), 6));
    short.add_pool(celery(4, 60)).expect("pool");
    short.start_operator();
    short.run_for(420).await;
    let report = Report::of(&short);
    assert_eq!(
        abort_count(&report, "GracePeriodExceeded"),
        2,
        "each removed worker was SIGKILLed mid-task: {}",
        status(&report)
    );
    let hint = status(&report)["aborts"]["last"]["hint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        hint.contains("warm shutdown was still waiting for running tasks")
            && hint.contains("terminationGracePeriodSeconds 65s")
            && hint.contains("300s"),
        "{hint}"
    );
    let conflict = condition(&report, "PolicyConflict");
    assert_eq!(conflict["status"], "True", "{conflict}");
    short.stop_operator().await;

    // The sample's warm shutdown outlasts its tasks: they finish, and nothing is an abort.
    let mut long = Sandbox::new(Options::new(scenario("long-tasks"), 6));
    long.add_pool(celery(4, 300)).expect("pool");
    long.start_operator();
    // Past the grace period of the workers removed at 300 s: their tasks ended at about 500 s.
    long.run_for(700).await;
    let report = Report::of(&long);
    assert_eq!(
        abort_count(&report, "GracePeriodExceeded"),
        0,
        "{}",
        status(&report)
    );
    assert_eq!(status(&report)["readyReplicas"], 2, "{}", status(&report));
    long.stop_operator().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_cannot_reach_its_broker_is_named_and_the_pool_is_ready_once_it_is_back() {
    let mut sandbox = Sandbox::new(Options::new(scenario("broker-down"), 8));
    sandbox.add_pool(celery(2, 300)).expect("pool");
    sandbox.start_operator();
    sandbox.run_for(100).await;
    let report = Report::of(&sandbox);
    assert!(
        abort_count(&report, "BrokerUnreachable") >= 1,
        "{}",
        status(&report)
    );
    assert_ne!(status(&report)["phase"], "Ready");
    let text = status(&report).to_string();
    assert!(text.contains("redis://redis.shop:6379/0"), "{text}");
    assert!(!text.contains("**@"), "{text}");
    sandbox.run_for(400).await;
    let report = Report::of(&sandbox);
    // Ready once the broker is back; the boots it failed do not open the circuit, which only a
    // spec change would close. The aborts stay Degraded until they leave the window.
    assert_eq!(
        condition(&report, "Ready")["status"],
        "True",
        "{}",
        status(&report)
    );
    assert_eq!(
        condition(&report, "Stalled")["status"],
        "False",
        "{}",
        status(&report)
    );
    assert_eq!(status(&report)["readyReplicas"], 2, "{}", status(&report));
    assert!(
        abort_count(&report, "StartupTimeout") >= 2,
        "the probe's kills are counted"
    );
    sandbox.stop_operator().await;
}

#[tokio::test(start_paused = true)]
async fn a_growing_child_is_recycled_at_the_derived_limit_and_oom_killed_without_it() {
    let mut derived = Sandbox::new(Options::new(scenario("child-memory"), 9));
    derived.add_pool(celery(1, 300)).expect("pool");
    derived.start_operator();
    derived.run_for(900).await;
    let report = Report::of(&derived);
    assert!(exits(&report, "recycled after its task at --max-memory-per-child") >= 1);
    assert_eq!(exits(&report, "the kernel OOM-killed pool child"), 0);
    derived.stop_operator().await;

    // The app's own configuration decides (an empty variable): nothing recycles the children.
    let mut pool = celery(1, 300);
    pool["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "CELERY_WORKER_MAX_MEMORY_PER_CHILD", "value": ""}]);
    let mut unbounded = Sandbox::new(Options::new(scenario("child-memory"), 9));
    unbounded.add_pool(pool).expect("pool");
    unbounded.start_operator();
    unbounded.run_for(900).await;
    let report = Report::of(&unbounded);
    assert!(
        exits(&report, "the kernel OOM-killed pool child") >= 1,
        "{:?}",
        report.timeline.iter().rev().take(5).collect::<Vec<_>>()
    );
    assert_eq!(exits(&report, "recycled after its task"), 0);
    // The worker runs on: its container never ended.
    assert_eq!(exits(&report, "OOMKilled"), 0);
    unbounded.stop_operator().await;
}

#[tokio::test(start_paused = true)]
async fn tasks_longer_than_the_time_limit_are_killed_by_billiard_and_the_worker_runs_on() {
    let mut pool = celery(1, 300);
    pool["spec"]["policy"]["requests"]["timeoutSeconds"] = json!(60);
    let mut sandbox = Sandbox::new(Options::new(scenario("long-tasks"), 10));
    sandbox.add_pool(pool).expect("pool");
    sandbox.start_operator();
    sandbox.run_for(280).await;
    let report = Report::of(&sandbox);
    let kills = exits(&report, "whose task outlived the hard time limit (60s)");
    assert!(kills >= 3, "{kills}");
    assert_eq!(status(&report)["phase"], "Ready", "{}", status(&report));
    sandbox.stop_operator().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_without_cpus_forks_a_child_per_node_cpu_and_they_do_not_fit() {
    let mut pool = celery(1, 300);
    pool["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"limits": {"memory": "512Mi"}});
    let mut sandbox = Sandbox::new(Options::new(scenario("child-memory"), 11));
    sandbox.add_pool(pool).expect("pool");
    sandbox.start_operator();
    sandbox.run_for(120).await;
    let report = Report::of(&sandbox);
    let conflict = condition(&report, "PolicyConflict");
    assert!(
        conflict["message"]
            .as_str()
            .is_some_and(|m| m.contains("one child per CPU of the node")),
        "{conflict}"
    );
    // 16 children of 60 MiB and the main process do not fit in 512 MiB from the first second.
    assert!(exits(&report, "the kernel OOM-killed pool child") >= 5);
    sandbox.stop_operator().await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_worker_stops_at_once_whatever_its_tasks_take() {
    // 4-minute tasks, but one every 10 minutes: when the pool is halved at 5 minutes no task
    // runs, and the warm shutdown has nothing to wait for.
    let text = "taskSeconds: 240\ntaskEverySeconds: 600\nbootSeconds: 15\n\
                actions: [{atSeconds: 300, scaleFactor: 0.5}]\n";
    let scenario = Scenario::from_yaml(text).expect("scenario");
    let mut sandbox = Sandbox::new(Options::new(scenario, 12));
    sandbox.add_pool(celery(4, 60)).expect("pool");
    sandbox.start_operator();
    sandbox.run_for(420).await;
    let report = Report::of(&sandbox);
    assert_eq!(
        abort_count(&report, "GracePeriodExceeded"),
        0,
        "{}",
        status(&report)
    );
    assert_eq!(exits(&report, "warm shutdown waits"), 0);
    sandbox.stop_operator().await;
}
