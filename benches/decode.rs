//! Cost of decoding one watch event of a pool as the controller's pool watch does: the metadata
//! without its managed fields, the spec and status checked against their types. Beside it, the
//! same event through kube's `DeserializeGuard` with the managed fields pruned afterwards, as
//! `WatchStreamExt::modify` would. Figures are recorded in docs/benchmarks.md.

use criterion::{Criterion, criterion_group, criterion_main};
use kube::api::WatchEvent;
use kube::core::DeserializeGuard;
use std::hint::black_box;
use workerpool_core::api::WorkerPool;
use workerpool_core::controller::watched::Guarded;

/// The allocator the binary uses (see main.rs): decoding is mostly allocation.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A converged pool of the bundled sample as the API server sends it, with the managed fields
/// and the annotation `kubectl apply` writes.
const POOL_EVENT: &str = include_str!("fixtures/pool-watch-event.json");

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
                    pool.metadata.managed_fields = None;
                    if let Some(annotations) = pool.metadata.annotations.as_mut() {
                        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
                    }
                    black_box(pool);
                }
            })
        },
    );
}

criterion_group!(
    benches,
    decode_pool_event,
    decode_pool_event_with_kubes_guard
);
criterion_main!(benches);
