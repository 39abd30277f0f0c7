//! The two linters a Drone pipeline passes before any step runs, as the fakes apply them:
//!
//! - [`server`]: the Drone 2.24 server lints the parsed file when it creates a build
//!   (harness/gitness tag v2.24.0, `trigger/trigger.go`, `linter.Manifest(manifest,
//!   repo.Trusted)`, with drone/drone-yaml at 01fb17858c9b, `yaml/linter/linter.go`). A refusal
//!   creates the build with status `error` and the message in the build's `error`, no stage.
//! - [`runner`]: drone-runner-kube lints again when it accepts the stage
//!   (drone-runners/drone-runner-kube tag v1.0.0-rc.5, `engine/linter/linter.go`, called from
//!   drone/runner-go v1.12.0 `pipeline/runtime/runner.go`). A refusal fails the stage
//!   (`state.FailAll`: stage status `error`, its `error` the message, exit code 255, no step
//!   run) and the server then marks the build `error` (`operator/manager/teardown.go`).
//!
//! Only the runner knows the Kubernetes volume kinds (`config_map`, `secret`, `claim`): the
//! server's drone-yaml types have no such fields and ignore them, so a pipeline mounting a
//! ConfigMap passes the server and is refused by the runner for an untrusted repository.
//!
//! Both take the pipeline document as parsed YAML and the repository's `trusted` flag, and
//! return the first rule broken, with upstream's exact text. Rules are checked in upstream's
//! order. Not modelled: the namespace rules (`DRONE_NAMESPACE_RULES`, unset in the lab), the
//! server's platform check beyond `os`/`arch` words, service containers' ports.

use homelab::edges::yaml::Value;

fn seq(v: &Value) -> Vec<&Value> {
    v.as_sequence()
        .map(|s| s.iter().collect())
        .unwrap_or_default()
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// A field upstream decodes into a pointer: present and not null.
fn present(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

fn nonzero(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty() && s != "0",
        _ => true,
    }
}

fn truthy(v: &Value, key: &str) -> bool {
    v[key].as_bool().unwrap_or(false)
}

fn not_empty(v: &Value, key: &str) -> bool {
    match &v[key] {
        Value::Null => false,
        Value::Sequence(s) => !s.is_empty(),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

fn clone_disabled(pipeline: &Value) -> bool {
    truthy(&pipeline["clone"], "disable")
}

/// drone-runner-kube v1.0.0-rc.5 `engine/linter/linter.go`, `Lint`: stage resources, then
/// steps (services first), then volumes.
pub fn runner(pipeline: &Value, trusted: bool) -> Result<(), String> {
    // checkStageResources
    let limits = &pipeline["resources"]["limits"];
    if nonzero(&limits["cpu"]) {
        return Err("linter: cpu limit cannot be applied at stage level".into());
    }
    if nonzero(&limits["memory"]) {
        return Err("linter: memory limit cannot be applied at stage level".into());
    }
    // checkSteps: `append(pipeline.Services, pipeline.Steps...)`, names checked as they come.
    let mut names: Vec<String> = Vec::new();
    if !clone_disabled(pipeline) {
        names.push("clone".into());
    }
    let steps: Vec<&Value> = seq(&pipeline["services"])
        .into_iter()
        .chain(seq(&pipeline["steps"]))
        .collect();
    for step in steps {
        if step.is_null() {
            return Err("linter: nil step".into());
        }
        let name = text(step, "name").to_string();
        if names.contains(&name) {
            return Err("linter: duplicate step names".into());
        }
        names.push(name.clone());
        // checkStep
        if text(step, "image").is_empty() {
            return Err("linter: invalid or missing image".into());
        }
        if !trusted && truthy(step, "privileged") {
            return Err("linter: untrusted repositories cannot enable privileged mode".into());
        }
        for mount in seq(&step["volumes"]) {
            let vname = text(mount, "name");
            if matches!(
                vname,
                "workspace" | "_workspace" | "_docker_socket" | "_status"
            ) {
                return Err(format!("linter: invalid volume name: {vname}"));
            }
            // filepath.Clean, then a prefix test (so `/run/droneX` is refused too).
            let path = text(mount, "path").trim_end_matches('/');
            if path.starts_with("/run/drone") {
                return Err("linter: cannot mount volume at /run/drone".into());
            }
        }
        // checkDeps, against the names seen so far
        for dep in seq(&step["depends_on"]) {
            let dep = dep.as_str().unwrap_or_default();
            if !names.iter().any(|n| n == dep) {
                return Err(format!(
                    "linter: unknown step dependency detected: {name} references {dep}"
                ));
            }
            if name == dep {
                return Err(format!("linter: cyclical step dependency detected: {dep}"));
            }
        }
    }
    // checkVolumes
    for volume in seq(&pipeline["volumes"]) {
        if present(volume, "temp") && !trusted && text(&volume["temp"], "medium") == "memory" {
            return Err("linter: untrusted repositories cannot mount in-memory volumes".into());
        }
        if present(volume, "host") && !trusted {
            return Err("linter: untrusted repositories cannot mount host volumes".into());
        }
        if present(volume, "claim") && !trusted {
            return Err("linter: untrusted repositories cannot mount PVC".into());
        }
        if present(volume, "config_map") && !trusted {
            return Err("linter: untrusted repositories cannot mount configMap volumes".into());
        }
        if present(volume, "secret") && !trusted {
            return Err("linter: untrusted repositories cannot mount secret volumes".into());
        }
        match text(volume, "name") {
            "" => return Err("linter: missing volume name".into()),
            n @ ("workspace" | "_workspace" | "_docker_socket" | "_status" | "_addons") => {
                return Err(format!("linter: invalid volume name: {n}"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// drone/drone-yaml 01fb17858c9b `yaml/linter/linter.go`, `checkPipeline`: volumes, platform,
/// steps (with dependencies), then services.
pub fn server(pipeline: &Value, trusted: bool) -> Result<(), String> {
    // checkVolumes: drone-yaml knows `temp` and `host` only.
    for volume in seq(&pipeline["volumes"]) {
        if present(volume, "temp") && !trusted && text(&volume["temp"], "medium") == "memory" {
            return Err("linter: untrusted repositories cannot mount in-memory volumes".into());
        }
        if present(volume, "host") && !trusted {
            return Err("linter: untrusted repositories cannot mount host volumes".into());
        }
        let n = text(volume, "name");
        if matches!(n, "workspace" | "_workspace" | "_docker_socket") {
            return Err(format!("linter: invalid volume name: {n}"));
        }
    }
    // checkPlatform
    let os = text(&pipeline["platform"], "os");
    if !os.is_empty() && !matches!(os, "linux" | "windows") {
        return Err(format!("linter: unsupported os: {os}"));
    }
    let arch = text(&pipeline["platform"], "arch");
    if !arch.is_empty() && !matches!(arch, "arm" | "arm64" | "amd64" | "ppc64le" | "s390x") {
        return Err(format!("linter: unsupported architecture: {arch}"));
    }
    let mut names: Vec<String> = Vec::new();
    if !clone_disabled(pipeline) {
        names.push("clone".into());
    }
    for (containers, deps) in [(&pipeline["steps"], true), (&pipeline["services"], false)] {
        for c in seq(containers) {
            let name = text(c, "name").to_string();
            if names.contains(&name) {
                return Err("linter: duplicate step names".into());
            }
            names.push(name.clone());
            server_container(c, trusted)?;
            if deps {
                for dep in seq(&c["depends_on"]) {
                    let dep = dep.as_str().unwrap_or_default();
                    if !names.iter().any(|n| n == dep) {
                        return Err("linter: invalid or unknown step dependency".into());
                    }
                    if name == dep {
                        return Err("linter: cyclical step dependency detected".into());
                    }
                }
            }
        }
    }
    Ok(())
}

/// drone-yaml `checkContainer`.
fn server_container(c: &Value, trusted: bool) -> Result<(), String> {
    for port in seq(&c["ports"]) {
        if !trusted && port.is_mapping() && nonzero(&port["host"]) {
            return Err("linter: untrusted repositories cannot map to a host port".into());
        }
    }
    if text(c, "image").is_empty() {
        return Err("linter: invalid or missing image".into());
    }
    if text(c, "name").is_empty() {
        return Err("linter: invalid or missing name".into());
    }
    if !trusted {
        for (key, what) in [
            ("privileged", "enable privileged mode"),
            ("devices", "mount devices"),
            ("dns", "configure dns"),
            ("dns_search", "configure dns_search"),
            ("extra_hosts", "configure extra_hosts"),
            ("network_mode", "configure network_mode"),
        ] {
            let set = if key == "privileged" {
                truthy(c, key)
            } else {
                not_empty(c, key)
            };
            if set {
                return Err(format!("linter: untrusted repositories cannot {what}"));
            }
        }
    }
    for mount in seq(&c["volumes"]) {
        let n = text(mount, "name");
        if matches!(n, "workspace" | "_workspace" | "_docker_socket") {
            return Err(format!("linter: invalid volume name: {n}"));
        }
    }
    Ok(())
}

/// The `kind: pipeline` documents of a `.drone.yml` (a file may hold several, `---` apart).
pub fn pipelines(config: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for doc in homelab::edges::yaml::each_document(config) {
        let v = doc.map_err(|e| format!("yaml: {}", e.full()))?;
        if v["kind"].as_str() == Some("pipeline") {
            out.push(v);
        }
    }
    Ok(out)
}
