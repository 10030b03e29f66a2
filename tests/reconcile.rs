//! The reconcile pipeline against the sandbox's in-memory API server, counting every request and its shape.

mod harness;

use std::sync::Arc;

use harness::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use serde_json::json;
use std::time::Duration;
use workerpool_core::api::{DisruptionBudget, WorkerPool};

use workerpool_core::controller::watched::Guarded;
use workerpool_core::controller::{Error, error_policy, reconcile};
use workerpool_core::status::PROGRESS_INTERVAL;

/// Pools `api` and `web` of two replicas each, not yet reconciled.
async fn two_pools() -> Harness {
    harness(
        vec![
            pool("api", json!({"replicas": 2})),
            pool("web", json!({"replicas": 2})),
        ],
        vec![],
    )
    .await
}

/// A two-replica pool that has converged: its next reconcile makes no request.
async fn at_rest() -> Harness {
    let mut h = harness(vec![pool("api", json!({"replicas": 2}))], vec![]).await;
    h.converge("api").await;
    h.reconcile("api").await;
    assert_eq!(h.requests.total(), 0, "converged: {:?}", h.writes());
    h
}

#[tokio::test]
async fn a_template_change_is_written_at_its_generation_and_not_ready_on_the_old_pods() {
    let mut h = at_rest().await;
    assert_eq!(
        condition(&h.pool("api").await.status.unwrap(), "Ready").status,
        "True"
    );
    h.patch_spec(
        "api",
        json!({"template": {"metadata": {"annotations": {"release": "2"}}}}),
    )
    .await;
    h.sync_caches().await;
    h.reconcile("api").await;
    let pool = h.pool("api").await;
    let status = pool.status.expect("status");
    assert_eq!(Some(status.observed_generation), pool.metadata.generation);
    let ready = condition(&status, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Progressing")
    );
    assert_eq!(condition(&status, "Reconciling").status, "True");
    // The Deployment controller has rolled out the new template: Ready again.
    h.all_pods_ready("api").await;
    h.reconcile("api").await;
    let status = h.pool("api").await.status.expect("status");
    assert_eq!(condition(&status, "Ready").status, "True", "{status:?}");
}

#[tokio::test]
async fn first_reconcile_creates_children_and_status() {
    let mut h = harness(vec![pool("api", json!({}))], vec![]).await;
    h.reconcile("api").await;
    let writes = h.writes();
    assert!(writes.contains(&"patch api".to_string()), "{writes:?}");
    let deployment = h.deployment("api").await.expect("Deployment created");
    assert_eq!(replicas(&deployment), 2, "first step is maxConcurrent");
    let owner = &deployment
        .metadata
        .owner_references
        .as_ref()
        .expect("owner")[0];
    assert_eq!(
        Some(&owner.uid),
        h.pool("api").await.metadata.uid.as_ref(),
        "owned by the pool"
    );
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(h.client.clone(), NS);
    assert!(
        pdbs.get_opt("api").await.unwrap().is_some(),
        "PodDisruptionBudget created"
    );
    let status = h.pool("api").await.status.expect("status written");
    assert_eq!(status.observed_generation, 1);
    assert_eq!(status.selector.as_deref(), Some("workerpool.dev/pool=api"));
    assert_eq!(condition(&status, "Ready").status, "False");
    assert_eq!(condition(&status, "Reconciling").status, "True");
    assert_eq!(condition(&status, "Stalled").status, "False");
    assert!(condition(&status, "Ready").observed_generation == Some(1));
    let effective = status.effective.expect("effective numbers");
    assert_eq!(effective.termination_grace_period_seconds, 40);
}

#[tokio::test]
async fn converged_pool_costs_no_requests() {
    let mut h = harness(vec![pool("api", json!({"replicas": 2}))], vec![]).await;
    h.converge("api").await;
    let status = h.pool("api").await.status.expect("status");
    assert_eq!(condition(&status, "Ready").status, "True", "{status:?}");
    h.reconcile("api").await;
    assert_eq!(
        h.requests.total(),
        0,
        "converged pool made requests: {:?}",
        h.writes()
    );
    h.reconcile("api").await;
    assert_eq!(
        h.requests.total(),
        0,
        "converged pool made requests: {:?}",
        h.writes()
    );
}

#[tokio::test]
async fn ramp_grows_only_when_the_previous_step_is_ready() {
    let mut h = harness(vec![pool("api", json!({"replicas": 5}))], vec![]).await;
    h.reconcile("api").await;
    assert_eq!(replicas(&h.deployment("api").await.unwrap()), 2);
    // Not ready yet: the target holds.
    h.reconcile("api").await;
    assert_eq!(replicas(&h.deployment("api").await.unwrap()), 2);
    for expected in [4, 5] {
        h.all_pods_ready("api").await;
        h.reconcile("api").await;
        assert_eq!(replicas(&h.deployment("api").await.unwrap()), expected);
        let status = h.pool("api").await.status.unwrap();
        assert_eq!(status.ramp_target, Some(expected));
    }
    h.all_pods_ready("api").await;
    h.reconcile("api").await;
    assert_eq!(
        condition(&h.pool("api").await.status.unwrap(), "Ready").status,
        "True"
    );
}

#[tokio::test]
async fn scale_down_is_immediate() {
    let mut h = harness(vec![pool("api", json!({"replicas": 2}))], vec![]).await;
    h.reconcile("api").await;
    h.all_pods_ready("api").await;
    let api: Api<WorkerPool> = Api::namespaced(h.client.clone(), NS);
    api.patch(
        "api",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    h.reconcile("api").await;
    assert_eq!(replicas(&h.deployment("api").await.unwrap()), 1);
}

#[tokio::test]
async fn changed_spec_updates_the_deployment_once() {
    let mut h = harness(vec![pool("api", json!({"replicas": 2}))], vec![]).await;
    h.converge("api").await;
    h.patch_spec("api", json!({"policy": {"shutdown": {"drainSeconds": 10}}}))
        .await;
    h.reconcile("api").await;
    let deployment_writes = h.writes().iter().filter(|w| *w == "patch api").count();
    // One apply of the Deployment (the PDB is unchanged), then the status.
    assert_eq!(deployment_writes, 1, "{:?}", h.writes());
    let pod = h
        .deployment("api")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert_eq!(pod.termination_grace_period_seconds, Some(10 + 30 + 5));
}

#[tokio::test]
async fn a_budget_that_would_protect_nothing_is_deleted_once_by_uid_and_then_costs_nothing() {
    let mut h = at_rest().await;
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(h.client.clone(), NS);
    let uid = budgets.get("api").await.expect("budget").metadata.uid;
    // maxUnavailable 2 of 2 replicas: every pod may go, so the budget protects nothing.
    h.patch_spec(
        "api",
        json!({"policy": {"disruption": {"maxUnavailable": 2}}}),
    )
    .await;
    h.reconcile("api").await;
    let deletes: Vec<_> = h
        .requests
        .served()
        .into_iter()
        .filter(|r| r.verb == "delete")
        .collect();
    let [delete] = deletes.as_slice() else {
        panic!("one delete: {:?}", h.writes());
    };
    assert_eq!(delete.resource, "poddisruptionbudgets");
    assert_eq!(
        delete.shape.precondition_uid, uid,
        "names the uid it deletes"
    );
    assert!(budgets.get_opt("api").await.expect("read").is_none());
    let status = h.pool("api").await.status.expect("status");
    assert_eq!(
        status.effective.map(|e| e.disruption_budget),
        Some(DisruptionBudget::NothingToProtect)
    );
    h.reconcile("api").await;
    assert_eq!(h.requests.total(), 0, "{:?}", h.writes());
}

#[tokio::test]
async fn a_changed_disruption_budget_is_applied_once_and_the_deployment_left_alone() {
    let mut h = at_rest().await;
    h.patch_spec(
        "api",
        json!({"policy": {"disruption": {"maxUnavailable": "50%"}}}),
    )
    .await;
    let deployment_before = h.deployment("api").await.expect("deployment");
    h.reconcile("api").await;
    // One apply, of the budget: the Deployment derived from the new spec is what runs already.
    let applies = h.writes().iter().filter(|w| *w == "patch api").count();
    assert_eq!(applies, 1, "{:?}", h.writes());
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(h.client.clone(), NS);
    let budget = budgets.get("api").await.expect("budget");
    assert_eq!(
        budget.spec.and_then(|s| s.max_unavailable),
        Some(IntOrString::String("50%".into()))
    );
    let deployment_after = h.deployment("api").await.expect("deployment");
    assert_eq!(
        deployment_before.metadata.resource_version,
        deployment_after.metadata.resource_version
    );

    h.reconcile("api").await;
    assert_eq!(h.requests.total(), 0, "converged again: {:?}", h.writes());
}

#[tokio::test]
async fn a_field_the_operator_no_longer_sets_is_noticed_and_applied_once() {
    let mut h = at_rest().await;
    // As an earlier operator left it: a field this one does not derive, its own stamp.
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), NS);
    deployments
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {"workerpool.dev/applied": "0123456789abcdef"}},
                "spec": {"minReadySeconds": 7}
            })),
        )
        .await
        .expect("an older operator's Deployment");
    h.sync_caches().await;
    h.reconcile("api").await;
    let applies = h.writes().iter().filter(|w| *w == "patch api").count();
    assert_eq!(applies, 1, "re-applied: {:?}", h.writes());
    let stamped = h.deployment("api").await.expect("deployment");
    assert_ne!(
        stamped
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("workerpool.dev/applied"))
            .map(String::as_str),
        Some("0123456789abcdef")
    );
    h.reconcile("api").await;
    assert_eq!(h.requests.total(), 0, "then at rest: {:?}", h.writes());
}

#[tokio::test]
async fn a_deployment_edited_by_hand_is_set_back_once() {
    let mut h = at_rest().await;
    let derived = h.deployment("api").await.expect("deployment");
    let grace = derived
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.termination_grace_period_seconds);

    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), NS);
    deployments
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"spec": {"terminationGracePeriodSeconds": 1}}}}),
            ),
        )
        .await
        .expect("edited by hand");
    h.sync_caches().await;
    h.reconcile("api").await;
    let applies = h.writes().iter().filter(|w| *w == "patch api").count();
    assert_eq!(applies, 1, "the edit is set back: {:?}", h.writes());
    let restored = h.deployment("api").await.expect("deployment");
    assert_eq!(
        restored
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|p| p.termination_grace_period_seconds),
        grace
    );
    h.sync_caches().await;
    h.reconcile("api").await;
    assert_eq!(
        h.requests.total(),
        0,
        "and then left alone: {:?}",
        h.writes()
    );
}

fn foreign_deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": {"team": "other"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "other"}},
            "template": {"metadata": {"labels": {"app": "other"}}, "spec": {"containers": [{"name": "x", "image": "other:1"}]}}
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn foreign_deployment_is_left_alone_and_reported() {
    let mut h = harness(
        vec![pool("api", json!({}))],
        vec![foreign_deployment("api")],
    )
    .await;
    h.reconcile("api").await;
    let deployment = h.deployment("api").await.unwrap();
    assert_eq!(deployment, foreign_deployment_after_store(&deployment));
    assert_eq!(replicas(&deployment), 3);
    assert!(
        deployment.metadata.owner_references.is_none(),
        "not adopted"
    );
    assert!(
        h.writes().iter().all(|w| w != "patch api"),
        "{:?}",
        h.writes()
    );
    let status = h.pool("api").await.status.unwrap();
    assert_stalled(&status, "ChildNotOwned", "Deployment shop/api");
}

/// The foreign object as stored, to compare before and after: only its own fields.
fn foreign_deployment_after_store(stored: &Deployment) -> Deployment {
    let mut expected = foreign_deployment("api");
    expected.metadata = stored.metadata.clone();
    expected.status = stored.status.clone();
    expected
}

#[tokio::test]
async fn invalid_pool_stalls_and_leaves_the_running_deployment_untouched() {
    let mut h = harness(vec![pool("api", json!({"replicas": 2}))], vec![]).await;
    h.converge("api").await;
    let before = h.deployment("api").await.unwrap();
    let api: Api<WorkerPool> = Api::namespaced(h.client.clone(), NS);
    api.patch(
        "api",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"container": "web", "replicas": 9}})),
    )
    .await
    .unwrap();
    h.reconcile("api").await;
    assert!(
        h.writes().iter().all(|w| w != "patch api"),
        "Deployment was written: {:?}",
        h.writes()
    );
    let after = h.deployment("api").await.unwrap();
    assert_eq!(before.spec, after.spec);
    let status = h.pool("api").await.status.unwrap();
    assert_stalled(&status, "InvalidSpec", "spec.container");
    assert_eq!(condition(&status, "Ready").status, "False");
    assert!(
        status.effective.is_some(),
        "the last applied numbers stay published"
    );
    // A stalled pool does not loop: the next reconcile writes nothing.
    h.reconcile("api").await;
    assert_eq!(h.requests.total(), 0, "{:?}", h.writes());
}

#[tokio::test]
async fn template_conflict_sets_a_condition_naming_both_numbers() {
    let spec = json!({"template": {"spec": {"terminationGracePeriodSeconds": 10, "containers": [
        {"name": "app", "image": "example/app:1", "ports": [{"name": "http", "containerPort": 8000}]}
    ]}}});
    let mut h = harness(vec![pool("api", spec)], vec![]).await;
    h.reconcile("api").await;
    let status = h.pool("api").await.status.unwrap();
    let conflict = condition(&status, "PolicyConflict");
    assert_eq!(conflict.status, "True");
    assert!(
        conflict.message.contains("10") && conflict.message.contains("35"),
        "{}",
        conflict.message
    );
}

#[tokio::test]
async fn status_transition_time_moves_only_on_a_flip() {
    let mut h = harness(vec![pool("api", json!({"replicas": 4}))], vec![]).await;
    h.reconcile("api").await;
    h.reconcile("api").await;
    let first = condition(&h.pool("api").await.status.unwrap(), "Ready")
        .last_transition_time
        .clone();
    h.advance(30);
    h.all_pods_ready("api").await;
    h.reconcile("api").await;
    let status = h.pool("api").await.status.unwrap();
    // Still ramping (2 → 4): the message changed, the status did not.
    let ready = condition(&status, "Ready");
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("target 4"), "{}", ready.message);
    assert_eq!(ready.last_transition_time, first);
    h.advance(30);
    h.all_pods_ready("api").await;
    h.reconcile("api").await;
    let ready = condition(&h.pool("api").await.status.unwrap(), "Ready").clone();
    assert_eq!(ready.status, "True");
    assert_eq!(
        ready.last_transition_time.0,
        first.0 + jiff::SignedDuration::from_secs(60)
    );
}

#[tokio::test]
async fn malformed_pool_gets_a_warning_event() {
    let h = harness(vec![], vec![]).await;
    let invalid = InvalidObject {
        error: "spec.runtime: unknown variant `php`".into(),
        metadata: kube::core::ObjectMeta {
            name: Some("broken".into()),
            namespace: Some(NS.into()),
            uid: Some("uid-broken".into()),
            ..Default::default()
        },
    };
    h.requests.start();
    reconcile(Arc::new(Guarded(Err(invalid))), h.ctx.clone())
        .await
        .expect("reconcile");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(h.client.clone(), NS);
    let list = events
        .list(&ListParams::default())
        .await
        .expect("list events");
    let event = list.items.first().expect("an Event was published");
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.reason.as_deref(), Some("InvalidSpec"));
    assert!(
        event
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("unknown variant"),
        "{event:?}"
    );
    assert_eq!(
        event.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("broken")
    );
}

#[tokio::test]
async fn first_reconcile_publishes_a_created_event() {
    let mut h = harness(vec![pool("api", json!({}))], vec![]).await;
    h.reconcile("api").await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(h.client.clone(), NS);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert_eq!(reasons, ["Created"]);
}

#[tokio::test]
async fn a_cache_behind_the_last_status_write_does_not_write_it_again() {
    let mut h = harness(vec![pool("api", json!({"replicas": 2}))], vec![]).await;
    h.reconcile("api").await;
    let stale = h.pool("api").await;
    h.all_pods_ready("api").await;
    h.reconcile_object(stale.clone()).await;
    assert!(
        h.writes().contains(&"patch status api".to_string()),
        "the ready count is written: {:?}",
        h.writes()
    );
    let written = h.pool("api").await;
    assert_ne!(
        written.metadata.resource_version, stale.metadata.resource_version,
        "the write produced a new version"
    );

    // The watch has not delivered that write yet: the same stale pool comes back.
    h.reconcile_object(stale.clone()).await;
    assert_eq!(
        h.requests.total(),
        0,
        "a status the server already holds is not sent again: {:?}",
        h.writes()
    );
    // Nor once the cache has caught up.
    h.reconcile_object(written).await;
    assert_eq!(h.requests.total(), 0, "{:?}", h.writes());
}

#[tokio::test]
async fn the_watch_catching_up_lets_go_of_the_written_status() {
    let mut h = harness(vec![pool("api", json!({"replicas": 2}))], vec![]).await;
    h.reconcile("api").await;
    let stale = h.pool("api").await;
    h.all_pods_ready("api").await;
    h.reconcile_object(stale.clone()).await;
    assert_eq!(h.ctx.remembered_pools(), 1);
    h.ctx.pool_seen(&stale.metadata);
    assert_eq!(
        h.ctx.remembered_pools(),
        1,
        "a version older than the write keeps it"
    );
    h.ctx.pool_seen(&h.pool("api").await.metadata);
    assert_eq!(h.ctx.remembered_pools(), 0, "the cache holds the write");
}

#[tokio::test]
async fn a_status_changed_by_someone_else_is_read_from_the_cache() {
    let mut h = harness(vec![pool("api", json!({"replicas": 2}))], vec![]).await;
    h.converge("api").await;
    let api: Api<WorkerPool> = Api::namespaced(h.client.clone(), NS);
    api.patch_status(
        "api",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"readyReplicas": 0}})),
    )
    .await
    .expect("status edited by hand");
    h.reconcile("api").await;
    assert_eq!(h.writes(), ["patch status api"], "the edit is corrected");
    let status = h.pool("api").await.status.expect("status");
    assert_eq!(status.ready_replicas, 2);
}

#[tokio::test]
async fn progress_is_written_at_a_pace_and_a_change_of_state_at_once() {
    let spec = json!({"replicas": 4, "policy": {"boot": {"maxConcurrent": 4}}});
    let mut h = harness(vec![pool("api", spec)], vec![]).await;
    h.reconcile("api").await;
    h.pods_ready("api", Some(1)).await;
    h.reconcile("api").await;
    assert_eq!(
        h.writes(),
        ["patch status api"],
        "the Deployment is observed"
    );

    h.pods_ready("api", Some(2)).await;
    let action = h.reconcile("api").await;
    assert_eq!(h.writes(), Vec::<String>::new(), "one more pod Ready waits");
    assert_eq!(
        action,
        Action::requeue(PROGRESS_INTERVAL),
        "and the reconcile comes back when the wait is over"
    );
    assert_eq!(
        h.pool("api").await.status.expect("status").ready_replicas,
        1
    );

    h.advance(PROGRESS_INTERVAL.as_secs() as i64);
    h.reconcile("api").await;
    assert_eq!(h.writes(), ["patch status api"]);
    assert_eq!(
        h.pool("api").await.status.expect("status").ready_replicas,
        2
    );

    h.pods_ready("api", None).await;
    h.reconcile("api").await;
    assert_eq!(
        h.writes(),
        ["patch status api", "create Event"],
        "Ready flipping is written at once, with its Event"
    );
    let status = h.pool("api").await.status.expect("status");
    assert_eq!(status.ready_replicas, 4);
    assert_eq!(condition(&status, "Ready").status, "True");
}

#[tokio::test]
async fn a_deleted_pool_is_forgotten() {
    let with_init =
        json!({"replicas": 2, "policy": {"init": {"command": ["python", "manage.py", "migrate"]}}});
    let mut h = harness(vec![pool("api", with_init)], vec![]).await;
    h.reconcile("api").await;
    assert!(
        h.writes().iter().any(|w| w.starts_with("patch api-init-")),
        "the init Job is applied: {:?}",
        h.writes()
    );
    assert_eq!(
        h.ctx.remembered_pools(),
        1,
        "its last status write is remembered"
    );
    assert_eq!(
        h.ctx.folded_pools(),
        0,
        "state-change Events are never folded, so no recorder is kept for them"
    );
    assert_eq!(
        h.ctx.paced_pools(),
        1,
        "and when its status was written, to pace progress"
    );
    let deleted = h.pool("api").await;
    h.ctx.pool_deleted(&deleted.metadata);
    assert_eq!(h.ctx.remembered_pools(), 0);
    assert_eq!(h.ctx.paced_pools(), 0);
    assert_eq!(h.ctx.folded_pools(), 0);
}

#[tokio::test]
async fn a_written_status_is_let_go_once_the_cache_holds_it() {
    let mut h = harness(vec![pool("api", json!({"replicas": 2}))], vec![]).await;
    h.reconcile("api").await;
    assert_eq!(h.ctx.remembered_pools(), 1, "the cache is behind the write");
    // Until the pool settles each reconcile may write again; the one after writes nothing.
    for _ in 0..5 {
        h.sync_caches().await;
        h.reconcile("api").await;
        if h.requests.total() == 0 {
            break;
        }
    }
    assert_eq!(h.requests.total(), 0, "{:?}", h.writes());
    assert_eq!(
        h.ctx.remembered_pools(),
        0,
        "a reconcile from a cache that holds the write keeps no copy"
    );
}

#[tokio::test]
async fn failures_back_off_per_pool_and_a_success_starts_over() {
    let mut h = two_pools().await;
    let (api, web) = (h.pool("api").await, h.pool("web").await);
    let failed = || Error::Metadata("name");
    let ctx = h.ctx.clone();
    let backoff = |pool: &WorkerPool| error_policy(guarded(pool), &failed(), ctx.clone());
    assert_eq!(backoff(&api), Action::requeue(Duration::from_secs(5)));
    assert_eq!(backoff(&api), Action::requeue(Duration::from_secs(10)));
    assert_eq!(
        backoff(&web),
        Action::requeue(Duration::from_secs(5)),
        "another pool's failures are its own"
    );
    h.reconcile("api").await;
    assert_eq!(
        backoff(&api),
        Action::requeue(Duration::from_secs(5)),
        "a successful reconcile resets the count"
    );
}

#[tokio::test]
async fn a_refused_apply_stalls_the_pool_with_an_event_and_backs_off() {
    let mut h = harness(vec![pool("api", json!({"replicas": 2}))], vec![]).await;
    h.requests.refuse("api");
    let guard = guarded(&h.pool("api").await);
    h.requests.start();
    let error = reconcile(guard.clone(), h.ctx.clone())
        .await
        .expect_err("the refusal is an error, for back-off");
    assert_eq!(error.category(), "apply");
    let first = error_policy(guard.clone(), &error, h.ctx.clone());
    let second = error_policy(guard, &error, h.ctx.clone());
    assert!(
        second != first,
        "the retry backs off: {first:?} then {second:?}"
    );

    let status = h.pool("api").await.status.expect("the refusal is written");
    assert_stalled(&status, "WriteRefused", "Deployment shop/api (422 Invalid)");
    assert_stalled(&status, "WriteRefused", "metadata.labels: Invalid value");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(h.client.clone(), NS);
    let events = events.list(&ListParams::default()).await.expect("events");
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("WriteRefused")
                && e.type_.as_deref() == Some("Warning")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("Deployment shop/api"))),
        "{:?}",
        events.items
    );

    // Once the server accepts it, the stall is gone.
    h.requests.accept();
    h.reconcile("api").await;
    let status = h.pool("api").await.status.expect("status");
    assert_eq!(condition(&status, "Stalled").status, "False");
    assert!(h.deployment("api").await.is_some());
}

#[tokio::test]
async fn children_and_status_are_server_side_applies_under_their_own_field_managers() {
    let mut h = harness(vec![pool("api", json!({"replicas": 2}))], vec![]).await;
    h.reconcile("api").await;
    let writes: Vec<_> = h
        .requests
        .served()
        .into_iter()
        .filter(|r| r.is_write() && r.kind != "Event")
        .collect();
    let shapes: Vec<(String, Option<&str>, Option<&str>, bool)> = writes
        .iter()
        .map(|r| {
            (
                format!("{} {}", r.kind, r.subresource.as_deref().unwrap_or("")),
                r.shape.patch,
                r.shape.field_manager.as_deref(),
                r.shape.force,
            )
        })
        .collect();
    // Every child is applied by the operator's manager, forcing its own fields; the status has a
    // manager of its own, so its apply holds exactly what was computed.
    assert!(
        writes.iter().all(|r| r.verb == "patch"),
        "patches only: {shapes:?}"
    );
    for (what, patch, manager, force) in &shapes {
        assert_eq!(*patch, Some("apply"), "{what}: {shapes:?}");
        let expected = if what.ends_with("status") {
            "workerpool-operator-status"
        } else {
            "workerpool-operator"
        };
        assert_eq!(*manager, Some(expected), "{what}: {shapes:?}");
        assert!(*force, "{what} forces: {shapes:?}");
    }
    let kinds: Vec<&str> = shapes.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        kinds,
        ["Deployment ", "PodDisruptionBudget ", "WorkerPool status"],
        "{shapes:?}"
    );
}

#[tokio::test]
async fn a_relist_forgets_the_pools_deleted_while_the_watch_was_away_metrics_included() {
    let mut h = two_pools().await;
    h.converge("api").await;
    h.converge("web").await;
    let series = |h: &Harness, pool: &str| {
        h.ctx
            .metrics
            .encode()
            .lines()
            .filter(|l| l.contains(&format!("pool=\"{pool}\"")))
            .count()
    };
    assert!(series(&h, "web") > 0);
    assert_eq!(h.ctx.paced_pools(), 2);
    // `web` was deleted while the watch was away: the relist holds `api` alone.
    let api = h.pool("api").await.metadata;
    h.ctx.pools_relisted(&[api]);
    assert_eq!(series(&h, "web"), 0, "{}", h.ctx.metrics.encode());
    assert!(series(&h, "api") > 0);
    assert_eq!(h.ctx.paced_pools(), 1);
}
