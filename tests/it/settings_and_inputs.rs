//! Settings layering (defaults < file < env < flags) and bad inputs, each with its exact message.

use crate::support::common;

use common::TestContext;

fn show(ctx: &TestContext, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["config", "show", "--output", "json"];
    all.extend_from_slice(args);
    let run = ctx.homelab(&all);
    run.success();
    serde_json::from_str(&run.stdout).unwrap()
}

fn value(v: &serde_json::Value, key: &str) -> (String, String) {
    let e = &v["settings"][key];
    (
        e["value"].as_str().unwrap().to_string(),
        e["origin"].as_str().unwrap().to_string(),
    )
}

#[test]
fn each_layer_overrides_the_one_below() {
    let mut ctx = TestContext::new();
    let v = show(&ctx, &[]);
    assert_eq!(value(&v, "vm.cpus"), ("4".into(), "default".into()));
    assert_eq!(value(&v, "lab"), ("homelab".into(), "default".into()));
    assert_eq!(v["config_file"], serde_json::Value::Null);

    ctx.write(
        "homelab.yaml",
        "lab: from-file\nvm:\n  cpus: 6\n  memory: 12G\ndomain: file.example.test\n",
    );
    let v = show(&ctx, &[]);
    assert_eq!(value(&v, "vm.cpus"), ("6".into(), "file".into()));
    assert_eq!(value(&v, "vm.memory"), ("12G".into(), "file".into()));
    assert_eq!(value(&v, "lab"), ("from-file".into(), "file".into()));
    assert!(v["config_file"].as_str().unwrap().ends_with("homelab.yaml"));

    ctx.env.insert("HOMELAB_VM_CPUS".into(), "8".into());
    ctx.env.insert("HOMELAB_LAB".into(), "from-env".into());
    let v = show(&ctx, &[]);
    assert_eq!(value(&v, "vm.cpus"), ("8".into(), "env".into()));
    assert_eq!(value(&v, "lab"), ("from-env".into(), "env".into()));
    assert_eq!(value(&v, "vm.memory"), ("12G".into(), "file".into()));

    let v = show(&ctx, &["--cpus", "10", "--lab", "from-flag"]);
    assert_eq!(value(&v, "vm.cpus"), ("10".into(), "flag".into()));
    assert_eq!(value(&v, "lab"), ("from-flag".into(), "flag".into()));
    assert_eq!(
        value(&v, "domain"),
        ("file.example.test".into(), "file".into())
    );
}

#[test]
fn config_flag_names_the_file_and_secrets_are_redacted() {
    let ctx = TestContext::new();
    ctx.write(
        "conf/lab.yaml",
        "gitea:\n  admin_user: teacher\n  admin_password: hunter2-secret\n",
    );
    let run = ctx.homelab(&["config", "show", "--config", "conf/lab.yaml"]);
    run.success();
    assert!(
        run.stdout.contains("gitea.admin_user      teacher  [file]"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("gitea.admin_password  <redacted>  [file]"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("hunter2"));
    assert!(
        run.stdout
            .starts_with("# config file: [CWD]/conf/lab.yaml\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn missing_config_file_is_an_error() {
    let ctx = TestContext::new();
    let run = ctx.homelab(&["config", "show", "--config", "nope.yaml"]);
    run.failure(1);
    assert_eq!(
        run.stderr,
        "error: config file `nope.yaml` does not exist\nhint: pass an existing file to `--config`, or drop the flag to use `./homelab.yaml`\n"
    );
}

/// `homelab config show` with this `homelab.yaml` fails (exit 1); what it says.
fn config_show_fails(yaml: &str) -> String {
    let ctx = TestContext::new();
    ctx.write("homelab.yaml", yaml);
    let run = ctx.homelab(&["config", "show"]);
    run.failure(1);
    run.stderr
}

#[test]
fn broken_yaml_names_file_and_position() {
    assert_eq!(
        config_show_fails("vm:\n  cpus: 4\n memory: 8G\n"),
        "error: `homelab.yaml` is not valid YAML at line 3, column 2: did not find expected key\nhint: check the indentation and quoting around that position\n"
    );
}

#[test]
fn unknown_key_names_file_line_column_and_key() {
    assert_eq!(
        config_show_fails("vm:\n  cpu: 4\n"),
        "error: unknown key `vm.cpu` in `homelab.yaml` at line 2, column 3\nhint: the keys under `vm` are `cpus`, `memory`, `disk`, `nodes`, `image`\n"
    );
}

#[test]
fn unknown_top_level_key() {
    assert_eq!(
        config_show_fails("lab: a\nproviders: existing\n"),
        "error: unknown key `providers` in `homelab.yaml` at line 2, column 1\nhint: the keys at the top level are `lab`, `stack`, `domain`, `provider`, `context`, `vm`, `microk8s`, `gitea`, `sync`, `upstream`\n"
    );
}

#[test]
fn wrong_type_names_key_and_gives_an_example() {
    assert_eq!(
        config_show_fails("vm:\n  cpus: four\n"),
        "error: invalid value for `vm.cpus` in `homelab.yaml` at line 2, column 9: invalid type: string \"four\", expected u32\nhint: `vm.cpus` is the CPUs per VM (at least 2), e.g. `cpus: 4`\n"
    );
}

#[test]
fn bad_env_value_names_the_variable() {
    let mut ctx = TestContext::new();
    ctx.env.insert("HOMELAB_VM_MEMORY".into(), "lots".into());
    let run = ctx.homelab(&["config", "show"]);
    run.failure(1);
    assert_eq!(
        run.stderr,
        "error: invalid value for `vm.memory` in environment variable `HOMELAB_VM_MEMORY`: `lots` is not a size; write a number with K, M or G, e.g. `8G`\nhint: `vm.memory` is the memory per VM, with K/M/G suffix (at least 4G), e.g. `memory: 8G`\n"
    );
}

#[test]
fn reserved_gitea_admin_name_is_refused() {
    assert_eq!(
        config_show_fails("gitea:\n  admin_user: admin\n"),
        "error: invalid `gitea.admin_user` `admin`: Gitea reserves this name\nhint: choose another login, e.g. `lab-admin`\n"
    );
}

#[test]
fn bad_lab_name_is_refused() {
    let ctx = TestContext::new();
    let run = ctx.homelab(&["config", "show", "--lab", "My_Lab"]);
    run.failure(1);
    assert_eq!(
        run.stderr,
        "error: invalid `lab` `My_Lab`: a lab name must start with a lowercase letter and contain only lowercase letters, digits and hyphens (at most 40)\nhint: e.g. `--lab workshop-1`\n"
    );
}

/// `homelab plan --stack broken.yaml` with this stack file fails (exit 1); what it says.
fn plan_fails(stack: &str) -> String {
    let ctx = TestContext::new();
    ctx.write("broken.yaml", stack);
    let run = ctx.homelab(&["plan", "--stack", "broken.yaml"]);
    run.failure(1);
    run.stderr
}

const STACK_HEAD: &str =
    "name: broken\ncluster: {kubernetes: \"1.36\", channel: 1.36/stable}\ncomponents:\n";

#[test]
fn stack_with_unknown_need() {
    assert_eq!(
        plan_fails(&format!(
            "{STACK_HEAD}  - {{name: a, source: {{addon: dns}}}}\n  - {{name: b, needs: [gittea], source: {{addon: x}}}}\n"
        )),
        "error: component `b` needs `gittea`, which is not in stack `broken`\nhint: components in this stack: `a`, `b`\n"
    );
}

#[test]
fn stack_with_a_cycle() {
    assert_eq!(
        plan_fails(&format!(
            "{STACK_HEAD}  - {{name: a, needs: [c], source: {{addon: x}}}}\n  - {{name: b, needs: [a], source: {{addon: y}}}}\n  - {{name: c, needs: [b], source: {{addon: z}}}}\n"
        )),
        "error: stack `broken` has a dependency cycle: a → c → b → a\nhint: remove one of these `needs` entries so components can start in order\n"
    );
}

#[test]
fn stack_with_unknown_key() {
    assert_eq!(
        plan_fails(&format!(
            "{STACK_HEAD}  - name: a\n    source: {{addon: x}}\n    needz: [b]\n"
        )),
        "error: unknown key `components[0].needz` in stack `broken.yaml` at line 6, column 5\nhint: the keys accepted there are `name`, `description`, `namespace`, `version`, `source`, `images`, `needs`, `resources`, `hostname`, `repos`, `timeout`, `providers`, `adopts`, `webhook`\n"
    );
}

#[test]
fn stack_with_broken_yaml() {
    let ctx = TestContext::new();
    ctx.write(
        "broken.yaml",
        "name: broken\ncluster: {kubernetes: \"1.36\"\n",
    );
    let run = ctx.homelab(&["plan", "--stack", "broken.yaml"]);
    run.failure(1);
    assert_eq!(
        run.stderr,
        "error: stack `broken.yaml` is not valid YAML at line 3, column 1: did not find expected ',' or '}'\nhint: check the indentation and quoting around that position\n"
    );
}

#[test]
fn stack_with_latest_image() {
    assert_eq!(
        plan_fails(&format!(
            "{STACK_HEAD}  - name: a\n    source: {{templates: gitea}}\n    images: {{web: \"nginx:latest\"}}\n"
        )),
        "error: component `a` in stack `broken`: image `nginx:latest` (web) uses the `latest` tag\nhint: pin every image to a version tag or a digest, never `latest`\n"
    );
}

#[test]
fn stack_naming_missing_templates() {
    assert_eq!(
        plan_fails(&format!(
            "{STACK_HEAD}  - name: a\n    source: {{templates: no-such-dir}}\n"
        )),
        "error: component `a` in stack `broken`: templates `no-such-dir` do not exist\nhint: templates live in `templates/<dir>/` and are compiled into the binary\n"
    );
}

#[test]
fn unknown_stack_name() {
    let ctx = TestContext::new();
    let run = ctx.homelab(&["plan", "--stack", "nope"]);
    run.failure(1);
    assert_eq!(
        run.stderr,
        "error: unknown stack `nope`\nhint: built-in stacks are `argocd`, `default`; or pass the path of a stack file\n"
    );
}

#[test]
fn template_with_undefined_variable() {
    let t = homelab::model::templates::Templates::from_sources([(
        "demo/deployment.yaml",
        "kind: Deployment\nmetadata:\n  name: {{ component.name }}\n  namespace: {{ nope.namespace }}\n",
    )])
    .unwrap();
    let mut ctx = tera::Context::new();
    ctx.insert("component", &serde_json::json!({"name": "x"}));
    let err = t.render("demo/deployment.yaml", &ctx).unwrap_err();
    let err: homelab::edges::error::Error = err.into();
    assert_eq!(
        err.render(),
        "error: template `demo/deployment.yaml` line 4: variable `nope` is not defined; available variables: component\nhint: templates may use only the variables `render::context` provides; run `homelab render --placeholder-secrets` to see them used"
    );
}

// ---------------------------------------------------------------------------------------------
// `doctor`, `--version`, `completions`: the rest of the foundation's CLI surface.

fn doctor_json(ctx: &TestContext) -> (Option<i32>, serde_json::Value) {
    let run = ctx.homelab(&["doctor", "--output", "json"]);
    (run.code, serde_json::from_str(&run.stdout).unwrap())
}

#[test]
fn doctor_without_multipass_is_a_blocker_with_an_install_hint() {
    let ctx = TestContext::new();
    let run = ctx.homelab(&["doctor"]);
    run.failure(1);
    assert!(
        run.stdout
            .starts_with("FAIL  multipass       `multipass` was not found on PATH\n"),
        "{}",
        run.stdout
    );
    if cfg!(target_os = "linux") {
        assert!(
            run.stdout.contains("hint: install Multipass with `sudo snap install multipass`, then run `homelab doctor` again\n"),
            "{}",
            run.stdout
        );
    }
    assert!(
        run.stdout
            .ends_with("\nSomething blocks `homelab up`; fix the FAIL lines above.\n")
    );
    let (code, v) = doctor_json(&ctx);
    assert_eq!(code, Some(1));
    assert_eq!(v["ok"], false);
    assert_eq!(v["checks"][0]["name"], "multipass");
    assert_eq!(v["checks"][0]["status"], "fail");
}

/// A `multipass` that answers `version --format json` with the contract's JSON shape.
fn fake_multipass_version(ctx: &TestContext, json: &str) {
    ctx.fake_tool(
        "multipass",
        &format!(
            "#!/bin/sh\nif [ \"$*\" = \"version --format json\" ]; then printf '%s\\n' '{json}'; exit 0; fi\necho \"unexpected: $*\" >&2; exit 1\n"
        ),
    );
}

#[test]
fn doctor_reads_multipass_and_its_daemon_from_version_json() {
    let ctx = TestContext::new();
    // The contract's shape (multipass/version.json) with real version numbers.
    fake_multipass_version(&ctx, r#"{"multipass": "1.16.3", "multipassd": "1.16.3"}"#);
    let (_, v) = doctor_json(&ctx);
    assert_eq!(v["checks"][0]["status"], "ok", "{v:#}");
    assert_eq!(v["checks"][0]["detail"], "multipass 1.16.3, daemon 1.16.3");
    assert_eq!(v["checks"][1]["name"], "git");
    assert_eq!(v["checks"][1]["status"], "ok");

    // Only the client answers (multipass/version-client-only.json): the daemon is down.
    fake_multipass_version(&ctx, r#"{"multipass": "1.16.3"}"#);
    let (code, v) = doctor_json(&ctx);
    assert_eq!(code, Some(1));
    assert_eq!(v["checks"][0]["status"], "fail");
    assert_eq!(
        v["checks"][0]["detail"],
        "multipass 1.16.3 is installed, but its daemon does not answer"
    );
}

#[test]
fn doctor_skips_multipass_for_an_existing_cluster() {
    let ctx = TestContext::new();
    let (_, v) = doctor_json(&{
        let mut c = ctx;
        c.env.insert("HOMELAB_PROVIDER".into(), "existing".into());
        c
    });
    assert_eq!(v["checks"][0]["status"], "skip");
    assert_eq!(
        v["checks"][0]["detail"],
        "not needed with `--provider existing`"
    );
}

#[test]
fn version_help_and_completions() {
    let ctx = TestContext::new();
    let run = ctx.homelab(&["--version"]);
    run.success();
    assert_eq!(
        run.stdout,
        format!("homelab {}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = ctx.homelab(&["--help"]);
    help.success();
    for verb in [
        "up",
        "down",
        "status",
        "reset",
        "render",
        "plan",
        "doctor",
        "config",
        "prepare",
        "verify",
        "sync",
        "apps",
        "diff",
        "trust",
        "untrust",
        "ca",
        "credentials",
        "completions",
    ] {
        assert!(
            help.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{verb} "))),
            "`{verb}` missing from --help:\n{}",
            help.stdout
        );
    }
    let bash = ctx.homelab(&["completions", "bash"]);
    bash.success();
    assert!(
        bash.stdout.contains("_homelab()"),
        "{}",
        &bash.stdout[..200.min(bash.stdout.len())]
    );
    ctx.homelab(&["completions", "nope"]).failure(2);
}
