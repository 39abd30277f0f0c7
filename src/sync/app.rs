//! The `argoproj.io/v1alpha1 Application` object as the engine reads it: the fields we honour,
//! typed, and every field we do not honour named in a condition.
//!
//! Place in the data flow: first step of a reconcile — Application JSON → [`AppSpec`] plus
//! [`Condition`]s for unsupported configuration.
//!
//! Architecture invariant: nothing in an Application is silently ignored. A field that would
//! change what gets deployed and that we cannot honour (Helm, Kustomize, plugins, several
//! sources, a remote cluster) is an `InvalidSpecError` and blocks the sync; a field that does not
//! change what gets deployed is an `UnsupportedFieldWarning` (Argo treats condition types ending in
//! `Warning` as warnings, in `Error` as errors).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::status::{Condition, ConditionType};

/// API group of Applications.
pub const GROUP: &str = "argoproj.io";
/// API version of Applications.
pub const API_VERSION: &str = "argoproj.io/v1alpha1";
/// Kind.
pub const KIND: &str = "Application";
/// Plural resource name.
pub const PLURAL: &str = "applications";
/// The in-cluster destination server, as Argo names it.
pub const IN_CLUSTER_SERVER: &str = "https://kubernetes.default.svc";
/// The in-cluster destination name, as Argo names it.
pub const IN_CLUSTER_NAME: &str = "in-cluster";
/// Annotation Argo CD uses to ask for a refresh (`normal` or `hard`).
pub const REFRESH_ANNOTATION: &str = "argocd.argoproj.io/refresh";
/// Finalizer asking for cascading deletion of the app's resources (foreground).
pub const RESOURCES_FINALIZER: &str = "resources-finalizer.argocd.argoproj.io";
/// The same, with background propagation.
pub const RESOURCES_FINALIZER_BACKGROUND: &str =
    "resources-finalizer.argocd.argoproj.io/background";

/// What the engine will do for one Application, read from its spec.
#[derive(Clone, Debug, PartialEq)]
pub struct AppSpec {
    /// metadata.name — the `<app>` in tracking ids.
    pub name: String,
    /// metadata.namespace (normally `argocd`).
    pub namespace: String,
    /// spec.project.
    pub project: String,
    /// spec.source.
    pub source: Source,
    /// Namespace for namespaced objects that set none (spec.destination.namespace).
    pub destination_namespace: Option<String>,
    /// spec.syncPolicy.automated, when present and enabled.
    pub automated: Option<Automated>,
    /// spec.syncPolicy.syncOptions.
    pub options: SyncOptions,
    /// spec.syncPolicy.managedNamespaceMetadata (used with CreateNamespace=true).
    pub namespace_metadata: Option<NamespaceMetadata>,
    /// spec.syncPolicy.retry, or the default for automated syncs.
    pub retry: RetryPolicy,
    /// spec.ignoreDifferences (json pointers only).
    pub ignore_differences: Vec<IgnoreRule>,
    /// spec.revisionHistoryLimit (default 10).
    pub history_limit: usize,
    /// A manual sync requested through the top-level `operation` field (as `argocd app sync`
    /// writes it).
    pub operation: Option<RequestedSync>,
    /// metadata.deletionTimestamp is set.
    pub deleting: bool,
    /// The cascading-delete finalizer present, if any.
    pub finalizer: Option<String>,
}

/// spec.source for a plain-YAML directory.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Source {
    /// repoURL.
    pub repo_url: String,
    /// path inside the repository ("" or "." for the root).
    pub path: String,
    /// targetRevision: branch, tag, commit or `HEAD` (the default).
    pub target_revision: String,
    /// directory.recurse.
    pub recurse: bool,
    /// directory.include glob.
    pub include: Option<String>,
    /// directory.exclude glob.
    pub exclude: Option<String>,
}

/// spec.syncPolicy.automated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Automated {
    /// Delete tracked resources that left git.
    pub prune: bool,
    /// Re-sync when the live state drifts without a git change.
    pub self_heal: bool,
    /// Allow a sync that would leave the app with no resources.
    pub allow_empty: bool,
}

/// How deletions propagate (PrunePropagationPolicy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Dependents are deleted first (Argo's default).
    #[default]
    Foreground,
    /// Dependents are deleted by the garbage collector afterwards.
    Background,
    /// Dependents are kept.
    Orphan,
}

impl Propagation {
    /// The value of `DeleteOptions.propagationPolicy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Propagation::Foreground => "Foreground",
            Propagation::Background => "Background",
            Propagation::Orphan => "Orphan",
        }
    }
}

/// Application-level sync options we honour.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SyncOptions {
    /// CreateNamespace=true.
    pub create_namespace: bool,
    /// PruneLast=true: prunes run after every wave.
    pub prune_last: bool,
    /// Replace=true: objects are replaced (delete + create when immutable fields change).
    pub replace: bool,
    /// PrunePropagationPolicy.
    pub propagation: Propagation,
    /// The raw strings, echoed into operationState.operation.sync.syncOptions.
    pub raw: Vec<String>,
}

/// spec.syncPolicy.managedNamespaceMetadata.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NamespaceMetadata {
    /// Labels for the destination namespace.
    pub labels: BTreeMap<String, String>,
    /// Annotations for the destination namespace.
    pub annotations: BTreeMap<String, String>,
}

/// spec.syncPolicy.retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; negative means unlimited.
    pub limit: i64,
    /// First delay.
    pub duration: Duration,
    /// Multiplier per retry.
    pub factor: u32,
    /// Cap on one delay.
    pub max_duration: Duration,
}

impl Default for RetryPolicy {
    /// Argo's defaults: 5 retries, 5 s doubling, at most 3 min (the contract's example says an
    /// automated sync retries 5 times with 5 s, 10 s, 20 s, 40 s, 80 s).
    fn default() -> Self {
        RetryPolicy {
            limit: 5,
            duration: Duration::from_secs(5),
            factor: 2,
            max_duration: Duration::from_secs(180),
        }
    }
}

/// One spec.ignoreDifferences entry (jsonPointers only).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct IgnoreRule {
    /// API group ("" core, "*" any).
    pub group: String,
    /// Kind ("*" any).
    pub kind: String,
    /// Exact name, when set.
    pub name: Option<String>,
    /// Exact namespace, when set.
    pub namespace: Option<String>,
    /// RFC 6901 pointers to leave out of the comparison.
    pub json_pointers: Vec<String>,
}

impl IgnoreRule {
    /// Does this rule apply to the object `group/kind namespace/name`?
    pub fn matches(&self, group: &str, kind: &str, namespace: &str, name: &str) -> bool {
        (self.group == "*" || self.group == group)
            && (self.kind == "*" || self.kind == kind)
            && self.name.as_deref().is_none_or(|n| n == name)
            && self.namespace.as_deref().is_none_or(|n| n == namespace)
    }
}

/// A manual sync asked for through the Application's top-level `operation`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RequestedSync {
    /// operation.sync.revision, when it pins one.
    pub revision: Option<String>,
    /// operation.sync.prune.
    pub prune: bool,
    /// operation.initiatedBy.username.
    pub username: Option<String>,
}

/// An Application read: what we will do, and what we report about what we will not.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// The spec, when it can be acted on at all.
    pub spec: Option<AppSpec>,
    /// Unsupported or invalid configuration, as conditions.
    pub conditions: Vec<Condition>,
}

impl Parsed {
    /// True when a condition blocks syncing (an `…Error`).
    pub fn blocked(&self) -> bool {
        self.spec.is_none() || self.conditions.iter().any(|c| c.kind.is_error())
    }
}

/// Application-level sync options we accept, with what the value must be.
const SUPPORTED_OPTIONS: &[&str] = &[
    "CreateNamespace=true",
    "CreateNamespace=false",
    "PruneLast=true",
    "PruneLast=false",
    "Replace=true",
    "Replace=false",
    "ServerSideApply=true",
    // We always compare before applying, so only out-of-sync objects are written anyway.
    "ApplyOutOfSyncOnly=true",
    "ApplyOutOfSyncOnly=false",
    "PrunePropagationPolicy=foreground",
    "PrunePropagationPolicy=background",
    "PrunePropagationPolicy=orphan",
];

/// Read an Application object. Never fails: what cannot be honoured becomes a condition.
pub fn parse(app: &Value) -> Parsed {
    let mut w = Warnings::default();
    let meta = &app["metadata"];
    let name = meta["name"].as_str().unwrap_or_default().to_string();
    let namespace = meta["namespace"].as_str().unwrap_or_default().to_string();
    let spec = &app["spec"];

    if !spec.is_object() {
        w.error("spec is missing".into());
        return w.finish(None);
    }
    w.unknown(
        spec,
        "spec",
        &[
            "project",
            "source",
            "destination",
            "syncPolicy",
            "ignoreDifferences",
            "revisionHistoryLimit",
            "info",
        ],
        &["sources", "sourceHydrator"],
    );

    let project = spec["project"].as_str().unwrap_or("default").to_string();
    if project != "default" {
        w.warn(format!(
            "spec.project `{project}`: AppProject restrictions are not enforced by homelab's sync engine"
        ));
    }

    let source = match &spec["source"] {
        Value::Object(_) => read_source(&spec["source"], &mut w),
        _ => {
            if spec["sources"].is_null() {
                w.error("spec.source is missing".into());
            }
            None
        }
    };

    let dest = &spec["destination"];
    w.unknown(
        dest,
        "spec.destination",
        &["server", "name", "namespace"],
        &[],
    );
    let server = dest["server"].as_str().unwrap_or_default();
    let dest_name = dest["name"].as_str().unwrap_or_default();
    if !server.is_empty() && server.trim_end_matches('/') != IN_CLUSTER_SERVER {
        w.error(format!(
            "spec.destination.server `{server}`: only the cluster the engine runs in (`{IN_CLUSTER_SERVER}`) is supported"
        ));
    }
    if !dest_name.is_empty() && dest_name != IN_CLUSTER_NAME {
        w.error(format!(
            "spec.destination.name `{dest_name}`: only `{IN_CLUSTER_NAME}` is supported"
        ));
    }
    let destination_namespace = dest["namespace"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string);

    let policy = &spec["syncPolicy"];
    w.unknown(
        policy,
        "spec.syncPolicy",
        &[
            "automated",
            "syncOptions",
            "retry",
            "managedNamespaceMetadata",
        ],
        &[],
    );
    let automated = read_automated(&policy["automated"], &mut w);
    let options = read_options(&policy["syncOptions"], &mut w);
    let namespace_metadata = read_namespace_metadata(&policy["managedNamespaceMetadata"], &mut w);
    if namespace_metadata.is_some() && !options.create_namespace {
        w.warn(
            "spec.syncPolicy.managedNamespaceMetadata has no effect without the sync option `CreateNamespace=true`"
                .into(),
        );
    }
    let retry = read_retry(&policy["retry"], &mut w);
    let ignore_differences = read_ignore(&spec["ignoreDifferences"], &mut w);
    let history_limit = spec["revisionHistoryLimit"].as_u64().unwrap_or(10) as usize;
    let operation = read_operation(&app["operation"]);

    let finalizer = meta["finalizers"].as_array().and_then(|f| {
        f.iter()
            .filter_map(Value::as_str)
            .find(|f| *f == RESOURCES_FINALIZER || *f == RESOURCES_FINALIZER_BACKGROUND)
            .map(str::to_string)
    });

    let spec = source.map(|source| AppSpec {
        name,
        namespace,
        project,
        source,
        destination_namespace,
        automated,
        options,
        namespace_metadata,
        retry,
        ignore_differences,
        history_limit,
        operation,
        deleting: !meta["deletionTimestamp"].is_null(),
        finalizer,
    });
    w.finish(spec)
}

fn read_source(src: &Value, w: &mut Warnings) -> Option<Source> {
    w.unknown(
        src,
        "spec.source",
        &["repoURL", "path", "targetRevision", "directory", "name"],
        &["helm", "kustomize", "plugin", "chart", "ref", "tagPrefix"],
    );
    let dir = &src["directory"];
    w.unknown(
        dir,
        "spec.source.directory",
        &["recurse", "include", "exclude"],
        &[],
    );
    if let Some(j) = dir.get("jsonnet")
        && j.as_object()
            .is_some_and(|o| o.values().any(|v| !is_empty(v)))
    {
        w.error(
            "spec.source.directory.jsonnet: Jsonnet is not supported; commit plain YAML".into(),
        );
    }
    let Some(repo_url) = src["repoURL"].as_str().filter(|s| !s.is_empty()) else {
        w.error("spec.source.repoURL is missing".into());
        return None;
    };
    let glob = |key: &str, w: &mut Warnings| -> Option<String> {
        let g = dir[key].as_str().filter(|s| !s.is_empty())?;
        if let Err(e) = super::glob::Glob::new(g) {
            w.error(format!("spec.source.directory.{key} `{g}`: {e}"));
            return None;
        }
        Some(g.to_string())
    };
    Some(Source {
        repo_url: repo_url.to_string(),
        path: src["path"].as_str().unwrap_or_default().to_string(),
        target_revision: src["targetRevision"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("HEAD")
            .to_string(),
        recurse: dir["recurse"].as_bool().unwrap_or(false),
        include: glob("include", w),
        exclude: glob("exclude", w),
    })
}

fn read_automated(v: &Value, w: &mut Warnings) -> Option<Automated> {
    if !v.is_object() {
        return None;
    }
    w.unknown(
        v,
        "spec.syncPolicy.automated",
        &["prune", "selfHeal", "allowEmpty", "enabled"],
        &[],
    );
    if v["enabled"].as_bool() == Some(false) {
        return None;
    }
    Some(Automated {
        prune: v["prune"].as_bool().unwrap_or(false),
        self_heal: v["selfHeal"].as_bool().unwrap_or(false),
        allow_empty: v["allowEmpty"].as_bool().unwrap_or(false),
    })
}

fn read_options(v: &Value, w: &mut Warnings) -> SyncOptions {
    let mut o = SyncOptions::default();
    for s in v.as_array().into_iter().flatten().filter_map(Value::as_str) {
        o.raw.push(s.to_string());
        if !SUPPORTED_OPTIONS.contains(&s) {
            if s == "ServerSideApply=false" {
                w.warn(
                    "sync option `ServerSideApply=false`: homelab always applies server-side"
                        .into(),
                );
            } else {
                w.warn(format!(
                    "sync option `{s}` is not supported by homelab's sync engine and has no effect"
                ));
            }
            continue;
        }
        match s {
            "CreateNamespace=true" => o.create_namespace = true,
            "PruneLast=true" => o.prune_last = true,
            "Replace=true" => o.replace = true,
            "PrunePropagationPolicy=background" => o.propagation = Propagation::Background,
            "PrunePropagationPolicy=orphan" => o.propagation = Propagation::Orphan,
            _ => {}
        }
    }
    o
}

fn read_namespace_metadata(v: &Value, w: &mut Warnings) -> Option<NamespaceMetadata> {
    if !v.is_object() {
        return None;
    }
    w.unknown(
        v,
        "spec.syncPolicy.managedNamespaceMetadata",
        &["labels", "annotations"],
        &[],
    );
    let map = |m: &Value| -> BTreeMap<String, String> {
        m.as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect()
    };
    Some(NamespaceMetadata {
        labels: map(&v["labels"]),
        annotations: map(&v["annotations"]),
    })
}

fn read_retry(v: &Value, w: &mut Warnings) -> RetryPolicy {
    let mut r = RetryPolicy::default();
    if !v.is_object() {
        return r;
    }
    w.unknown(v, "spec.syncPolicy.retry", &["limit", "backoff"], &[]);
    if let Some(limit) = v["limit"].as_i64() {
        r.limit = limit;
    }
    let b = &v["backoff"];
    w.unknown(
        b,
        "spec.syncPolicy.retry.backoff",
        &["duration", "factor", "maxDuration"],
        &[],
    );
    let mut dur = |key: &str, into: &mut Duration| {
        if let Some(s) = b[key].as_str() {
            match parse_duration(s) {
                Some(d) => *into = d,
                None => w.warn(format!(
                    "spec.syncPolicy.retry.backoff.{key} `{s}` is not a duration (e.g. `5s`, `2m`); using {}s",
                    into.as_secs()
                )),
            }
        }
    };
    dur("duration", &mut r.duration);
    dur("maxDuration", &mut r.max_duration);
    if let Some(f) = b["factor"].as_u64() {
        r.factor = f.clamp(1, 1000) as u32;
    }
    r
}

fn read_ignore(v: &Value, w: &mut Warnings) -> Vec<IgnoreRule> {
    let mut out = Vec::new();
    for (i, rule) in v.as_array().into_iter().flatten().enumerate() {
        let path = format!("spec.ignoreDifferences[{i}]");
        w.unknown(
            rule,
            &path,
            &["group", "kind", "name", "namespace", "jsonPointers"],
            &[],
        );
        out.push(IgnoreRule {
            group: rule["group"].as_str().unwrap_or_default().to_string(),
            kind: rule["kind"].as_str().unwrap_or_default().to_string(),
            name: rule["name"].as_str().map(str::to_string),
            namespace: rule["namespace"].as_str().map(str::to_string),
            json_pointers: rule["jsonPointers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
        });
    }
    out
}

fn read_operation(v: &Value) -> Option<RequestedSync> {
    let sync = v.get("sync")?;
    Some(RequestedSync {
        revision: sync["revision"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        prune: sync["prune"].as_bool().unwrap_or(false),
        username: v["initiatedBy"]["username"].as_str().map(str::to_string),
    })
}

/// Go-style durations as Argo writes them: `5s`, `2m`, `1h30m`, `250ms`; a bare number is
/// seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += Duration::from_secs_f64(n * secs);
    }
    Some(total)
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

#[derive(Default)]
struct Warnings {
    conditions: Vec<Condition>,
}

impl Warnings {
    fn error(&mut self, message: String) {
        self.conditions
            .push(Condition::new(ConditionType::InvalidSpecError, message));
    }

    fn warn(&mut self, message: String) {
        self.conditions.push(Condition::new(
            ConditionType::UnsupportedFieldWarning,
            message,
        ));
    }

    /// Report keys of `obj` outside `known`: those in `blocking` change what is deployed and
    /// become errors; any other unknown key becomes a warning.
    fn unknown(&mut self, obj: &Value, path: &str, known: &[&str], blocking: &[&str]) {
        let Some(map) = obj.as_object() else { return };
        for (k, v) in map {
            if known.contains(&k.as_str()) || is_empty(v) {
                continue;
            }
            if blocking.contains(&k.as_str()) {
                self.error(format!(
                    "{path}.{k} is not supported by homelab's sync engine (plain YAML directories only); use the `argocd` stack for it"
                ));
            } else {
                self.warn(format!(
                    "{path}.{k} is not supported by homelab's sync engine and has no effect"
                ));
            }
        }
    }

    fn finish(self, spec: Option<AppSpec>) -> Parsed {
        Parsed {
            spec,
            conditions: self.conditions,
        }
    }
}

#[cfg(test)]
mod tests;
