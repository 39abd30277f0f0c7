//! `homelab up --stack argocd` against the fakes wired as one lab ([`lab_sim`]) (issue 15).

use crate::support::common;
use crate::support::lab_sim;

use std::collections::BTreeMap;

use lab_sim::{Provider, Sim};
use serde_json::Value;

#[track_caller]
fn ok(sim: &Sim, what: &str, run: &common::Run) {
    assert_eq!(
        run.code,
        Some(0),
        "{what} failed\nstdout:\n{}\nstderr:\n{}\n{}",
        run.stdout,
        run.stderr,
        sim.diagnostics()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_with_the_argocd_stack_deploys_argo_cd_without_conflicts() {
    let sim = Sim::start(Provider::Multipass, 11).await;
    let up = sim
        .homelab(&["up", "--stack", "argocd", "--no-verify"])
        .await;
    ok(&sim, "up --stack argocd", &up);
}

/// Every object in the cluster, as `group/plural ns/name` with its `homelab.dev/component`
/// label (empty when it has none), leaving out what controllers make and own (pods, ReplicaSets,
/// events, leases) and what the cluster had before the lab.
fn objects(sim: &Sim) -> BTreeMap<String, String> {
    let store = sim.fake.inner.store.lock().unwrap();
    store
        .objects
        .iter()
        .filter(|(_, v)| {
            v.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_none_or(|a| a.is_empty())
        })
        .filter(|((_, plural, _, _), _)| {
            !matches!(
                plural.as_str(),
                "events" | "leases" | "endpoints" | "endpointslices" | "nodes"
            )
        })
        .map(|((group, plural, ns, name), v)| {
            (
                format!("{group}/{plural} {ns}/{name}"),
                v.pointer("/metadata/labels/homelab.dev~1component")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

fn uid(sim: &Sim) -> Value {
    sim.fake
        .get("argoproj.io/v1alpha1", "Application", "argocd", "nyan-cat")
        .expect("the Application exists")["metadata"]["uid"]
        .clone()
}

/// Issue 15: switching a lab between homelab's engine and Argo CD, both ways, leaves no object
/// of the other engine (its workloads, RBAC, ConfigMaps, the lab page) and keeps the
/// Applications (the same objects, never deleted and recreated). What `up` no longer renders is
/// pruned by deploy (objects labelled with the lab and a component, with the applied hash).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switching_stacks_both_ways_leaves_no_orphans_and_keeps_the_applications() {
    let sim = Sim::start(Provider::Multipass, 12).await;
    let up = sim.homelab(&["up", "--no-verify"]).await;
    ok(&sim, "up (default stack)", &up);
    let default = objects(&sim);
    let app = uid(&sim);
    let engine = |objs: &BTreeMap<String, String>, what: &str| {
        objs.keys()
            .filter(|k| k.contains(what))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(!engine(&default, "apps/deployments homelab-system/").is_empty());
    assert!(default.values().any(|c| c == "lab-page"), "{default:#?}");

    let up = sim
        .homelab(&["up", "--stack", "argocd", "--no-verify"])
        .await;
    ok(&sim, "up --stack argocd", &up);
    let argocd = objects(&sim);
    assert_eq!(uid(&sim), app, "the Application was kept, not recreated");
    // Nothing of homelab's engine is left: no workload, RBAC or namespace of its own, no lab page.
    for gone in [
        "homelab-system/",
        "namespaces /homelab-system",
        "homelab-sync",
        "clusterroles /homelab",
        "clusterrolebindings /homelab",
    ] {
        assert_eq!(
            engine(&argocd, gone),
            Vec::<String>::new(),
            "`{gone}` left\n{}",
            up.stderr
                .lines()
                .filter(|l| l.contains("kept"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(!argocd.values().any(|c| c == "lab-page"), "{argocd:#?}");
    let argo_workloads = engine(&argocd, "apps/deployments argocd/");
    assert_eq!(argo_workloads.len(), 6, "{argo_workloads:?}");
    assert!(argocd.contains_key("apps/statefulsets argocd/argocd-application-controller"));
    let deploy = up
        .stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("deploy"))
        .unwrap();
    assert!(deploy.trim_start().starts_with('✓'), "{deploy}");

    // And back: exactly what a lab that never ran Argo CD has, the Application still the same.
    let up = sim.homelab(&["up", "--no-verify"]).await;
    ok(&sim, "up (default stack again)", &up);
    let back = objects(&sim);
    assert_eq!(uid(&sim), app, "the Application was kept, not recreated");
    let orphans: Vec<_> = back
        .iter()
        .filter(|(k, _)| !default.contains_key(*k))
        .collect();
    let missing: Vec<_> = default
        .iter()
        .filter(|(k, _)| !back.contains_key(*k))
        .collect();
    assert!(
        orphans.is_empty() && missing.is_empty(),
        "left from Argo CD: {orphans:#?}\nmissing: {missing:#?}"
    );
}
