//! Does a live object already hold everything we would apply? Pure.
//!
//! The API server adds defaults (imagePullPolicy, terminationMessagePath, …) and rewrites
//! quantities to canonical form ("1024Mi" → "1Gi"), so equality of whole objects would re-apply
//! every time. Instead every field we set must be present in the live object with an equal value;
//! extra fields in the live object are ignored.

use serde_json::Value;

/// True when `live` contains every field of `desired` with an equal value.
pub fn contains(live: &Value, desired: &Value) -> bool {
    contains_at(live, desired, false)
}

/// The first `hex_digits` of the SHA-256 of a value's JSON: the same value, the same hash, across
/// restarts and versions of the operator (unlike [`version_of`], which never leaves the process).
pub fn short_hash(value: &impl serde::Serialize, hex_digits: usize) -> String {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_vec(value).unwrap_or_default();
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for byte in Sha256::digest(&json) {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    hex.truncate(hex_digits);
    hex
}

/// A hash of an object as the operator applies it.
pub fn applied_hash(desired: &Value) -> String {
    short_hash(desired, 16)
}

/// An object made ready to apply: the hash of its JSON, which its applied annotation now holds,
/// and that JSON (without the annotation), kept for the drift check.
pub struct Stamped {
    pub hash: String,
    pub json: Value,
}

/// Writes the hash of `object` as it stands into its applied annotation.
pub fn stamp<K: kube::Resource + serde::Serialize>(
    object: &mut K,
) -> Result<Stamped, serde_json::Error> {
    let json = serde_json::to_value(&*object)?;
    let hash = applied_hash(&json);
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(crate::api::APPLIED_ANNOTATION.into(), hash.clone());
    Ok(Stamped { hash, json })
}

/// The live object is what the operator would apply: the operator applied that same object last,
/// so no field it stopped setting lingers, and it still holds every field of `desired`. The
/// annotation is read first: an object applied otherwise is never serialized.
pub fn is_current<K: kube::Resource + serde::Serialize>(
    live: &K,
    desired: &Stamped,
) -> Result<bool, serde_json::Error> {
    let applied = live
        .meta()
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(crate::api::APPLIED_ANNOTATION));
    if applied != Some(&desired.hash) {
        return Ok(false);
    }
    Ok(contains(&serde_json::to_value(live)?, &desired.json))
}

/// A live object [`is_current`] found to hold a desired one: while neither changes, it still does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    live: u64,
    desired: String,
    /// What the desired object was derived from ([`source_print`]), when that is known.
    source: Option<u64>,
}

/// What a child is derived from, as one number: the pool's uid and generation (the API server
/// moves the generation with every change of the spec, and a child is derived from the spec and
/// the pool's identity alone), the child's kind, and the replicas and pause the gates gave it.
/// Equal prints derive equal objects, so a live child verified against one is current with the
/// other without building and hashing the object again. None without a uid or a generation.
pub fn source_print(
    pool: &kube::core::ObjectMeta,
    kind: &str,
    shape: Option<(i32, bool)>,
) -> Option<u64> {
    use std::hash::BuildHasher;
    let (uid, generation) = (pool.uid.as_deref()?, pool.generation?);
    Some(foldhash::quality::FixedState::default().hash_one((uid, generation, kind, shape)))
}

/// The pair remembered for `live` when it was last verified against an object derived from
/// `source`: while neither moved, the live object is still current, and nothing need be derived.
pub fn verified_from(
    live: &kube::core::ObjectMeta,
    source: Option<u64>,
    verified: &[Verified],
) -> Option<Verified> {
    let source = source?;
    let live = live_print(live)?;
    verified
        .iter()
        .find(|pair| pair.live == live && pair.source == Some(source))
        .cloned()
}

/// Everything [`is_current`] can read of a live object, as one number: its identity and
/// generation (the API server moves the generation with every change of the spec), labels,
/// annotations and owners. None without a uid or a generation.
pub fn live_print(meta: &kube::core::ObjectMeta) -> Option<u64> {
    use std::hash::{BuildHasher, Hash, Hasher};
    let (uid, generation) = (meta.uid.as_deref()?, meta.generation?);
    let mut hasher = foldhash::quality::FixedState::default().build_hasher();
    (uid, generation, &meta.name, &meta.namespace).hash(&mut hasher);
    (&meta.labels, &meta.annotations).hash(&mut hasher);
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    owners.len().hash(&mut hasher);
    for owner in owners {
        (&owner.api_version, &owner.kind, &owner.name, &owner.uid).hash(&mut hasher);
        (owner.controller, owner.block_owner_deletion).hash(&mut hasher);
    }
    Some(hasher.finish())
}

/// [`is_current`], answered from `verified` when this live object was found to hold this desired
/// one before; with the pair to remember while it is current.
pub fn is_current_as_verified<K: kube::Resource + serde::Serialize>(
    live: &K,
    desired: &Stamped,
    source: Option<u64>,
    verified: &[Verified],
) -> Result<(bool, Option<Verified>), serde_json::Error> {
    let pair = live_print(live.meta()).map(|live| Verified {
        live,
        desired: desired.hash.clone(),
        source,
    });
    let known = |pair: &Verified| {
        verified
            .iter()
            .any(|v| v.live == pair.live && v.desired == pair.desired)
    };
    if pair.as_ref().is_some_and(known) {
        return Ok((true, pair));
    }
    let current = is_current(live, desired)?;
    Ok((current, pair.filter(|_| current)))
}

fn contains_at(live: &Value, desired: &Value, in_quantities: bool) -> bool {
    match (live, desired) {
        (Value::Object(live), Value::Object(desired)) => desired.iter().all(|(key, want)| {
            let quantities = in_quantities || is_quantity_map(key);
            match live.get(key) {
                Some(have) => contains_at(have, want, quantities),
                // An empty value (or `false`) we set is the same as an absent one once stored.
                None => is_empty(want),
            }
        }),
        (Value::Array(live), Value::Array(desired)) => {
            live.len() == desired.len()
                && live
                    .iter()
                    .zip(desired)
                    .all(|(have, want)| contains_at(have, want, in_quantities))
        }
        (Value::String(have), Value::String(want)) if in_quantities => {
            have == want
                || quantity(have)
                    .zip(quantity(want))
                    .is_some_and(|(a, b)| (a - b).abs() <= f64::EPSILON * a.abs().max(1.0))
        }
        (Value::Number(have), Value::Number(want)) => have.as_f64() == want.as_f64(),
        _ => live == desired,
    }
}

fn is_quantity_map(key: &str) -> bool {
    matches!(
        key,
        "limits" | "requests" | "sizeLimit" | "overhead" | "capacity"
    )
}

/// What the API server omits once stored (its fields are `omitempty`).
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(text) => text.is_empty(),
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// A Kubernetes quantity ("500m", "1Gi", "1.5", "2e3") as a number.
pub fn quantity(text: &str) -> Option<f64> {
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let text = text.trim();
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    text.parse::<f64>().ok()
}

/// Whether a live Deployment whose template is held (its new revision waits for an init Job)
/// already has the replicas and pause the gates decided: the one other write the operator skips.
pub fn holds(live: &k8s_openapi::api::apps::v1::Deployment, replicas: i32, paused: bool) -> bool {
    let spec = live.spec.as_ref();
    let live_replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let live_paused = spec.and_then(|s| s.paused).unwrap_or(false);
    (live_replicas, live_paused) == (replicas, paused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_print_of_a_live_object_moves_with_whatever_the_drift_check_reads() {
        let meta: kube::core::ObjectMeta = serde_json::from_value(serde_json::json!({
            "name": "api", "namespace": "shop", "uid": "u-1", "generation": 2,
            "resourceVersion": "7",
            "labels": {"app": "api"}, "annotations": {"workerpool.dev/applied": "abc"},
            "ownerReferences": [{"apiVersion": "workerpool.dev/v1alpha1", "kind": "WorkerPool",
                                 "name": "api", "uid": "p-1", "controller": true}],
        }))
        .expect("metadata");
        let print = live_print(&meta).expect("a print");
        let moved = |change: &dyn Fn(&mut kube::core::ObjectMeta)| {
            let mut changed = meta.clone();
            change(&mut changed);
            live_print(&changed) != Some(print)
        };
        assert!(moved(&|m| m.generation = Some(3)));
        assert!(moved(&|m| m.uid = Some("u-2".into())));
        assert!(moved(&|m| {
            m.labels
                .get_or_insert_default()
                .insert("team".into(), "a".into());
        }));
        assert!(moved(&|m| {
            m.annotations.get_or_insert_default().clear();
        }));
        assert!(moved(&|m| {
            m.owner_references.get_or_insert_default()[0].api_version = "v2".into();
        }));
        assert!(moved(&|m| m.owner_references = None));
        assert!(
            !moved(&|m| m.resource_version = Some("8".into())),
            "a status write"
        );
        let unversioned = kube::core::ObjectMeta {
            generation: None,
            ..meta.clone()
        };
        assert_eq!(live_print(&unversioned), None, "no generation, no print");
    }

    #[test]
    fn a_held_deployment_needs_a_write_only_for_other_replicas_or_pause() {
        let live: k8s_openapi::api::apps::v1::Deployment =
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "api"},
                "spec": {"replicas": 3, "paused": true, "selector": {}, "template": {}}
            }))
            .expect("deployment");
        assert!(holds(&live, 3, true));
        assert!(!holds(&live, 4, true));
        assert!(!holds(&live, 3, false));
        // Unset fields read as the API server's defaults: one replica, not paused.
        let bare = k8s_openapi::api::apps::v1::Deployment::default();
        assert!(holds(&bare, 1, false));
    }
    use serde_json::json;

    #[test]
    fn current_means_every_field_held_and_the_same_object_applied_last() {
        use kube::core::DynamicObject;
        let mut desired: DynamicObject = serde_json::from_value(json!({
            "metadata": {"name": "api"},
            "spec": {"replicas": 2, "paused": false}
        }))
        .expect("an object");
        let stamped = stamp(&mut desired).expect("serializes");
        let live = |hash: &str, spec: Value| -> DynamicObject {
            serde_json::from_value(json!({
                "metadata": {"name": "api", "annotations": {"workerpool.dev/applied": hash}},
                "spec": spec
            }))
            .expect("an object")
        };
        let current = |object: &DynamicObject| is_current(object, &stamped).expect("serializes");
        assert!(
            current(&live(
                &stamped.hash,
                json!({"replicas": 2, "minReadySeconds": 0})
            )),
            "false and 0 are omitted once stored"
        );
        assert!(
            !current(&live("0123", json!({"replicas": 2}))),
            "applied by another version"
        );
        assert!(
            !current(&live(&stamped.hash, json!({"replicas": 5}))),
            "edited since"
        );
        assert_eq!(
            desired
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("workerpool.dev/applied")),
            Some(&stamped.hash),
            "the object carries its hash"
        );
        assert_eq!(stamped.hash, applied_hash(&stamped.json.clone()), "stable");
        assert_eq!(stamped.hash.len(), 16);
    }

    #[test]
    fn defaults_added_by_the_server_are_not_drift() {
        let desired = json!({"spec": {"containers": [{"name": "app", "image": "a:1"}]}});
        let live = json!({"spec": {"containers": [{"name": "app", "image": "a:1", "imagePullPolicy": "IfNotPresent"}], "dnsPolicy": "ClusterFirst"}});
        assert!(contains(&live, &desired));
    }

    #[test]
    fn changed_or_missing_values_are_drift() {
        let desired =
            json!({"spec": {"replicas": 4, "containers": [{"name": "app", "image": "a:2"}]}});
        assert!(!contains(
            &json!({"spec": {"replicas": 2, "containers": [{"name": "app", "image": "a:2"}]}}),
            &desired
        ));
        assert!(!contains(
            &json!({"spec": {"replicas": 4, "containers": [{"name": "app", "image": "a:1"}]}}),
            &desired
        ));
        assert!(!contains(&json!({"spec": {"replicas": 4}}), &desired));
        let two = json!({"spec": {"replicas": 4, "containers": [{"name": "app", "image": "a:2"}, {"name": "x"}]}});
        assert!(!contains(&two, &desired), "an extra list item is drift");
    }

    #[test]
    fn canonical_quantities_match_only_under_resources() {
        let desired = json!({"resources": {"limits": {"memory": "1024Mi", "cpu": "0.5"}}, "env": [{"value": "1k"}]});
        let live = json!({"resources": {"limits": {"memory": "1Gi", "cpu": "500m"}}, "env": [{"value": "1k"}]});
        assert!(contains(&live, &desired));
        let env_changed = json!({"resources": {"limits": {"memory": "1Gi", "cpu": "500m"}}, "env": [{"value": "1000"}]});
        assert!(
            !contains(&env_changed, &desired),
            "env values are compared as text"
        );
        assert!(!contains(
            &json!({"resources": {"limits": {"memory": "2Gi", "cpu": "500m"}}, "env": [{"value": "1k"}]}),
            &desired
        ));
    }

    #[test]
    fn parses_quantities() {
        assert_eq!(quantity("500m"), Some(0.5));
        assert_eq!(quantity("1Gi"), Some(1_073_741_824.0));
        assert_eq!(quantity("2e3"), Some(2000.0));
        assert_eq!(quantity("lots"), None);
    }
}
