//! Strict field validation, as the API server applies it to `kubectl apply`: every field of a
//! WorkerPool is looked up in the CRD's schema, and the ones it does not know are named. Pure.

use serde_json::Value;

/// The path of every field of `pool` the CRD's schema does not know.
pub fn unknown_fields(pool: &Value) -> Vec<String> {
    let schema = match serde_json::to_value(super::crd()) {
        Ok(crd) => crd
            .pointer("/spec/versions/0/schema/openAPIV3Schema")
            .cloned()
            .unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    // Every object's metadata is an ObjectMeta, as the template's schema spells it out.
    let metadata = schema
        .pointer("/properties/spec/properties/template/properties/metadata")
        .cloned()
        .unwrap_or(Value::Null);
    let mut found = Vec::new();
    let Value::Object(fields) = pool else {
        return found;
    };
    for (key, value) in fields {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => walk(value, &metadata, key, &mut found),
            _ => match schema.pointer(&format!("/properties/{key}")) {
                Some(field) => walk(value, field, key, &mut found),
                None => found.push(key.clone()),
            },
        }
    }
    found
}

fn walk(value: &Value, schema: &Value, path: &str, found: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(fields) => {
            if let Some(known) = schema.get("properties").and_then(Value::as_object) {
                for (key, value) in fields {
                    let at = format!("{path}.{key}");
                    match known.get(key) {
                        Some(field) => walk(value, field, &at, found),
                        None => found.push(at),
                    }
                }
            } else if let Some(each) = schema.get("additionalProperties").filter(|s| s.is_object())
            {
                for (key, value) in fields {
                    walk(value, each, &format!("{path}[{key}]"), found);
                }
            }
        }
        Value::Array(items) => {
            if let Some(each) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item, each, &format!("{path}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn misspelled_fields_anywhere_are_named_by_path() {
        let pool = json!({
            "apiVersion": "workerpool.dev/v1alpha1",
            "kind": "WorkerPool",
            "metadata": {"name": "api", "labelz": {"a": "b"}},
            "spec": {
                "replicas": 2,
                "policy": {"boot": {"timeoutSecond": 120}},
                "template": {
                    "metadata": {"labels": {"app": "api"}},
                    "spec": {"containers": [
                        {"name": "app", "image": "x", "env": [{"name": "A", "valu": "1"}],
                         "resources": {"limits": {"memory": "1Gi"}}}
                    ]}
                }
            },
            "extra": 1
        });
        assert_eq!(
            unknown_fields(&pool),
            [
                "extra",
                "metadata.labelz",
                "spec.policy.boot.timeoutSecond",
                "spec.template.spec.containers[0].env[0].valu",
            ]
        );
    }

    #[test]
    fn a_pool_as_documented_has_none() {
        let pool = json!({
            "apiVersion": "workerpool.dev/v1alpha1",
            "kind": "WorkerPool",
            "metadata": {"name": "api", "namespace": "shop", "labels": {"team": "a"}},
            "spec": {
                "runtime": "gunicorn",
                "replicas": 2,
                "policy": {"boot": {"timeoutSeconds": 120, "maxConcurrent": 2, "preload": true}},
                "template": {"spec": {"containers": [{
                    "name": "app", "image": "x",
                    "ports": [{"name": "http", "containerPort": 8000}],
                    "livenessProbe": {"httpGet": {"path": "/", "port": "http"}},
                    "resources": {"limits": {"memory": "1Gi", "cpu": 1}}
                }]}}
            }
        });
        assert_eq!(unknown_fields(&pool), Vec::<String>::new());
    }
}
