//! Unit tests of parsing an Application (the parent module).

use super::*;
use serde_json::json;

fn app(spec: Value) -> Value {
    json!({"apiVersion": API_VERSION, "kind": KIND,
           "metadata": {"name": "nyan", "namespace": "argocd"}, "spec": spec})
}

#[test]
fn honoured_fields_are_read() {
    let p = parse(&app(json!({
        "project": "default",
        "source": {"repoURL": "https://gitea.lab/lab/gitops.git", "path": "apps/nyan",
                   "targetRevision": "main", "directory": {"recurse": true, "include": "*.yaml"}},
        "destination": {"server": IN_CLUSTER_SERVER, "namespace": "nyan"},
        "syncPolicy": {"automated": {"prune": true, "selfHeal": true},
                       "syncOptions": ["CreateNamespace=true", "PruneLast=true", "PrunePropagationPolicy=background"],
                       "retry": {"limit": 3, "backoff": {"duration": "2s", "factor": 3, "maxDuration": "1m"}}}
    })));
    assert!(p.conditions.is_empty(), "{:?}", p.conditions);
    let s = p.spec.unwrap();
    assert_eq!(s.source.target_revision, "main");
    assert!(s.source.recurse);
    assert_eq!(s.source.include.as_deref(), Some("*.yaml"));
    assert_eq!(s.destination_namespace.as_deref(), Some("nyan"));
    assert_eq!(
        s.automated,
        Some(Automated {
            prune: true,
            self_heal: true,
            allow_empty: false
        })
    );
    assert!(s.options.create_namespace && s.options.prune_last && !s.options.replace);
    assert_eq!(s.options.propagation, Propagation::Background);
    assert_eq!(
        s.retry,
        RetryPolicy {
            limit: 3,
            duration: Duration::from_secs(2),
            factor: 3,
            max_duration: Duration::from_secs(60)
        }
    );
}

#[test]
fn helm_and_remote_clusters_block_with_a_named_field() {
    let p = parse(&app(json!({
        "project": "default",
        "source": {"repoURL": "https://x/y.git", "helm": {"valueFiles": ["v.yaml"]}},
        "destination": {"server": "https://other:6443", "namespace": "x"}
    })));
    assert!(p.blocked());
    let msgs: Vec<_> = p.conditions.iter().map(|c| c.message.as_str()).collect();
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("spec.source.helm is not supported")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("spec.destination.server `https://other:6443`")),
        "{msgs:?}"
    );
    assert!(
        p.conditions
            .iter()
            .all(|c| c.kind == ConditionType::InvalidSpecError)
    );
}

#[test]
fn harmless_unsupported_fields_warn_but_do_not_block() {
    let p = parse(&app(json!({
        "project": "default",
        "source": {"repoURL": "https://x/y.git"},
        "destination": {"namespace": "x"},
        "syncPolicy": {"syncOptions": ["Validate=false"], "retry": {"refresh": true}},
        "ignoreDifferences": [{"kind": "ConfigMap", "jqPathExpressions": [".data"]}]
    })));
    assert!(!p.blocked());
    let msgs: Vec<_> = p.conditions.iter().map(|c| c.message.clone()).collect();
    assert_eq!(
        msgs,
        vec![
            "sync option `Validate=false` is not supported by homelab's sync engine and has no effect",
            "spec.syncPolicy.retry.refresh is not supported by homelab's sync engine and has no effect",
            "spec.ignoreDifferences[0].jqPathExpressions is not supported by homelab's sync engine and has no effect",
        ]
    );
    assert!(
        p.conditions
            .iter()
            .all(|c| c.kind == ConditionType::UnsupportedFieldWarning)
    );
}

#[test]
fn the_contract_example_reports_every_unsupported_part() {
    let text = std::fs::read_to_string(
        crate::sync::tests_support::contracts_dir().join("argocd/application-example.yaml"),
    )
    .unwrap();
    let v: Value = crate::edges::yaml::from_str(&text).unwrap();
    let p = parse(&v);
    assert!(p.blocked());
    let text = p
        .conditions
        .iter()
        .map(|c| format!("{}: {}", c.kind.as_str(), c.message))
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "InvalidSpecError: spec.sources is not supported",
        "InvalidSpecError: spec.sourceHydrator is not supported",
        "InvalidSpecError: spec.source.helm is not supported",
        "InvalidSpecError: spec.source.kustomize is not supported",
        "InvalidSpecError: spec.source.plugin is not supported",
        "InvalidSpecError: spec.source.chart is not supported",
        "InvalidSpecError: spec.source.directory.jsonnet: Jsonnet is not supported",
        "UnsupportedFieldWarning: sync option `Validate=false`",
        "UnsupportedFieldWarning: sync option `RespectIgnoreDifferences=true`",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

#[test]
fn disabled_automation_and_defaults() {
    let p = parse(&app(json!({
        "project": "default",
        "source": {"repoURL": "https://x/y.git"},
        "destination": {"name": "in-cluster"},
        "syncPolicy": {"automated": {"enabled": false, "prune": true}}
    })));
    let s = p.spec.unwrap();
    assert_eq!(s.automated, None);
    assert_eq!(s.source.target_revision, "HEAD");
    assert_eq!(s.retry, RetryPolicy::default());
    assert_eq!(s.destination_namespace, None);
}

#[test]
fn durations_like_go() {
    assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
    assert_eq!(parse_duration("5"), Some(Duration::from_secs(5)));
    assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("soon"), None);
    assert_eq!(parse_duration(""), None);
}
