//! The CustomResourceDefinition as installed: the derived one, adjusted where kube's derive cannot
//! say what the API server needs.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::{MAX_POOL_NAME, WorkerPool};

/// Upper bound on containers in the template, so the CEL rule that searches them by name has a
/// bounded estimated cost (the API server rejects rules whose worst case is unbounded).
const MAX_CONTAINERS: u64 = 64;
/// Container names are DNS labels; the bound also keeps CEL string comparisons cheap.
const MAX_CONTAINER_NAME: u64 = 63;
/// Ports per container, searched by name by the health-port rule; port names are IANA service
/// names of at most 15 characters, as the API server itself requires.
const MAX_PORTS: u64 = 64;
const MAX_PORT_NAME: u64 = 15;

/// The `WorkerPool` CRD, ready to apply.
pub fn crd() -> CustomResourceDefinition {
    let mut value = match serde_json::to_value(WorkerPool::crd()) {
        Ok(v) => v,
        Err(e) => unreachable!("a derived CRD always serializes: {e}"),
    };
    for version in value
        .pointer_mut("/spec/versions")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(root) = version.pointer_mut("/schema/openAPIV3Schema") {
            adjust_schema(root);
        }
    }
    match serde_json::from_value(value) {
        Ok(crd) => crd,
        Err(e) => unreachable!("adjusting the schema keeps it a CRD: {e}"),
    }
}

/// The CRD as YAML, exactly as checked in under `crds/`.
pub fn crd_yaml() -> String {
    match crate::yaml::to_string(&crd()) {
        Ok(yaml) => yaml,
        Err(e) => unreachable!("a CRD always serializes to YAML: {e}"),
    }
}

fn adjust_schema(root: &mut Value) {
    signed_integer_formats(root);
    root["x-kubernetes-validations"] = json!([{
        "rule": format!("size(self.metadata.name) <= {MAX_POOL_NAME}"),
        "message": pool_name_message(),
    }]);
    if let Some(template) = root.pointer_mut("/properties/spec/properties/template") {
        // The embedded PodTemplateSpec schema with descriptions is larger than the 256 KiB
        // last-applied annotation `kubectl apply` writes; its structure is what admission needs.
        strip_descriptions(template);
        if let Some(containers) = template.pointer_mut("/properties/spec/properties/containers") {
            containers["maxItems"] = json!(MAX_CONTAINERS);
            if let Some(name) = containers.pointer_mut("/items/properties/name") {
                name["maxLength"] = json!(MAX_CONTAINER_NAME);
            }
            if let Some(ports) = containers.pointer_mut("/items/properties/ports") {
                ports["maxItems"] = json!(MAX_PORTS);
                if let Some(name) = ports.pointer_mut("/items/properties/name") {
                    name["maxLength"] = json!(MAX_PORT_NAME);
                }
            }
        }
    }
    // A named health port is a port name (at most 15 characters): bounded, the rule that looks
    // for it among the app container's ports fits the API server's cost budget.
    if let Some(port) = root.pointer_mut("/properties/spec/properties/health/properties/port") {
        port["maxLength"] = json!(MAX_PORT_NAME);
    }
    if let Some(status) = root.pointer_mut("/properties/status") {
        // A pool the operator has not seen must not read as current to kstatus.
        status["default"] = json!({});
        if let Some(observed) = status.pointer_mut("/properties/observedGeneration") {
            observed["default"] = json!(-1);
        }
        if let Some(conditions) = status.pointer_mut("/properties/conditions") {
            conditions["x-kubernetes-list-type"] = json!("map");
            conditions["x-kubernetes-list-map-keys"] = json!(["type"]);
            conditions["maxItems"] = json!(8);
        }
    }
}

/// Why a pool name is refused, the same from the API server and from `render`.
pub fn pool_name_message() -> String {
    format!(
        "metadata.name must be at most {MAX_POOL_NAME} characters: it becomes the pods' label value"
    )
}

/// schemars names unsigned integers `uint32` and the like; the API server knows only `int32` and
/// `int64`, and warns on every install of a CRD with another. The range stays as a bound.
fn signed_integer_formats(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let bound = match map.get("format").and_then(Value::as_str) {
                Some("uint8") => Some(("int32", Some(u64::from(u8::MAX)))),
                Some("uint16") => Some(("int32", Some(u64::from(u16::MAX)))),
                Some("uint32") => Some(("int64", Some(u64::from(u32::MAX)))),
                Some("uint64" | "uint") => Some(("int64", None)),
                _ => None,
            };
            if let Some((format, maximum)) = bound {
                map.insert("format".into(), json!(format));
                map.insert("minimum".into(), json!(0));
                if let Some(maximum) = maximum {
                    map.insert("maximum".into(), json!(maximum));
                }
            }
            map.values_mut().for_each(signed_integer_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(signed_integer_formats),
        _ => {}
    }
}

fn strip_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            // A property may itself be called "description"; only drop the keyword.
            if map.get("description").is_some_and(Value::is_string) {
                map.remove("description");
            }
            for child in map.values_mut() {
                strip_descriptions(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}
