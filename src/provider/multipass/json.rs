//! Reading what Multipass and microk8s print: `multipass info|list|version --format json`,
//! `microk8s kubectl get nodes -o json` and `microk8s add-node --format json`.
//!
//! Architecture invariant: pure and tolerant. Parsers go through `serde_json::Value`, ignore keys
//! they don't know (1.17-dev adds `zone`), never depend on key order (1.16 sorts keys, 1.17 keeps
//! insertion order), and accept numbers written as strings (`cpu_count`, disk sizes) or as
//! numbers. Shapes are the ones in `contracts/multipass/` (Multipass's own test data).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// Output that is not the JSON shape the contracts describe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is not the JSON homelab expects: {message}")]
pub struct JsonError {
    /// What was being read, e.g. "`multipass info --format json`".
    pub what: String,
    /// What is wrong.
    pub message: String,
}

fn bad(what: &str, message: impl Into<String>) -> JsonError {
    JsonError {
        what: what.into(),
        message: message.into(),
    }
}

/// An instance state, as `info`/`list` spell it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum VmState {
    /// `Running`
    Running,
    /// `Stopped`
    Stopped,
    /// `Deleted`: deleted but not purged, recoverable.
    Deleted,
    /// `Starting`
    Starting,
    /// `Restarting`
    Restarting,
    /// `Delayed Shutdown`: running, with a shutdown scheduled.
    DelayedShutdown,
    /// `Suspending`
    Suspending,
    /// `Suspended`
    Suspended,
    /// `Unknown`
    Unknown,
    /// Anything a newer Multipass may add.
    Other(String),
}

impl VmState {
    /// Parse the JSON spelling.
    pub fn parse(s: &str) -> VmState {
        match s {
            "Running" => VmState::Running,
            "Stopped" => VmState::Stopped,
            "Deleted" => VmState::Deleted,
            "Starting" => VmState::Starting,
            "Restarting" => VmState::Restarting,
            "Delayed Shutdown" => VmState::DelayedShutdown,
            "Suspending" => VmState::Suspending,
            "Suspended" => VmState::Suspended,
            "Unknown" => VmState::Unknown,
            other => VmState::Other(other.to_string()),
        }
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmState::Running => "Running",
            VmState::Stopped => "Stopped",
            VmState::Deleted => "Deleted",
            VmState::Starting => "Starting",
            VmState::Restarting => "Restarting",
            VmState::DelayedShutdown => "Delayed Shutdown",
            VmState::Suspending => "Suspending",
            VmState::Suspended => "Suspended",
            VmState::Unknown => "Unknown",
            VmState::Other(s) => s,
        })
    }
}

/// One instance from `multipass info --format json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// Instance name.
    pub name: String,
    /// State.
    pub state: VmState,
    /// IPv4 addresses; the first is the primary (default interface) address.
    pub ipv4: Vec<String>,
    /// CPUs (unknown while stopped).
    pub cpus: Option<u32>,
    /// Memory seen by the guest, bytes (unknown while stopped).
    pub memory_total: Option<u64>,
    /// Memory in use, bytes.
    pub memory_used: Option<u64>,
    /// Root disk size seen by the guest, bytes (unknown while stopped).
    pub disk_total: Option<u64>,
    /// Root disk in use, bytes.
    pub disk_used: Option<u64>,
    /// e.g. `24.04 LTS`.
    pub image_release: Option<String>,
}

impl Instance {
    /// The primary IPv4 address.
    pub fn ip(&self) -> Option<&str> {
        self.ipv4.first().map(String::as_str)
    }
}

/// A count or size written either as a JSON number or as a string of digits; "" means unknown.
fn num(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
        Value::String(s) if !s.trim().is_empty() => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Parse `multipass info --format json`: instances by name.
pub fn parse_info(out: &str) -> Result<BTreeMap<String, Instance>, JsonError> {
    const WHAT: &str = "the output of `multipass info --format json`";
    let v: Value = serde_json::from_str(out).map_err(|e| bad(WHAT, e.to_string()))?;
    let info = v
        .get("info")
        .and_then(Value::as_object)
        .ok_or_else(|| bad(WHAT, "no `info` object"))?;
    let mut instances = BTreeMap::new();
    for (name, i) in info {
        let state = i
            .get("state")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(WHAT, format!("instance `{name}` has no `state`")))?;
        // The root disk is the one Multipass reports; it has been `sda1` in every release seen.
        let disk = i
            .get("disks")
            .and_then(Value::as_object)
            .and_then(|d| d.get("sda1").or_else(|| d.values().next()));
        instances.insert(
            name.clone(),
            Instance {
                name: name.clone(),
                state: VmState::parse(state),
                ipv4: strings(i.get("ipv4")),
                cpus: num(i.get("cpu_count")).and_then(|n| u32::try_from(n).ok()),
                memory_total: num(i.get("memory").and_then(|m| m.get("total"))),
                memory_used: num(i.get("memory").and_then(|m| m.get("used"))),
                disk_total: num(disk.and_then(|d| d.get("total"))),
                disk_used: num(disk.and_then(|d| d.get("used"))),
                image_release: text(i.get("image_release")),
            },
        );
    }
    Ok(instances)
}

/// One entry of `multipass list --format json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// Instance name.
    pub name: String,
    /// State.
    pub state: VmState,
    /// IPv4 addresses.
    pub ipv4: Vec<String>,
    /// `Ubuntu 24.04 LTS` or `Not Available`.
    pub release: String,
}

/// Parse `multipass list --format json`.
pub fn parse_list(out: &str) -> Result<Vec<ListEntry>, JsonError> {
    const WHAT: &str = "the output of `multipass list --format json`";
    let v: Value = serde_json::from_str(out).map_err(|e| bad(WHAT, e.to_string()))?;
    let list = v
        .get("list")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(WHAT, "no `list` array"))?;
    list.iter()
        .map(|e| {
            Ok(ListEntry {
                name: text(e.get("name")).ok_or_else(|| bad(WHAT, "an entry has no `name`"))?,
                state: VmState::parse(e.get("state").and_then(Value::as_str).unwrap_or("")),
                ipv4: strings(e.get("ipv4")),
                release: text(e.get("release")).unwrap_or_default(),
            })
        })
        .collect()
}

/// `multipass version --format json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// Client version.
    pub client: String,
    /// Daemon version; `None` when the daemon did not answer.
    pub daemon: Option<String>,
}

/// Parse `multipass version --format json`.
pub fn parse_version(out: &str) -> Result<Version, JsonError> {
    const WHAT: &str = "the output of `multipass version --format json`";
    let v: Value = serde_json::from_str(out).map_err(|e| bad(WHAT, e.to_string()))?;
    Ok(Version {
        client: text(v.get("multipass")).ok_or_else(|| bad(WHAT, "no `multipass` key"))?,
        daemon: text(v.get("multipassd")),
    })
}

/// A Kubernetes node as `kubectl get nodes -o json` shows it, reduced to what `up` checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeView {
    /// Node name (the VM's hostname, i.e. the instance name).
    pub name: String,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// Reason and message of the `Ready` condition when it is not `True`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not: Option<String>,
    /// kubelet version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `InternalIP` address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_ip: Option<String>,
}

/// Parse a `v1` `NodeList` (`kubectl get nodes -o json`).
pub fn parse_nodes(out: &str) -> Result<Vec<NodeView>, JsonError> {
    const WHAT: &str = "the output of `microk8s kubectl get nodes -o json`";
    let v: Value = serde_json::from_str(out).map_err(|e| bad(WHAT, e.to_string()))?;
    let items = v
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(WHAT, "no `items` array"))?;
    let mut nodes = Vec::new();
    for item in items {
        let name = text(item.pointer("/metadata/name"))
            .ok_or_else(|| bad(WHAT, "a node has no `metadata.name`"))?;
        let ready = item
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
            });
        let is_ready = ready.and_then(|c| c.get("status")).and_then(Value::as_str) == Some("True");
        let why_not = if is_ready {
            None
        } else {
            Some(match ready {
                None => "no Ready condition yet".to_string(),
                Some(c) => {
                    let status = text(c.get("status")).unwrap_or_else(|| "Unknown".into());
                    let reason = text(c.get("reason"));
                    let message = text(c.get("message"));
                    match (reason, message) {
                        (Some(r), Some(m)) => format!("Ready={status} ({r}: {m})"),
                        (Some(r), None) => format!("Ready={status} ({r})"),
                        (None, Some(m)) => format!("Ready={status} ({m})"),
                        (None, None) => format!("Ready={status}"),
                    }
                }
            })
        };
        let internal_ip = item
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|x| x.get("type").and_then(Value::as_str) == Some("InternalIP"))
            })
            .and_then(|x| text(x.get("address")));
        nodes.push(NodeView {
            name,
            ready: is_ready,
            why_not,
            version: text(item.pointer("/status/nodeInfo/kubeletVersion")),
            internal_ip,
        });
    }
    Ok(nodes)
}

/// `microk8s add-node --format json`: `{"token": "<token>/<check>", "urls": ["<ip>:25000/<token>/<check>", …]}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddNode {
    /// `<token>/<check>`.
    pub token: String,
    /// Join addresses, default interface first.
    pub urls: Vec<String>,
}

/// Parse `microk8s add-node --format json`.
pub fn parse_add_node(out: &str) -> Result<AddNode, JsonError> {
    const WHAT: &str = "the output of `microk8s add-node --format json`";
    let v: Value = serde_json::from_str(out).map_err(|e| bad(WHAT, e.to_string()))?;
    let urls = strings(v.get("urls"));
    if urls.is_empty() {
        return Err(bad(WHAT, "no join `urls`"));
    }
    Ok(AddNode {
        token: text(v.get("token")).ok_or_else(|| bad(WHAT, "no `token`"))?,
        urls,
    })
}

impl AddNode {
    /// The join address on `ip` (the first node's primary address), else the first one listed.
    pub fn url_for(&self, ip: Option<&str>) -> &str {
        ip.and_then(|ip| self.urls.iter().find(|u| u.split(':').next() == Some(ip)))
            .unwrap_or(&self.urls[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A Multipass output from the repository's `contracts/multipass/` (verbatim upstream).
    fn contract(rel: &str) -> String {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("contracts/multipass")
            .join(rel);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read `{}`: {e}", p.display()))
    }

    #[test]
    fn info_of_a_running_instance() {
        let info = parse_info(&contract("info.json")).unwrap();
        let foo = &info["foo"];
        assert_eq!(foo.state, VmState::Running);
        assert_eq!(foo.ip(), Some("10.168.32.2"));
        assert_eq!(foo.cpus, Some(1));
        assert_eq!(foo.memory_total, Some(1503238554));
        assert_eq!(foo.disk_total, Some(5153960756));
        assert_eq!(foo.image_release.as_deref(), Some("16.04 LTS"));
    }

    #[test]
    fn stopped_instances_have_unknown_sizes() {
        let info = parse_info(&contract("info-multiple.json")).unwrap();
        let b = &info["bombastic"];
        assert_eq!(b.state, VmState::Stopped);
        assert_eq!(
            (b.cpus, b.memory_total, b.disk_total, b.ip()),
            (None, None, None, None)
        );
        assert_eq!(info["bogus-instance"].cpus, Some(4));
    }

    #[test]
    fn the_17_dev_shape_parses_the_same() {
        let old = parse_info(&contract("info-multiple.json")).unwrap();
        let new = parse_info(&contract("dev-1.17/multiple_instances_info_reply.json")).unwrap();
        assert_eq!(old, new);
        let single = parse_info(&contract("dev-1.17/single_instance_info_reply.json")).unwrap();
        assert_eq!(single, parse_info(&contract("info.json")).unwrap());
        assert!(parse_info(&contract("info-empty.json")).unwrap().is_empty());
    }

    #[test]
    fn lists_parse_in_both_shapes() {
        let old = parse_list(&contract("list-multiple.json")).unwrap();
        let new = parse_list(&contract("dev-1.17/multiple_instances_list_reply.json")).unwrap();
        assert_eq!(old.len(), 2);
        assert_eq!(old[1].state, VmState::Stopped);
        assert_eq!(old[0].name, new[0].name);
        assert_eq!(old[0].ipv4, new[0].ipv4);
        assert!(parse_list(&contract("list-empty.json")).unwrap().is_empty());
    }

    #[test]
    fn version_with_and_without_daemon() {
        let v = parse_version(&contract("version.json")).unwrap();
        assert_eq!(v.daemon.as_deref(), Some("Daemon version"));
        let v = parse_version(&contract("version-update.json")).unwrap();
        assert_eq!(v.client, "Client version");
        let v = parse_version(&contract("version-client-only.json")).unwrap();
        assert_eq!(v.daemon, None);
    }

    #[test]
    fn garbage_is_an_error_naming_the_command() {
        let e = parse_info("Usage: multipass info").unwrap_err();
        assert!(
            e.to_string().starts_with(
                "the output of `multipass info --format json` is not the JSON homelab expects: "
            ),
            "{e}"
        );
        assert_eq!(
            parse_info("{\"list\": []}").unwrap_err().message,
            "no `info` object"
        );
    }

    #[test]
    fn node_readiness_and_reasons() {
        let nodes = parse_nodes(
            r#"{"apiVersion":"v1","kind":"List","items":[
              {"metadata":{"name":"a"},"status":{"conditions":[{"type":"Ready","status":"True"}],
               "nodeInfo":{"kubeletVersion":"v1.36.1"},"addresses":[{"type":"InternalIP","address":"10.0.0.2"}]}},
              {"metadata":{"name":"b"},"status":{"conditions":[{"type":"Ready","status":"False","reason":"KubeletNotReady","message":"cni not ready"}]}},
              {"metadata":{"name":"c"},"status":{}}]}"#,
        )
        .unwrap();
        assert!(nodes[0].ready);
        assert_eq!(nodes[0].internal_ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(
            nodes[1].why_not.as_deref(),
            Some("Ready=False (KubeletNotReady: cni not ready)")
        );
        assert_eq!(nodes[2].why_not.as_deref(), Some("no Ready condition yet"));
    }

    #[test]
    fn add_node_picks_the_url_on_the_first_nodes_ip() {
        let a = parse_add_node(
            r#"{
  "token": "0123456789abcdef0123456789abcdef/c0ffee",
  "urls": ["10.1.1.1:25000/0123456789abcdef0123456789abcdef/c0ffee", "10.77.0.2:25000/0123456789abcdef0123456789abcdef/c0ffee"]
}"#,
        )
        .unwrap();
        assert_eq!(
            a.url_for(Some("10.77.0.2")),
            "10.77.0.2:25000/0123456789abcdef0123456789abcdef/c0ffee"
        );
        assert_eq!(a.url_for(Some("192.0.2.9")), a.urls[0]);
        assert!(parse_add_node("{\"token\":\"x\",\"urls\":[]}").is_err());
    }
}
