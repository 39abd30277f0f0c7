//! The whole `homelab up`, end to end against the fakes wired together as one lab
//! ([`lab_sim`]): every step from `secrets` to `verify` — the VM from the fake `multipass`, the
//! stack deployed to the fake API server, Gitea wired through a pod exec and real git, Drone
//! logged in through Gitea's OAuth pages, the real `.drone.yml` building and bumping the GitOps
//! repository, the real sync engine deploying it, the site served by the ingress with a
//! certificate from the lab CA — then a second `up` that writes nothing anywhere, `status`,
//! `verify` on its own, and `down --purge`; and `up` on an existing cluster.
//!
//! `E2E_DEBUG=1 cargo test --test it up_full:: -- --nocapture` prints what went on in the lab after
//! each first `up` (kubelet, ingress, webhook deliveries, builds with their logs, the sync
//! engine's log, run at `-vv`).

use crate::support::common;
use crate::support::fake_kube;
use crate::support::lab_sim;

use std::collections::BTreeMap;

use lab_sim::{LAB, Provider, Sim};
use serde_json::{Value, json};

const GITOPS_DEPLOYMENT: &str = "apps/nyan-cat/deployment.yaml";

fn debug(sim: &Sim, what: &str, run: &common::Run) {
    if std::env::var_os("E2E_DEBUG").is_some() {
        eprintln!("==== {what}\n{}\n{}", run.stdout, sim.diagnostics());
    }
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

/// What the CLI's requests changed in the cluster, as `verb kind path` lines.
fn cli_writes(sim: &Sim) -> Vec<String> {
    sim.fake
        .requests()
        .into_iter()
        .filter(|r| r.user == sim.cli_user && r.is_write())
        .map(|r| format!("{} {} {}", r.verb, r.kind, r.path))
        .collect()
}

fn app_status(sim: &Sim) -> homelab::verify::AppStatus {
    let app = sim
        .fake
        .get("argoproj.io/v1alpha1", "Application", "argocd", "nyan-cat")
        .expect("the Application exists");
    homelab::verify::AppStatus::from_object(&app)
}

/// `https://nyan.<domain>/` through the ingress, trusting only the lab CA.
/// One step graph: `plan --output json` lists exactly the steps a whole `up` ran and recorded,
/// in the order it ran them.
async fn assert_plan_is_what_up_ran(sim: &Sim, flags: &[&str]) {
    let plan = sim
        .homelab(&[&["plan", "--output", "json"], flags].concat())
        .await;
    sim.assert_ok("plan", &plan);
    let plan: Value = serde_json::from_str(&plan.stdout).unwrap();
    let planned: Vec<&str> = plan["pipeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(sim.ctx.state_dir(LAB).join("up.json")).unwrap(),
    )
    .unwrap();
    let mut recorded: Vec<&str> = record["steps"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = planned.clone();
    sorted.sort();
    recorded.sort();
    assert_eq!(recorded, sorted, "up recorded the steps the plan lists");
    let status = sim.homelab(&["status", "--output", "json"]).await;
    sim.assert_ok("status", &status);
    let listed = common::status_steps(&status.stdout);
    let all_done: Vec<(String, bool)> = planned.iter().map(|n| (n.to_string(), true)).collect();
    assert_eq!(
        listed, all_done,
        "status shows the plan's steps, in order, all done"
    );
}

async fn site(sim: &Sim) -> (u16, String) {
    let ca = sim.world.lab_ca();
    let tls = homelab::edges::http::rustls_config(Some(&ca.cert_pem)).unwrap();
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
    // The runner lints as drone-runner-kube does and refuses the pipeline's ConfigMap volume
    // (the lab CA) of an untrusted repository (issue 12): `up` trusted it before any build ran,
    // so no build was refused.
    assert!(drone.repo("lab/nyan-cat").is_some_and(|r| r.trusted));
    let refused: Vec<String> = builds
        .iter()
        .filter(|b| b.status == "error")
        .map(|b| format!("#{}: {}{}", b.number, b.error, b.stage_error))
        .collect();
    assert!(refused.is_empty(), "builds refused: {refused:?}");
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
    let message = crate::support::http_kit::git_backend::git(
        &gitea.repo_dir("lab", "gitops"),
        &["log", "-1", "--format=%an|%s", "main"],
    );
    assert_eq!(
        message,
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
    sim.assert_ok("up", &up);
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
        "snapshot",
    ] {
        assert!(
            step_line(&up.stdout, step).trim_start().starts_with('✓'),
            "`{step}` did its work: {}",
            step_line(&up.stdout, step)
        );
    }
    assert!(step_line(&up.stdout, "verify").contains("loop proven: v2"));
    assert_loop_proven(&sim, "v2").await;
    assert_plan_is_what_up_ran(&sim, &[]).await;
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
    sim.assert_ok("the second up", &again);
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
            // `version` is the preflight's question (issue 12); `list --snapshots` the
            // `snapshot` step's (issue 14).
            Some("info" | "version") => true,
            Some("list") => argv.iter().any(|a| a == "--snapshots"),
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
    let writes = cli_writes(&sim);
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
    sim.assert_ok("status", &status);
    assert_no_secret_in(
        &sim,
        "`status`",
        &format!("{}{}", status.stdout, status.stderr),
    );
    let (applications, components): (Vec<&str>, Vec<&str>) = status
        .stdout
        .lines()
        .skip_while(|l| *l != "Components")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .partition(|l| l.starts_with("    "));
    // Under the component, its Application as homelab's engine wrote its status (the same
    // fields Argo CD writes: argocd_up:: reads them under the argocd stack).
    assert_eq!(
        applications,
        ["    `Application/nyan-cat` in `argocd`: Synced and Healthy"],
        "{}",
        status.stdout
    );
    // The stack's eleven (with the lab page), and `lab-dns` (the lab's names in the cluster's
    // DNS) on Multipass.
    assert_eq!(components.len(), 12, "{}", status.stdout);
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
    sim.assert_ok("verify", &verify);
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
    sim.assert_ok("down --purge", &down);
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
    sim.assert_ok("up --provider existing", &up);
    debug(&sim, "up --provider existing", &up);
    assert!(step_line(&up.stdout, "verify").contains("loop proven: v2"));
    assert_loop_proven(&sim, "v2").await;
    assert_plan_is_what_up_ran(&sim, &["--provider", "existing", "--domain", "lab.test"]).await;
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
    sim.assert_ok("the second up --provider existing", &again);
    assert!(
        again.stdout.contains("was already up; nothing changed"),
        "{}",
        again.stdout
    );
    let writes = cli_writes(&sim);
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
    sim.assert_ok("ca regenerate", &regenerate);
    assert!(
        regenerate.stdout.contains("next: `homelab up`"),
        "{}",
        regenerate.stdout
    );
    let renewed = sim
        .homelab(&["up", "--provider", "existing", "--domain", "lab.test"])
        .await;
    sim.assert_ok("up after ca regenerate", &renewed);
    let deploy = step_line(&renewed.stdout, "deploy");
    assert!(
        deploy.contains("4 certificates issued again from the new lab CA"),
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
            homelab::edges::digest::sha256_hex(sim.world.lab_ca().cert_pem.as_bytes()),
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

/// Every secret value the lab holds, in the forms a file could carry it: `secrets.json`'s
/// values (and their base64), the CA key's lines, and the lab kubeconfig's client key.
fn every_secret_form(sim: &Sim) -> Vec<(String, String)> {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let dir = sim.ctx.state_dir(LAB);
    let mut out = Vec::new();
    let secrets: BTreeMap<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("secrets.json")).unwrap()).unwrap();
    for (name, v) in &secrets {
        if let Some(s) = v.as_str().filter(|s| s.len() >= 6) {
            out.push((name.clone(), s.to_string()));
            out.push((format!("{name} (base64)"), b64(s)));
        }
    }
    let key = std::fs::read_to_string(dir.join("ca/ca.key")).unwrap();
    for (i, line) in key.lines().enumerate() {
        if line.len() >= 16 && !line.starts_with("-----") {
            out.push((format!("ca.key line {i}"), line.to_string()));
        }
    }
    let kubeconfig: Value =
        homelab::edges::yaml::from_str(&std::fs::read_to_string(dir.join("kubeconfig")).unwrap())
            .unwrap();
    for u in kubeconfig["users"].as_array().unwrap() {
        if let Some(k) = u["user"]["client-key-data"].as_str() {
            out.push(("kubeconfig client key".into(), k.to_string()));
        }
    }
    out
}

/// Set knobs of the fake multipass (between two commands).
fn multipass_knobs(sim: &Sim, knobs: Value) {
    let path = sim.mp_dir.join("state.json");
    let mut state = sim.multipass_state();
    for (k, v) in knobs.as_object().unwrap() {
        state["knobs"][k] = v.clone();
    }
    std::fs::write(path, serde_json::to_string(&state).unwrap()).unwrap();
}

/// `homelab export logs <dir>`; the one archive it wrote, read.
async fn export_logs(sim: &Sim, dir: &str) -> (common::Run, BTreeMap<String, Vec<u8>>) {
    let run = sim.homelab(&["export", "logs", dir]).await;
    sim.assert_ok("export logs", &run);
    let out = sim.ctx.cwd.join(dir);
    let archives: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(archives.len(), 1, "{archives:?}");
    let name = archives[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with(&format!("homelab-{LAB}-logs-")) && name.ends_with("Z.tar.gz"),
        "{name}"
    );
    assert!(run.stdout.trim_end().ends_with(&name), "{}", run.stdout);
    let top = name.trim_end_matches(".tar.gz").to_string();
    let files = common::read_archive(&archives[0])
        .into_iter()
        .map(|(p, b)| {
            let rel = p
                .strip_prefix(&format!("{top}/"))
                .unwrap_or_else(|| panic!("`{p}` is under `{top}/`"))
                .to_string();
            (rel, b)
        })
        .collect();
    (run, files)
}

/// Issue 12, finding 9: when a lab fails, one file says why — and shares no secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_logs_holds_what_the_lab_shows_and_no_secret_even_with_the_cluster_gone() {
    let sim = Sim::start(Provider::Multipass, 3).await;
    let up = sim.homelab(&["up", "--no-verify"]).await;
    sim.assert_ok("up --no-verify", &up);
    let secrets: BTreeMap<String, Value> = serde_json::from_str(
        &std::fs::read_to_string(sim.ctx.state_dir(LAB).join("secrets.json")).unwrap(),
    )
    .unwrap();
    let secret = |n: &str| secrets[n].as_str().unwrap().to_string();
    let password = secret("gitea_admin_password");

    // Secrets that leak the way they do on real machines: an app that logs its admin password,
    // a VM log and a microk8s report that carry tokens.
    let pods = sim.fake.all("v1", "Pod");
    let pod_in = |ns: &str| {
        pods.iter()
            .find(|p| p["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("a pod runs in `{ns}`"))
            .clone()
    };
    let gitea = pod_in("gitea");
    let gitea_pod = gitea["metadata"]["name"].as_str().unwrap().to_string();
    let gitea_container = gitea["spec"]["containers"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    sim.fake.set_log(
        "gitea",
        &gitea_pod,
        &gitea_container,
        false,
        &format!("starting\ncreated admin user with password {password}\nlistening on :3000\n"),
    );
    let engine = pod_in("homelab-system");
    let engine_pod = engine["metadata"]["name"].as_str().unwrap().to_string();
    let engine_container = engine["spec"]["containers"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    sim.fake.set_log(
        "homelab-system",
        &engine_pod,
        &engine_container,
        false,
        &lab_sim::kubelet::sync_log(&sim.world),
    );
    multipass_knobs(
        &sim,
        json!({
            "vm_logs": {"/var/log/cloud-init-output.log": format!("runcmd\nwebhook secret is {}\ndone\n", secret("webhook_secret"))},
            "inspect_files": {"inspection-report/args/leaked-token": format!("token={}\n", secret("drone_admin_token"))},
        }),
    );
    sim.fake.clear_requests();

    let (run, files) = export_logs(&sim, "out").await;
    let vm = format!("vms/homelab-{LAB}-1");
    for expected in [
        "README.txt".to_string(),
        "index.json".into(),
        "status.json".into(),
        "config.json".into(),
        "state/up.json".into(),
        "state/lock.json".into(),
        "state/cluster.json".into(),
        "manifests/manifests.yaml".into(),
        "manifests/cloud-init-user-data.yaml".into(),
        "multipass/version.json".into(),
        "multipass/info.json".into(),
        format!("{vm}/cloud-init-status.json"),
        format!("{vm}/cloud-init-output.log"),
        format!("{vm}/cloud-init.log"),
        format!("{vm}/homelab/provisioned"),
        format!("{vm}/microk8s-inspect.txt"),
        format!("{vm}/inspection-report/k8s/version"),
        format!("{vm}/inspection-report/args/leaked-token"),
        "cluster/version.json".into(),
        "cluster/nodes.yaml".into(),
        "cluster/applications.yaml".into(),
        "cluster/certificates.yaml".into(),
        "namespaces/gitea/events.yaml".into(),
        "namespaces/gitea/pods.yaml".into(),
        format!("namespaces/gitea/logs/{gitea_pod}/{gitea_container}.log"),
        format!("namespaces/homelab-system/logs/{engine_pod}/{engine_container}.log"),
    ] {
        assert!(
            files.contains_key(&expected),
            "`{expected}` is in the archive: {:#?}",
            files.keys().collect::<Vec<_>>()
        );
    }
    let text = |p: &str| String::from_utf8_lossy(&files[p]).into_owned();
    let status: Value = serde_json::from_str(&text("status.json")).unwrap();
    assert_eq!(status["lab"], LAB);
    assert!(text("multipass/info.json").contains(&format!("homelab-{LAB}-1")));
    assert!(text(&format!("{vm}/cloud-init-status.json")).contains("\"status\": \"done\""));
    assert!(text("cluster/applications.yaml").contains("nyan-cat"));
    let gitea_log = text(&format!(
        "namespaces/gitea/logs/{gitea_pod}/{gitea_container}.log"
    ));
    assert!(
        gitea_log.contains("created admin user with password <redacted>"),
        "{gitea_log}"
    );
    assert!(
        text(&format!("{vm}/inspection-report/args/leaked-token")).contains("token=<redacted>")
    );
    // The engine's log is there as its pod's log.
    assert!(
        !text(&format!(
            "namespaces/homelab-system/logs/{engine_pod}/{engine_container}.log"
        ))
        .trim()
        .is_empty()
    );
    let readme = text("README.txt");
    // Where the Application deploys is a lab namespace too, though no stack component names
    // it: read when it exists, and said to be missing when the first sync has not made it yet.
    assert!(
        files.contains_key("namespaces/nyan-cat/pods.yaml")
            || readme.contains("namespace `nyan-cat`\n      → it does not exist in the cluster"),
        "{readme}"
    );
    // On a healthy lab nothing fails (a kind whose CRD is not installed is skipped, not failed).
    assert!(readme.contains("\nFailed (0)\n"), "{readme}");

    // Not one secret value, in any form, in any file of the archive.
    for (path, bytes) in &files {
        for (name, value) in every_secret_form(&sim) {
            let found = bytes.windows(value.len()).any(|w| w == value.as_bytes());
            assert!(!found, "`{path}` in the archive holds secret `{name}`");
        }
    }
    assert_no_secret_in(
        &sim,
        "`export logs`",
        &format!("{}{}", run.stdout, run.stderr),
    );
    // And no Secret object was ever asked for.
    let asked: Vec<String> = sim
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.user == sim.cli_user && (r.kind == "Secret" || r.path.contains("/secrets")))
        .map(|r| format!("{} {}", r.verb, r.path))
        .collect();
    assert!(asked.is_empty(), "export logs read Secrets: {asked:?}");

    // With the API server no longer answering, the export still writes what the rest shows
    // and says why the cluster part is missing.
    sim.fake.inject(fake_kube::Fault::new(
        fake_kube::FaultAction::Drop,
        usize::MAX,
    ));
    let (_, files) = export_logs(&sim, "unreachable").await;
    assert!(files.contains_key(&format!("{vm}/cloud-init-status.json")));
    assert!(files.contains_key("state/up.json"));
    assert!(!files.keys().any(|k| k.starts_with("namespaces/")));
    let readme = String::from_utf8_lossy(&files["README.txt"]).into_owned();
    assert!(
        readme.contains(&format!(
            "the API server of kube context `homelab-{LAB}` does not answer"
        )),
        "{readme}"
    );
}
