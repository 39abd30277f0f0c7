//! Application `.status` in Argo CD's vocabulary: sync and health codes, per-resource status,
//! the last operation's state, history and conditions.
//!
//! Place in the data flow: last step of a reconcile — comparison + health + sync results →
//! the `.status` object the engine writes (and `homelab apps` reads).
//!
//! Architecture invariant: pure; timestamps are passed in, never read from the clock, and every
//! field name and enum value is one the contract CRD (Argo CD 3.5.1) defines, so Argo CD could
//! read what we write.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

/// Condition types we write. Argo treats a type ending in `Error` as an error, in `Warning` as a
/// warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConditionType {
    /// The Application asks for something we cannot do (blocks syncing).
    InvalidSpecError,
    /// Fetching or reading the source failed, so live state cannot be compared.
    ComparisonError,
    /// Applying or pruning failed.
    SyncError,
    /// A field or option we do not honour and that does not change what is deployed.
    UnsupportedFieldWarning,
    /// Two manifests describe the same object.
    RepeatedResourceWarning,
    /// A manifest describes an object another Application tracks.
    SharedResourceWarning,
}

impl ConditionType {
    /// The string written to `.status.conditions[].type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::InvalidSpecError => "InvalidSpecError",
            ConditionType::ComparisonError => "ComparisonError",
            ConditionType::SyncError => "SyncError",
            ConditionType::UnsupportedFieldWarning => "UnsupportedFieldWarning",
            ConditionType::RepeatedResourceWarning => "RepeatedResourceWarning",
            ConditionType::SharedResourceWarning => "SharedResourceWarning",
        }
    }

    /// True for `…Error` types.
    pub fn is_error(self) -> bool {
        self.as_str().ends_with("Error")
    }
}

/// One `.status.conditions[]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// type.
    #[serde(rename = "type")]
    pub kind: ConditionType,
    /// message.
    pub message: String,
    /// lastTransitionTime (kept from the previous status while the condition persists).
    #[serde(rename = "lastTransitionTime", skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

impl Condition {
    /// A new condition (its time is set when the status is built).
    pub fn new(kind: ConditionType, message: impl Into<String>) -> Self {
        Condition {
            kind,
            message: message.into(),
            last_transition_time: None,
        }
    }
}

/// `.status.sync.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SyncCode {
    /// Live matches git.
    Synced,
    /// Live differs from git.
    OutOfSync,
    /// Could not compare.
    #[default]
    Unknown,
}

impl SyncCode {
    /// As written.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncCode::Synced => "Synced",
            SyncCode::OutOfSync => "OutOfSync",
            SyncCode::Unknown => "Unknown",
        }
    }
}

/// Health codes, declared from healthiest to worst: the derived order is Argo's `IsWorse`
/// order (Healthy < Suspended < Progressing < Missing < Degraded < Unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub enum HealthCode {
    /// Fully healthy.
    #[default]
    Healthy,
    /// Paused or suspended on purpose.
    Suspended,
    /// Not healthy yet, still has a chance.
    Progressing,
    /// Not in the cluster.
    Missing,
    /// Failed or stuck.
    Degraded,
    /// Health could not be assessed.
    Unknown,
}

impl HealthCode {
    /// As written.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthCode::Healthy => "Healthy",
            HealthCode::Suspended => "Suspended",
            HealthCode::Progressing => "Progressing",
            HealthCode::Missing => "Missing",
            HealthCode::Degraded => "Degraded",
            HealthCode::Unknown => "Unknown",
        }
    }
}

/// A health assessment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Health {
    /// status.
    pub status: HealthCode,
    /// message (omitted when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl Health {
    /// A health with a message.
    pub fn new(status: HealthCode, message: impl Into<String>) -> Self {
        Health {
            status,
            message: message.into(),
        }
    }
}

/// `.status.resources[]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// API group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Namespace ("" omitted).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Synced / OutOfSync.
    pub status: SyncCode,
    /// Health, for kinds that have a check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Live, tracked, not in git: would be pruned.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requires_pruning: bool,
    /// The resource's sync wave.
    #[serde(default)]
    pub sync_wave: i64,
}

/// `.status.operationState.phase`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationPhase {
    /// In progress.
    Running,
    /// Done, everything applied.
    Succeeded,
    /// Done, something failed.
    Failed,
    /// Could not run.
    Error,
}

/// `.status.operationState.syncResult.resources[].status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResultCode {
    /// Applied.
    Synced,
    /// Apply failed.
    SyncFailed,
    /// Deleted.
    Pruned,
    /// Would be pruned, but pruning is off or the resource says `Prune=false`.
    PruneSkipped,
}

/// One `.status.operationState.syncResult.resources[]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceResult {
    /// API group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Namespace (required by the CRD, may be "").
    pub namespace: String,
    /// Name.
    pub name: String,
    /// What happened.
    pub status: ResultCode,
    /// Detail ("configured", "pruned", the error).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Always `Sync`: hooks are not run.
    pub sync_phase: String,
}

/// Who started an operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InitiatedBy {
    /// True for automated syncs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub automated: bool,
    /// The user for manual syncs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// `.status.operationState`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationState {
    /// The operation that ran.
    pub operation: Value,
    /// Phase.
    pub phase: OperationPhase,
    /// Summary.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Start.
    pub started_at: String,
    /// End.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Failed attempts so far in this operation.
    #[serde(default)]
    pub retry_count: i64,
    /// Per-resource results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_result: Option<Value>,
}

/// Build `.status.operationState` for a sync of `revision`.
pub struct OperationInput<'a> {
    /// Revision (commit SHA) synced.
    pub revision: &'a str,
    /// `spec.source` as it was, echoed into the result.
    pub source: &'a Value,
    /// Whether prunes were allowed.
    pub prune: bool,
    /// The Application's syncOptions strings.
    pub sync_options: &'a [String],
    /// Who started it.
    pub initiated_by: InitiatedBy,
    /// Phase.
    pub phase: OperationPhase,
    /// Summary.
    pub message: String,
    /// Start.
    pub started_at: String,
    /// End.
    pub finished_at: Option<String>,
    /// Attempts that failed before this one.
    pub retry_count: i64,
    /// Per-resource results.
    pub results: Vec<ResourceResult>,
}

impl OperationState {
    /// Build from the engine's results.
    pub fn build(i: OperationInput<'_>) -> OperationState {
        let mut sync = serde_json::json!({"revision": i.revision, "prune": i.prune});
        if !i.sync_options.is_empty() {
            sync["syncOptions"] = serde_json::json!(i.sync_options);
        }
        OperationState {
            operation: serde_json::json!({
                "sync": sync,
                "initiatedBy": i.initiated_by,
                "retry": {},
            }),
            phase: i.phase,
            message: i.message,
            started_at: i.started_at,
            finished_at: i.finished_at,
            retry_count: i.retry_count,
            sync_result: Some(serde_json::json!({
                "revision": i.revision,
                "source": i.source,
                "resources": i.results,
            })),
        }
    }
}

/// Everything `.status` is built from.
pub struct StatusInput<'a> {
    /// The previous `.status` (for history and transition times), `Null` when none.
    pub previous: &'a Value,
    /// spec.source as written.
    pub source: &'a Value,
    /// spec.destination as written.
    pub destination: &'a Value,
    /// Comparison result; `Unknown` when the source could not be read.
    pub sync: SyncCode,
    /// The commit compared against, when known.
    pub revision: Option<&'a str>,
    /// App health.
    pub health: Health,
    /// Per resource.
    pub resources: Vec<ResourceStatus>,
    /// The operation that ran in this reconcile, if any; otherwise the previous one is kept.
    pub operation: Option<OperationState>,
    /// A successful sync to record in history.
    pub deployed: Option<Deployed<'a>>,
    /// spec.revisionHistoryLimit.
    pub history_limit: usize,
    /// Current conditions.
    pub conditions: Vec<Condition>,
    /// Now, RFC 3339.
    pub now: &'a str,
}

/// A successful sync, for `.status.history`.
pub struct Deployed<'a> {
    /// Revision deployed.
    pub revision: &'a str,
    /// When the sync started.
    pub started_at: &'a str,
    /// Who started it.
    pub initiated_by: InitiatedBy,
}

/// Build the whole `.status` object.
pub fn build(i: StatusInput<'_>) -> Value {
    let prev = i.previous;
    let health_since = if prev["health"]["status"].as_str() == Some(i.health.status.as_str()) {
        prev["health"]["lastTransitionTime"]
            .as_str()
            .unwrap_or(i.now)
            .to_string()
    } else {
        i.now.to_string()
    };
    let mut conditions = i.conditions;
    for c in &mut conditions {
        let kept = prev["conditions"].as_array().and_then(|cs| {
            cs.iter().find(|p| {
                p["type"].as_str() == Some(c.kind.as_str())
                    && p["message"].as_str() == Some(c.message.as_str())
            })
        });
        c.last_transition_time = Some(
            kept.and_then(|p| p["lastTransitionTime"].as_str())
                .unwrap_or(i.now)
                .to_string(),
        );
    }
    let mut history: Vec<Value> = prev["history"].as_array().cloned().unwrap_or_default();
    if let Some(d) = i.deployed {
        let id = history
            .iter()
            .filter_map(|h| h["id"].as_i64())
            .max()
            .map_or(0, |m| m + 1);
        history.push(serde_json::json!({
            "id": id,
            "revision": d.revision,
            "deployStartedAt": d.started_at,
            "deployedAt": i.now,
            "source": i.source,
            "initiatedBy": d.initiated_by,
        }));
    }
    if history.len() > i.history_limit {
        history.drain(..history.len() - i.history_limit);
    }
    let operation_state = match i.operation {
        Some(op) => serde_json::to_value(op).expect("status serializes"),
        None => prev["operationState"].clone(),
    };
    let mut sync = serde_json::json!({
        "status": i.sync.as_str(),
        "comparedTo": {"source": i.source, "destination": i.destination},
    });
    if let Some(r) = i.revision {
        sync["revision"] = Value::String(r.to_string());
    }
    let mut status = serde_json::json!({
        "sync": sync,
        "health": {
            "status": i.health.status.as_str(),
            "lastTransitionTime": health_since,
        },
        "resources": i.resources,
        "reconciledAt": i.now,
        "sourceType": "Directory",
        "summary": {},
        "conditions": conditions,
    });
    if !i.health.message.is_empty() {
        status["health"]["message"] = Value::String(i.health.message);
    }
    if !history.is_empty() {
        status["history"] = Value::Array(history);
    }
    if !operation_state.is_null() {
        status["operationState"] = operation_state;
    }
    status
}

/// RFC 3339 at second precision, as `metav1.Time` serializes (`2026-11-22T13:55:23Z`).
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .expect("a UTC time formats")
}

/// Now, as [`rfc3339`].
pub fn now() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn health_order_is_argos() {
        use HealthCode::*;
        let mut v = vec![Unknown, Degraded, Missing, Progressing, Suspended, Healthy];
        v.sort();
        assert_eq!(
            v,
            vec![Healthy, Suspended, Progressing, Missing, Degraded, Unknown]
        );
    }

    #[test]
    fn transition_times_persist_while_unchanged() {
        let src = json!({"repoURL": "file:///r"});
        let dst = json!({"namespace": "x"});
        let mk = |prev: &Value, now: &str, health: HealthCode| {
            build(StatusInput {
                previous: prev,
                source: &src,
                destination: &dst,
                sync: SyncCode::Synced,
                revision: Some("abc"),
                health: Health::new(health, ""),
                resources: vec![],
                operation: None,
                deployed: None,
                history_limit: 10,
                conditions: vec![Condition::new(ConditionType::SyncError, "boom")],
                now,
            })
        };
        let s1 = mk(&Value::Null, "2026-01-01T00:00:00Z", HealthCode::Healthy);
        let s2 = mk(&s1, "2026-01-01T00:01:00Z", HealthCode::Healthy);
        assert_eq!(s2["health"]["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert_eq!(
            s2["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(s2["reconciledAt"], "2026-01-01T00:01:00Z");
        let s3 = mk(&s2, "2026-01-01T00:02:00Z", HealthCode::Degraded);
        assert_eq!(s3["health"]["lastTransitionTime"], "2026-01-01T00:02:00Z");
        assert_eq!(s3["sync"]["revision"], "abc");
    }

    #[test]
    fn history_is_capped_and_numbered() {
        let src = json!({"repoURL": "file:///r"});
        let mut prev = Value::Null;
        for n in 0..4 {
            let rev = format!("rev{n}");
            prev = build(StatusInput {
                previous: &prev,
                source: &src,
                destination: &json!({}),
                sync: SyncCode::Synced,
                revision: Some(&rev),
                health: Health::default(),
                resources: vec![],
                operation: None,
                deployed: Some(Deployed {
                    revision: &rev,
                    started_at: "t",
                    initiated_by: InitiatedBy {
                        automated: true,
                        username: None,
                    },
                }),
                history_limit: 2,
                conditions: vec![],
                now: "t",
            });
        }
        let h = prev["history"].as_array().unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0]["id"], 2);
        assert_eq!(h[1]["revision"], "rev3");
        assert_eq!(h[1]["initiatedBy"], json!({"automated": true}));
    }

    #[test]
    fn rfc3339_has_seconds_and_z() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
    }
}
