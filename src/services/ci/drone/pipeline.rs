//! Checks of a Drone pipeline file (`.drone.yml`) against what the lab's loop needs: it runs on
//! the Kubernetes runner, only for pushes to the main branch (and the first build homelab starts
//! through the API), its bump commit is marked `[skip ci]`, every image is pinned, and nothing
//! turns TLS verification off.
//!
//! Place in the data flow: pure; the tests run it on the rendered `repos/nyan-cat/.drone.yml`,
//! and wiring could run it before activating a repository. Architecture invariant: it reads the
//! YAML as data (never greps the text), so comments cannot satisfy or trip a rule.

use crate::edges::yaml::Value;

/// What the pipeline must allow.
#[derive(Clone, Debug)]
pub struct Expectations {
    /// The only branch pushes may build (`main`).
    pub branch: String,
    /// homelab starts the first build through `POST /api/repos/{o}/{n}/builds`, which Drone
    /// files as a `custom` event: the trigger must accept it, or Drone creates no build.
    pub first_build_by_api: bool,
}

impl Default for Expectations {
    fn default() -> Self {
        Expectations {
            branch: "main".into(),
            first_build_by_api: true,
        }
    }
}

/// Command-line switches and settings that weaken TLS checks, lower-cased.
const TLS_SWITCHES: &[&str] = &[
    "--insecure",
    "--skip-tls-verify",
    "--no-check-certificate",
    "--tls-verify=false",
    "--tlsverify=false",
    "sslverify=false",
    "sslverify false",
    "git_ssl_no_verify",
    "node_tls_reject_unauthorized",
    "insecure_skip_verify",
    "curl -k ",
];

/// Setting or environment keys that weaken TLS checks when true.
const TLS_KEYS: &[&str] = &[
    "insecure",
    "skip_verify",
    "skip_tls_verify",
    "plugin_insecure",
    "plugin_skip_verify",
    "git_ssl_no_verify",
];

/// Every problem found, each naming the pipeline and step; empty when the file is fine.
pub fn check(yaml: &str, expect: &Expectations) -> Vec<String> {
    let mut problems = Vec::new();
    let mut pipelines = 0;
    for (i, doc) in crate::edges::yaml::each_document(yaml)
        .into_iter()
        .enumerate()
    {
        let value = match doc {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("document {}: not YAML: {}", i + 1, e.full()));
                continue;
            }
        };
        if value.is_null() || str_at(&value, "kind") != Some("pipeline") {
            continue;
        }
        pipelines += 1;
        let name = str_at(&value, "name").unwrap_or("default").to_string();
        check_pipeline(&name, &value, expect, &mut problems);
    }
    if pipelines == 0 {
        problems.push("no `kind: pipeline` document".into());
    }
    problems
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A trigger condition's values: `[a, b]`, `a`, or `{include: [...]}`; `exclude` reported apart.
fn condition(v: Option<&Value>) -> (Option<Vec<String>>, Vec<String>) {
    let list = |v: &Value| -> Vec<String> {
        match v {
            Value::Sequence(s) => s
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            Value::String(s) => vec![s.clone()],
            _ => Vec::new(),
        }
    };
    match v {
        None | Some(Value::Null) => (None, Vec::new()),
        Some(Value::Mapping(_)) => {
            let v = v.unwrap();
            (
                v.get("include").map(list),
                v.get("exclude").map(list).unwrap_or_default(),
            )
        }
        Some(other) => (Some(list(other)), Vec::new()),
    }
}

fn check_pipeline(name: &str, p: &Value, expect: &Expectations, problems: &mut Vec<String>) {
    let at = format!("pipeline `{name}`");
    if str_at(p, "type") != Some("kubernetes") {
        problems.push(format!(
            "{at}: `type` is `{}`, the lab runs `kubernetes` pipelines (drone-runner-kube)",
            str_at(p, "type").unwrap_or("docker")
        ));
    }

    let trigger = p.get("trigger");
    let (events, _) = condition(trigger.and_then(|t| t.get("event")));
    match &events {
        None => problems.push(format!(
            "{at}: `trigger.event` is not set, so every event (pull requests, tags, promotions) runs the deploy"
        )),
        Some(events) => {
            if !events.iter().any(|e| e == "push") {
                problems.push(format!("{at}: `trigger.event` does not include `push`"));
            }
            for e in events {
                if e != "push" && e != "custom" {
                    problems.push(format!(
                        "{at}: `trigger.event` includes `{e}`; only `push` (and `custom`, the first build homelab starts) may deploy"
                    ));
                }
            }
            if expect.first_build_by_api && !events.iter().any(|e| e == "custom") {
                problems.push(format!(
                    "{at}: `trigger.event` lacks `custom`: the first build, which `homelab up` starts through Drone's API, is a `custom` event and Drone would skip it"
                ));
            }
        }
    }
    let (branches, excluded) = condition(trigger.and_then(|t| t.get("branch")));
    match branches {
        Some(b) if b == [expect.branch.clone()] => {}
        Some(b) => problems.push(format!(
            "{at}: `trigger.branch` is {b:?}; only `{}` may deploy",
            expect.branch
        )),
        None if !excluded.is_empty() => problems.push(format!(
            "{at}: `trigger.branch` only excludes {excluded:?}; include exactly `{}`",
            expect.branch
        )),
        None => problems.push(format!(
            "{at}: `trigger.branch` is not set; pushes to any branch would deploy"
        )),
    }

    let mut skip_ci_commit = false;
    for kind in ["steps", "services"] {
        let Some(Value::Sequence(steps)) = p.get(kind) else {
            continue;
        };
        for step in steps {
            let step_name = str_at(step, "name").unwrap_or("?");
            let where_ = format!("{at} step `{step_name}`");
            match str_at(step, "image") {
                None => problems.push(format!("{where_}: no `image`")),
                Some(image) => {
                    if let Some(why) = unpinned(image) {
                        problems.push(format!("{where_}: image `{image}` {why}"));
                    }
                }
            }
            let mut texts = Vec::new();
            collect_strings(step, &mut texts);
            for t in &texts {
                let lower = t.to_ascii_lowercase();
                for switch in TLS_SWITCHES {
                    if lower.contains(switch) {
                        problems.push(format!(
                            "{where_}: `{}` turns TLS verification off; trust the lab CA instead",
                            switch.trim()
                        ));
                    }
                }
                if lower.contains("git commit")
                    && (lower.contains("[skip ci]") || lower.contains("[ci skip]"))
                {
                    skip_ci_commit = true;
                }
            }
            let mut keys = Vec::new();
            collect_true_keys(step, &mut keys);
            for k in keys {
                problems.push(format!(
                    "{where_}: `{k}: true` turns TLS verification off; trust the lab CA instead"
                ));
            }
        }
    }
    if !skip_ci_commit {
        problems.push(format!(
            "{at}: no step commits with `[skip ci]` in the message, so the bump commit could start another build"
        ));
    }
}

/// Why an image reference is not pinned, if it is not.
pub fn unpinned(image: &str) -> Option<&'static str> {
    if image.contains("@sha256:") {
        return None;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        None => Some("has no tag (Drone pulls `latest`)"),
        Some((_, "latest")) => Some("is tagged `latest`"),
        Some((_, "")) => Some("has an empty tag"),
        Some(_) => None,
    }
}

fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Sequence(s) => s.iter().for_each(|x| collect_strings(x, out)),
        Value::Mapping(m) => m.iter().for_each(|(k, x)| {
            // `KEY=value` pairs and flag names live in keys too (`environment`, `settings`).
            if let Some(k) = k.as_str() {
                out.push(k.to_string());
            }
            collect_strings(x, out)
        }),
        Value::Tagged(t) => collect_strings(&t.value, out),
        _ => {}
    }
}

fn collect_true_keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Mapping(m) => {
            for (k, x) in m {
                if let Some(k) = k.as_str() {
                    let truthy = match x {
                        Value::Bool(b) => *b,
                        Value::String(s) => {
                            matches!(s.to_ascii_lowercase().as_str(), "true" | "1" | "yes")
                        }
                        Value::Number(n) => n.as_i64() == Some(1),
                        _ => false,
                    };
                    if truthy && TLS_KEYS.contains(&k.to_ascii_lowercase().as_str()) {
                        out.push(k.to_string());
                    }
                }
                collect_true_keys(x, out);
            }
        }
        Value::Sequence(s) => s.iter().for_each(|x| collect_true_keys(x, out)),
        Value::Tagged(t) => collect_true_keys(&t.value, out),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
kind: pipeline
type: kubernetes
name: build-and-deploy
trigger:
  event: [push, custom]
  branch: [main]
steps:
  - name: build
    image: ghcr.io/osscontainertools/kaniko:v1.28.3
    command: ["--destination=gitea.x/lab/nyan-cat:${DRONE_COMMIT_SHA}", "--registry-certificate=gitea.x=/ca.crt"]
  - name: deploy
    image: alpine/git:v2.49.1
    environment:
      TOKEN:
        from_secret: gitops_token
    commands:
      - 'git commit -m "nyan-cat: deploy $${DRONE_COMMIT_SHA} [skip ci]"'
      - git push origin HEAD:main
---
kind: secret
name: unrelated
"#;

    fn problems(yaml: &str) -> Vec<String> {
        check(yaml, &Expectations::default())
    }

    #[test]
    fn a_loop_safe_pipeline_passes() {
        assert_eq!(problems(GOOD), Vec::<String>::new());
    }

    #[test]
    fn each_rule_fails_on_its_own() {
        let cases: &[(&str, &str, &str)] = &[
            ("type: kubernetes", "type: docker", "`type` is `docker`"),
            (
                "event: [push, custom]",
                "event: [push, custom, pull_request]",
                "includes `pull_request`",
            ),
            ("event: [push, custom]", "event: [push]", "lacks `custom`"),
            (
                "event: [push, custom]",
                "event: [custom]",
                "does not include `push`",
            ),
            (
                "  event: [push, custom]\n",
                "",
                "`trigger.event` is not set",
            ),
            (
                "branch: [main]",
                "branch: [main, dev]",
                "only `main` may deploy",
            ),
            (
                "branch: [main]",
                "branch: {exclude: [dev]}",
                "only excludes",
            ),
            ("  branch: [main]\n", "", "`trigger.branch` is not set"),
            ("[skip ci]", "[deploy]", "`[skip ci]`"),
            ("alpine/git:v2.49.1", "alpine/git", "has no tag"),
            ("alpine/git:v2.49.1", "alpine/git:latest", "tagged `latest`"),
            (
                "\"--registry-certificate=gitea.x=/ca.crt\"",
                "\"--skip-tls-verify\"",
                "`--skip-tls-verify` turns TLS",
            ),
            (
                "      - git push origin HEAD:main",
                "      - git -c http.sslVerify=false push origin HEAD:main",
                "`sslverify=false`",
            ),
            (
                "      TOKEN:",
                "      GIT_SSL_NO_VERIFY: \"1\"\n      TOKEN:",
                "git_ssl_no_verify",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(GOOD.contains(from), "fixture lacks {from:?}");
            let yaml = GOOD.replace(from, to);
            let found = problems(&yaml);
            assert!(
                found.iter().any(|p| p.contains(expected)),
                "replacing {from:?} by {to:?}: expected a problem with {expected:?}, got {found:#?}"
            );
        }
    }

    #[test]
    fn digests_pin_and_registries_with_ports_are_read_right() {
        assert_eq!(unpinned("alpine/git@sha256:abc"), None);
        assert_eq!(unpinned("registry:5000/team/app:1.2"), None);
        assert!(unpinned("registry:5000/team/app").is_some());
    }

    #[test]
    fn comments_neither_satisfy_nor_trip_rules() {
        let yaml =
            GOOD.replace("[skip ci]", "[deploy]") + "\n# git commit -m '[skip ci]' --insecure\n";
        let found = problems(&yaml);
        assert!(found.iter().any(|p| p.contains("[skip ci]")), "{found:?}");
        assert!(!found.iter().any(|p| p.contains("--insecure")), "{found:?}");
    }

    #[test]
    fn a_file_without_pipelines_is_a_problem() {
        assert_eq!(
            problems("kind: secret\nname: x\n"),
            vec!["no `kind: pipeline` document"]
        );
    }
}
