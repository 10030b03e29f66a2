//! The sandbox API server through the real `kube` client: each semantic the controller relies on.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use workerpool_sandbox::apiserver::http::Fault;
use workerpool_sandbox::apiserver::{ApiServer, ServerConfig};
use workerpool_sandbox::virtual_clock;

fn server() -> Arc<ApiServer> {
    ApiServer::new(virtual_clock(), ServerConfig::default())
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "shop:1"}]}
            }
        }
    }))
    .expect("deployment")
}

fn pod(name: &str, owner: Option<&Deployment>) -> Pod {
    let mut value = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 30, "containers": [{"name": "app", "image": "shop:1"}]}
    });
    if let Some(owner) = owner {
        value["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "Deployment", "controller": true,
            "name": owner.metadata.name, "uid": owner.metadata.uid,
        }]);
    }
    serde_json::from_value(value).expect("pod")
}

fn rv<K: kube::Resource>(object: &K) -> String {
    object.meta().resource_version.clone().unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn create_get_replace_and_delete_round_trip() {
    let server = server();
    let api: Api<Deployment> = Api::namespaced(server.client(), "shop");
    let created = api
        .create(&PostParams::default(), &deployment("web", 2))
        .await
        .expect("create");
    assert!(created.metadata.uid.is_some());
    assert_eq!(created.metadata.generation, Some(1));
    let duplicate = api
        .create(&PostParams::default(), &deployment("web", 2))
        .await
        .expect_err("exists");
    assert!(
        matches!(duplicate, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
    );

    let mut fetched = api.get("web").await.expect("get");
    assert_eq!(rv(&fetched), rv(&created));
    fetched.spec.as_mut().expect("spec").replicas = Some(5);
    let replaced = api
        .replace("web", &PostParams::default(), &fetched)
        .await
        .expect("replace");
    assert_eq!(replaced.metadata.generation, Some(2));

    // A replace carrying an outdated resourceVersion is a conflict, as on the real server.
    let stale = api
        .replace("web", &PostParams::default(), &fetched)
        .await
        .expect_err("stale");
    assert!(matches!(stale, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"));

    api.delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    let missing = api.get("web").await.expect_err("gone");
    assert!(matches!(missing, kube::Error::Api(s) if s.code == 404));
}

#[tokio::test(start_paused = true)]
async fn selectors_and_pagination() {
    let server = server();
    let api: Api<Pod> = Api::namespaced(server.client(), "shop");
    for name in ["a", "b", "c"] {
        api.create(&PostParams::default(), &pod(name, None))
            .await
            .expect("create");
    }
    let mut other = pod("d", None);
    other.metadata.labels = Some([("app".to_string(), "worker".to_string())].into());
    api.create(&PostParams::default(), &other)
        .await
        .expect("create");

    let web = api
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list");
    assert_eq!(web.items.len(), 3);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .expect("list");
    assert_eq!(by_name.items.len(), 1);
    let unsupported = api
        .list(&ListParams::default().fields("spec.priority=1"))
        .await
        .expect_err("unsupported field");
    assert!(
        matches!(unsupported, kube::Error::Api(s) if s.code == 400 && s.message.contains("spec.priority"))
    );

    let first = api
        .list(&ListParams::default().limit(2))
        .await
        .expect("page 1");
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().expect("continue token");
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("page 2");
    assert_eq!(second.items.len(), 2);
    assert!(second.metadata.continue_.is_none());
}

#[tokio::test(start_paused = true)]
async fn generation_counts_spec_changes_only_and_status_is_a_subresource() {
    let server = server();
    let api: Api<Deployment> = Api::namespaced(server.client(), "shop");
    api.create(&PostParams::default(), &deployment("web", 2))
        .await
        .expect("create");

    // The main resource ignores status; labels change metadata only.
    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"tier": "front"}}, "status": {"replicas": 9}}),
            ),
        )
        .await
        .expect("patch");
    assert_eq!(patched.metadata.generation, Some(1));
    assert!(patched.status.is_none());

    // The status subresource writes status only.
    let status = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"replicas": 7}, "status": {"replicas": 2, "readyReplicas": 1}}),
            ),
        )
        .await
        .expect("status");
    assert_eq!(status.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert_eq!(
        status.status.as_ref().and_then(|s| s.ready_replicas),
        Some(1)
    );
    assert_eq!(status.metadata.generation, Some(1));

    let spec = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("spec");
    assert_eq!(spec.metadata.generation, Some(2));
}

#[tokio::test(start_paused = true)]
async fn scale_subresource_reads_and_writes_spec_replicas() {
    let server = server();
    let api: Api<Deployment> = Api::namespaced(server.client(), "shop");
    api.create(&PostParams::default(), &deployment("web", 2))
        .await
        .expect("create");
    let scale = api.get_scale("web").await.expect("get scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(2));
    assert_eq!(
        scale.status.map(|s| s.selector),
        Some(Some("app=web".to_string()))
    );
    api.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .expect("patch scale");
    let after = api.get("web").await.expect("get");
    assert_eq!(after.spec.and_then(|s| s.replicas), Some(4));
    assert_eq!(after.metadata.generation, Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_write_that_changes_nothing_bumps_nothing_and_emits_no_event() {
    let server = server();
    let api: Api<Deployment> = Api::namespaced(server.client(), "shop");
    let params = PatchParams::apply("tester");
    let applied = api
        .patch("web", &params, &Patch::Apply(deployment("web", 2)))
        .await
        .expect("apply");
    let mut events = api
        .watch(&WatchParams::default(), &rv(&applied))
        .await
        .expect("watch")
        .boxed();

    let again = api
        .patch("web", &params, &Patch::Apply(deployment("web", 2)))
        .await
        .expect("re-apply");
    assert_eq!(rv(&again), rv(&applied));
    let merged = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("merge");
    assert_eq!(rv(&merged), rv(&applied));
    assert_eq!(server.resource_version().to_string(), rv(&applied));

    // The next real change is the first event the watch sees.
    api.patch("web", &params, &Patch::Apply(deployment("web", 3)))
        .await
        .expect("change");
    let first = tokio::time::timeout(Duration::from_secs(5), events.try_next())
        .await
        .expect("an event")
        .expect("ok")
        .expect("some");
    match first {
        WatchEvent::Modified(d) => assert_eq!(d.spec.and_then(|s| s.replicas), Some(3)),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn server_side_apply_tracks_managers_prunes_and_conflicts() {
    let server = server();
    let api: Api<Deployment> = Api::namespaced(server.client(), "shop");
    let mut with_annotation = deployment("web", 2);
    with_annotation.metadata.annotations = Some([("team".to_string(), "shop".to_string())].into());
    api.patch(
        "web",
        &PatchParams::apply("operator"),
        &Patch::Apply(&with_annotation),
    )
    .await
    .expect("apply");

    // Another manager applies replicas: a conflict unless forced.
    let hpa = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": 5}});
    let conflict = api
        .patch(
            "web",
            &PatchParams::apply("autoscaler"),
            &Patch::Apply(&hpa),
        )
        .await
        .expect_err("conflict");
    assert!(
        matches!(&conflict, kube::Error::Api(s) if s.code == 409 && s.message.contains("\"operator\"") && s.message.contains(".spec.replicas")),
        "{conflict:?}"
    );
    let forced = api
        .patch(
            "web",
            &PatchParams::apply("autoscaler").force(),
            &Patch::Apply(&hpa),
        )
        .await
        .expect("forced");
    assert_eq!(forced.spec.as_ref().and_then(|s| s.replicas), Some(5));
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["operator", "autoscaler"]);

    // Dropping a field from the applied configuration removes it.
    let pruned = api
        .patch(
            "web",
            &PatchParams::apply("operator").force(),
            &Patch::Apply(deployment("web", 5)),
        )
        .await
        .expect("re-apply");
    assert!(
        !pruned
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("team")
    );
    assert_eq!(
        pruned
            .metadata
            .labels
            .unwrap_or_default()
            .get("app")
            .map(String::as_str),
        Some("web")
    );

    let missing_manager = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Apply(deployment("web", 5)),
        )
        .await
        .expect_err("fieldManager required");
    assert!(matches!(missing_manager, kube::Error::Api(s) if s.code == 400));
}

#[tokio::test(start_paused = true)]
async fn watch_resumes_sends_bookmarks_and_expires_old_versions() {
    let server = ApiServer::new(
        virtual_clock(),
        ServerConfig {
            history_limit: 3,
            seed: 1,
        },
    );
    let api: Api<Pod> = Api::namespaced(server.client(), "shop");
    let first = api
        .create(&PostParams::default(), &pod("a", None))
        .await
        .expect("a");
    api.create(&PostParams::default(), &pod("b", None))
        .await
        .expect("b");

    let mut stream = api
        .watch(&WatchParams::default(), &rv(&first))
        .await
        .expect("watch")
        .boxed();
    match stream.try_next().await.expect("ok").expect("some") {
        WatchEvent::Added(p) => assert_eq!(p.metadata.name.as_deref(), Some("b")),
        other => panic!("expected b ADDED, got {other:?}"),
    }
    // An idle watch gets a bookmark with the current resourceVersion within a virtual minute.
    let bookmark = tokio::time::timeout(Duration::from_secs(90), stream.try_next())
        .await
        .expect("bookmark in time")
        .expect("ok")
        .expect("some");
    assert!(
        matches!(bookmark, WatchEvent::Bookmark(b) if b.metadata.resource_version == server.resource_version().to_string())
    );

    for name in ["c", "d", "e", "f"] {
        api.create(&PostParams::default(), &pod(name, None))
            .await
            .expect("create");
    }
    let mut expired = api
        .watch(&WatchParams::default(), &rv(&first))
        .await
        .expect("watch")
        .boxed();
    match expired.try_next().await.expect("ok").expect("some") {
        WatchEvent::Error(status) => assert_eq!(status.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_watch_event_names_its_type_before_its_object_as_the_real_server_does() {
    use http_body_util::BodyExt;
    let server = server();
    let api: Api<Pod> = Api::namespaced(server.client(), "shop");
    api.create(&PostParams::default(), &pod("a", None))
        .await
        .expect("a");
    let request = http::Request::get("/api/v1/namespaces/shop/pods?watch=true&resourceVersion=0")
        .body(kube::client::Body::empty())
        .expect("request");
    let response = server.client().send(request).await.expect("watch");
    let mut body = response.into_body();
    let frame = body
        .frame()
        .await
        .expect("a line")
        .expect("ok")
        .into_data()
        .expect("data");
    let line = std::str::from_utf8(&frame).expect("utf-8");
    assert!(line.starts_with(r#"{"type":"ADDED","object":{"#), "{line}");
    assert!(line.ends_with('\n'), "one event per line");
}

#[tokio::test(start_paused = true)]
async fn deleting_an_owner_collects_its_dependents() {
    let server = server();
    let client = server.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let pods: Api<Pod> = Api::namespaced(client, "shop");
    let owner = deployments
        .create(&PostParams::default(), &deployment("web", 1))
        .await
        .expect("owner");
    pods.create(&PostParams::default(), &pod("owned", Some(&owner)))
        .await
        .expect("owned");
    pods.create(&PostParams::default(), &pod("free", None))
        .await
        .expect("free");

    deployments
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    // Pods are deleted gracefully: marked now, removed by the kubelet when stopped.
    let owned = pods.get("owned").await.expect("still terminating");
    assert!(owned.metadata.deletion_timestamp.is_some());
    assert_eq!(owned.metadata.deletion_grace_period_seconds, Some(30));
    assert!(
        pods.get("free")
            .await
            .expect("untouched")
            .metadata
            .deletion_timestamp
            .is_none()
    );

    let orphaner = deployments
        .create(&PostParams::default(), &deployment("api", 1))
        .await
        .expect("owner");
    pods.create(&PostParams::default(), &pod("kept", Some(&orphaner)))
        .await
        .expect("kept");
    deployments
        .delete(
            "api",
            &DeleteParams {
                propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
                ..DeleteParams::default()
            },
        )
        .await
        .expect("orphan");
    let kept = pods.get("kept").await.expect("kept");
    assert!(kept.metadata.deletion_timestamp.is_none());
    assert!(
        kept.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn faults_are_injected_and_the_request_log_records_them() {
    let server = server();
    let api: Api<Deployment> = Api::namespaced(server.client(), "shop");
    for (code, reason) in [
        (409, "Conflict"),
        (429, "TooManyRequests"),
        (500, "InternalError"),
    ] {
        server.inject(Fault {
            verb: Some("create"),
            kind: Some("Deployment"),
            code,
            times: 1,
            ..Fault::default()
        });
        let error = api
            .create(&PostParams::default(), &deployment("web", 1))
            .await
            .expect_err("injected");
        assert!(matches!(error, kube::Error::Api(s) if s.code == code && s.reason == reason));
    }
    api.create(&PostParams::default(), &deployment("web", 1))
        .await
        .expect("after the faults");
    let codes: Vec<(String, u16)> = server
        .requests()
        .into_iter()
        .map(|r| (format!("{} {}", r.verb, r.kind), r.code))
        .collect();
    assert_eq!(
        codes,
        [
            ("create Deployment".to_string(), 409),
            ("create Deployment".to_string(), 429),
            ("create Deployment".to_string(), 500),
            ("create Deployment".to_string(), 201)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_watch_is_resumed_by_the_kube_watcher_without_losing_events() {
    let server = server();
    let api: Api<Pod> = Api::namespaced(server.client(), "shop");
    let names = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .map_ok(|p: Pod| p.metadata.name.unwrap_or_default())
        .boxed();
    let collector = tokio::spawn(names.take(3).try_collect::<Vec<_>>());
    api.create(&PostParams::default(), &pod("a", None))
        .await
        .expect("a");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(server.drop_watches() >= 1);
    api.create(&PostParams::default(), &pod("b", None))
        .await
        .expect("b");
    tokio::time::sleep(Duration::from_secs(5)).await;
    api.create(&PostParams::default(), &pod("c", None))
        .await
        .expect("c");
    let seen = tokio::time::timeout(Duration::from_secs(60), collector)
        .await
        .expect("in time")
        .expect("joined")
        .expect("no error");
    assert!(
        seen.contains(&"b".to_string()) && seen.contains(&"c".to_string()),
        "{seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn pod_logs_serve_the_current_and_previous_run() {
    let server = server();
    let api: Api<Pod> = Api::namespaced(server.client(), "shop");
    api.create(&PostParams::default(), &pod("a", None))
        .await
        .expect("a");
    server.append_log("shop", "a", "app", "[INFO] Booting worker with pid: 7");
    server.append_log("shop", "a", "app", "[ERROR] Worker failed to boot.");
    let none = api
        .logs(
            "a",
            &kube::api::LogParams {
                previous: true,
                ..Default::default()
            },
        )
        .await
        .expect_err("no previous run");
    assert!(matches!(none, kube::Error::Api(s) if s.code == 400));
    server.rotate_log("shop", "a", "app");
    server.append_log("shop", "a", "app", "[INFO] Starting gunicorn");
    let previous = api
        .logs(
            "a",
            &kube::api::LogParams {
                previous: true,
                tail_lines: Some(1),
                ..Default::default()
            },
        )
        .await
        .expect("previous");
    assert_eq!(previous, "[ERROR] Worker failed to boot.\n");
    let current = api
        .logs("a", &kube::api::LogParams::default())
        .await
        .expect("current");
    assert_eq!(current, "[INFO] Starting gunicorn\n");
}

#[tokio::test]
async fn the_api_served_over_http_answers_a_client_built_from_its_kubeconfig() {
    let server = server();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.clone().serve_http(listener, async move {
        let _ = stopped.await;
    }));

    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&ApiServer::kubeconfig(address)).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    workerpool_core::controller::run::install_tls_provider();
    let client = kube::Client::try_from(config).expect("client");
    let api: Api<Pod> = Api::namespaced(client, "shop");
    api.create(&PostParams::default(), &pod("a", None))
        .await
        .expect("create over http");
    let mut events = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), events.try_next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("some");
    assert_eq!(first.metadata.name.as_deref(), Some("a"));
    api.create(&PostParams::default(), &pod("b", None))
        .await
        .expect("b");
    let second = tokio::time::timeout(Duration::from_secs(10), events.try_next())
        .await
        .expect("watched in time")
        .expect("ok")
        .expect("some");
    assert_eq!(second.metadata.name.as_deref(), Some("b"));
    let missing = api.get("nope").await.expect_err("404");
    assert!(
        matches!(missing, kube::Error::Api(ref status) if status.code == 404),
        "{missing}"
    );

    let _ = stop.send(());
    drop(events);
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("stops")
        .expect("joined")
        .expect("served");
}

#[tokio::test(start_paused = true)]
async fn the_log_tail_keeps_the_end_of_long_json_lines() {
    use workerpool_core::aborts::loghints::{self, TAIL_BYTES};
    use workerpool_core::controller::logs::{ApiLogs, LogReader};

    let server = server();
    let api: Api<Pod> = Api::namespaced(server.client(), "shop");
    api.create(&PostParams::default(), &pod("a", None))
        .await
        .expect("a");
    let padding = "x".repeat(2_000);
    for n in 0..300 {
        let line =
            json!({"levelname": "INFO", "message": format!("request {n}"), "extra": padding});
        server.append_log("shop", "a", "app", &line.to_string());
    }
    let last = json!({"levelname": "CRITICAL", "message": "WORKER TIMEOUT (pid:9)"});
    server.append_log("shop", "a", "app", &last.to_string());

    // The kubelet keeps the start of what `tailLines` picked when `limitBytes` cuts it.
    let cut = api
        .logs(
            "a",
            &kube::api::LogParams {
                tail_lines: Some(200),
                limit_bytes: Some(65_536),
                ..Default::default()
            },
        )
        .await
        .expect("cut read");
    assert!(!cut.contains("WORKER TIMEOUT"));

    let tail = ApiLogs(server.client())
        .tail("shop", "a", "app", false)
        .await
        .expect("tail");
    assert!(tail.len() <= TAIL_BYTES, "{} bytes", tail.len());
    assert!(tail.ends_with(&format!("{last}\n")), "{tail:.200}");
    assert!(tail.starts_with('{'), "starts mid-line: {tail:.80}");
    assert_eq!(loghints::scan(&tail).worker_timeout_pids, [9]);
}

/// As kube-apiserver 1.37 answers: an apply whose object names a resourceVersion creates an
/// absent object (with a version of the server's own) and is refused with 409 for an existing one
/// whose version differs, even when forced.
#[tokio::test]
async fn an_apply_naming_a_resource_version_creates_only_what_is_absent() {
    let client = server().client();
    let api: Api<Deployment> = Api::namespaced(client, "shop");
    let mut desired = deployment("api", 2);
    desired.metadata.resource_version = Some("1".into());
    let params = PatchParams::apply("workerpool-operator").force();
    let created = api
        .patch("api", &params, &Patch::Apply(&desired))
        .await
        .expect("created");
    assert_ne!(created.metadata.resource_version.as_deref(), Some("1"));
    let fields = serde_json::to_string(&created.metadata.managed_fields).unwrap();
    assert!(!fields.contains("resourceVersion"), "{fields}");
    match api.patch("api", &params, &Patch::Apply(&desired)).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("an existing object is not written: {other:?}"),
    }
    // Without the version, the same apply writes the existing object.
    desired.metadata.resource_version = None;
    desired.spec.as_mut().unwrap().replicas = Some(3);
    let written = api
        .patch("api", &params, &Patch::Apply(&desired))
        .await
        .expect("applied");
    assert_eq!(written.spec.unwrap().replicas, Some(3));
}

/// As kube-apiserver answers a delete with a uid precondition: 409 when the object of that name
/// has another uid (made again since), and the object stays.
#[tokio::test]
async fn a_delete_naming_a_uid_deletes_only_the_object_that_has_it() {
    let client = server().client();
    let api: Api<Deployment> = Api::namespaced(client, "shop");
    let live = api
        .create(&PostParams::default(), &deployment("api", 1))
        .await
        .expect("created");
    let naming = |uid: &str| DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some(uid.into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete("api", &naming("another-uid")).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 409, "{status:?}");
            assert!(status.message.contains("Precondition failed"), "{status:?}");
        }
        other => panic!("another object's uid deletes nothing: {other:?}"),
    }
    assert!(api.get_opt("api").await.expect("read").is_some());
    let uid = live.metadata.uid.expect("uid");
    api.delete("api", &naming(&uid)).await.expect("deleted");
    assert!(api.get_opt("api").await.expect("read").is_none());
}
