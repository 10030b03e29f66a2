//! Cost of turning one pool into its children: validate, settle, build and serialize to JSON
//! (what the controller compares and applies). Figures are recorded in docs/benchmarks.md.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use workerpool_core::pool::derive::{self, PoolRef};
use workerpool_core::pool::policy;
use workerpool_core::render;

fn pool() -> workerpool_core::api::WorkerPool {
    let yaml = include_str!("../config/samples/gunicorn-django.yaml");
    match render::parse_pools(yaml).map(|parsed| parsed.pools) {
        Ok(mut pools) if pools.len() == 1 => pools.remove(0),
        Ok(pools) => panic!("the sample holds one pool, not {}", pools.len()),
        Err(e) => panic!("bundled sample must parse: {e}"),
    }
}

fn derive_and_serialize(c: &mut Criterion) {
    let pool = pool();
    let pool_ref = PoolRef {
        name: "shop-api".into(),
        namespace: "shop".into(),
        uid: Some("6f0b6c1e-0000-4000-8000-000000000000".into()),
    };
    c.bench_function("derive+serialize one pool", |b| {
        b.iter(|| {
            let valid = match policy::validate(black_box(&pool.spec)) {
                Ok(v) => v,
                Err(e) => panic!("sample is valid: {e}"),
            };
            let settings = policy::settle(&valid);
            let children = derive::children(
                &pool_ref,
                &valid,
                &settings,
                policy::first_apply_replicas(&pool.spec),
            );
            let deployment = serde_json::to_vec(&children.deployment)
                .map(|v| v.len())
                .unwrap_or(0);
            let pdb = serde_json::to_vec(&children.pdb)
                .map(|v| v.len())
                .unwrap_or(0);
            black_box(deployment + pdb)
        })
    });
}

criterion_group!(benches, derive_and_serialize);
criterion_main!(benches);
