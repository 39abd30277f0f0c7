//! Ownership and per-resource options, the way Argo CD 3.x tracks resources: the
//! `argocd.argoproj.io/tracking-id` annotation `<app>:<group>/<Kind>:<namespace>/<name>`, the
//! `argocd.argoproj.io/sync-options` and `argocd.argoproj.io/sync-wave` annotations.
//!
//! Place in the data flow: desired objects get their tracking id stamped before the diff; live
//! objects are sorted into "ours" (prune candidates) and "not ours" (never touched) here.
//!
//! Architecture invariant: an object is ours only when its tracking id names this Application
//! *and* the object itself. A copied annotation (a ReplicaSet inheriting its Deployment's, an
//! object copied by hand) names another object and is never treated as ours, so it is never
//! pruned.

use serde_json::Value;

use crate::model::kinds::{ObjectRef, group_version};

/// The tracking annotation.
pub const TRACKING_ID: &str = "argocd.argoproj.io/tracking-id";
/// The installation id an Argo CD instance stamps on what it applies (argocd-cm `installationID`),
/// so that several instances managing one cluster never take each other's objects.
pub const INSTALLATION_ID: &str = "argocd.argoproj.io/installation-id";
/// The settings ConfigMap (in the Applications namespace) Argo CD reads `installationID` from.
pub const SETTINGS_CONFIG_MAP: &str = "argocd-cm";
/// Per-resource sync options, comma-joined.
pub const SYNC_OPTIONS: &str = "argocd.argoproj.io/sync-options";
/// Sync wave (an integer, default 0).
pub const SYNC_WAVE: &str = "argocd.argoproj.io/sync-wave";
/// Resource hooks (not supported: reported and skipped).
pub const HOOK: &str = "argocd.argoproj.io/hook";
/// The namespace Argo CD's own Applications live in by default; apps elsewhere are named
/// `<ns>_<app>`.
pub const CONTROL_NAMESPACE: &str = "argocd";

/// The `<app>` part of a tracking id: the app's name, or `<namespace>_<name>` for an app outside
/// the control-plane namespace `control` (Argo's "apps in any namespace" form; the engine's
/// Applications namespace plays the role of Argo CD's own namespace).
pub fn app_key(name: &str, namespace: &str, control: &str) -> String {
    if namespace.is_empty() || namespace == control {
        name.to_string()
    } else {
        format!("{namespace}_{name}")
    }
}

/// The tracking id of `r` for `app_key`.
pub fn tracking_id(app_key: &str, r: &ObjectRef) -> String {
    format!(
        "{app_key}:{}/{}:{}/{}",
        r.group, r.kind, r.namespace, r.name
    )
}

/// A tracking id, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackingId {
    /// The app key.
    pub app: String,
    /// The object it names.
    pub object: ObjectRef,
}

/// Parse `<app>:<group>/<Kind>:<namespace>/<name>`.
pub fn parse_tracking_id(s: &str) -> Option<TrackingId> {
    let (app, rest) = s.split_once(':')?;
    let (gk, nn) = rest.split_once(':')?;
    let (group, kind) = gk.split_once('/')?;
    let (namespace, name) = nn.split_once('/')?;
    if app.is_empty() || kind.is_empty() || name.is_empty() {
        return None;
    }
    Some(TrackingId {
        app: app.to_string(),
        object: ObjectRef {
            group: group.to_string(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        },
    })
}

/// Who a live object belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Tracked to this app and names itself.
    This,
    /// Tracked to another app (a shared resource if git also has it).
    Other(String),
    /// No tracking id, or one copied from another object.
    Untracked,
}

/// Classify `live` for `app_key`, for an engine without an installation id.
pub fn owner(app_key: &str, live: &Value) -> Owner {
    owner_in(app_key, None, live)
}

/// Classify `live` for `app_key` of the engine installation `installation`: as Argo CD 3.x
/// (argo-cd `util/argo/resource_tracking.go`, `getAppInstanceValue`), an object is tracked at
/// all only when its `argocd.argoproj.io/installation-id` annotation equals the engine's
/// installation id (absent on both sides when the engine has none). Several engines, or an
/// engine and an Argo CD, can then manage one cluster with Applications of the same name.
pub fn owner_in(app_key: &str, installation: Option<&str>, live: &Value) -> Owner {
    if annotation(live, INSTALLATION_ID).unwrap_or_default() != installation.unwrap_or_default() {
        return Owner::Untracked;
    }
    let Some(id) = annotation(live, TRACKING_ID).and_then(parse_tracking_id) else {
        return Owner::Untracked;
    };
    let Some(me) = ObjectRef::of(live) else {
        return Owner::Untracked;
    };
    // Namespace in the id is compared as written: a cluster-scoped object has "".
    if id.object != me {
        return Owner::Untracked;
    }
    if id.app == app_key {
        Owner::This
    } else {
        Owner::Other(id.app)
    }
}

/// An annotation's value.
pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["annotations"][key].as_str()
}

/// Stamp a desired object with the engine's installation id, or remove one git carries when the
/// engine has none (argo-cd `SetAppInstance`).
pub fn stamp_installation(obj: &mut Value, installation: Option<&str>) {
    match installation {
        Some(id) if !id.is_empty() => set_annotation(obj, INSTALLATION_ID, id),
        _ => {
            if let Some(a) = obj["metadata"]["annotations"].as_object_mut() {
                a.remove(INSTALLATION_ID);
            }
        }
    }
}

/// Set an annotation.
pub fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    let meta = &mut obj["metadata"];
    if !meta["annotations"].is_object() {
        meta["annotations"] = Value::Object(Default::default());
    }
    meta["annotations"][key] = Value::String(value.to_string());
}

/// Per-resource sync options.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ResourceOptions {
    /// `Prune=false` (or `Prune=confirm`, which we treat as false): never delete this object.
    pub no_prune: bool,
    /// `Replace=true`.
    pub replace: bool,
    /// `Force=true` (with Replace: delete and recreate).
    pub force: bool,
    /// `PruneLast=true`.
    pub prune_last: bool,
    /// Options we do not honour, to report.
    pub unsupported: Vec<String>,
}

/// Read `argocd.argoproj.io/sync-options` from an object.
pub fn resource_options(obj: &Value) -> ResourceOptions {
    let mut o = ResourceOptions::default();
    let Some(raw) = annotation(obj, SYNC_OPTIONS) else {
        return o;
    };
    for opt in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match opt {
            "Prune=false" | "Prune=confirm" => o.no_prune = true,
            "Replace=true" => o.replace = true,
            "Force=true" => o.force = true,
            "PruneLast=true" => o.prune_last = true,
            "ServerSideApply=true" | "Prune=true" | "Replace=false" | "Validate=true" => {}
            other => o.unsupported.push(other.to_string()),
        }
    }
    o
}

/// The sync wave of an object (`Err` with the bad value when it is not an integer).
pub fn sync_wave(obj: &Value) -> Result<i64, String> {
    match annotation(obj, SYNC_WAVE) {
        None => Ok(0),
        Some(s) => s.trim().parse().map_err(|_| s.to_string()),
    }
}

/// `(group, version)` of an object.
pub fn gv(obj: &Value) -> (String, String) {
    let (g, v) = group_version(obj["apiVersion"].as_str().unwrap_or_default());
    (g.to_string(), v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "web", "namespace": "nyan", "annotations": annotations}})
    }

    #[test]
    fn ids_look_like_argos() {
        let r = ObjectRef::of(&svc(json!({}))).unwrap();
        assert_eq!(tracking_id("nyan", &r), "nyan:/Service:nyan/web");
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "nyan"}});
        assert_eq!(
            tracking_id("nyan", &ObjectRef::of(&ns).unwrap()),
            "nyan:/Namespace:/nyan"
        );
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "nyan"}});
        assert_eq!(
            tracking_id("nyan", &ObjectRef::of(&d).unwrap()),
            "nyan:apps/Deployment:nyan/web"
        );
        assert_eq!(app_key("nyan", "argocd", CONTROL_NAMESPACE), "nyan");
        assert_eq!(app_key("nyan", "team", CONTROL_NAMESPACE), "team_nyan");
        assert_eq!(app_key("nyan", "team", "team"), "nyan");
        let id = parse_tracking_id("nyan:apps/Deployment:nyan/web").unwrap();
        assert_eq!(id.app, "nyan");
        assert_eq!(id.object.kind, "Deployment");
    }

    #[test]
    fn ownership_needs_the_id_to_name_the_object_itself() {
        assert_eq!(
            owner("nyan", &svc(json!({TRACKING_ID: "nyan:/Service:nyan/web"}))),
            Owner::This
        );
        assert_eq!(
            owner(
                "nyan",
                &svc(json!({TRACKING_ID: "other:/Service:nyan/web"}))
            ),
            Owner::Other("other".into())
        );
        // Copied from a Deployment onto this Service: not ours, never pruned.
        assert_eq!(
            owner(
                "nyan",
                &svc(json!({TRACKING_ID: "nyan:apps/Deployment:nyan/web"}))
            ),
            Owner::Untracked
        );
        assert_eq!(owner("nyan", &svc(json!({}))), Owner::Untracked);
        assert_eq!(
            owner("nyan", &svc(json!({TRACKING_ID: "garbage"}))),
            Owner::Untracked
        );
    }

    #[test]
    fn another_installations_objects_are_never_ours() {
        let ours = svc(json!({TRACKING_ID: "nyan:/Service:nyan/web", INSTALLATION_ID: "lab-a"}));
        assert_eq!(owner_in("nyan", Some("lab-a"), &ours), Owner::This);
        assert_eq!(owner_in("nyan", Some("lab-b"), &ours), Owner::Untracked);
        // An engine without an id leaves stamped objects alone, and one with an id leaves
        // unstamped ones alone.
        assert_eq!(owner_in("nyan", None, &ours), Owner::Untracked);
        let plain = svc(json!({TRACKING_ID: "nyan:/Service:nyan/web"}));
        assert_eq!(owner_in("nyan", Some("lab-a"), &plain), Owner::Untracked);
        assert_eq!(owner_in("nyan", None, &plain), Owner::This);
        let mut d = svc(json!({INSTALLATION_ID: "from-git"}));
        stamp_installation(&mut d, None);
        assert!(annotation(&d, INSTALLATION_ID).is_none());
        stamp_installation(&mut d, Some("lab-a"));
        assert_eq!(annotation(&d, INSTALLATION_ID), Some("lab-a"));
    }

    #[test]
    fn resource_options_and_waves() {
        let o = resource_options(&svc(
            json!({SYNC_OPTIONS: "Prune=false, Replace=true,Force=true,Delete=false"}),
        ));
        assert!(o.no_prune && o.replace && o.force && !o.prune_last);
        assert_eq!(o.unsupported, vec!["Delete=false"]);
        assert_eq!(sync_wave(&svc(json!({SYNC_WAVE: "-2"}))), Ok(-2));
        assert_eq!(sync_wave(&svc(json!({}))), Ok(0));
        assert_eq!(
            sync_wave(&svc(json!({SYNC_WAVE: "soon"}))),
            Err("soon".into())
        );
    }
}
