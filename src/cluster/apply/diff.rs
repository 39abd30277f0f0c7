//! Deciding whether an object needs a write: what homelab sends (desired, prepared) against what
//! the cluster holds (live).
//!
//! Architecture invariant: pure functions over `serde_json::Value`. An object is left alone when
//! every field homelab sets already has that value live *and* the live hash annotation equals the
//! hash of the desired object's shape (its field paths, not their values), so a field removed
//! from a template (which the subset test alone cannot see) still causes an apply, while a value
//! that is already live — e.g. one the CI wiring wrote before the lab state could render it — is
//! not a change.

use serde_json::{Map, Value};

use crate::edges::digest::sha256_hex;

/// Annotation holding the sha256 of the applied configuration.
pub const HASH_ANNOTATION: &str = "homelab.dev/applied-hash";

/// The object as it will be sent: without `status`, server-set metadata and nulls, with the
/// hash annotation of the rest's shape.
pub fn prepare(obj: &Value) -> Value {
    let mut out = obj.clone();
    drop_nulls(&mut out);
    if let Some(m) = out.as_object_mut() {
        // Status belongs to controllers; the apply endpoint ignores it anyway.
        m.remove("status");
    }
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "creationTimestamp",
            "resourceVersion",
            "uid",
            "generation",
            "managedFields",
            "selfLink",
        ] {
            meta.remove(k);
        }
        if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            ann.remove(HASH_ANNOTATION);
            // An annotations map we emptied must hash like one that was never there.
            if ann.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    // Values are compared live by `is_subset`; the hash only has to tell which fields exist.
    let hash = sha256_hex(&canonical_bytes(&shape(&out)));
    let meta = out
        .as_object_mut()
        .expect("objects are maps")
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let ann = meta
        .as_object_mut()
        .expect("metadata is a map")
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(a) = ann.as_object_mut() {
        a.insert(
            HASH_ANNOTATION.into(),
            Value::String(hash[..32].to_string()),
        );
    }
    out
}

/// The field paths of `v`: every leaf value replaced by `true` (list lengths kept).
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), shape(x))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        _ => Value::Bool(true),
    }
}

/// serde_json maps are sorted (no `preserve_order`), so this is canonical.
fn canonical_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("values serialize")
}

fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// True when every field of `desired` has the same value in `live` (maps compared key by key,
/// lists element by element with the same length; numbers by value).
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d
            .iter()
            .all(|(k, dv)| l.get(k).is_some_and(|lv| is_subset(dv, lv))),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(a, b)| is_subset(a, b))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

/// The live object without what changes on every write, for comparing a dry-run result with it.
pub fn comparable(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        meta.remove("resourceVersion");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_ignores_server_defaults_but_not_changes() {
        let desired = prepare(&json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "creationTimestamp": null},
            "spec": {"ports": [{"port": 80}]}, "status": {}}));
        assert!(desired["metadata"].get("creationTimestamp").is_none());
        assert!(desired.get("status").is_none());
        let mut live = desired.clone();
        live["spec"]["clusterIP"] = json!("10.0.0.1");
        live["spec"]["ports"][0]["protocol"] = json!("TCP");
        assert!(is_subset(&desired, &live));
        live["spec"]["ports"][0]["port"] = json!(81);
        assert!(!is_subset(&desired, &live));
    }

    #[test]
    fn removing_a_field_changes_the_hash() {
        let a = prepare(
            &json!({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "1", "y": "2"}}),
        );
        let b =
            prepare(&json!({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "1"}}));
        // b's fields are all in a's, yet b must not count as applied.
        assert!(!is_subset(&b, &a));
        // Re-preparing a prepared object is stable.
        assert_eq!(prepare(&a), a);
    }

    #[test]
    fn a_value_already_live_is_not_a_change() {
        // The first `up` renders Drone's OAuth client id empty; the CI wiring then writes it
        // (with its own field manager); the next render carries the same id. Regression: the
        // second `up` wrote the Secret and the Deployment again, and so ran verify again.
        let first = prepare(
            &json!({"kind": "Secret", "metadata": {"name": "drone"}, "data": {"gitea-client-id": ""}}),
        );
        let mut live = first.clone();
        live["data"]["gitea-client-id"] = json!("aWQ=");
        let second = prepare(
            &json!({"kind": "Secret", "metadata": {"name": "drone"}, "data": {"gitea-client-id": "aWQ="}}),
        );
        assert!(is_subset(&second, &live));
        // A value that is not live still is one.
        live["data"]["gitea-client-id"] = json!("b3RoZXI=");
        assert!(!is_subset(&second, &live));
    }
}
