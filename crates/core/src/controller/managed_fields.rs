//! Hands the status fields an earlier operator version wrote with merge patches (`Update`
//! entries in `metadata.managedFields`) to the status's server-side apply manager. Pure.
//!
//! Without this, a field only the old `Update` entry owns is never removed by a later apply that
//! leaves it out: after an upgrade, a stale `status.circuit` or `status.init` would stay forever.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use serde_json::Value;

const STATUS: &str = "status";

fn is_status_entry(entry: &ManagedFieldsEntry, manager: &str, operation: &str) -> bool {
    entry.manager.as_deref() == Some(manager)
        && entry.operation.as_deref() == Some(operation)
        && entry.subresource.as_deref() == Some(STATUS)
}

/// Whether `manager` still has `Update` entries of the status (an earlier version's writes).
pub fn has_status_updates(entries: &[ManagedFieldsEntry], manager: &str) -> bool {
    entries
        .iter()
        .any(|entry| is_status_entry(entry, manager, "Update"))
}

/// The managed fields with `manager`'s `Update` entries of the status merged into its `Apply`
/// entry, or None when there is nothing to hand over.
pub fn upgrade_status_manager(
    entries: &[ManagedFieldsEntry],
    manager: &str,
) -> Option<Vec<ManagedFieldsEntry>> {
    let legacy: Vec<&ManagedFieldsEntry> = entries
        .iter()
        .filter(|e| is_status_entry(e, manager, "Update"))
        .collect();
    if legacy.is_empty() {
        return None;
    }
    let applied = entries
        .iter()
        .find(|e| is_status_entry(e, manager, "Apply"));
    let mut fields = applied
        .and_then(|e| e.fields_v1.as_ref())
        .map_or_else(|| Value::Object(Default::default()), |f| f.0.clone());
    for entry in &legacy {
        if let Some(old) = &entry.fields_v1 {
            union(&mut fields, &old.0);
        }
    }
    let template = applied.or(legacy.first().copied())?;
    let merged = ManagedFieldsEntry {
        operation: Some("Apply".into()),
        fields_type: Some("FieldsV1".into()),
        fields_v1: Some(FieldsV1(fields)),
        ..template.clone()
    };
    let mut out: Vec<ManagedFieldsEntry> = entries
        .iter()
        .filter(|e| !is_status_entry(e, manager, "Update") && !is_status_entry(e, manager, "Apply"))
        .cloned()
        .collect();
    out.push(merged);
    Some(out)
}

/// Adds every field of the field set `other` to `into` (field sets are trees of objects).
fn union(into: &mut Value, other: &Value) {
    let (Value::Object(into), Value::Object(other)) = (into, other) else {
        return;
    };
    for (key, value) in other {
        match into.get_mut(key) {
            Some(existing) => union(existing, value),
            None => {
                into.insert(key.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(manager: &str, operation: &str, subresource: Option<&str>, fields: Value) -> Value {
        let mut e = json!({
            "manager": manager, "operation": operation, "apiVersion": "workerpool.dev/v1alpha1",
            "time": "2026-12-01T10:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": fields
        });
        if let Some(s) = subresource {
            e["subresource"] = json!(s);
        }
        e
    }

    fn entries(values: Vec<Value>) -> Vec<ManagedFieldsEntry> {
        serde_json::from_value(Value::Array(values)).expect("entries")
    }

    const M: &str = "workerpool-operator-status";

    #[test]
    fn merge_patched_status_fields_go_to_the_apply_entry() {
        let before = entries(vec![
            entry(
                "kubectl",
                "Update",
                None,
                json!({"f:spec": {"f:replicas": {}}}),
            ),
            entry(
                M,
                "Update",
                Some("status"),
                json!({"f:status": {"f:circuit": {"f:open": {}}, "f:phase": {}}}),
            ),
            entry(
                M,
                "Apply",
                Some("status"),
                json!({"f:status": {"f:phase": {}, "f:replicas": {}}}),
            ),
        ]);
        let after = upgrade_status_manager(&before, M).expect("an upgrade");
        assert_eq!(after.len(), 2);
        assert_eq!(after[0], before[0], "other managers are kept as they are");
        let applied = &after[1];
        assert_eq!(
            (
                applied.manager.as_deref(),
                applied.operation.as_deref(),
                applied.subresource.as_deref()
            ),
            (Some(M), Some("Apply"), Some("status"))
        );
        assert_eq!(
            applied.fields_v1.as_ref().map(|f| &f.0),
            Some(
                &json!({"f:status": {"f:phase": {}, "f:replicas": {}, "f:circuit": {"f:open": {}}}})
            )
        );
        assert_eq!(upgrade_status_manager(&after, M), None, "done once");
    }

    #[test]
    fn an_update_entry_alone_becomes_the_apply_entry() {
        let before = entries(vec![entry(
            M,
            "Update",
            Some("status"),
            json!({"f:status": {"f:init": {}}}),
        )]);
        let after = upgrade_status_manager(&before, M).expect("an upgrade");
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].operation.as_deref(), Some("Apply"));
        assert_eq!(
            after[0].fields_v1.as_ref().map(|f| &f.0),
            Some(&json!({"f:status": {"f:init": {}}}))
        );
    }

    #[test]
    fn nothing_to_do_without_an_update_of_the_status_by_this_manager() {
        let only_others = entries(vec![
            entry(M, "Apply", Some("status"), json!({"f:status": {}})),
            entry(M, "Update", None, json!({"f:metadata": {}})),
            entry("someone", "Update", Some("status"), json!({"f:status": {}})),
        ]);
        assert_eq!(upgrade_status_manager(&only_others, M), None);
        assert_eq!(upgrade_status_manager(&[], M), None);
        assert!(!has_status_updates(&only_others, M));
    }

    #[test]
    fn an_update_of_the_status_by_this_manager_is_seen_without_its_fields() {
        let mut updated = entries(vec![entry(M, "Update", Some("status"), json!({}))]);
        updated[0].fields_v1 = None;
        assert!(has_status_updates(&updated, M));
    }
}
