//! Issue 3: the `existing` provider (`homelab up --provider existing`), black-box, against the
//! fake Kubernetes API server (`tests/support/fake_kube`), and against a real cluster when
//! `HOMELAB_TEST_KUBECONFIG` names a kubeconfig (its current context is used). Tests that need
//! control only the fake gives say so and skip on a real cluster.

use crate::support::common;
use crate::support::fake_kube;

use std::path::PathBuf;

use common::{Run, TestContext};
use fake_kube::FakeKube;
use serde_json::{Value, json};

/// Where the tests point homelab: the fake, or a real cluster.
struct Target {
    fake: Option<FakeKube>,
    kubeconfig: PathBuf,
    context: String,
}

async fn target(ctx: &TestContext) -> Target {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match std::env::var_os("HOMELAB_TEST_KUBECONFIG") {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(&path)
                .expect("HOMELAB_TEST_KUBECONFIG is a kubeconfig");
            Target {
                fake: None,
                kubeconfig: PathBuf::from(path),
                context: kc
                    .current_context
                    .expect("HOMELAB_TEST_KUBECONFIG has a current context"),
            }
        }
        None => {
            let fake = FakeKube::start().await;
            let kubeconfig = fake.write_kubeconfig(ctx.temp.path());
            fake.insert(json!({
                "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"
            }));
            Target {
                fake: Some(fake),
                kubeconfig,
                context: "fake".into(),
            }
        }
    }
}

impl Target {
    fn fake_only(&self, test: &str, why: &str) -> Option<&FakeKube> {
        if self.fake.is_none() {
            eprintln!("SKIPPED on the real cluster: `{test}` is fake-only ({why})");
        }
        self.fake.as_ref()
    }
}

fn sandbox(kubeconfig: &std::path::Path) -> TestContext {
    let mut ctx = TestContext::new();
    ctx.env.insert("HOMELAB_LAB".into(), "x".into());
    ctx.env
        .insert("KUBECONFIG".into(), kubeconfig.display().to_string());
    // Nothing is side-loaded into a cluster homelab did not build: a development build names an
    // engine image someone pushed, or `up` refuses before it starts (issue 12).
    ctx.env.insert(
        "HOMELAB_SYNC_IMAGE".into(),
        "registry.example/homelab:dev".into(),
    );
    ctx
}

/// Run homelab off the runtime's worker, so the fake keeps answering.
async fn homelab(ctx: &TestContext, args: &[&str]) -> Run {
    let mut cmd = ctx.command();
    cmd.args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: ctx.filter(&String::from_utf8_lossy(&out.stdout)),
        stderr: ctx.filter(&String::from_utf8_lossy(&out.stderr)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_cluster_is_checked_and_never_changed() {
    let placeholder = TestContext::new();
    let t = target(&placeholder).await;
    let ctx = sandbox(&t.kubeconfig);

    let run = homelab(&ctx, &["up", "--provider", "existing", "--until", "ready"]).await;
    run.success();
    let expected_note = format!(
        "homelab will manage, in context `{c}`: the lab's namespaces and everything in them, and the cluster-wide objects the stack installs (CRDs, ClusterIssuer, IngressClass), all labelled `homelab.dev/lab=x`.\nIt will not manage the cluster itself: its nodes, Kubernetes version, StorageClasses, DNS and network; `homelab down` leaves the cluster running.\nThe stack's microk8s addons (`dns`, `hostpath-storage`) are expected to be provided by this cluster.\n",
        c = t.context
    );
    assert!(run.stderr.contains(&expected_note), "{}", run.stderr);
    let ready = run
        .stdout
        .lines()
        .find(|l| l.contains("ready"))
        .unwrap()
        .to_string();
    assert!(ready.starts_with("  ✓ ready "), "{}", run.stdout);
    assert!(
        ready.contains(&format!("context `{}` (", t.context)),
        "{ready}"
    );
    assert!(ready.contains("default StorageClass `"), "{ready}");
    if let Some(fake) = &t.fake {
        assert!(
            ready.ends_with("): Kubernetes v1.36.0-fake, default StorageClass `standard`"),
            "{ready}"
        );
        let paths: Vec<String> = fake
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        // Reads only: the version, the StorageClasses, and the nodes (where the ingress is).
        assert_eq!(
            paths,
            [
                "GET /version",
                "GET /apis/storage.k8s.io/v1/storageclasses",
                "GET /api/v1/nodes"
            ]
        );
    }
    let steps: Vec<&str> = run
        .stdout
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        steps,
        ["secrets", "ca", "ready"],
        "no VM steps for an existing cluster"
    );

    // Again: same checks, no note, nothing recorded anew.
    let again = homelab(&ctx, &["up", "--provider", "existing", "--until", "ready"]).await;
    again.success();
    assert!(
        !again.stderr.contains("homelab will manage"),
        "{}",
        again.stderr
    );
    assert!(again.stdout.contains("  = ready "), "{}", again.stdout);

    let status = homelab(&ctx, &["status", "--output", "json"]).await;
    status.success();
    let s: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(s["provider"], "existing");
    assert_eq!(s["cluster"]["reachable"], true, "{s}");
    assert_eq!(s["context"]["name"], json!(t.context));
    if t.fake.is_none() {
        // The fake API server has no Node type; only a real cluster lists nodes.
        assert!(!s["cluster"]["nodes"].as_array().unwrap().is_empty(), "{s}");
    } else {
        assert_eq!(
            s["cluster"]["detail"],
            "Kubernetes v1.36.0-fake, default StorageClass `standard`"
        );
    }

    let down = homelab(&ctx, &["down"]).await;
    down.success();
    assert!(
        down.stdout.starts_with(&format!(
            "deleted the lab's 0 object(s) from the cluster behind context `{c}`\nthe cluster behind context `{c}` keeps running: homelab did not create it\n",
            c = t.context
        )),
        "{}",
        down.stdout
    );
    if let Some(fake) = &t.fake {
        assert!(
            fake.writes().is_empty(),
            "the existing provider never writes: {:?}",
            fake.writes()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_a_default_storage_class_is_refused() {
    let placeholder = TestContext::new();
    let t = target(&placeholder).await;
    let Some(fake) = t.fake_only(
        "a_cluster_without_a_default_storage_class_is_refused",
        "it removes the default StorageClass",
    ) else {
        return;
    };
    fake.insert(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "standard", "annotations": {}},
        "provisioner": "rancher.io/local-path"
    }));
    let ctx = sandbox(&t.kubeconfig);
    let run = homelab(&ctx, &["up", "--provider", "existing", "--until", "ready"]).await;
    run.failure(1);
    assert!(
        run.stderr.ends_with(&format!("{}{}", "error: the cluster of context `fake` has no default StorageClass (it has `standard`)\nhint: the lab's volumes need one; mark a class as default: `kubectl patch storageclass standard -p '{\"metadata\":{\"annotations\":{\"storageclass.kubernetes.io/is-default-class\":\"true\"}}}'`\n", common::export_hint("x"))),
        "{}",
        run.stderr
    );
    assert!(fake.writes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_contexts_and_unreachable_clusters_say_which() {
    let placeholder = TestContext::new();
    let t = target(&placeholder).await;
    let ctx = sandbox(&t.kubeconfig);
    let run = homelab(
        &ctx,
        &[
            "up",
            "--provider",
            "existing",
            "--context",
            "no-such-context",
        ],
    )
    .await;
    run.failure(1);
    assert!(
        run.stderr.ends_with(&format!("{}{}", "error: cannot use kube context `no-such-context`: your kubeconfig has no such context\nhint: list the contexts you have with `kubectl config get-contexts`, and pass one with `--context`\n", common::export_hint("x"))),
        "{}",
        run.stderr
    );

    if t.fake_only(
        "unknown_contexts_and_unreachable_clusters_say_which",
        "it stops the API server",
    )
    .is_none()
    {
        return;
    }
    let url = t.fake.as_ref().unwrap().url();
    drop(t);
    let run = homelab(&ctx, &["up", "--provider", "existing", "--until", "ready"]).await;
    run.failure(1);
    let prefix = format!("error: the cluster of context `fake` ({url}) is not reachable: ");
    assert!(run.stderr.contains(&prefix), "{}", run.stderr);
    assert!(
        run.stderr.ends_with(&format!(
            "hint: check that `kubectl --context fake version` works from this machine\n{}",
            common::export_hint("x")
        )),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_is_never_switched_to_another_provider() {
    let placeholder = TestContext::new();
    let t = target(&placeholder).await;
    let ctx = sandbox(&t.kubeconfig);
    let dir = ctx.state_dir("x");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("cluster.json"),
        r#"{"provider": "multipass", "context": "homelab-x", "nodes": [{"name": "homelab-x-1", "ip": "10.77.0.2"}]}"#,
    )
    .unwrap();
    let run = homelab(&ctx, &["up", "--provider", "existing", "--until", "ready"]).await;
    run.failure(1);
    assert_eq!(
        run.stderr,
        format!(
            "error: lab `x` runs on provider `multipass`, not `existing`\nhint: remove it first with `homelab down --lab x`, or pick another lab name with `--lab`\n{}",
            common::export_hint("x")
        )
    );
    if let Some(fake) = &t.fake {
        assert!(
            fake.requests().is_empty(),
            "refused before the cluster is asked anything"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_removes_the_labs_objects_from_an_existing_cluster_and_nothing_else() {
    let placeholder = TestContext::new();
    let t = target(&placeholder).await;
    let Some(fake) = t.fake_only(
        "down_removes_the_labs_objects_from_an_existing_cluster_and_nothing_else",
        "it plants objects with fixed names",
    ) else {
        return;
    };
    let ctx = sandbox(&t.kubeconfig);
    homelab(&ctx, &["up", "--provider", "existing", "--until", "ready"])
        .await
        .success();
    let cm = |name: &str, labels: Value, annotations: Value| {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "labels": labels, "annotations": annotations},
            "data": {"k": "v"}
        })
    };
    let hash = json!({"homelab.dev/applied-hash": "0123"});
    fake.insert(cm(
        "ours",
        json!({"homelab.dev/lab": "x", "homelab.dev/component": "gitea"}),
        hash.clone(),
    ));
    fake.insert(cm(
        "other-lab",
        json!({"homelab.dev/lab": "y", "homelab.dev/component": "gitea"}),
        hash.clone(),
    ));
    // Labelled by hand, never applied by homelab (no applied-hash): not ours to delete.
    fake.insert(cm("lookalike", json!({"homelab.dev/lab": "x"}), json!({})));
    fake.insert(cm("unlabelled", json!({}), json!({})));

    let down = homelab(&ctx, &["down"]).await;
    down.success();
    assert!(
        down.stdout.starts_with(&format!(
            "deleted the lab's 1 object(s) from the cluster behind context `{}`\n",
            t.context
        )),
        "{}",
        down.stdout
    );
    assert!(fake.get("v1", "ConfigMap", "default", "ours").is_none());
    for kept in ["other-lab", "lookalike", "unlabelled"] {
        assert!(
            fake.get("v1", "ConfigMap", "default", kept).is_some(),
            "`{kept}` was deleted"
        );
    }
}

/// Issue 13: `plan` lists the very steps `up` runs on an existing cluster: `up --until ready`
/// records exactly the plan's steps through `ready`, and `status` lists the plan's steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_lists_the_steps_up_runs_and_records_on_an_existing_cluster() {
    let placeholder = TestContext::new();
    let t = target(&placeholder).await;
    let ctx = sandbox(&t.kubeconfig);

    let plan = homelab(
        &ctx,
        &["plan", "--provider", "existing", "--output", "json"],
    )
    .await;
    plan.success();
    let plan: Value = serde_json::from_str(&plan.stdout).unwrap();
    let planned: Vec<(String, Vec<String>)> = plan["pipeline"]
        .as_array()
        .expect("the plan lists up's steps")
        .iter()
        .map(|s| {
            let needs = s["needs"].as_array().unwrap();
            let needs = needs.iter().map(|n| n.as_str().unwrap().to_string());
            (s["name"].as_str().unwrap().to_string(), needs.collect())
        })
        .collect();
    let names: Vec<&str> = planned.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "secrets",
            "ca",
            "ready",
            "prepare",
            "render",
            "images",
            "deploy",
            "wire-gitea",
            "wire-ci",
            "verify"
        ]
    );
    for (i, (name, needs)) in planned.iter().enumerate() {
        for need in needs {
            assert!(
                names[..i].contains(&need.as_str()),
                "`{name}` needs `{need}`, which the plan does not list before it"
            );
        }
    }

    homelab(&ctx, &["up", "--provider", "existing", "--until", "ready"])
        .await
        .success();
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(ctx.state_dir("x").join("up.json")).unwrap())
            .unwrap();
    let recorded: Vec<&str> = record["steps"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let through_ready = names.iter().position(|n| *n == "ready").unwrap() + 1;
    let mut expected = names[..through_ready].to_vec();
    expected.sort();
    assert_eq!(recorded, expected, "up.json keeps its steps by name");

    let status = homelab(&ctx, &["status", "--output", "json"]).await;
    status.success();
    let listed = common::status_steps(&status.stdout);
    let want: Vec<(String, bool)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), i < through_ready))
        .collect();
    assert_eq!(listed, want);
}

async fn up_with(ctx: &TestContext, stack: &str) {
    let args = [
        "up",
        "--provider",
        "existing",
        "--stack",
        stack,
        "--until",
        "ready",
    ];
    homelab(ctx, &args).await.success();
}

/// The lab remembers the stack its `up` ran with (issue 15): after `up --stack argocd`,
/// commands without `--stack` read that stack (origin `lab`), a flag still wins, an `up` with
/// another stack switches the record, and `down` forgets it with the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_remembers_the_stack_its_up_ran_until_down() {
    let placeholder = TestContext::new();
    let t = target(&placeholder).await;
    let ctx = sandbox(&t.kubeconfig);
    let stack_of = |run: &Run| -> (String, String) {
        let v: Value = serde_json::from_str(&run.stdout).unwrap();
        (
            v["settings"]["stack"]["value"]
                .as_str()
                .unwrap()
                .to_string(),
            v["settings"]["stack"]["origin"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    };
    let show = |args: &'static [&'static str]| {
        let mut a = vec!["config", "show", "--output", "json"];
        a.extend_from_slice(args);
        a
    };

    // Before any `up`: the default, from the default.
    let before = homelab(&ctx, &show(&[])).await;
    before.success();
    assert_eq!(stack_of(&before), ("default".into(), "default".into()));

    up_with(&ctx, "argocd").await;
    let after = homelab(&ctx, &show(&[])).await;
    assert_eq!(stack_of(&after), ("argocd".into(), "lab".into()));
    let flag = homelab(&ctx, &show(&["--stack", "default"])).await;
    assert_eq!(stack_of(&flag), ("default".into(), "flag".into()));

    // A stack file is remembered by its absolute path: found from another directory too.
    let file = ctx.write(
        "my-stack.yaml",
        "extends: default\nname: mine\ndescription: the default, renamed\ncomponents: []\n",
    );
    up_with(&ctx, "my-stack.yaml").await;
    let switched = homelab(&ctx, &show(&[])).await;
    assert_eq!(
        stack_of(&switched),
        (ctx.filter(&file.display().to_string()), "lab".into())
    );

    homelab(&ctx, &["down"]).await.success();
    let gone = homelab(&ctx, &show(&[])).await;
    assert_eq!(stack_of(&gone), ("default".into(), "default".into()));
}
