//! Normalisation of desired objects and their comparison with live ones, so that an unchanged
//! object never shows a difference, and a readable diff (`homelab diff`) with secrets redacted.
//!
//! Place in the data flow: desired objects (from [`super::manifests`]) → [`normalize`] →
//! [`compare`] against the live object from the watch cache → Synced / OutOfSync per object;
//! [`render`] for people.
//!
//! Architecture invariant: the comparison asks "would a server-side apply of `desired` change
//! `live`?", the question that matters when every write is a server-side apply: every field git
//! sets must have that value live (fields the server or other controllers add — defaults,
//! status, managedFields, resourceVersion — do not count), and every field our field manager
//! owns live must still be in git (otherwise the apply would remove it). Pure and allocation-
//! light: it runs over every managed object on every reconcile.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::app::IgnoreRule;
use super::status::SyncCode;
use super::tracking::{TRACKING_ID, set_annotation, tracking_id};
use crate::edges::redact::REDACTED;
use crate::model::kinds::ObjectRef;

/// Metadata fields the server owns; never compared.
const SERVER_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Shape a desired object the way it will be applied: namespace filled in for namespaced kinds
/// (and removed for cluster-scoped ones), tracking id stamped, `status` dropped, Secret
/// `stringData` folded into `data` (the API server does the same, so live never has
/// `stringData`).
pub fn normalize(
    obj: &mut Value,
    app_key: &str,
    default_namespace: Option<&str>,
    namespaced: bool,
) {
    let meta = &mut obj["metadata"];
    if namespaced {
        if meta["namespace"].as_str().is_none_or(str::is_empty)
            && let Some(ns) = default_namespace
        {
            meta["namespace"] = Value::String(ns.to_string());
        }
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
    if obj["kind"] == "Secret"
        && obj["apiVersion"] == "v1"
        && let Some(string_data) = obj
            .as_object_mut()
            .and_then(|o| o.remove("stringData"))
            .and_then(|v| v.as_object().cloned())
    {
        if !obj["data"].is_object() {
            obj["data"] = Value::Object(Map::new());
        }
        for (k, v) in string_data {
            let text = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            obj["data"][k] = Value::String(base64::engine::general_purpose::STANDARD.encode(text));
        }
    }
    if let Some(r) = ObjectRef::of(obj) {
        set_annotation(obj, TRACKING_ID, &tracking_id(app_key, &r));
    }
}

/// How to compare.
#[derive(Clone, Copy, Debug)]
pub struct CompareConfig<'a> {
    /// Our server-side-apply field manager: fields it owns live but git dropped are a diff.
    pub manager: &'a str,
    /// spec.ignoreDifferences.
    pub ignore: &'a [IgnoreRule],
}

/// The result for one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comparison {
    /// Synced or OutOfSync (`OutOfSync` when the object is missing).
    pub status: SyncCode,
    /// The first difference found, as a dotted path, for logs and messages.
    pub first_difference: Option<String>,
}

/// Compare a normalised desired object with its live counterpart.
pub fn compare(desired: &Value, live: Option<&Value>, cfg: CompareConfig<'_>) -> Comparison {
    let Some(live) = live else {
        return Comparison {
            status: SyncCode::OutOfSync,
            first_difference: Some("(missing)".into()),
        };
    };
    if live["metadata"]["deletionTimestamp"].is_string() {
        // It is going (finalizers hold it): git wants an object that will not be there, so it is
        // not in sync however well its fields match.
        return Comparison {
            status: SyncCode::OutOfSync,
            first_difference: Some("(being deleted)".into()),
        };
    }
    let pointers = ignored_pointers(desired, cfg.ignore);
    let (d, l);
    let (stripped_desired, stripped_live) = if pointers.is_empty() {
        (desired, live)
    } else {
        d = without_pointers(desired, &pointers);
        l = without_pointers(live, &pointers);
        (&d, &l)
    };
    let mut path = Vec::new();
    if let Some(p) = first_mismatch(stripped_desired, stripped_live, &mut path) {
        return Comparison {
            status: SyncCode::OutOfSync,
            first_difference: Some(p),
        };
    }
    if let Some(owned) = owned_fields(live, cfg.manager)
        && let Some(p) = owned_but_dropped(owned, desired, &mut Vec::new())
    {
        return Comparison {
            status: SyncCode::OutOfSync,
            first_difference: Some(format!("{p} (removed from git)")),
        };
    }
    Comparison {
        status: SyncCode::Synced,
        first_difference: None,
    }
}

fn ignored_pointers(desired: &Value, rules: &[IgnoreRule]) -> Vec<String> {
    let Some(r) = ObjectRef::of(desired) else {
        return Vec::new();
    };
    rules
        .iter()
        .filter(|rule| rule.matches(&r.group, &r.kind, &r.namespace, &r.name))
        .flat_map(|rule| rule.json_pointers.iter().cloned())
        .collect()
}

fn without_pointers(v: &Value, pointers: &[String]) -> Value {
    let mut v = v.clone();
    for p in pointers {
        let Some((parent, last)) = p.rsplit_once('/') else {
            continue;
        };
        let last = last.replace("~1", "/").replace("~0", "~");
        match v.pointer_mut(parent) {
            Some(Value::Object(m)) => {
                m.remove(&last);
            }
            Some(Value::Array(a)) => {
                if let Ok(i) = last.parse::<usize>()
                    && i < a.len()
                {
                    a.remove(i);
                }
            }
            _ => {}
        }
    }
    v
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn dotted(path: &[String]) -> String {
    path.join(".")
}

/// The first path where `live` lacks what `desired` says, or `None` when desired ⊆ live.
fn first_mismatch(desired: &Value, live: &Value, path: &mut Vec<String>) -> Option<String> {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            for (k, dv) in d {
                if path.is_empty() && k == "status" {
                    continue;
                }
                if path.len() == 1 && path[0] == "metadata" && SERVER_METADATA.contains(&k.as_str())
                {
                    continue;
                }
                path.push(k.clone());
                let r = match l.get(k) {
                    // `foo: {}`, `foo: []` and `foo: null` in git match a field the server
                    // dropped or never stored.
                    None => (!is_empty(dv)).then(|| dotted(path)),
                    Some(lv) => {
                        if is_empty(dv) && is_empty(lv) {
                            None
                        } else {
                            first_mismatch(dv, lv, path)
                        }
                    }
                };
                path.pop();
                if r.is_some() {
                    return r;
                }
            }
            None
        }
        (Value::Array(d), Value::Array(l)) => {
            if d.len() != l.len() {
                return Some(format!(
                    "{} (length {} ≠ {})",
                    dotted(path),
                    d.len(),
                    l.len()
                ));
            }
            for (i, (dv, lv)) in d.iter().zip(l).enumerate() {
                path.push(i.to_string());
                let r = first_mismatch(dv, lv, path);
                path.pop();
                if r.is_some() {
                    return r;
                }
            }
            None
        }
        (Value::Number(a), Value::Number(b)) => {
            (a != b && a.as_f64() != b.as_f64()).then(|| dotted(path))
        }
        (Value::String(a), Value::String(b)) => {
            if a == b || (is_quantity_path(path) && quantities_equal(a, b)) {
                None
            } else {
                Some(dotted(path))
            }
        }
        // An integer quantity in git (`cpu: 1`) is stored as a string (`"1"`).
        (Value::Number(n), Value::String(s)) if is_quantity_path(path) => {
            (!quantities_equal(&n.to_string(), s)).then(|| dotted(path))
        }
        (Value::Null, _) => None,
        (a, b) => (a != b).then(|| dotted(path)),
    }
}

fn is_quantity_path(path: &[String]) -> bool {
    path.iter().any(|p| {
        matches!(
            p.as_str(),
            "resources" | "limits" | "requests" | "capacity" | "hard" | "overhead"
        )
    })
}

/// Compare two Kubernetes quantities by value (`0.5` = `500m`, `1Gi` = `1024Mi`).
pub fn quantities_equal(a: &str, b: &str) -> bool {
    match (parse_quantity(a), parse_quantity(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// A quantity in units of 10^-9, exactly (enough for every suffix Kubernetes accepts).
fn parse_quantity(s: &str) -> Option<i128> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let neg = int_part.starts_with('-');
    let int_digits = int_part.trim_start_matches(['-', '+']);
    let frac: String = frac_part
        .chars()
        .chain(std::iter::repeat('0'))
        .take(9)
        .collect();
    if frac_part.len() > 9 {
        return None;
    }
    let base: i128 =
        int_digits.parse::<i128>().unwrap_or(0) * 1_000_000_000 + frac.parse::<i128>().ok()?;
    let (mul, div): (i128, i128) = match suffix {
        "" => (1, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1000),
        "k" => (1000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        s if s.starts_with(['e', 'E']) => (10i128.checked_pow(s[1..].parse().ok()?)?, 1),
        _ => return None,
    };
    let v = base.checked_mul(mul)? / div;
    Some(if neg { -v } else { v })
}

/// The `fieldsV1` tree our manager owns through `Apply`, if the live object records one.
fn owned_fields<'a>(live: &'a Value, manager: &str) -> Option<&'a Map<String, Value>> {
    live["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|m| m["manager"] == manager && m["operation"] == "Apply")?
        .get("fieldsV1")?
        .as_object()
}

/// The first field our manager owns that `desired` no longer sets.
fn owned_but_dropped(
    owned: &Map<String, Value>,
    desired: &Value,
    path: &mut Vec<String>,
) -> Option<String> {
    for (key, sub) in owned {
        let sub_map = sub.as_object();
        if key == "." {
            continue;
        }
        if let Some(field) = key.strip_prefix("f:") {
            if path.is_empty() && field == "status" {
                continue;
            }
            path.push(field.to_string());
            let r = match desired.get(field) {
                None => Some(dotted(path)),
                Some(child) => sub_map.and_then(|m| owned_but_dropped(m, child, path)),
            };
            path.pop();
            if r.is_some() {
                return r;
            }
        } else if let Some(keys) = key.strip_prefix("k:") {
            // A list element identified by its merge keys (`k:{"name":"web"}`).
            let Ok(Value::Object(want)) = serde_json::from_str::<Value>(keys) else {
                continue;
            };
            let found = desired.as_array().and_then(|items| {
                items.iter().find(|item| {
                    // A key field git leaves out (`protocol`) was defaulted by the server.
                    want.iter()
                        .all(|(k, v)| item.get(k).is_none_or(|iv| scalar_eq(iv, v)))
                })
            });
            path.push(keys.to_string());
            let r = match found {
                None => Some(dotted(path)),
                Some(item) => sub_map.and_then(|m| owned_but_dropped(m, item, path)),
            };
            path.pop();
            if r.is_some() {
                return r;
            }
        } else if let Some(value) = key.strip_prefix("v:") {
            // A set element (`v:"a"`).
            let Ok(want) = serde_json::from_str::<Value>(value) else {
                continue;
            };
            let present = desired
                .as_array()
                .is_some_and(|items| items.iter().any(|i| scalar_eq(i, &want)));
            if !present {
                path.push(value.to_string());
                let p = dotted(path);
                path.pop();
                return Some(p);
            }
        }
        // `i:<n>` (atomic lists by index) are covered by the element-wise comparison.
    }
    None
}

fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// How to render a diff.
#[derive(Clone, Copy, Debug)]
pub struct RenderConfig {
    /// Lines of context around each change.
    pub context: usize,
}

/// A unified diff between the live object (reduced to the fields git sets and the fields our
/// manager owns, so server noise does not show) and the desired one; Secret values redacted.
/// Empty when there is no textual difference.
pub fn render(desired: &Value, live: Option<&Value>, manager: &str, cfg: RenderConfig) -> String {
    let owned = live.and_then(|l| owned_fields(l, manager));
    let mut live_view = live
        .map(|l| project(l, desired, owned, &mut Vec::new()))
        .unwrap_or(Value::Null);
    let mut desired_view = desired.clone();
    if desired["kind"] == "Secret" {
        redact_secret_pair(&mut desired_view, &mut live_view);
    }
    let a = if live_view.is_null() {
        String::new()
    } else {
        crate::edges::yaml::to_string(&live_view).unwrap_or_default()
    };
    let b = crate::edges::yaml::to_string(&desired_view).unwrap_or_default();
    unified(&a, &b, cfg.context)
}

/// Keep the parts of `live` that git sets or our manager owns; values equal in meaning (`500m`
/// and `0.5`) are shown as git writes them, so only real differences appear.
fn project(
    live: &Value,
    desired: &Value,
    owned: Option<&Map<String, Value>>,
    path: &mut Vec<String>,
) -> Value {
    let depth = path.len();
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => {
            let mut out = Map::new();
            for (k, lv) in l {
                if depth == 0 && k == "status" {
                    continue;
                }
                if depth == 1 && SERVER_METADATA.contains(&k.as_str()) {
                    continue;
                }
                let owned_child = owned
                    .and_then(|o| o.get(&format!("f:{k}")))
                    .and_then(Value::as_object);
                match d.get(k) {
                    Some(dv) => {
                        path.push(k.clone());
                        out.insert(k.clone(), project(lv, dv, owned_child, path));
                        path.pop();
                    }
                    None if owned_child.is_some() => {
                        out.insert(k.clone(), lv.clone());
                    }
                    None => {}
                }
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(d)) if l.len() == d.len() => Value::Array(
            l.iter()
                .zip(d)
                .enumerate()
                .map(|(i, (lv, dv))| {
                    path.push(i.to_string());
                    let v = project(lv, dv, None, path);
                    path.pop();
                    v
                })
                .collect(),
        ),
        (Value::Array(_) | Value::Object(_), _) => live.clone(),
        (_, Value::Array(_) | Value::Object(_)) => live.clone(),
        _ => {
            if first_mismatch(desired, live, path).is_none() {
                desired.clone()
            } else {
                live.clone()
            }
        }
    }
}

/// Replace Secret values on both sides: equal values become `<redacted>`, differing ones
/// `<redacted: live>` / `<redacted: git>` so the diff still shows *that* a key changed.
fn redact_secret_pair(desired: &mut Value, live: &mut Value) {
    for field in ["data", "stringData"] {
        let d = desired[field].as_object().cloned().unwrap_or_default();
        let l = live
            .get(field)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let keys: std::collections::BTreeSet<&String> = d.keys().chain(l.keys()).collect();
        let mut dn = Map::new();
        let mut ln = Map::new();
        for k in keys {
            let same = d.get(k) == l.get(k);
            if d.contains_key(k) {
                let text = if same {
                    REDACTED.to_string()
                } else {
                    "<redacted: git>".to_string()
                };
                dn.insert(k.clone(), Value::String(text));
            }
            if l.contains_key(k) {
                let text = if same {
                    REDACTED.to_string()
                } else {
                    "<redacted: live>".to_string()
                };
                ln.insert(k.clone(), Value::String(text));
            }
        }
        if desired.get(field).is_some() {
            desired[field] = Value::Object(dn);
        }
        if live.get(field).is_some() {
            live[field] = Value::Object(ln);
        }
    }
    // kubectl's last-applied annotation carries the values in clear.
    for v in [desired, live] {
        if let Some(a) = v["metadata"]["annotations"].as_object_mut() {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
}

/// A unified line diff (`--- live` / `+++ git`), empty when equal.
pub fn unified(a: &str, b: &str, context: usize) -> String {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    if a == b {
        return String::new();
    }
    // LCS table; manifests are small (hundreds of lines), so O(n·m) is fine.
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Op {
        Eq,
        Del,
        Add,
    }
    let mut ops: Vec<(Op, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((Op::Eq, a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push((Op::Del, a[i]));
            i += 1;
        } else {
            ops.push((Op::Add, b[j]));
            j += 1;
        }
    }
    let mut keep = vec![false; ops.len()];
    for (k, (op, _)) in ops.iter().enumerate() {
        if *op != Op::Eq {
            let lo = k.saturating_sub(context);
            let hi = (k + context + 1).min(ops.len());
            keep[lo..hi].iter_mut().for_each(|x| *x = true);
        }
    }
    let mut out = String::from("--- live\n+++ git\n");
    let mut gap = false;
    for (k, (op, line)) in ops.iter().enumerate() {
        if !keep[k] {
            gap = true;
            continue;
        }
        if gap {
            out.push_str("@@\n");
            gap = false;
        }
        let mark = match op {
            Op::Eq => ' ',
            Op::Del => '-',
            Op::Add => '+',
        };
        out.push(mark);
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Count objects per sync code (for summaries).
pub fn tally(codes: impl IntoIterator<Item = SyncCode>) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for c in codes {
        *m.entry(c.as_str()).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests;
