//! Cost of decoding one watch event of each kind the controller watches, as its watches do
//! (`controller::watched`), and beside each the same event decoded by kube's types with what the
//! controller never reads pruned afterwards, as `WatchStreamExt::modify` would: a pool through
//! `DeserializeGuard`, a Deployment and a pod as the whole `k8s-openapi` object. The fixtures are
//! events a kube-apiserver 1.37 sent for the bundled sample. Figures are in docs/benchmarks.md.

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::WatchEvent;
use kube::core::DeserializeGuard;
use serde::de::DeserializeOwned;
use std::hint::black_box;
use workerpool_core::aborts::podview::PodView;
use workerpool_core::api::WorkerPool;
use workerpool_core::controller::watched::{Guarded, Packed, PackedDeployment, ViewedPod, Watched};

/// The allocator the binary uses (see main.rs): decoding is mostly allocation.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A converged pool of the bundled sample as the API server sends it, with the managed fields
/// and the annotation `kubectl apply` writes.
const POOL_EVENT: &str = include_str!("fixtures/pool-watch-event.json");
/// The sample's converged Deployment (6 replicas) as a watch sends it, managed fields included.
const DEPLOYMENT_EVENT: &str = include_str!("fixtures/deployment-watch-event.json");
/// One of its ready pods as a watch sends it, managed fields included.
const POD_EVENT: &str = include_str!("fixtures/pod-watch-event.json");

/// What `.modify()` would take out of an object kube decoded whole.
fn prune(metadata: &mut ObjectMeta) {
    metadata.managed_fields = None;
    if let Some(annotations) = metadata.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// The object of a watch event, or a panic naming the fixture that does not decode.
fn object_of<K: DeserializeOwned>(event: &str, fixture: &str) -> K {
    match serde_json::from_str::<WatchEvent<K>>(event) {
        Ok(WatchEvent::Added(object) | WatchEvent::Modified(object)) => object,
        _ => panic!("{fixture} must decode as an added or modified object"),
    }
}

fn decode_pool_event(c: &mut Criterion) {
    match serde_json::from_str::<WatchEvent<Guarded<WorkerPool>>>(POOL_EVENT) {
        Ok(WatchEvent::Modified(Guarded(Ok(_)))) => {}
        _ => panic!("the fixture must decode as a valid pool"),
    }
    c.bench_function("decode one pool watch event", |b| {
        b.iter(|| {
            let event: Result<WatchEvent<Guarded<WorkerPool>>, _> =
                serde_json::from_str(black_box(POOL_EVENT));
            black_box(event.is_ok())
        })
    });
}

fn decode_pool_event_with_kubes_guard(c: &mut Criterion) {
    match serde_json::from_str::<WatchEvent<DeserializeGuard<WorkerPool>>>(POOL_EVENT) {
        Ok(WatchEvent::Modified(DeserializeGuard(Ok(_)))) => {}
        _ => panic!("the fixture must decode as a valid pool"),
    }
    c.bench_function(
        "decode one pool watch event, kube's DeserializeGuard + pruning",
        |b| {
            b.iter(|| {
                let event: Result<WatchEvent<DeserializeGuard<WorkerPool>>, _> =
                    serde_json::from_str(black_box(POOL_EVENT));
                if let Ok(WatchEvent::Modified(DeserializeGuard(Ok(mut pool)))) = event {
                    prune(&mut pool.metadata);
                    black_box(pool);
                }
            })
        },
    );
}

fn decode_deployment_event(c: &mut Criterion) {
    let lean: Watched<Deployment> = object_of(DEPLOYMENT_EVENT, "the Deployment fixture");
    let whole: Deployment = object_of(DEPLOYMENT_EVENT, "the Deployment fixture");
    assert_eq!(lean.spec, whole.spec, "both decoders read the same spec");
    c.bench_function("decode one Deployment watch event", |b| {
        b.iter(|| {
            let event: Result<WatchEvent<Watched<Deployment>>, _> =
                serde_json::from_str(black_box(DEPLOYMENT_EVENT));
            black_box(event.is_ok())
        })
    });
    let packed: Watched<PackedDeployment> = object_of(DEPLOYMENT_EVENT, "the Deployment fixture");
    let unpacked = packed.unpack().expect("the fixture's spec unpacks");
    assert_eq!(
        unpacked, *lean.0,
        "packing keeps what the lean decode reads"
    );
    c.bench_function("decode one Deployment watch event, spec packed", |b| {
        b.iter(|| {
            let event: Result<WatchEvent<Watched<PackedDeployment>>, _> =
                serde_json::from_str(black_box(DEPLOYMENT_EVENT));
            black_box(event.is_ok())
        })
    });
    c.bench_function("unpack one cached Deployment", |b| {
        b.iter(|| black_box(black_box(&packed).unpack().is_ok()))
    });
    c.bench_function(
        "decode one Deployment watch event, the whole Deployment + pruning",
        |b| {
            b.iter(|| {
                let event: Result<WatchEvent<Deployment>, _> =
                    serde_json::from_str(black_box(DEPLOYMENT_EVENT));
                if let Ok(
                    WatchEvent::Added(mut deployment) | WatchEvent::Modified(mut deployment),
                ) = event
                {
                    prune(&mut deployment.metadata);
                    black_box(deployment);
                }
            })
        },
    );
}

fn decode_pod_event(c: &mut Criterion) {
    let viewed: ViewedPod = object_of(POD_EVENT, "the pod fixture");
    let whole: Pod = object_of(POD_EVENT, "the pod fixture");
    assert_eq!(
        viewed.view,
        PodView::from(&whole),
        "both decoders see the same pod"
    );
    assert!(
        viewed.view.containers.iter().all(|c| c.ready),
        "the fixture is a ready pod"
    );
    c.bench_function("decode one pod watch event", |b| {
        b.iter(|| {
            let event: Result<WatchEvent<ViewedPod>, _> =
                serde_json::from_str(black_box(POD_EVENT));
            black_box(event.is_ok())
        })
    });
    c.bench_function("decode one pod watch event, the whole Pod + pruning", |b| {
        b.iter(|| {
            let event: Result<WatchEvent<Pod>, _> = serde_json::from_str(black_box(POD_EVENT));
            if let Ok(WatchEvent::Added(mut pod) | WatchEvent::Modified(mut pod)) = event {
                prune(&mut pod.metadata);
                black_box(pod);
            }
        })
    });
}

criterion_group!(
    benches,
    decode_pool_event,
    decode_pool_event_with_kubes_guard,
    decode_deployment_event,
    decode_pod_event
);
criterion_main!(benches);
