//! Helpers shared by the integration tests.

use serde_json::{Value, json};

/// Deep-merges `overlay` into `base`, as a user's manifest overrides a fixture.
pub fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (k, v) in overlay {
                merge(base.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

/// A spec overlay whose template has one app container with port `http`, plus `fields`.
#[allow(dead_code)]
pub fn app_container_with(fields: Value) -> Value {
    let mut container = json!({"name": "app", "image": "example/app:1", "ports": [{"name": "http", "containerPort": 8000}]});
    merge(&mut container, &fields);
    json!({"template": {"spec": {"containers": [container]}}})
}
