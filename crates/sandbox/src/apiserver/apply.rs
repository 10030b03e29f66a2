//! JSON merge patches and server-side apply: merging an applied configuration into the live
//! object, removing what a manager stopped applying, finding conflicts and writing `fieldsV1`.
//!
//! Maps merge key by key; lists whose items all carry a `name` (containers, env, ports, volumes)
//! merge by name, as their Kubernetes list-map schema says; other lists are atomic.

use serde_json::{Map, Value};

/// RFC 7386: `null` removes, objects merge recursively, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

fn name_of(item: &Value) -> Option<&str> {
    item.get("name").and_then(Value::as_str)
}

fn is_named_list(list: &[Value]) -> bool {
    !list.is_empty() && list.iter().all(|item| name_of(item).is_some())
}

/// Merges an applied configuration into the live object.
pub fn apply_merge(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(target), Value::Object(applied)) => {
            for (key, value) in applied {
                match target.get_mut(key) {
                    Some(existing) if !value.is_null() => apply_merge(existing, value),
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(target), Value::Array(applied))
            if is_named_list(applied) && target.iter().all(|i| name_of(i).is_some()) =>
        {
            for item in applied {
                let name = name_of(item);
                match target.iter_mut().find(|t| name_of(t) == name) {
                    Some(existing) => apply_merge(existing, item),
                    None => target.push(item.clone()),
                }
            }
        }
        (target, applied) => *target = applied.clone(),
    }
}

/// Removes from `target` what `previous` applied and `current` no longer does.
pub fn prune(target: &mut Value, previous: &Value, current: &Value) {
    match (target, previous) {
        (Value::Object(target), Value::Object(previous)) => {
            for (key, old) in previous {
                match current.get(key) {
                    None => {
                        target.remove(key);
                    }
                    Some(new) => {
                        if let Some(live) = target.get_mut(key) {
                            prune(live, old, new);
                        }
                    }
                }
            }
        }
        (Value::Array(target), Value::Array(previous)) if is_named_list(previous) => {
            let Some(current) = current.as_array() else {
                return;
            };
            for old in previous {
                let name = name_of(old);
                match current.iter().find(|c| name_of(c) == name) {
                    None => target.retain(|t| name_of(t) != name),
                    Some(new) => {
                        if let Some(live) = target.iter_mut().find(|t| name_of(t) == name) {
                            prune(live, old, new);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// One step of a field path: a map key or a list item by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Named(String),
}

/// Every leaf an applied configuration sets, as paths.
pub fn leaves(applied: &Value) -> Vec<Vec<Step>> {
    fn walk(value: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, child) in map {
                    path.push(Step::Key(key.clone()));
                    walk(child, path, out);
                    path.pop();
                }
            }
            Value::Array(list) if is_named_list(list) => {
                for item in list {
                    path.push(Step::Named(name_of(item).unwrap_or_default().to_string()));
                    walk(item, path, out);
                    path.pop();
                }
            }
            _ => out.push(path.clone()),
        }
    }
    let mut out = Vec::new();
    walk(applied, &mut Vec::new(), &mut out);
    out
}

pub fn lookup<'a>(value: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(value, |current, step| match step {
        Step::Key(key) => current.get(key),
        Step::Named(name) => current
            .as_array()?
            .iter()
            .find(|item| name_of(item) == Some(name.as_str())),
    })
}

pub fn render_path(path: &[Step]) -> String {
    let mut text = String::new();
    for step in path {
        match step {
            Step::Key(key) => {
                text.push('.');
                text.push_str(key);
            }
            Step::Named(name) => text.push_str(&format!("[name=\"{name}\"]")),
        }
    }
    text
}

/// The `fieldsV1` set of an applied configuration, in the API server's `f:`/`k:` notation.
pub fn fields_v1(applied: &Value) -> Value {
    match applied {
        Value::Object(map) if !map.is_empty() => {
            let mut out = Map::new();
            for (key, child) in map {
                out.insert(format!("f:{key}"), fields_v1(child));
            }
            Value::Object(out)
        }
        Value::Array(list) if is_named_list(list) => {
            let mut out = Map::new();
            for item in list {
                let key = format!(
                    "k:{{\"name\":{}}}",
                    Value::String(name_of(item).unwrap_or_default().to_string())
                );
                let mut fields = match fields_v1(item) {
                    Value::Object(fields) => fields,
                    _ => Map::new(),
                };
                fields.insert(".".into(), Value::Object(Map::new()));
                out.insert(key, Value::Object(fields));
            }
            Value::Object(out)
        }
        _ => Value::Object(Map::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]});
        merge_patch(&mut target, &json!({"a": null, "b": {"c": 5}, "e": [3]}));
        assert_eq!(target, json!({"b": {"c": 5, "d": 3}, "e": [3]}));
    }

    #[test]
    fn named_lists_merge_by_name_and_prune_what_was_dropped() {
        let first = json!({"spec": {"containers": [{"name": "app", "image": "a:1", "env": [{"name": "X", "value": "1"}]}]}});
        let mut live = first.clone();
        // Another writer added a sidecar; it must survive our applies.
        apply_merge(
            &mut live,
            &json!({"spec": {"containers": [{"name": "sidecar", "image": "s"}]}}),
        );
        let second = json!({"spec": {"containers": [{"name": "app", "image": "a:2"}]}});
        prune(&mut live, &first, &second);
        apply_merge(&mut live, &second);
        assert_eq!(
            live,
            json!({"spec": {"containers": [{"name": "app", "image": "a:2"}, {"name": "sidecar", "image": "s"}]}})
        );
    }

    #[test]
    fn field_sets_use_the_api_server_notation() {
        let fields = fields_v1(
            &json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "app", "image": "i"}]}}}}),
        );
        assert_eq!(
            fields,
            json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:name": {}, "f:image": {}}}}}}})
        );
        let paths = leaves(
            &json!({"spec": {"replicas": 3, "containers": [{"name": "app", "image": "i"}]}}),
        );
        assert!(paths.contains(&vec![
            Step::Key("spec".into()),
            Step::Key("replicas".into())
        ]));
        assert_eq!(
            render_path(&[
                Step::Key("spec".into()),
                Step::Named("app".into()),
                Step::Key("image".into())
            ]),
            ".spec[name=\"app\"].image"
        );
    }
}
