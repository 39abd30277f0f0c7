//! The whole `homelab up`, end to end against the fakes wired together as one lab
//! ([`lab_sim`]): every step from `secrets` to `verify` — the VM from the fake `multipass`, the
//! stack deployed to the fake API server, Gitea wired through a pod exec and real git, Drone
//! logged in through Gitea's OAuth pages, the real `.drone.yml` building and bumping the GitOps
//! repository, the real sync engine deploying it, the site served by the ingress with a
//! certificate from the lab CA — then a second `up` that writes nothing anywhere, `status`,
//! `verify` on its own, and `down --purge`; and `up` on an existing cluster.
//!
//! `E2E_DEBUG=1 cargo test --test up_full -- --nocapture` prints what went on in the lab after
//! each first `up` (kubelet, ingress, webhook deliveries, builds with their logs, the sync
//! engine's log, run at `-vv`).

mod common;
mod fake_drone;
mod fake_gitea;
mod fake_kube;
mod lab_sim;

use std::collections::BTreeMap;

use lab_sim::{LAB, Provider, Sim};
use serde_json::Value;

const GITOPS_DEPLOYMENT: &str = "apps/nyan-cat/deployment.yaml";

#[track_caller]
fn ok(sim: &Sim, what: &str, run: &common::Run) {
    assert_eq!(
        run.code,
        Some(0),
        "{what} failed\nstdout:\n{}\nstderr (last 60 lines):\n{}\n{}",
        run.stdout,
        tail(&run.stderr, 60),
        sim.diagnostics()
    );
}

fn debug(sim: &Sim, what: &str, run: &common::Run) {
    if std::env::var_os("E2E_DEBUG").is_some() {
        eprintln!("==== {what}\n{}\n{}", run.stdout, sim.diagnostics());
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Every secret value in the lab's `secrets.json` long enough to be recognised. OAuth client
/// ids are kept there too but are public identifiers (every authorize URL carries one), so the
/// wiring may show them.
fn lab_secrets(sim: &Sim) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(sim.ctx.state_dir(LAB).join("secrets.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let mut out = BTreeMap::new();
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
        match v {
            Value::Object(m) => m
                .iter()
                .for_each(|(k, x)| walk(&format!("{prefix}{k}."), x, out)),
            Value::String(s) if s.len() >= 8 && !prefix.ends_with("client_id.") => {
                out.insert(prefix.trim_end_matches('.').to_string(), s.clone());
            }
            _ => {}
        }
    }
    walk("", &v, &mut out);
    out
}

#[track_caller]
fn assert_no_secret_in(sim: &Sim, what: &str, text: &str) {
    let secrets = lab_secrets(sim);
    assert!(secrets.len() >= 8, "the lab has its secrets: {secrets:?}");
    for (name, value) in &secrets {
        let line = text.lines().find(|l| l.contains(value.as_str()));
        assert!(
            line.is_none(),
            "{what} shows secret `{name}`: {}",
            line.unwrap_or_default().replace(value.as_str(), "<SECRET>")
        );
    }
}

/// The summary line of a step (`  ✓ deploy  0.8s  …`).
fn step_line<'a>(stdout: &'a str, step: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| {
            let mut w = l.split_whitespace();
            w.next().is_some() && w.next() == Some(step)
        })
        .unwrap_or_else(|| panic!("no summary line for `{step}` in:\n{stdout}"))
}

fn app_status(sim: &Sim) -> homelab::verify::AppStatus {
    let app = sim
        .fake
        .get("argoproj.io/v1alpha1", "Application", "argocd", "nyan-cat")
        .expect("the Application exists");
    homelab::verify::AppStatus::from_object(&app)
}

/// `https://nyan.<domain>/` through the ingress, trusting only the lab CA.
async fn site(sim: &Sim) -> (u16, String) {
    let ca = sim.world.lab_ca();
    let tls = homelab::http::rustls_config(Some(&ca.cert_pem)).unwrap();
    let host = format!("nyan.{}", sim.domain);
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve(&host, sim.world.ingress_addr)
        .build()
        .unwrap();
    let port = if sim.world.ingress_addr.port() == 443 {
        String::new()
    } else {
        format!(":{}", sim.world.ingress_addr.port())
    };
    let r = http
        .get(format!("https://{host}{port}/"))
        .send()
        .await
        .expect("the site answers over HTTPS with a lab-CA certificate");
    (r.status().as_u16(), r.text().await.unwrap())
}

/// What `up` and the loop must have produced, whoever drove the last build.
async fn assert_loop_proven(sim: &Sim, version: &str) {
    let gitea = sim.world.gitea();
    let drone = sim.world.drone();
    gitea.assert_no_violations();
    drone.assert_no_violations();
    let builds = drone.builds("lab/nyan-cat");
    let last = builds.last().expect("a build ran");
    assert_eq!(last.status, "success", "{}", sim.diagnostics());
    let steps: Vec<&str> = last.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(steps, ["clone", "registry-login", "build", "deploy"]);
    // The pipeline pushed the image of the commit it built, and bumped lab/gitops to that tag
    // with a commit CI never builds.
    let app_head = gitea.head("lab", "nyan-cat");
    assert_eq!(last.after, app_head, "the last build is of the app's head");
    let image = format!("gitea.{}/lab/nyan-cat", sim.domain);
    assert!(
        gitea.image("lab/nyan-cat", &app_head).is_some(),
        "image pushed"
    );
    let deployment = gitea.file("lab", "gitops", GITOPS_DEPLOYMENT).unwrap();
    assert_eq!(
        homelab::verify::image_tag(&deployment, &image).as_deref(),
        Some(app_head.as_str())
    );
    let message = std::process::Command::new("git")
        .arg(format!(
            "--git-dir={}",
            gitea.repo_dir("lab", "gitops").display()
        ))
        .args(["log", "-1", "--format=%an|%s", "main"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&message.stdout).trim(),
        format!("Drone CI|nyan-cat: deploy {app_head} [skip ci]")
    );
    // The real sync engine deployed that revision, and it is healthy.
    let status = app_status(sim);
    assert_eq!(
        (
            status.sync.as_str(),
            status.health.as_str(),
            status.revision.as_str()
        ),
        ("Synced", "Healthy", gitea.head("lab", "gitops").as_str()),
        "{}",
        sim.diagnostics()
    );
    let live = sim
        .fake
        .get("apps/v1", "Deployment", "nyan-cat", "nyan-cat")
        .unwrap();
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("{image}:{app_head}")
    );
    // Pushes to lab/gitops reached the engine's webhook, signed with the secret it was given.
    let deliveries: Vec<_> = gitea
        .deliveries()
        .into_iter()
        .filter(|d| d.url.contains("homelab-sync"))
        .collect();
    assert!(
        !deliveries.is_empty() && deliveries.iter().all(|d| d.result == Ok(202)),
        "{deliveries:?}"
    );
    let listen = sim.world.sync.lock().unwrap().as_ref().unwrap().listen;
    let metrics = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let accepted = format!(
        "homelab_sync_webhooks_total{{outcome=\"accepted\"}} {}",
        deliveries.len()
    );
    assert!(metrics.contains(&accepted), "{accepted} in:\n{metrics}");
    // And the site serves the new version, over HTTPS trusted through the lab CA only.
    let (code, page) = site(sim).await;
    assert_eq!(code, 200);
    assert_eq!(
        homelab::verify::version_marker(&page).unwrap().1,
        version,
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_on_multipass_builds_wires_and_proves_the_loop_then_changes_nothing() {
    let sim = Sim::start(Provider::Multipass, 1).await;

    // 1. The first `up`, at the highest verbosity: every step does its work.
    let up = sim.homelab(&["up", "-vv"]).await;
    ok(&sim, "up", &up);
    debug(&sim, "up", &up);
    for step in [
        "secrets",
        "ca",
        "cloud-init",
        "vms",
        "kubeconfig",
        "prepare",
        "deploy",
        "wire-gitea",
        "wire-ci",
        "verify",
    ] {
        assert!(
            step_line(&up.stdout, step).trim_start().starts_with('✓'),
            "`{step}` did its work: {}",
            step_line(&up.stdout, step)
        );
    }
    assert!(step_line(&up.stdout, "verify").contains("loop proven: v2"));
    assert_loop_proven(&sim, "v2").await;
    assert_no_secret_in(&sim, "`up -vv` (stdout)", &up.stdout);
    assert_no_secret_in(&sim, "`up -vv` (stderr)", &up.stderr);
    // The CLI reached the cluster with the x509 client certificate `microk8s config` gave.
    assert!(sim.fake.requests().iter().any(|r| r.user == "admin"));

    // 2. A second `up` on the healthy lab reads and writes nothing; verify does not run again.
    let gitea = sim.world.gitea();
    let drone = sim.world.drone();
    let heads = (gitea.head("lab", "nyan-cat"), gitea.head("lab", "gitops"));
    let builds = drone.builds("lab/nyan-cat").len();
    let app_before = sim
        .fake
        .get("argoproj.io/v1alpha1", "Application", "argocd", "nyan-cat")
        .unwrap();
    sim.clear_argv();
    sim.fake.clear_requests();
    gitea.clear_log();
    drone.clear_log();
    let again = sim.homelab(&["up"]).await;
    ok(&sim, "the second up", &again);
    assert_no_secret_in(
        &sim,
        "the second `up`",
        &format!("{}{}", again.stdout, again.stderr),
    );
    assert!(
        again.stdout.contains("was already up; nothing changed"),
        "{}",
        again.stdout
    );
    for line in again.stdout.lines().filter(|l| l.starts_with("  ")) {
        if let Some(mark) = line.split_whitespace().next()
            && ["✓", "=", "✗", "!", "-"].contains(&mark)
        {
            assert_eq!(mark, "=", "every step was already done: {line}");
        }
    }
    assert!(step_line(&again.stdout, "verify").contains("proven by an earlier run"));
    let argv = sim.argv();
    assert!(!argv.is_empty(), "the second up looked at the VMs");
    for argv in argv {
        let read = match argv.first().map(String::as_str) {
            Some("info") => true,
            Some("exec") => {
                let inner: Vec<&str> = argv
                    .iter()
                    .skip_while(|a| *a != "--")
                    .skip(1)
                    .map(String::as_str)
                    .collect();
                matches!(
                    inner.as_slice(),
                    ["test", "-f", _]
                        | ["cat", "/etc/hosts"]
                        | ["uname", "-m"]
                        | ["sudo", "microk8s", "ctr", "image", "ls", "-q"]
                        | ["sudo", "microk8s", "config"]
                        | ["sudo", "microk8s", "kubectl", "get", "nodes", "-o", "json"]
                )
            }
            _ => false,
        };
        assert!(
            read,
            "the second up ran a multipass command that is not a read: {argv:?}"
        );
    }
    let writes: Vec<String> = sim
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.user == sim.cli_user && r.is_write())
        .map(|r| format!("{} {} {}", r.verb, r.kind, r.path))
        .collect();
    assert!(
        writes.is_empty(),
        "the second up wrote to the cluster: {writes:#?}"
    );
    assert!(
        sim.fake.requests().iter().any(|r| r.user == sim.cli_user),
        "the second up looked at the cluster"
    );
    let gitea_writes: Vec<String> = gitea
        .log()
        .into_iter()
        .filter(|l| l.method != "GET")
        .map(|l| l.to_string())
        .collect();
    assert!(
        gitea_writes.is_empty(),
        "the second up wrote to Gitea: {gitea_writes:#?}"
    );
    let drone_writes: Vec<String> = drone
        .log()
        .into_iter()
        .filter(|l| l.method != "GET")
        .map(|l| format!("{} {}", l.method, l.target))
        .collect();
    assert!(
        drone_writes.is_empty(),
        "the second up wrote to Drone: {drone_writes:#?}"
    );
    assert!(
        !gitea.log().is_empty() && !drone.log().is_empty(),
        "it looked at both"
    );
    assert_eq!(
        (gitea.head("lab", "nyan-cat"), gitea.head("lab", "gitops")),
        heads,
        "no new commits"
    );
    assert_eq!(drone.builds("lab/nyan-cat").len(), builds, "no new build");
    let app_after = sim
        .fake
        .get("argoproj.io/v1alpha1", "Application", "argocd", "nyan-cat")
        .unwrap();
    assert_eq!(app_after["status"]["sync"], app_before["status"]["sync"]);

    // 3. `status` shows every component healthy.
    let status = sim.homelab(&["status"]).await;
    ok(&sim, "status", &status);
    assert_no_secret_in(
        &sim,
        "`status`",
        &format!("{}{}", status.stdout, status.stderr),
    );
    let components: Vec<&str> = status
        .stdout
        .lines()
        .skip_while(|l| *l != "Components")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    // The stack's ten, and `lab-dns` (the lab's names in the cluster's DNS) on Multipass.
    assert_eq!(components.len(), 11, "{}", status.stdout);
    for c in &components {
        let state = c.split_whitespace().nth(1).unwrap_or_default();
        assert!(
            state == "healthy" || state == "addon",
            "component not healthy: `{c}`\n{}",
            status.stdout
        );
    }
    assert!(
        status.stdout.contains("Cluster: reachable"),
        "{}",
        status.stdout
    );

    // 4. `verify` on its own walks every hop again.
    let verify = sim.homelab(&["verify"]).await;
    ok(&sim, "verify", &verify);
    assert_no_secret_in(
        &sim,
        "`verify`",
        &format!("{}{}", verify.stdout, verify.stderr),
    );
    for hop in homelab::verify::HOPS {
        assert!(
            verify
                .stdout
                .lines()
                .any(|l| l.starts_with('✓') && l.contains(hop)),
            "hop `{hop}` passed:\n{}",
            verify.stdout
        );
    }
    assert!(
        verify.stdout.contains("the loop works"),
        "{}",
        verify.stdout
    );
    assert_eq!(drone.builds("lab/nyan-cat").len(), builds + 1);
    assert_loop_proven(&sim, "v3").await;

    // 5. `down --purge` leaves nothing of the lab.
    let down = sim.homelab(&["down", "--purge"]).await;
    ok(&sim, "down --purge", &down);
    let instances = sim.multipass_state()["instances"].clone();
    assert_eq!(instances, serde_json::json!({}), "every VM purged");
    assert!(!sim.ctx.state_dir(LAB).exists(), "the lab state is gone");
    let kubeconfig = std::fs::read_to_string(sim.ctx.home.join(".kube/config")).unwrap_or_default();
    assert!(
        !kubeconfig.contains(&format!("homelab-{LAB}")),
        "the kube context is gone:\n{kubeconfig}"
    );
    let after = sim.homelab(&["status"]).await;
    assert!(after.stdout.contains("does not exist"), "{}", after.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_on_an_existing_cluster_with_a_domain_proves_the_loop_and_changes_nothing_next() {
    let sim = Sim::start(
        Provider::Existing {
            domain: "lab.test".into(),
        },
        2,
    )
    .await;
    let up = sim
        .homelab(&["up", "--provider", "existing", "--domain", "lab.test"])
        .await;
    ok(&sim, "up --provider existing", &up);
    debug(&sim, "up --provider existing", &up);
    assert!(step_line(&up.stdout, "verify").contains("loop proven: v2"));
    assert_loop_proven(&sim, "v2").await;
    // The cluster itself is never changed: no Node, StorageClass or namespace outside the lab.
    let writes: Vec<String> = sim
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.user == sim.cli_user && r.is_write())
        .filter(|r| matches!(r.kind.as_str(), "Node" | "StorageClass"))
        .map(|r| format!("{} {}", r.verb, r.path))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    // Nor its DNS: the lab's names resolved through what the cluster's owner configured.
    let coredns = sim
        .fake
        .get("v1", "ConfigMap", "kube-system", "coredns")
        .unwrap();
    assert!(
        !coredns["data"]["Corefile"]
            .as_str()
            .unwrap()
            .contains("homelab"),
        "{coredns}"
    );
    assert!(
        !sim.fake.requests().iter().any(|r| r.user == sim.cli_user
            && r.is_write()
            && r.path.contains("/namespaces/kube-system/")),
        "up wrote into kube-system"
    );

    sim.fake.clear_requests();
    let again = sim
        .homelab(&["up", "--provider", "existing", "--domain", "lab.test"])
        .await;
    ok(&sim, "the second up --provider existing", &again);
    assert!(
        again.stdout.contains("was already up; nothing changed"),
        "{}",
        again.stdout
    );
    let writes: Vec<String> = sim
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.user == sim.cli_user && r.is_write())
        .map(|r| format!("{} {} {}", r.verb, r.kind, r.path))
        .collect();
    assert!(
        writes.is_empty(),
        "the second up wrote to the cluster: {writes:#?}"
    );

    // A new lab CA: the next `up` issues every certificate again from it (cert-manager would
    // keep serving the old ones), rolls what reads the CA at start, and proves the loop again.
    let before = site_certificate_issuer(&sim).await;
    let regenerate = sim
        .homelab(&["ca", "regenerate", "--domain", "lab.test"])
        .await;
    ok(&sim, "ca regenerate", &regenerate);
    assert!(
        regenerate.stdout.contains("next: `homelab up`"),
        "{}",
        regenerate.stdout
    );
    let renewed = sim
        .homelab(&["up", "--provider", "existing", "--domain", "lab.test"])
        .await;
    ok(&sim, "up after ca regenerate", &renewed);
    let deploy = step_line(&renewed.stdout, "deploy");
    assert!(
        deploy.contains("3 certificates issued again from the new lab CA"),
        "{deploy}"
    );
    assert!(
        step_line(&renewed.stdout, "verify").contains("loop proven"),
        "{}",
        renewed.stdout
    );
    // `site` trusts only the new CA from the lab state: the old certificate would fail it.
    let (code, _) = site(&sim).await;
    assert_eq!(code, 200);
    assert_ne!(before, site_certificate_issuer(&sim).await);
    for (ns, name) in [("drone", "drone"), ("homelab-system", "homelab-sync")] {
        let d = sim.fake.get("apps/v1", "Deployment", ns, name).unwrap();
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"]["homelab.dev/lab-ca-sha256"],
            homelab::upstream::sha256_hex(sim.world.lab_ca().cert_pem.as_bytes()),
            "{ns}/{name} rolls with the new CA"
        );
    }
}

/// The `ca.crt` of nyan-cat's certificate Secret, as cert-manager wrote it.
async fn site_certificate_issuer(sim: &Sim) -> String {
    let secrets: Vec<Value> = sim
        .fake
        .all("v1", "Secret")
        .into_iter()
        .filter(|s| {
            s["metadata"]["namespace"] == "nyan-cat"
                && s.pointer("/metadata/annotations/cert-manager.io~1certificate-name")
                    .is_some()
        })
        .collect();
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    secrets[0]["data"]["ca.crt"].as_str().unwrap().to_string()
}
