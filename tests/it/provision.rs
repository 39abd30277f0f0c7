//! Issue 3: `up` / `down` / `status` with the multipass provider, black-box, against the fake
//! `multipass` in `tests/fakes/multipass` (first on PATH). The fake keeps its instances in a temp
//! dir, answers as the contract files show, rejects what the real CLI rejects, and logs every
//! argv; tests read that log to prove what the tool did (and did not) run.

use crate::support::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{Run, TestContext, contracts_dir};
use serde_json::{Value, json};

const VM: &str = "homelab-t-1";

/// The steps `up --until ready` runs on Multipass, in pipeline order (also the terminal tests').
pub(crate) const UNTIL_READY: &[&str] = &[
    "secrets",
    "ca",
    "cloud-init",
    "vms",
    "provisioned",
    "join",
    "kubeconfig",
    "engine-image",
    "ready",
];

/// Also the terminal tests' lab (`terminal.rs`).
pub(crate) struct Lab {
    pub(crate) ctx: TestContext,
    fake_dir: PathBuf,
}

impl Lab {
    /// A sandbox with the fake `multipass` on PATH and short waits; lab `t`.
    pub(crate) fn new() -> Lab {
        let mut lab = Lab::without_multipass();
        common::multipass::install_fake(&mut lab.ctx, &lab.fake_dir);
        lab
    }

    fn without_multipass() -> Lab {
        let mut ctx = TestContext::new();
        let fake_dir = common::multipass::lab_without_multipass(&mut ctx);
        Lab { ctx, fake_dir }
    }

    /// Runs `homelab`; `up` stops once the cluster is ready (`--until ready`): these tests are
    /// about provisioning, and the lab half of `up` is tested against the fake API server.
    pub(crate) fn homelab(&self, args: &[&str]) -> Run {
        if args.first() == Some(&"up") {
            let mut with_until = args.to_vec();
            with_until.extend(["--until", "ready"]);
            return self.ctx.homelab(&with_until);
        }
        self.ctx.homelab(args)
    }

    fn fake_state(&self) -> Value {
        match std::fs::read_to_string(self.fake_dir.join("state.json")) {
            Ok(t) => serde_json::from_str(&t).unwrap(),
            Err(_) => json!({"instances": {}, "knobs": {}}),
        }
    }

    fn edit_fake(&self, f: impl FnOnce(&mut Value)) {
        let mut v = self.fake_state();
        f(&mut v);
        std::fs::create_dir_all(&self.fake_dir).unwrap();
        std::fs::write(
            self.fake_dir.join("state.json"),
            serde_json::to_string(&v).unwrap(),
        )
        .unwrap();
    }

    fn knob(&self, name: &str, value: Value) {
        self.edit_fake(|v| v["knobs"][name] = value);
    }

    /// `up` with fast polling plus `waits` (`HOMELAB_TEST_WAITS` keys) and one fake `knob`; it
    /// must exit 1.
    fn failing_up(&mut self, waits: &str, knob: &str, value: Value) -> common::Run {
        self.ctx.env.insert(
            "HOMELAB_TEST_WAITS".into(),
            format!("poll_ms=5,poll_max_ms=10,{waits}"),
        );
        self.knob(knob, value);
        let run = self.homelab(&["up"]);
        run.failure(1);
        run
    }

    fn instance(&self, name: &str) -> Value {
        self.fake_state()["instances"][name].clone()
    }

    /// Every argv the fake saw since the last [`Lab::clear_argv`], one string each.
    fn argv(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.fake_dir.join("argv.log")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: Vec<String> = serde_json::from_str(l).unwrap();
                self.ctx.filter(&v.join(" "))
            })
            .collect()
    }

    fn clear_argv(&self) {
        let _ = std::fs::remove_file(self.fake_dir.join("argv.log"));
    }

    /// Run homelab again with the argv log cleared, so `argv()` shows only this run's calls;
    /// the run must succeed.
    fn again(&self, args: &[&str]) -> Run {
        self.clear_argv();
        let run = self.homelab(args);
        run.success();
        run
    }

    fn state_dir(&self) -> PathBuf {
        self.ctx.state_dir("t")
    }

    fn kubeconfig(&self) -> Value {
        let text = std::fs::read_to_string(self.ctx.home.join(".kube/config")).unwrap();
        homelab::edges::yaml::from_str(&text).unwrap()
    }

    fn spawn(&self, args: &[&str]) -> Child {
        let mut args = args.to_vec();
        if args.first() == Some(&"up") {
            args.extend(["--until", "ready"]);
        }
        self.ctx
            .command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn wait_for_file(&self, name: &str) {
        let p = self.fake_dir.join(name);
        let start = Instant::now();
        while !p.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "`{name}` never appeared"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn release(&self, id: &str) {
        std::fs::write(self.fake_dir.join(format!("release-{id}")), "").unwrap();
    }
}

fn finish(lab: &Lab, child: Child) -> Run {
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        stdout: lab.ctx.filter(&String::from_utf8_lossy(&out.stdout)),
        stderr: lab.ctx.filter(&String::from_utf8_lossy(&out.stderr)),
    }
}

/// Every file under `dirs` with its content and modification time.
fn snapshot(dirs: &[PathBuf]) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    fn walk(p: &Path, out: &mut BTreeMap<PathBuf, (Vec<u8>, SystemTime)>) {
        let Ok(entries) = std::fs::read_dir(p) else {
            return;
        };
        for e in entries {
            let e = e.unwrap();
            let path = e.path();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                walk(&path, out);
            } else {
                out.insert(
                    path.clone(),
                    (std::fs::read(&path).unwrap(), meta.modified().unwrap()),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    for d in dirs {
        walk(d, &mut out);
    }
    out
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

const LAUNCH: &str = "launch 24.04 --name homelab-t-1 --cpus 4 --memory 8G --disk 40G --cloud-init [HOME]/.local/share/homelab/t/cloud-init.yaml";
const INFO: &str = "info --format json";
const MARKER: &str = "exec homelab-t-1 -- test -f /var/lib/homelab/provisioned";
const FAILED: &str = "exec homelab-t-1 -- cat /var/lib/homelab/failed";
const CLOUD_INIT: &str = "exec homelab-t-1 -- cloud-init status --format json";
/// `up`'s preflight asks whether the daemon answers (issue 12).
const VERSION: &str = "version --format json";
const CONFIG: &str = "exec homelab-t-1 -- sudo microk8s config";
const NODES: &str = "exec homelab-t-1 -- sudo microk8s kubectl get nodes -o json";

// ------------------------------------------------------------------------------------------
// The fake itself: it must answer exactly as the contracts show, and reject what Multipass
// rejects. A fake that accepts what the real CLI refuses is a bug.

fn run_fake(lab: &Lab, args: &[&str]) -> (Option<i32>, String, String) {
    let mut c = Command::new(lab.ctx.bin.join("multipass"));
    c.env_clear()
        .env(
            "PATH",
            format!("{}:{}", lab.ctx.bin.display(), lab.ctx.sys_bin.display()),
        )
        .env("FAKE_MULTIPASS_DIR", &lab.fake_dir)
        .env("FAKE_MULTIPASS_CONTRACTS", contracts_dir())
        .args(args);
    let out = c.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn contract(rel: &str) -> String {
    std::fs::read_to_string(contracts_dir().join("multipass").join(rel)).unwrap()
}

/// The instances of a contract `info` file, as the fake's state holds them. The text is spliced
/// in as it is, because the 1.17 shape's key order matters and `serde_json` would sort it.
fn seed_raw(lab: &Lab, file: &str, format: &str) {
    let text = contract(file);
    let start = text.find("\"info\": ").unwrap() + "\"info\": ".len();
    let end = text.trim_end().rfind('}').unwrap();
    let state = format!(
        "{{\"format\": \"{format}\", \"instances\": {}}}",
        &text[start..end]
    );
    std::fs::create_dir_all(&lab.fake_dir).unwrap();
    std::fs::write(lab.fake_dir.join("state.json"), state).unwrap();
}

/// Like [`seed_raw`], through `serde_json` (keys sorted, as in 1.16).
fn seed_from_info(lab: &Lab, file: &str, format: &str) {
    let info: Value = serde_json::from_str(&contract(file)).unwrap();
    lab.edit_fake(|v| {
        v["format"] = json!(format);
        let mut instances = serde_json::Map::new();
        for (name, i) in info["info"].as_object().unwrap() {
            let mut i = i.clone();
            if let Some(zone) = i.as_object_mut().unwrap().remove("zone") {
                i["zone"] = zone;
            }
            instances.insert(name.clone(), i);
        }
        v["instances"] = Value::Object(instances);
    });
}

/// The fake `multipass` prints for `args` exactly the contract file `name`.
#[track_caller]
fn assert_prints_contract(lab: &Lab, args: &[&str], name: &str) {
    assert_eq!(run_fake(lab, args).1, contract(name));
}

/// The run's stderr ends with `error` and then the hint to export the lab's logs.
#[track_caller]
fn assert_error_then_export_hint(run: &Run, error: &str) {
    assert!(
        run.stderr
            .ends_with(&format!("{}{}", error, common::export_hint("t"))),
        "{}",
        run.stderr
    );
}

/// The run's summary says lab `t` stopped at `step`.
#[track_caller]
fn assert_stopped_at(run: &Run, step: &str) {
    assert!(
        run.stdout
            .starts_with(&format!("Lab `t` stopped at step `{step}` after ")),
        "{}",
        run.stdout
    );
}

#[test]
fn fake_multipass_prints_exactly_the_contract_json() {
    let lab = Lab::new();
    assert_prints_contract(&lab, &["info", "--format", "json"], "info-empty.json");
    assert_prints_contract(&lab, &["list", "--format", "json"], "list-empty.json");

    seed_from_info(&lab, "info.json", "1.16");
    assert_eq!(
        run_fake(&lab, &["info", "foo", "--format", "json"]),
        (Some(0), contract("info.json"), String::new())
    );
    seed_from_info(&lab, "info-multiple.json", "1.16");
    assert_prints_contract(&lab, &["info", "--format", "json"], "info-multiple.json");
    assert_prints_contract(&lab, &["list", "--format", "json"], "list-multiple.json");

    seed_raw(&lab, "dev-1.17/multiple_instances_info_reply.json", "1.17");
    assert_prints_contract(
        &lab,
        &["info", "--format", "json"],
        "dev-1.17/multiple_instances_info_reply.json",
    );
    assert_prints_contract(
        &lab,
        &["list", "--format", "json"],
        "dev-1.17/multiple_instances_list_reply.json",
    );

    // list.json's foo has another second address than info.json's foo.
    seed_from_info(&lab, "info.json", "1.16");
    lab.edit_fake(|v| v["instances"]["foo"]["ipv4"][1] = json!("200.3.123.30"));
    assert_prints_contract(&lab, &["list", "--format", "json"], "list.json");

    lab.edit_fake(|v| {
        v["version"] = json!({"multipass": "Client version", "multipassd": "Daemon version"});
        v["images"] =
            serde_json::from_str::<Value>(&contract("find.json")).unwrap()["images"].clone();
    });
    assert_prints_contract(&lab, &["version", "--format", "json"], "version.json");
    assert_prints_contract(&lab, &["find", "--format", "json"], "find.json");
    lab.knob("daemon_down", json!(true));
    assert_prints_contract(
        &lab,
        &["version", "--format", "json"],
        "version-client-only.json",
    );
}

#[test]
fn fake_multipass_rejects_what_multipass_rejects() {
    let lab = Lab::new();
    let ci = lab.ctx.write("ci.yaml", "#cloud-config\n");
    let ci = ci.to_str().unwrap();
    let ok = run_fake(
        &lab,
        &[
            "launch",
            "24.04",
            "--name",
            "a",
            "--cpus",
            "2",
            "--memory",
            "4G",
            "--disk",
            "20G",
            "--cloud-init",
            ci,
        ],
    );
    assert_eq!(ok, (Some(0), "Launched: a\n".into(), String::new()));

    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["launch", "--name", "a"],
            2,
            "launch failed: instance \"a\" already exists",
        ),
        (&["launch", "--cpu", "2"], 1, "Unknown option 'cpu'."),
        (
            &["launch", "--name", "b", "--memory", "100M"],
            2,
            "launch failed: Invalid memory size value supplied: 100M.",
        ),
        (
            &["launch", "--name", "b", "--disk", "lots"],
            2,
            "launch failed: Invalid disk size value supplied: lots.",
        ),
        // canonical/multipass v1.16.3 src/utils/memory_size.cpp: no T, no decimals without a
        // unit, `iB` only after K, M or G.
        (
            &["launch", "--name", "b", "--disk", "1T"],
            2,
            "launch failed: Invalid disk size value supplied: 1T.",
        ),
        (
            &["launch", "--name", "b", "--memory", "1536.5"],
            2,
            "launch failed: Invalid memory size value supplied: 1536.5.",
        ),
        (
            &["launch", "--name", "b", "--disk", "40iB"],
            2,
            "launch failed: Invalid disk size value supplied: 40iB.",
        ),
        (
            &["launch", "--name", "-b-"],
            2,
            "launch failed: Invalid instance name supplied: -b-",
        ),
        (
            &["launch", "--name", "b_1"],
            2,
            "launch failed: Invalid instance name supplied: b_1",
        ),
        (
            &["launch", "--name", "b", "--cpus", "0"],
            1,
            "error: Invalid CPU count '0', need a positive integer value.",
        ),
        (
            &["launch", "42.42", "--name", "b"],
            2,
            "launch failed: Unable to find an image matching \"42.42\"",
        ),
        (
            &["launch", "--name", "b", "--cloud-init", "/nonexistent"],
            1,
            "error loading cloud-init config: bad file: /nonexistent",
        ),
        (
            &["info", "nope", "--format", "json"],
            2,
            "info failed: instance \"nope\" does not exist",
        ),
        (
            &["info", "--format", "xml"],
            1,
            "Invalid format type given.",
        ),
        (
            &["start", "nope"],
            2,
            "start failed: Instance 'nope' does not exist.",
        ),
        (
            &["delete", "nope"],
            2,
            "delete failed: instance \"nope\" does not exist",
        ),
        (
            &["recover", "nope"],
            2,
            "recover failed: instance \"nope\" does not exist",
        ),
        (&["exec", "a", "ls", "-la"], 1, "Unknown option 'la'."),
        (
            &["exec", "nope", "--", "true"],
            2,
            "exec failed: instance \"nope\" does not exist",
        ),
        (&["start"], 1, "Name argument or --all is required"),
        (
            &["frobnicate"],
            1,
            "Error: Unknown command or alias 'frobnicate' (try \"multipass help\")",
        ),
    ];
    for (args, code, stderr) in cases {
        let (c, _, e) = run_fake(&lab, args);
        assert_eq!(
            (c, e.trim_end()),
            (Some(*code), *stderr),
            "multipass {}",
            args.join(" ")
        );
    }

    // What the same parser accepts.
    for (i, (memory, disk)) in [
        ("4gib", "20GB"),
        ("1.5G", " 40g "),
        ("4294967296", "21474836480B"),
    ]
    .iter()
    .enumerate()
    {
        let name = format!("ok{i}");
        let (c, _, e) = run_fake(
            &lab,
            &[
                "launch", "--name", &name, "--memory", memory, "--disk", disk,
            ],
        );
        assert_eq!(c, Some(0), "--memory {memory} --disk {disk}: {e}");
        assert_eq!(run_fake(&lab, &["delete", "--purge", &name]).0, Some(0));
    }

    // Deleted but not purged: the name is still taken; starting it is refused.
    assert_eq!(run_fake(&lab, &["delete", "a"]).0, Some(0));
    assert_eq!(lab.instance("a")["state"], "Deleted");
    let (c, _, e) = run_fake(&lab, &["launch", "--name", "a"]);
    assert_eq!(
        (c, e.trim_end()),
        (Some(2), "launch failed: instance \"a\" already exists")
    );
    let (c, _, e) = run_fake(&lab, &["start", "a"]);
    assert_eq!(
        (c, e.trim_end()),
        (Some(2), "start failed: Instance 'a' is deleted.")
    );
    assert_eq!(run_fake(&lab, &["recover", "a"]).0, Some(0));
    assert_eq!(lab.instance("a")["state"], "Stopped");
    assert_eq!(run_fake(&lab, &["delete", "--purge", "a"]).0, Some(0));
    assert_eq!(lab.fake_state()["instances"], json!({}));

    // exec passes the remote exit code through; the marker needs a cloud-init that writes it.
    run_fake(&lab, &["launch", "--name", "c", "--cloud-init", ci]);
    let (c, _, _) = run_fake(
        &lab,
        &[
            "exec",
            "c",
            "--",
            "test",
            "-f",
            "/var/lib/homelab/provisioned",
        ],
    );
    assert_eq!(c, Some(1), "cloud-init without the marker never writes it");

    lab.knob("daemon_down", json!(true));
    let (c, _, e) = run_fake(&lab, &["list", "--format", "json"]);
    assert_eq!(
        (c, e.trim_end()),
        (
            Some(3),
            "list failed: cannot connect to the multipass socket"
        )
    );
    let (c, _, _) = run_fake(&lab, &["list", "--frmat", "json"]);
    assert_eq!(
        c,
        Some(1),
        "command-line errors come before the daemon is asked"
    );
}

// ------------------------------------------------------------------------------------------
// up

#[test]
fn fresh_up_launches_waits_and_writes_the_kube_context() {
    let lab = Lab::new();
    // Someone else's cluster in the kubeconfig must survive.
    lab.ctx.write(
        "../home/.kube/config",
        "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster: {server: 'https://prod:6443'}\ncontexts:\n- name: prod\n  context: {cluster: prod, user: me}\nusers:\n- name: me\n  user: {token: t}\ncurrent-context: prod\n",
    );
    let run = lab.homelab(&["up"]);
    run.success();
    assert_eq!(
        lab.argv(),
        [VERSION, INFO, LAUNCH, INFO, MARKER, CONFIG, NODES]
    );

    let launched = lab.instance(VM);
    let cloud_init = launched["_cloud_init"].as_str().unwrap();
    assert!(cloud_init.starts_with("#cloud-config"), "{cloud_init}");
    assert!(cloud_init.contains("/var/lib/homelab/provisioned"));
    assert!(
        cloud_init.contains("/var/lib/homelab/provision.sh, \"1.36/stable\"]"),
        "microk8s from the pinned channel: {cloud_init}"
    );
    let ca = std::fs::read_to_string(lab.state_dir().join("ca/ca.crt")).unwrap();
    assert!(
        cloud_init.contains(ca.lines().nth(1).unwrap()),
        "the lab CA is in cloud-init"
    );

    let kc = lab.kubeconfig();
    assert_eq!(
        kc["current-context"], "homelab-t",
        "a new lab becomes current, like kind"
    );
    let names: Vec<&str> = kc["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["prod", "homelab-t"]);
    assert_eq!(
        kc["clusters"][1]["cluster"]["server"],
        "https://10.77.0.2:16443"
    );
    assert_eq!(kc["users"][0]["user"]["token"], "t");
    let stored: Value = homelab::edges::yaml::from_str(
        &std::fs::read_to_string(lab.state_dir().join("kubeconfig")).unwrap(),
    )
    .unwrap();
    assert_eq!(stored["contexts"][0]["name"], "homelab-t");
    #[cfg(unix)]
    {
        assert_eq!(mode(&lab.state_dir().join("kubeconfig")), 0o600);
        assert_eq!(mode(&lab.state_dir()), 0o700);
    }

    let steps: Vec<String> = run
        .stdout
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let mut w = l.split_whitespace();
            format!("{} {}", w.next().unwrap(), w.next().unwrap())
        })
        .collect();
    assert_eq!(
        steps,
        [
            "✓ secrets",
            "✓ ca",
            "✓ cloud-init",
            "✓ vms",
            "= provisioned",
            "= join",
            "✓ kubeconfig",
            "= engine-image",
            "= ready"
        ]
    );
    assert!(run.stdout.starts_with("Lab `t` is up ("), "{}", run.stdout);
    assert!(
        run.stdout
            .ends_with("\nkube context `homelab-t`: `kubectl --context homelab-t get nodes`\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("  ✓ vms         "), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("launched homelab-t-1; running: homelab-t-1 (10.77.0.2)\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("context `homelab-t` (https://10.77.0.2:16443) in `[HOME]/.kube/config`\n"),
        "{}",
        run.stdout
    );
    // Progress, one line per step start and end, on stderr.
    assert!(
        run.stderr
            .contains("vms              launch, start or reuse the lab's VMs\n"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("= ready            1 of 1 node Ready (v1.36.0) ("),
        "{}",
        run.stderr
    );
}

#[test]
fn second_up_on_a_healthy_lab_only_looks() {
    let lab = Lab::new();
    lab.homelab(&["up"]).success();
    let dirs = [lab.state_dir(), lab.ctx.home.join(".kube")];
    let before = snapshot(&dirs);
    let run = lab.again(&["up"]);
    // The preflight's `version`, one `info` and three read-only looks inside the VM: no
    // launch, start, join or write.
    assert_eq!(lab.argv(), [VERSION, INFO, MARKER, CONFIG, NODES]);
    // The command lock names each run that holds it (issue 12); nothing else is written.
    let lock = lab.state_dir().join("command.lock");
    let without_lock = |mut files: BTreeMap<PathBuf, (Vec<u8>, SystemTime)>| {
        assert!(files.remove(&lock).is_some(), "`up` holds the lab's lock");
        files
    };
    assert_eq!(
        without_lock(snapshot(&dirs)),
        without_lock(before),
        "no file written besides the lock, not even a timestamp"
    );
    assert!(
        run.stdout
            .starts_with("Lab `t` was already up; nothing changed ("),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("✓"), "{}", run.stdout);
}

#[test]
fn a_stopped_vm_is_started_not_relaunched() {
    let lab = Lab::new();
    lab.homelab(&["up"]).success();
    lab.edit_fake(|v| v["instances"][VM]["state"] = json!("Stopped"));
    let run = lab.again(&["up"]);
    assert_eq!(
        lab.argv(),
        [
            VERSION,
            INFO,
            "start homelab-t-1",
            INFO,
            MARKER,
            CONFIG,
            NODES
        ]
    );
    assert!(
        run.stdout
            .contains("started homelab-t-1; running: homelab-t-1 (10.77.0.2)"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_deleted_vm_is_recovered_and_recreate_rebuilds_it() {
    let lab = Lab::new();
    lab.homelab(&["up"]).success();
    lab.edit_fake(|v| v["instances"][VM]["state"] = json!("Deleted"));
    let run = lab.again(&["up"]);
    assert_eq!(
        lab.argv(),
        [
            VERSION,
            INFO,
            "recover homelab-t-1",
            "start homelab-t-1",
            INFO,
            MARKER,
            CONFIG,
            NODES
        ]
    );
    assert!(
        run.stderr.contains("warning: VM `homelab-t-1` was deleted but not purged; recovering it (`homelab up --recreate` builds a fresh one instead)\n"),
        "{}",
        run.stderr
    );

    let run = lab.again(&["up", "--recreate"]);
    assert_eq!(
        lab.argv(),
        [
            VERSION,
            INFO,
            "delete --purge homelab-t-1",
            LAUNCH,
            INFO,
            MARKER,
            CONFIG,
            NODES
        ]
    );
    assert!(
        run.stderr.contains(
            "warning: recreating VM `homelab-t-1` (`--recreate`): everything inside it is lost\n"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn a_launch_that_multipass_gives_up_on_is_waited_for() {
    let lab = Lab::new();
    lab.knob("launch_times_out", json!(1));
    lab.knob("provision_checks", json!(3));
    let run = lab.homelab(&["up"]);
    run.success();
    assert_eq!(
        lab.argv(),
        [
            VERSION, INFO, LAUNCH, INFO, INFO, MARKER, FAILED, CLOUD_INIT, MARKER, FAILED,
            CLOUD_INIT, MARKER, FAILED, CLOUD_INIT, MARKER, CONFIG, NODES
        ],
        "launch exits 2, `info` shows the VM alive, the marker appears on the 4th look; each miss also looks for the failure marker and asks cloud-init, which is still running"
    );
    assert!(
        run.stderr.contains("vms              homelab-t-1: Multipass stopped waiting (`launch failed: The following errors occurred: timed out waiting for initialization to complete`); the VM goes on initialising\n"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("provisioned      waiting for cloud-init on homelab-t-1 ("),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("  ✓ provisioned  "), "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "launched homelab-t-1 (Multipass stopped waiting; homelab waits for cloud-init itself)"
        ),
        "{}",
        run.stdout
    );
}

#[test]
fn cloud_init_that_never_finishes_times_out_with_hints() {
    let mut lab = Lab::new();
    let run = lab.failing_up("provisioned_ms=100", "never_provisioned", json!(true));
    assert_error_then_export_hint(
        &run,
        "error: cloud-init did not finish on VM `homelab-t-1` within 0.1s\nhint: see what cloud-init is doing: `multipass exec homelab-t-1 -- cloud-init status --long`\nhint: and its log: `multipass exec homelab-t-1 -- sudo tail -n 50 /var/log/cloud-init-output.log`\nhint: run `homelab up` again to keep waiting\n",
    );
    assert_stopped_at(&run, "provisioned");
    assert!(
        run.stdout.contains("  - ready         not run\n"),
        "{}",
        run.stdout
    );
}

/// A provisioning script that failed is reported at once, with the step it names, instead of
/// after the whole cloud-init wait.
#[test]
fn failed_provisioning_is_reported_at_once_with_the_failing_step() {
    let mut lab = Lab::new();
    // A wait far longer than the test: only the failure marker can end it.
    let run = lab.failing_up(
        "provisioned_ms=600000",
        "provision_fails",
        json!("snap install microk8s --channel=1.36/stable"),
    );
    assert_error_then_export_hint(
        &run,
        "error: provisioning VM `homelab-t-1` failed: snap install microk8s --channel=1.36/stable\nhint: its log says why: `multipass exec homelab-t-1 -- sudo tail -n 50 /var/log/cloud-init-output.log`\nhint: cloud-init runs once per VM: after fixing the cause (often the network during `snap install`), `homelab up --recreate` builds the lab's VMs again\n",
    );
    assert_stopped_at(&run, "provisioned");
    assert_eq!(lab.argv().last().map(String::as_str), Some(FAILED));
}

/// Issue 12: cloud-init failing before the provisioning script runs stops `up` as soon as
/// cloud-init says it is done, with cloud-init's own error text, not after the whole wait.
#[test]
fn a_cloud_init_failure_stops_up_at_once_with_its_error() {
    let mut lab = Lab::new();
    // A wait far longer than the test: only cloud-init's status can end it.
    let run = lab.failing_up(
        "provisioned_ms=600000",
        "cloud_init_errors",
        json!(["('write_files', PermissionError(13, 'Permission denied'))"]),
    );
    assert_error_then_export_hint(
        &run,
        "error: cloud-init on VM `homelab-t-1` ended (error - done) before homelab's provisioning finished: ('write_files', PermissionError(13, 'Permission denied'))\nhint: cloud-init's own account: `multipass exec homelab-t-1 -- cloud-init status --long`, and its log: `multipass exec homelab-t-1 -- sudo tail -n 50 /var/log/cloud-init.log`\nhint: cloud-init runs once per VM: after fixing the cause, `homelab up --recreate` builds the lab's VMs again\n",
    );
    assert_stopped_at(&run, "provisioned");
    // One look, cloud-init's answer, and one more look for a marker written meanwhile.
    assert_eq!(
        lab.argv()[4..],
        [MARKER, FAILED, CLOUD_INIT, MARKER, FAILED]
    );
}

/// cloud-init that reports only recoverable errors (degraded) while the script runs is not a
/// failure: `up` goes on waiting and finishes.
#[test]
fn a_degraded_cloud_init_that_provisions_is_fine() {
    let lab = Lab::new();
    lab.knob("launch_times_out", json!(1));
    lab.knob("provision_checks", json!(2));
    lab.knob(
        "cloud_init_recoverable",
        json!({"DEPRECATED": ["Key 'ssh_authorized_keys' is deprecated"]}),
    );
    let run = lab.homelab(&["up"]);
    run.success();
    assert!(
        run.stderr.contains(
            "; it is degraded running: DEPRECATED: Key 'ssh_authorized_keys' is deprecated"
        ),
        "{}",
        run.stderr
    );
}

/// The fake answers `cloud-init status` as cloud-init's `cloudinit/cmd/status.py` does:
/// sorted JSON, `status`/`extended_status`, exit 0 running or done, 1 with errors, 2 degraded.
#[test]
fn fake_cloud_init_status_answers_as_cloud_init_does() {
    let lab = Lab::new();
    lab.knob("provision_checks", json!(1));
    let ci = lab.ctx.write(
        "ci.yaml",
        "#cloud-config\nruncmd: [[touch, /var/lib/homelab/provisioned]]\n",
    );
    let launch = |name: &str| {
        run_fake(
            &lab,
            &[
                "launch",
                "--name",
                name,
                "--cloud-init",
                ci.to_str().unwrap(),
            ],
        )
    };
    let status = |name: &str| {
        let (code, out, _) = run_fake(
            &lab,
            &[
                "exec",
                name,
                "--",
                "cloud-init",
                "status",
                "--format",
                "json",
            ],
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        (
            code,
            v["status"].as_str().unwrap().to_string(),
            v["extended_status"].as_str().unwrap().to_string(),
            v,
        )
    };
    assert_eq!(launch("a").0, Some(0));
    let (code, st, ext, v) = status("a");
    assert_eq!(
        (code, st.as_str(), ext.as_str()),
        (Some(0), "running", "running")
    );
    assert_eq!(v["stage"], "modules-final");
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "printed with sort_keys");
    run_fake(
        &lab,
        &[
            "exec",
            "a",
            "--",
            "test",
            "-f",
            "/var/lib/homelab/provisioned",
        ],
    );
    let (code, st, ..) = status("a");
    assert_eq!((code, st.as_str()), (Some(0), "done"));

    lab.knob("cloud_init_recoverable", json!({"WARNING": ["w"]}));
    let (code, st, ext, _) = status("a");
    assert_eq!(
        (code, st.as_str(), ext.as_str()),
        (Some(2), "done", "degraded done")
    );

    lab.knob("cloud_init_errors", json!(["('write_files', OSError())"]));
    assert_eq!(launch("b").0, Some(0));
    let (code, st, ext, v) = status("b");
    assert_eq!(
        (code, st.as_str(), ext.as_str()),
        (Some(1), "error", "error - done")
    );
    assert_eq!(v["errors"], json!(["('write_files', OSError())"]));
    assert_eq!(v["init"]["errors"], v["errors"]);
    let (code, out, _) = run_fake(&lab, &["exec", "b", "--", "cloud-init", "status"]);
    assert_eq!((code, out.as_str()), (Some(1), "status: error\n"));
    let (code, ..) = run_fake(
        &lab,
        &["exec", "b", "--", "cloud-init", "status", "--bogus"],
    );
    assert_eq!(code, Some(2), "argparse refuses unknown options");
}

#[test]
fn readiness_is_bounded_and_says_what_it_saw() {
    let mut lab = Lab::new();
    let run = lab.failing_up("ready_ms=100", "never_ready", json!(true));
    assert_error_then_export_hint(
        &run,
        "error: the cluster was not ready within 0.1s: 0 of 1 node Ready; homelab-t-1: Ready=False (KubeletNotReady: container runtime network not ready: cni plugin not initialized)\nhint: look deeper with `multipass exec homelab-t-1 -- sudo microk8s inspect`\nhint: run `homelab up` again to keep waiting\n",
    );
    assert!(!lab.argv().iter().any(|a| a.contains("--wait-ready")));
    let up: Value =
        serde_json::from_str(&std::fs::read_to_string(lab.state_dir().join("up.json")).unwrap())
            .unwrap();
    assert!(up["steps"].get("ready").is_none());
    assert!(up["steps"].get("kubeconfig").is_some());

    // Once the nodes come up, the next run finishes the job.
    lab.ctx.env.remove("HOMELAB_TEST_WAITS");
    lab.ctx.env.insert(
        "HOMELAB_TEST_WAITS".into(),
        "poll_ms=5,poll_max_ms=10".into(),
    );
    lab.knob("never_ready", json!(false));
    lab.knob("api_down_checks", json!(2));
    lab.again(&["up"]);
    assert_eq!(
        lab.argv(),
        [VERSION, INFO, MARKER, CONFIG, NODES, NODES, NODES]
    );
}

/// Issue 12: `up` runs `doctor`'s blocking checks first; with the daemon down it says so and
/// writes nothing (it used to generate secrets and the CA first).
#[test]
fn daemon_unreachable_stops_up_before_it_writes_anything() {
    let lab = Lab::new();
    lab.knob("daemon_down", json!(true));
    let run = lab.homelab(&["up"]);
    run.failure(1);
    assert_eq!(
        run.stderr,
        "error: this computer is not ready for lab `t`: multipass 1.16.3 is installed, but its daemon does not answer\nhint: start it with `sudo snap start multipass` (see `snap services multipass`), then run the command again\nhint: or run the lab in a cluster you already have: `homelab up --provider existing`\n"
    );
    assert_eq!(
        lab.argv(),
        [VERSION],
        "nothing but the preflight's question"
    );
    assert!(!lab.state_dir().exists(), "no lab directory, secrets or CA");

    // A built lab whose daemon went down: `up` stops the same way; `status` says it too.
    lab.knob("daemon_down", json!(false));
    lab.homelab(&["up"]).success();
    lab.knob("daemon_down", json!(true));
    let run = lab.homelab(&["up"]);
    run.failure(1);
    assert!(
        run.stderr.starts_with("error: this computer is not ready for lab `t`: multipass 1.16.3 is installed, but its daemon does not answer\n"),
        "{}",
        run.stderr
    );
    let status = lab.homelab(&["status"]);
    status.failure(1);
    assert!(
        status
            .stderr
            .starts_with("error: the Multipass daemon is not reachable"),
        "{}",
        status.stderr
    );
}

/// Issue 12: without Multipass, `up` names it with the install hint and creates nothing: no lab
/// directory, no secrets, no CA, no download.
#[test]
fn multipass_missing_stops_up_before_it_writes_anything() {
    let lab = Lab::without_multipass();
    let run = lab.homelab(&["up"]);
    run.failure(1);
    assert_eq!(
        run.stderr,
        "error: this computer is not ready for lab `t`: `multipass` was not found on PATH\nhint: install Multipass with `sudo snap install multipass`, then run `homelab doctor` again\nhint: or run the lab in a cluster you already have: `homelab up --provider existing`\n"
    );
    assert!(!lab.state_dir().exists(), "no lab directory, secrets or CA");
    assert!(!lab.ctx.cache_dir().exists(), "no download");
    // `down` of a lab that never had VMs needs no Multipass, and leaves no directory behind.
    lab.homelab(&["down"]).success();
    assert!(!lab.state_dir().exists());
}

/// Issue 12: too little memory or disk for the lab's VMs is refused before anything is
/// written; VMs that exist already count for memory only.
#[test]
fn too_little_memory_or_disk_stops_up_before_it_writes_anything() {
    let mut lab = Lab::new();
    lab.ctx.env.insert(
        "HOMELAB_TEST_HOST".into(),
        "memory=6G,disk_free=30G,virtualisation=yes".into(),
    );
    let run = lab.homelab(&["up"]);
    run.failure(1);
    assert_eq!(
        run.stderr,
        "error: this computer is not ready for lab `t`: 30.0G of disk free; the lab's new VMs may use 40G; 6.0G of memory in total; the lab's VMs ask for 8G\nhint: free some disk space, or lower `vm.disk` (at least 20G) or `vm.nodes`\nhint: lower `vm.memory` (at least 4G) or `vm.nodes`, or use `--provider existing`\n"
    );
    assert!(lab.argv().iter().all(|a| a == VERSION), "{:?}", lab.argv());
    assert!(!lab.state_dir().exists(), "no lab directory, secrets or CA");

    // A built lab needs no new disk: the same free space is enough to run `up` again.
    lab.ctx
        .env
        .insert("HOMELAB_TEST_HOST".into(), common::ROOMY_HOST.into());
    lab.homelab(&["up"]).success();
    lab.ctx.env.insert(
        "HOMELAB_TEST_HOST".into(),
        "memory=16G,disk_free=30G,virtualisation=yes".into(),
    );
    lab.homelab(&["up"]).success();
    // Growing it to three nodes asks for two more disks and 24G of memory.
    let run = lab.homelab(&["up", "--nodes", "3"]);
    run.failure(1);
    assert!(
        run.stderr.starts_with("error: this computer is not ready for lab `t`: 30.0G of disk free; the lab's new VMs may use 80G; 16.0G of memory in total; the lab's VMs ask for 24G\n"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_vm_that_vanishes_midway_does_not_exist() {
    let lab = Lab::new();
    lab.homelab(&["up"]).success();
    lab.knob(
        "vanish",
        json!([{"argv": ["exec", VM, "--", "test"], "instance": VM}]),
    );
    let run = lab.homelab(&["up"]);
    run.failure(1);
    assert_error_then_export_hint(
        &run,
        "error: VM `homelab-t-1` does not exist\nhint: it was deleted outside homelab; run `homelab up` again to create it (`multipass list` shows what exists)\n",
    );
    lab.again(&["up"]);
    assert!(lab.argv().contains(&LAUNCH.to_string()));
}

#[test]
fn an_ip_change_fixes_the_kubeconfig_and_says_hostnames_moved() {
    let lab = Lab::new();
    lab.homelab(&["up"]).success();
    // The user switched to another context meanwhile: a re-run must not switch it back.
    let path = lab.ctx.home.join(".kube/config");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("current-context: homelab-t", "current-context: other"),
    )
    .unwrap();
    lab.edit_fake(|v| v["instances"][VM]["state"] = json!("Stopped"));
    lab.knob("new_ip_on_start", json!(true));

    let run = lab.homelab(&["up"]);
    run.success();
    assert!(
        run.stderr.contains("warning: VM `homelab-t-1` changed its address from 10.77.0.2 to 10.77.0.3 since the last run; the kubeconfig follows it, and the lab's hostnames moved with it: `*.10.77.0.2.sslip.io` is now `*.10.77.0.3.sslip.io`\n"),
        "{}",
        run.stderr
    );
    let kc = lab.kubeconfig();
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"],
        "https://10.77.0.3:16443"
    );
    assert_eq!(kc["current-context"], "other");
    let stored = std::fs::read_to_string(lab.state_dir().join("kubeconfig")).unwrap();
    assert!(
        stored.contains("server: https://10.77.0.3:16443"),
        "{stored}"
    );
}

#[test]
fn three_nodes_launch_together_and_join_one_by_one() {
    let lab = Lab::new();
    let run = lab.homelab(&["up", "--nodes", "3"]);
    run.success();
    let argv = lab.argv();
    let launches: Vec<&String> = argv.iter().filter(|a| a.starts_with("launch")).collect();
    assert_eq!(launches.len(), 3);
    for i in 1..=3 {
        assert!(
            argv.iter()
                .any(|a| a.contains(&format!("--name homelab-t-{i} ")))
        );
    }
    // Join sequence: a token from node 1, then the join on that node, per joiner.
    let joins: Vec<String> = argv
        .iter()
        .filter(|a| a.contains("add-node") || a.contains("microk8s join"))
        .map(|a| {
            let url_free = a.split(" 10.77.0.").next().unwrap();
            url_free.to_string()
        })
        .collect();
    assert_eq!(
        joins,
        [
            "exec homelab-t-1 -- sudo microk8s add-node --format json",
            "exec homelab-t-2 -- sudo microk8s join",
            "exec homelab-t-1 -- sudo microk8s add-node --format json",
            "exec homelab-t-3 -- sudo microk8s join",
        ]
    );
    let node1_ip = lab.instance(VM)["ipv4"][0].as_str().unwrap().to_string();
    for j in argv.iter().filter(|a| a.contains("microk8s join")) {
        assert!(
            j.contains(&format!(" {node1_ip}:25000/")),
            "joins go to node 1's address: {j}"
        );
    }
    assert!(
        !run.stderr.contains(":25000/"),
        "join tokens are never shown: {}",
        run.stderr
    );
    assert!(
        run.stdout.contains("joined homelab-t-2, homelab-t-3\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("3 of 3 nodes Ready (v1.36.0)"),
        "{}",
        run.stdout
    );

    let status = lab.homelab(&["status", "--output", "json"]);
    status.success();
    let s: Value = serde_json::from_str(&status.stdout).unwrap();
    let nodes: Vec<&str> = s["cluster"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["homelab-t-1", "homelab-t-2", "homelab-t-3"]);
    assert_eq!(s["vms"].as_array().unwrap().len(), 3);

    // A plain `up` keeps the lab's three nodes and changes nothing.
    lab.again(&["up"]);
    let argv = lab.argv();
    assert_eq!(argv[..2], [VERSION, INFO]);
    assert!(
        argv.iter().all(|a| a == VERSION
            || a == INFO
            || a.contains(" -- test -f ")
            || a.ends_with("microk8s config")
            || a.ends_with("get nodes -o json")),
        "{argv:?}"
    );
}

#[test]
fn killed_between_steps_the_next_up_resumes() {
    let lab = Lab::new();
    lab.knob(
        "block",
        json!([{"id": "config", "argv": ["exec", VM, "--", "sudo", "microk8s", "config"]}]),
    );
    let child = lab.spawn(&["up"]);
    lab.wait_for_file("blocked-config");
    let mut child = child;
    child.kill().unwrap();
    child.wait().unwrap();
    lab.release("config");

    let up: Value =
        serde_json::from_str(&std::fs::read_to_string(lab.state_dir().join("up.json")).unwrap())
            .unwrap();
    let done: Vec<&String> = up["steps"].as_object().unwrap().keys().collect();
    assert_eq!(
        done,
        [
            "ca",
            "cloud-init",
            "engine-image",
            "join",
            "provisioned",
            "secrets",
            "vms"
        ]
    );

    let run = lab.again(&["up"]);
    assert_eq!(
        lab.argv(),
        [VERSION, INFO, MARKER, CONFIG, NODES],
        "no second launch"
    );
    assert!(run.stdout.contains("  ✓ kubeconfig  "), "{}", run.stdout);
    assert_eq!(lab.kubeconfig()["current-context"], "homelab-t");
}

#[test]
fn interrupted_during_launch_the_next_up_does_not_launch_again() {
    let lab = Lab::new();
    lab.knob("block", json!([{"id": "launch", "argv": ["launch"]}]));
    let child = lab.spawn(&["up"]);
    lab.wait_for_file("blocked-launch");
    assert_eq!(lab.instance(VM)["state"], "Starting");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The daemon finishes the launch on its own, whatever happens to the client.
    lab.release("launch");
    let run = finish(&lab, child);
    run.failure(1);
    assert_error_then_export_hint(
        &run,
        "error: `homelab up` for lab `t` was interrupted\nhint: run `homelab up` again: it looks at what exists and resumes where it stopped\n",
    );
    assert!(run.stdout.contains("  ! vms "), "{}", run.stdout);

    let start = Instant::now();
    while lab.instance(VM)["state"] != "Running" {
        assert!(start.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(10));
    }
    lab.again(&["up"]);
    assert!(
        !lab.argv().iter().any(|a| a.starts_with("launch")),
        "{:?}",
        lab.argv()
    );
}

/// Issue 12: one command changes a lab at a time. A second `up` while the first holds the lab
/// says which command and process hold it, waits (bounded), then gives up with a hint, having
/// written nothing of its own.
#[test]
fn a_second_up_waits_for_the_first_and_names_it() {
    let mut lab = Lab::new();
    lab.knob("block", json!([{"id": "launch", "argv": ["launch"]}]));
    let first = lab.spawn(&["up"]);
    lab.wait_for_file("blocked-launch");
    let secrets = std::fs::read(lab.state_dir().join("secrets.json")).unwrap();
    let ca = std::fs::read(lab.state_dir().join("ca/ca.crt")).unwrap();

    lab.ctx.env.insert(
        "HOMELAB_TEST_WAITS".into(),
        "poll_ms=5,poll_max_ms=20,lock_ms=300".into(),
    );
    let second = lab.homelab(&["up"]);
    second.failure(1);
    let pid = first.id();
    assert!(
        second.stderr.contains(&format!(
            "lab `t` is busy: `homelab up` (process {pid}, since "
        )),
        "told while waiting: {}",
        second.stderr
    );
    assert!(
        second.stderr.contains(&format!(
            "error: lab `t` is busy: `homelab up` (process {pid}) has been changing it since "
        )),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains(&format!("\nhint: waited 0.3s; one command changes a lab at a time: let process {pid} finish, then run `homelab up` again\nhint: to stop it instead, press Ctrl-C where it runs (or `kill {pid}`); the next run resumes where it stopped\n")),
        "{}",
        second.stderr
    );
    assert_eq!(second.stdout, "", "no step ran");

    lab.release("launch");
    finish(&lab, first).success();
    assert_eq!(
        std::fs::read(lab.state_dir().join("secrets.json")).unwrap(),
        secrets
    );
    assert_eq!(
        std::fs::read(lab.state_dir().join("ca/ca.crt")).unwrap(),
        ca
    );
    assert_eq!(
        lab.argv()
            .iter()
            .filter(|a| a.starts_with("launch "))
            .count(),
        1
    );
}

/// Issue 12: two `up` runs started together end with one set of secrets and one CA: the
/// second waited for the first (and then found everything done) or refused naming it.
#[test]
fn two_ups_started_together_make_one_set_of_secrets_and_one_ca() {
    let lab = Lab::new();
    let a = lab.spawn(&["up"]);
    let b = lab.spawn(&["up"]);
    let (pid_a, pid_b) = (a.id(), b.id());
    let runs = [(finish(&lab, a), pid_b), (finish(&lab, b), pid_a)];
    let generated = |r: &Run, what: &str| r.stdout.contains(&format!("  ✓ {what} "));
    for what in ["secrets", "ca"] {
        assert_eq!(
            runs.iter().filter(|(r, _)| generated(r, what)).count(),
            1,
            "exactly one run made the lab's {what}: {:#?}",
            runs.iter().map(|(r, _)| &r.stdout).collect::<Vec<_>>()
        );
    }
    for (run, other) in &runs {
        if run.code != Some(0) {
            assert!(
                run.stderr.contains(&format!(
                    "error: lab `t` is busy: `homelab up` (process {other})"
                )),
                "{}",
                run.stderr
            );
        }
    }
    assert_eq!(
        lab.argv()
            .iter()
            .filter(|a| a.starts_with("launch "))
            .count(),
        1,
        "one VM launched"
    );
}

/// Issue 12: the OS releases the lock when its holder dies; the body a killed `up` left behind
/// (naming it) never blocks the next command.
#[test]
fn a_lock_left_by_a_killed_up_does_not_block() {
    let mut lab = Lab::new();
    lab.knob("block", json!([{"id": "launch", "argv": ["launch"]}]));
    let mut child = lab.spawn(&["up"]);
    lab.wait_for_file("blocked-launch");
    let killed = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    let body: Value = serde_json::from_str(
        &std::fs::read_to_string(lab.state_dir().join("command.lock")).unwrap(),
    )
    .unwrap();
    assert_eq!(body["command"], "up");
    assert_eq!(body["pid"], killed);
    // The daemon finishes the launch on its own.
    lab.release("launch");
    let start = Instant::now();
    while lab.instance(VM)["state"] != "Running" {
        assert!(start.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(10));
    }

    lab.ctx.env.insert(
        "HOMELAB_TEST_WAITS".into(),
        "poll_ms=5,poll_max_ms=20,lock_ms=0".into(),
    );
    let run = lab.homelab(&["up"]);
    run.success();
    assert!(!run.stderr.contains("busy"), "{}", run.stderr);
}

#[test]
fn vm_sizes_below_the_minimum_are_refused() {
    let lab = Lab::new();
    let cases: &[(&[&str], &str)] = &[
        (
            &["up", "--cpus", "1"],
            "error: invalid `vm.cpus` 1: a lab VM needs at least 2 CPUs\nhint: microk8s and the lab's components need the CPUs; the default is 4 (`--cpus 4`)\n",
        ),
        (
            &["up", "--memory", "2G"],
            "error: invalid `vm.memory` `2G`: a lab VM needs at least 4G of memory\nhint: Gitea, Drone and the builds need the memory; the default is 8G (`--memory 8G`)\n",
        ),
        (
            &["up", "--disk", "10G"],
            "error: invalid `vm.disk` `10G`: a lab VM needs at least 20G of disk\nhint: container images and volumes need the room; the default is 40G (`--disk 40G`)\n",
        ),
    ];
    for (args, err) in cases {
        let run = lab.homelab(args);
        run.failure(1);
        assert_eq!(run.stderr, *err);
    }
    assert!(
        lab.argv().is_empty(),
        "refused before Multipass is asked anything"
    );
}

/// Issue 12: Multipass reads sizes in K, M or G only (`src/utils/memory_size.cpp`); `--disk 1T`
/// reaches it as `1024G`.
#[test]
fn a_disk_in_tib_reaches_multipass_in_a_unit_it_reads() {
    let lab = Lab::new();
    lab.homelab(&["up", "--disk", "1T"]).success();
    let launch = lab
        .argv()
        .into_iter()
        .find(|a| a.starts_with("launch "))
        .unwrap();
    assert!(launch.contains(" --disk 1024G "), "{launch}");
    assert_eq!(
        lab.instance(VM)["disks"]["sda1"]["total"],
        json!(((1u64 << 40) * 96 / 100).to_string())
    );
}

#[test]
fn a_vm_of_another_size_is_kept_with_a_warning() {
    let lab = Lab::new();
    lab.homelab(&["up"]).success();
    let run = lab.again(&["up", "--cpus", "6", "--memory", "16G"]);
    assert!(
        run.stderr.contains("warning: VM `homelab-t-1` has 4 CPUs (asked for 6), 7.8G memory (asked for 16G); homelab does not resize VMs: keep it as it is, or rebuild it with `homelab up --recreate` (everything inside is lost)\n"),
        "{}",
        run.stderr
    );
    assert_eq!(lab.argv(), [VERSION, INFO, MARKER, CONFIG, NODES]);
}

#[test]
fn multipass_17_dev_output_works_too() {
    let lab = Lab::new();
    lab.edit_fake(|v| v["format"] = json!("1.17"));
    lab.homelab(&["up"]).success();
    lab.again(&["up"]);
    assert_eq!(lab.argv(), [VERSION, INFO, MARKER, CONFIG, NODES]);
}

// ------------------------------------------------------------------------------------------
// status, down

#[test]
fn status_shows_vms_cluster_context_and_steps() {
    let lab = Lab::new();
    let run = lab.homelab(&["status"]);
    run.success();
    assert_eq!(
        run.stdout,
        "Lab `t` does not exist; `homelab up` creates it\n"
    );

    lab.homelab(&["up"]).success();
    let run = lab.again(&["status"]);
    let stdout: String = run
        .stdout
        .lines()
        .map(|l| match l.find(" done ") {
            // Ages and durations for people (issue 16), never a raw timestamp.
            Some(i) => {
                let (age, took) = l[i + 6..].split_once(", took ").expect("a duration");
                assert!(
                    age == "just now" || age.ends_with(" s ago") || age.ends_with(" min ago"),
                    "{l}"
                );
                assert!(took.ends_with('s') && !took.contains('T'), "{l}");
                format!("{} done [AGE], took [DURATION]", &l[..i])
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        stdout,
        "Lab `t` (multipass)\n\nVMs\n  homelab-t-1  Running  10.77.0.2  4 CPUs  0.4G of 7.8G memory\n\nCluster: reachable (1 of 1 nodes Ready)\n  homelab-t-1  Ready  v1.36.0\n\nKube context: `homelab-t` in `~/.kube/config`\nSnapshot: none yet (the last step of `homelab up` takes it; `homelab reset` restores it)\n\nSteps of `homelab up`\n  ✓ secrets       done [AGE], took [DURATION]\n  ✓ ca            done [AGE], took [DURATION]\n  ✓ cloud-init    done [AGE], took [DURATION]\n  ✓ vms           done [AGE], took [DURATION]\n  ✓ provisioned   done [AGE], took [DURATION]\n  ✓ join          done [AGE], took [DURATION]\n  ✓ kubeconfig    done [AGE], took [DURATION]\n  ✓ engine-image  done [AGE], took [DURATION]\n  ✓ ready         done [AGE], took [DURATION]\n  - node-names    not done\n  - prepare       not done\n  - render        not done\n  - images        not done\n  - deploy        not done\n  - wire-gitea    not done\n  - wire-ci       not done\n  - verify        not done\n  - snapshot      not done"
    );
    assert_eq!(lab.argv(), [INFO, NODES], "status only looks");

    lab.edit_fake(|v| v["instances"][VM]["state"] = json!("Stopped"));
    let run = lab.homelab(&["status", "--output", "json"]);
    run.success();
    let s: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(s["vms"][0]["state"], "Stopped");
    assert_eq!(s["vms"][0]["ip"], Value::Null);
    assert_eq!(s["cluster"]["reachable"], false);
    assert_eq!(s["cluster"]["detail"], "VM `homelab-t-1` is Stopped");
    assert_eq!(
        s["steps"][3],
        json!({"name": "vms", "done": true, "completed_at": s["steps"][3]["completed_at"]})
    );
}

#[test]
fn down_keeps_ca_and_secrets_and_up_reuses_them() {
    let lab = Lab::new();
    lab.ctx.write(
        "../home/.kube/config",
        "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster: {server: 'https://prod:6443'}\ncontexts:\n- name: prod\n  context: {cluster: prod, user: me}\nusers:\n- name: me\n  user: {token: t}\ncurrent-context: prod\n",
    );
    lab.homelab(&["up"]).success();
    let ca = std::fs::read(lab.state_dir().join("ca/ca.crt")).unwrap();
    let secrets = std::fs::read(lab.state_dir().join("secrets.json")).unwrap();
    let run = lab.again(&["down"]);
    assert_eq!(lab.argv(), [INFO, "delete --purge homelab-t-1"]);
    assert_eq!(lab.fake_state()["instances"], json!({}));
    assert_eq!(
        run.stdout,
        "deleted and purged VM(s) homelab-t-1\nremoved kube context `homelab-t` from `~/.kube/config`\nkept the lab's CA and secrets in `~/.local/share/homelab/t` (`homelab down --purge` deletes them)\n"
    );
    let kc = lab.kubeconfig();
    assert_eq!(kc["clusters"].as_array().unwrap().len(), 1);
    assert_eq!(kc["clusters"][0]["name"], "prod");
    assert_eq!(
        kc["current-context"], "",
        "the lab was current; like kind, nothing is now"
    );
    let mut left: Vec<String> = std::fs::read_dir(lab.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["ca", "command.lock", "secrets.json"],
        "the lock of the last command stays; it locks nothing by itself"
    );

    let run = lab.again(&["up"]);
    assert_eq!(lab.argv()[2], LAUNCH);
    assert_eq!(
        std::fs::read(lab.state_dir().join("ca/ca.crt")).unwrap(),
        ca
    );
    assert_eq!(
        std::fs::read(lab.state_dir().join("secrets.json")).unwrap(),
        secrets
    );
    assert!(run.stdout.contains("  = ca "), "{}", run.stdout);
}

#[test]
fn down_purge_leaves_nothing_behind() {
    let lab = Lab::new();
    lab.homelab(&["up", "--nodes", "2"]).success();
    // A deleted-not-purged VM of the lab is removed too.
    lab.edit_fake(|v| v["instances"]["homelab-t-2"]["state"] = json!("Deleted"));
    let run = lab.again(&["down", "--purge"]);
    assert_eq!(lab.argv(), [INFO, "delete --purge homelab-t-1 homelab-t-2"]);
    assert_eq!(lab.fake_state()["instances"], json!({}));
    assert!(!lab.state_dir().exists());
    let kc = lab.kubeconfig();
    assert!(
        !homelab::edges::yaml::to_string(&kc)
            .unwrap()
            .contains("homelab-t"),
        "{kc:?}"
    );
    assert_eq!(
        run.stderr,
        "note: a trust store or browser you added the lab CA to by hand still trusts it; remove it there (`homelab trust` lists where)\n"
    );
    let again = lab.homelab(&["down", "--purge"]);
    again.success();
    assert_eq!(again.stdout, "no VMs to delete\n");
    lab.homelab(&["status"]).success();
}

// ------------------------------------------------------------------------------------------
// Side-loading the sync engine's image (issue 8): built from the running binary, imported with
// `microk8s ctr image import` on every node, only where it is missing.

#[cfg(target_os = "linux")]
#[test]
fn the_engine_image_is_side_loaded_once_and_found_on_rerun() {
    let mut lab = Lab::new();
    lab.ctx.env.remove("HOMELAB_SYNC_IMAGE");
    let run = lab.homelab(&["up"]);
    run.success();
    let argv = lab.argv();
    let uname = "exec homelab-t-1 -- uname -m";
    let list = "exec homelab-t-1 -- sudo microk8s ctr image ls -q";
    let import =
        "exec homelab-t-1 -- sudo microk8s ctr image import --digests /tmp/homelab-images.tar";
    let remove = "exec homelab-t-1 -- rm -f /tmp/homelab-images.tar";
    for expected in [uname, list, import, remove] {
        assert!(
            argv.iter().any(|a| a == expected),
            "`{expected}` not run: {argv:#?}"
        );
    }
    let transfer = argv
        .iter()
        .find(|a| a.starts_with("transfer "))
        .expect("the archive is copied into the VM");
    assert!(
        transfer.ends_with(" homelab-t-1:/tmp/homelab-images.tar"),
        "{transfer}"
    );
    // The fake read the archive as `ctr` does (OCI layout, every blob's digest) and kept the
    // name it declares; the transferred copy is gone again.
    let vm = lab.instance("homelab-t-1");
    let all: Vec<&str> = vm["_images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // `--digests` adds an `import-<date>@sha256:…` name beside the declared one.
    let (digests, images): (Vec<&str>, Vec<&str>) = all.iter().partition(|r| r.contains('@'));
    assert_eq!((images.len(), digests.len()), (1, 1), "{all:?}");
    let reference = images[0];
    let tag = reference
        .strip_prefix("homelab.local/homelab:0.1.0-")
        .unwrap_or_else(|| panic!("{reference}"));
    assert!(
        tag.len() == 12 && tag.chars().all(|c| c.is_ascii_hexdigit()),
        "{reference}"
    );
    assert!(vm["_files"].get("/tmp/homelab-images.tar").is_none());
    assert!(
        run.stdout
            .contains(&format!("`{reference}` imported on homelab-t-1")),
        "{}",
        run.stdout
    );

    // Again: the image is there, so nothing is built, copied or imported.
    lab.clear_argv();
    let again = lab.homelab(&["up"]);
    again.success();
    let argv = lab.argv();
    assert!(argv.iter().any(|a| a == list), "{argv:#?}");
    assert!(
        !argv
            .iter()
            .any(|a| a.starts_with("transfer ") || a == import),
        "{argv:#?}"
    );
    assert!(
        again
            .stdout
            .contains(&format!("`{reference}` on every node")),
        "{}",
        again.stdout
    );
}

#[cfg(target_os = "linux")]
#[test]
fn a_vm_of_another_architecture_pulls_the_pinned_engine_image() {
    let mut lab = Lab::new();
    lab.ctx.env.remove("HOMELAB_SYNC_IMAGE");
    let host = match std::env::consts::ARCH {
        "x86_64" => "aarch64",
        _ => "x86_64",
    };
    lab.knob("arch", json!(host));
    let run = lab.homelab(&["up"]);
    run.success();
    assert!(
        !lab.argv()
            .iter()
            .any(|a| a.starts_with("transfer ") || a.contains("ctr image")),
        "{:#?}",
        lab.argv()
    );
    assert!(
        run.stdout.contains(&format!(
            "but the VMs are {host}; the VMs pull the stack's pinned engine image"
        )),
        "{}",
        run.stdout
    );
}

/// `homelab export logs out` must succeed; the archive it wrote, by path below its top folder.
fn export_logs(lab: &Lab) -> BTreeMap<String, Vec<u8>> {
    let run = lab.homelab(&["export", "logs", "out"]);
    run.success();
    let dir = lab.ctx.cwd.join("out");
    let archives: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(archives.len(), 1, "{archives:?}");
    assert!(
        run.stdout.trim_end().ends_with(".tar.gz"),
        "the path is printed: {}",
        run.stdout
    );
    common::read_archive(&archives[0])
        .into_iter()
        .map(|(p, b)| (p.split_once('/').unwrap().1.to_string(), b))
        .collect()
}

fn readme_section<'a>(readme: &'a str, title: &str) -> &'a str {
    let start = readme
        .find(&format!("\n{title} ("))
        .unwrap_or_else(|| panic!("no `{title}` section in:\n{readme}"));
    let rest = &readme[start + 1..];
    let end = rest[1..].find("\n\n").map(|i| i + 1).unwrap_or(rest.len());
    &rest[..end]
}

/// Issue 12, finding 9: after cloud-init's script failed, the archive names the failed step, has
/// cloud-init's verdict and log, and records what could not be read inside the VM (microk8s
/// was never installed) instead of giving up.
#[test]
fn export_logs_after_failed_provisioning_names_the_step_and_records_what_failed() {
    let mut lab = Lab::new();
    let step = "snap install microk8s --channel=1.36/stable";
    lab.failing_up("provisioned_ms=600000", "provision_fails", json!(step));
    let files = export_logs(&lab);
    let text = |p: &str| String::from_utf8_lossy(&files[p]).into_owned();
    assert_eq!(text("vms/homelab-t-1/homelab/failed").trim(), step);
    let status: Value =
        serde_json::from_str(&text("vms/homelab-t-1/cloud-init-status.json")).unwrap();
    assert_eq!(status["status"], "error");
    assert!(
        text("vms/homelab-t-1/cloud-init-output.log")
            .contains(&format!("homelab provisioning failed: {step}"))
    );
    for f in [
        "multipass/version.json",
        "multipass/info.json",
        "status.json",
        "config.json",
        "state/up.json",
    ] {
        assert!(
            files.contains_key(f),
            "`{f}` is in the archive: {:?}",
            files.keys()
        );
    }
    let readme = text("README.txt");
    let failed = readme_section(&readme, "Failed");
    assert!(
        failed.contains("`sudo microk8s inspect` in `homelab-t-1`")
            && failed.contains("sudo: microk8s: command not found"),
        "{readme}"
    );
    let skipped = readme_section(&readme, "Skipped");
    assert!(
        skipped.contains("`/var/lib/homelab/provisioned` in `homelab-t-1`"),
        "{readme}"
    );
    assert!(skipped.contains("the cluster"), "{readme}");
    // The index says the same as data.
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    assert!(index["entries"].as_array().unwrap().iter().any(
        |e| e["status"] == "failed" && e["what"].as_str().unwrap().contains("microk8s inspect")
    ));
}

/// Issue 12, finding 9: a collector whose `multipass exec` fails (here the VM is deleted
/// while the export runs) is a line in the README, and the export goes on to the end.
#[test]
fn export_logs_goes_on_when_multipass_exec_fails_midway() {
    let lab = Lab::new();
    // A loopback address: the lab's kubeconfig then points at nothing that could answer.
    lab.knob("ips", json!(["127.0.0.9"]));
    lab.homelab(&["up"]).success();
    lab.knob(
        "vanish",
        json!([{"argv": ["exec", VM, "--", "sudo", "microk8s", "inspect"], "instance": VM}]),
    );
    let files = export_logs(&lab);
    assert!(files.contains_key("vms/homelab-t-1/cloud-init-status.json"));
    assert!(files.contains_key("vms/homelab-t-1/homelab/provisioned"));
    assert!(!files.keys().any(|k| k.contains("inspection-report")));
    let readme = String::from_utf8_lossy(&files["README.txt"]).into_owned();
    let failed = readme_section(&readme, "Failed");
    assert!(
        failed.contains("`sudo microk8s inspect` in `homelab-t-1`")
            && failed.contains("VM `homelab-t-1` does not exist"),
        "{readme}"
    );
    assert!(
        lab.fake_state()["instances"].get(VM).is_none(),
        "the VM did vanish"
    );
}

/// The names in `homelab plan --output json`'s list of `up`'s steps, each checked to need only
/// steps listed before it.
fn planned_steps(plan: &Run) -> Vec<String> {
    plan.success();
    let plan: Value = serde_json::from_str(&plan.stdout).unwrap();
    let mut names: Vec<String> = Vec::new();
    for step in plan["pipeline"]
        .as_array()
        .expect("the plan lists up's steps")
    {
        for need in step["needs"].as_array().unwrap() {
            assert!(
                names.iter().any(|n| n == need.as_str().unwrap()),
                "`{}` needs `{need}`, which the plan does not list before it",
                step["name"]
            );
        }
        assert!(!step["description"].as_str().unwrap().is_empty());
        names.push(step["name"].as_str().unwrap().to_string());
    }
    names
}

/// Issue 13: `plan` lists the very steps `up` runs. `up --until ready` records exactly the
/// plan's steps through `ready`, and `status` (which walks `up`'s step list) shows the plan's
/// whole list, in its order.
#[test]
fn the_plan_lists_the_steps_up_runs_and_records() {
    let lab = Lab::new();
    let planned = planned_steps(&lab.homelab(&["plan", "--output", "json"]));
    let after_ready = [
        "node-names",
        "prepare",
        "render",
        "images",
        "deploy",
        "wire-gitea",
        "wire-ci",
        "verify",
        "snapshot",
    ];
    assert_eq!(planned, [UNTIL_READY, &after_ready].concat());
    lab.homelab(&["up"]).success();
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(lab.state_dir().join("up.json")).unwrap())
            .unwrap();
    let recorded: Vec<&String> = planned
        .iter()
        .filter(|n| record["steps"].get(n.as_str()).is_some())
        .collect();
    let through_ready = planned.iter().position(|n| n == "ready").unwrap() + 1;
    assert_eq!(
        recorded,
        planned[..through_ready].iter().collect::<Vec<_>>()
    );
    assert_eq!(
        record["steps"].as_object().unwrap().len(),
        through_ready,
        "up recorded a step the plan does not list: {record}"
    );
    let status = lab.homelab(&["status", "--output", "json"]);
    status.success();
    let listed = common::status_steps(&status.stdout);
    let expected: Vec<(String, bool)> = planned
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i < through_ready))
        .collect();
    assert_eq!(listed, expected);
}
