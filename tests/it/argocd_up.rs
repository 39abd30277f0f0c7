//! `homelab up --stack argocd` against the fakes wired as one lab ([`lab_sim`]) (issue 15).

use crate::support::lab_sim;

use std::collections::BTreeMap;

use lab_sim::{Provider, Sim};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_with_the_argocd_stack_deploys_argo_cd_without_conflicts() {
    let sim = Sim::start(Provider::Multipass, 11).await;
    let up = sim
        .homelab(&["up", "--stack", "argocd", "--no-verify"])
        .await;
    sim.assert_ok("up --stack argocd", &up);
    let host = format!("argocd.{}", sim.domain);
    // Every workload of Argo CD rolled out: its six Deployments and the application
    // controller's StatefulSet, as the fake's controllers report them.
    for (kind, name) in [
        ("Deployment", "argocd-server"),
        ("Deployment", "argocd-repo-server"),
        ("Deployment", "argocd-redis"),
        ("Deployment", "argocd-dex-server"),
        ("Deployment", "argocd-applicationset-controller"),
        ("Deployment", "argocd-notifications-controller"),
        ("StatefulSet", "argocd-application-controller"),
    ] {
        let w = sim.fake.get("apps/v1", kind, "argocd", name).unwrap();
        assert_eq!(
            w["status"]["readyReplicas"], 1,
            "{kind}/{name}: {}",
            w["status"]
        );
    }
    // The UI's Ingress, with a certificate cert-manager issued from the lab CA.
    let ingress = sim
        .fake
        .all("networking.k8s.io/v1", "Ingress")
        .into_iter()
        .find(|i| i["spec"]["rules"][0]["host"] == host.as_str())
        .unwrap_or_else(|| panic!("an Ingress for {host}"));
    assert_eq!(ingress["metadata"]["namespace"], "argocd");
    let backend = &ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
    assert_eq!(backend["name"], "argocd-server", "{ingress}");
    let tls = ingress["spec"]["tls"][0]["secretName"].as_str().unwrap();
    let secret = sim.fake.get("v1", "Secret", "argocd", tls).unwrap();
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["ca.crt"].as_str().unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(ca).unwrap(), sim.world.lab_ca().cert_pem);
    // The summary names Argo CD's UI and login; `credentials` shows the password the lab set.
    assert!(
        up.stdout
            .contains(&format!("https://{host} (Argo CD, user `admin`)")),
        "{}",
        up.stdout
    );
    let secrets: BTreeMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(sim.ctx.state_dir(lab_sim::LAB).join("secrets.json")).unwrap(),
    )
    .unwrap();
    let password = &secrets["argocd_admin_password"];
    assert!(!up.stdout.contains(password.as_str()));
    // The lab does not remember its stack: read-only commands are told it, as `up` was.
    let creds = sim.homelab(&["credentials", "--stack", "argocd"]).await;
    sim.assert_ok("credentials", &creds);
    assert!(
        creds.stdout.contains(&format!("https://{host}")),
        "{}",
        creds.stdout
    );
    assert!(creds.stdout.contains(password.as_str()), "{}", creds.stdout);
    // Argo CD checks that password against argocd-secret's `admin.password` (bcrypt).
    let argocd_secret = sim
        .fake
        .get("v1", "Secret", "argocd", "argocd-secret")
        .unwrap();
    let decode = |k: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(argocd_secret["data"][k].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert!(bcrypt::verify(password, &decode("admin.password")).unwrap());
    // Gitea pushes lab/gitops to Argo CD's /api/webhook, signed with `webhook.gogs.secret`.
    let gitea = sim.world.gitea();
    let hooks = gitea
        .data()
        .hooks
        .get("lab/gitops")
        .cloned()
        .unwrap_or_default();
    let urls: Vec<&str> = hooks.iter().map(|h| h.config["url"].as_str()).collect();
    assert_eq!(
        urls,
        ["http://argocd-server.argocd.svc.cluster.local/api/webhook"],
        "{hooks:?}"
    );
    assert_eq!(hooks[0].config["secret"], decode("webhook.gogs.secret"));
    assert!(hooks[0].events.iter().any(|e| e == "push"), "{hooks:?}");
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
    sim.assert_ok("up (default stack)", &up);
    let default = objects(&sim);
    let app = uid(&sim);
    // Argo CD's secrets are generated only for a stack that runs it, and kept afterwards.
    let argocd_secrets = || {
        let text =
            std::fs::read_to_string(sim.ctx.state_dir(lab_sim::LAB).join("secrets.json")).unwrap();
        let map: BTreeMap<String, String> = serde_json::from_str(&text).unwrap();
        map.into_iter()
            .filter(|(k, _)| k.starts_with("argocd_"))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(argocd_secrets(), BTreeMap::new());
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
    sim.assert_ok("up --stack argocd", &up);
    let argocd = objects(&sim);
    assert_eq!(uid(&sim), app, "the Application was kept, not recreated");
    let generated = argocd_secrets();
    assert_eq!(generated.len(), 5, "{:?}", generated.keys());
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

    // And back (the lab remembers its last stack, so back is named): exactly what a lab that
    // never ran Argo CD has, the Application still the same.
    let up = sim
        .homelab(&["up", "--stack", "default", "--no-verify"])
        .await;
    sim.assert_ok("up (default stack again)", &up);
    let back = objects(&sim);
    assert_eq!(uid(&sim), app, "the Application was kept, not recreated");
    assert_eq!(argocd_secrets(), generated, "kept for the next switch");
    // What the Application deploys (namespace `nyan-cat`) is the engine's to sync, whenever it
    // gets to it: left out of the comparison.
    let of_the_lab = |k: &&String| !k.contains(" nyan-cat/") && !k.ends_with(" /nyan-cat");
    let orphans: Vec<_> = back
        .keys()
        .filter(of_the_lab)
        .filter(|k| !default.contains_key(*k))
        .collect();
    let missing: Vec<_> = default
        .keys()
        .filter(of_the_lab)
        .filter(|k| !back.contains_key(*k))
        .collect();
    assert!(
        orphans.is_empty() && missing.is_empty(),
        "left from Argo CD: {orphans:#?}\nmissing: {missing:#?}"
    );
}

fn argo_app(sim: &Sim) -> Value {
    sim.fake
        .get("argoproj.io/v1alpha1", "Application", "argocd", "nyan-cat")
        .expect("the Application exists")
}

/// What the stand-in wrote into the Application after a sync of `revision`, field by field as
/// Argo CD v3.5.1 writes them (pkg/apis/application/v1alpha1/types.go).
#[track_caller]
fn assert_argo_synced(sim: &Sim, revision: &str) {
    let app = argo_app(sim);
    let s = &app["status"];
    let why = format!("{s:#}\n{}", sim.diagnostics());
    assert_eq!(s["sync"]["status"], "Synced", "{why}");
    assert_eq!(s["sync"]["revision"], revision, "{why}");
    assert_eq!(
        s["sync"]["comparedTo"]["source"], app["spec"]["source"],
        "{why}"
    );
    assert_eq!(s["health"]["status"], "Healthy", "{why}");
    let op = &s["operationState"];
    assert_eq!(op["phase"], "Succeeded", "{why}");
    assert_eq!(
        op["message"], "successfully synced (all tasks run)",
        "{why}"
    );
    assert_eq!(op["syncResult"]["revision"], revision, "{why}");
    assert!(
        op["startedAt"].is_string() && op["finishedAt"].is_string(),
        "{why}"
    );
    assert_eq!(s["sourceType"], "Directory", "{why}");
    assert_eq!(s["controllerNamespace"], "argocd", "{why}");
    assert!(s["reconciledAt"].is_string(), "{why}");
    let deployment = s["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "Deployment" && r["name"] == "nyan-cat")
        .unwrap_or_else(|| panic!("the Deployment among the resources: {why}"));
    assert_eq!(deployment["health"]["status"], "Healthy", "{why}");
    assert_eq!(deployment["status"], "Synced", "{why}");
}

/// Issue 15, the loop under Argo CD: `up --stack argocd` walks push → Drone build → image →
/// GitOps bump → sync → new version served, with Argo CD's application controller played by
/// the lab simulation's stand-in ([`lab_sim::argocd_controller`]); `verify` and `status` read
/// only the Application status the stand-in wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_loop_runs_under_argo_cd_and_verify_and_status_read_its_application_status() {
    let sim = Sim::start(Provider::Multipass, 13).await;
    // The lab's argocd-cm polls every 180 s; the test polls every second instead.
    *sim.world.argocd_poll.lock().unwrap() = Some(std::time::Duration::from_secs(1));
    let up = sim.homelab(&["up", "--stack", "argocd"]).await;
    sim.assert_ok("up --stack argocd", &up);
    let verify_line = up
        .stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("verify"))
        .unwrap_or_else(|| panic!("a verify step: {}", up.stdout));
    assert!(
        verify_line.trim_start().starts_with('✓') && verify_line.contains("loop proven: v2"),
        "{verify_line}\n{}",
        sim.diagnostics()
    );
    // Argo CD's engine, not homelab's, synced it: no engine process ever ran.
    assert!(sim.world.sync.lock().unwrap().is_none());
    let gitea = sim.world.gitea();
    let gitops = gitea.head("lab", "gitops");
    assert_argo_synced(&sim, &gitops);
    let live = sim
        .fake
        .get("apps/v1", "Deployment", "nyan-cat", "nyan-cat")
        .unwrap();
    assert_eq!(
        live["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"],
        "nyan-cat:apps/Deployment:nyan-cat/nyan-cat"
    );
    // Gitea's pushes reached Argo CD's /api/webhook and were accepted (200, signature checked);
    // they refresh no Application, as Argo CD matches the push's `html_url` (the public
    // https://gitea.<domain>/lab/gitops) against repoURL (the in-cluster address): the loop
    // rests on the poll.
    let deliveries: Vec<_> = gitea
        .deliveries()
        .into_iter()
        .filter(|d| d.url.contains("argocd-server"))
        .collect();
    assert!(
        !deliveries.is_empty() && deliveries.iter().all(|d| d.result == Ok(200)),
        "{deliveries:?}"
    );
    let log = sim
        .world
        .argocd
        .lock()
        .unwrap()
        .as_ref()
        .unwrap()
        .log
        .lock()
        .unwrap()
        .clone();
    assert!(
        log.iter().any(
            |l| l.starts_with("webhook: push to https://gitea.") && l.ends_with("refreshes []")
        ),
        "{log:#?}"
    );

    // `verify` walks the loop again and waits for the revision its bump made, Synced and
    // Healthy, as the stand-in writes it.
    let verify = sim.homelab(&["verify", "--stack", "argocd"]).await;
    sim.assert_ok("verify --stack argocd", &verify);
    assert!(
        verify.stdout.contains("the loop works"),
        "{}",
        verify.stdout
    );
    let bumped = gitea.head("lab", "gitops");
    assert_ne!(bumped, gitops, "verify bumped lab/gitops");
    assert_argo_synced(&sim, &bumped);

    // `status` reads the Application as the stand-in wrote it.
    let status = sim
        .homelab(&["status", "--stack", "argocd", "--output", "json"])
        .await;
    sim.assert_ok("status --stack argocd", &status);
    let v: Value = serde_json::from_str(&status.stdout).unwrap();
    let nyan = v["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "nyan-cat")
        .unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!(nyan["state"], "healthy", "{nyan:#}");
    assert_eq!(
        nyan["applications"],
        serde_json::json!([{
            "application": "`Application/nyan-cat` in `argocd`",
            "revision": bumped,
            "summary": "Synced and Healthy",
        }]),
        "{nyan:#}"
    );
    let text = sim.homelab(&["status", "--stack", "argocd"]).await;
    sim.assert_ok("status --stack argocd", &text);
    assert!(
        text.stdout
            .contains("    `Application/nyan-cat` in `argocd`: Synced and Healthy\n"),
        "{}",
        text.stdout
    );
}
