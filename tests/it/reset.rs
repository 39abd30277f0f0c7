//! Issue 14, item 5: `homelab reset`. The last step of `up` snapshots every lab VM once
//! (stopped, as Multipass requires), `reset` restores them and waits until the lab is ready,
//! `status` shows the snapshot, `down --purge` removes it; refused without a snapshot and on an
//! existing cluster. Against the fake `multipass`, whose `snapshot`/`restore`/`list --snapshots`
//! keep and bring back what it holds of a VM (files, images, `/etc/hosts`) and refuse what
//! Multipass 1.16.3 refuses; the whole-lab test runs in the wired fakes of [`lab_sim`].

use crate::support::common::{self, Run, TestContext, contracts_dir};
use crate::support::lab_sim::{LAB, Provider, Sim};

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

/// A sandbox with the fake `multipass` first on PATH, short waits, lab `t`.
struct Bench {
    ctx: TestContext,
    fake_dir: PathBuf,
}

impl Bench {
    fn new() -> Bench {
        let mut ctx = TestContext::new();
        let fake_dir = common::multipass::multipass_lab(&mut ctx);
        Bench { ctx, fake_dir }
    }

    fn state(&self) -> Value {
        std::fs::read_to_string(self.fake_dir.join("state.json"))
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap_or(json!({"instances": {}, "knobs": {}}))
    }

    fn seed(&self, state: Value) {
        std::fs::create_dir_all(&self.fake_dir).unwrap();
        std::fs::write(
            self.fake_dir.join("state.json"),
            serde_json::to_string(&state).unwrap(),
        )
        .unwrap();
    }

    /// The fake itself, as homelab would run it.
    fn multipass(&self, args: &[&str]) -> Run {
        let out = Command::new(self.ctx.bin.join("multipass"))
            .args(args)
            .env("FAKE_MULTIPASS_DIR", &self.fake_dir)
            .env("FAKE_MULTIPASS_CONTRACTS", contracts_dir())
            .output()
            .unwrap();
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }
}

#[track_caller]
fn exits(run: &Run, code: i32, stderr: &str) {
    assert_eq!(run.code, Some(code), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(stderr),
        "{:?} lacks {stderr:?}",
        run.stderr
    );
}

/// The fake prints `list --snapshots --format json` byte for byte as Multipass 1.16.3's test
/// data does, from instances holding those snapshots.
#[test]
fn fake_lists_snapshots_exactly_as_the_contract() {
    let bench = Bench::new();
    let expected =
        std::fs::read_to_string(contracts_dir().join("multipass/list-snapshots.json")).unwrap();
    let contract: Value = serde_json::from_str(&expected).unwrap();
    let mut instances = serde_json::Map::new();
    for (name, snaps) in contract["info"].as_object().unwrap() {
        let mut kept = serde_json::Map::new();
        for (snap, s) in snaps.as_object().unwrap() {
            kept.insert(
                snap.clone(),
                json!({"comment": s["comment"], "parent": s["parent"], "disk": {}}),
            );
        }
        instances.insert(
            name.clone(),
            json!({"state": "Stopped", "image_release": "24.04 LTS", "_snapshots": kept}),
        );
    }
    instances.insert(
        "no-snapshots".into(),
        json!({"state": "Running", "image_release": "24.04 LTS"}),
    );
    bench.seed(json!({"instances": instances}));
    let run = bench.multipass(&["list", "--snapshots", "--format", "json"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, expected);
    let info: Value =
        serde_json::from_str(&bench.multipass(&["info", "--format", "json"]).stdout).unwrap();
    assert_eq!(info["info"]["hale-roller"]["snapshot_count"], "3");
    assert_eq!(info["info"]["no-snapshots"]["snapshot_count"], "0");
}

/// What Multipass refuses, the fake refuses with its words and exit codes; what it keeps, the
/// fake brings back.
#[test]
fn fake_snapshots_and_restores_as_multipass_does() {
    let bench = Bench::new();
    bench.seed(json!({"instances": {"vm": {
        "state": "Running", "ipv4": ["10.77.0.2"], "image_release": "24.04 LTS",
        "cpu_count": "2", "_files": {"/home/ubuntu/notes": "v1"}, "_images": ["a:1"],
    }}}));
    let mp = |args: &[&str]| bench.multipass(args);
    exits(
        &mp(&["snapshot", "vm"]),
        2,
        "snapshot failed: Multipass can only take snapshots of stopped instances.",
    );
    exits(
        &mp(&["snapshot", "ghost"]),
        2,
        "snapshot failed: instance \"ghost\" does not exist",
    );
    exits(
        &mp(&["snapshot"]),
        1,
        "Need the name of an instance to snapshot.",
    );
    assert_eq!(mp(&["stop", "vm"]).code, Some(0));
    exits(
        &mp(&["snapshot", "--name", "9lives", "vm"]),
        2,
        "Invalid snapshot name: \"9lives\".",
    );
    let taken = mp(&["snapshot", "--name", "ready", "--comment", "as built", "vm"]);
    assert_eq!(
        taken.stdout, "Snapshot taken: vm.ready\n",
        "{}",
        taken.stderr
    );
    exits(
        &mp(&["snapshot", "-n", "ready", "vm"]),
        2,
        "Snapshot already exists: vm.ready",
    );
    // Unnamed: `snapshot<N>`, N one more than ever taken; its parent the head snapshot.
    assert_eq!(
        mp(&["snapshot", "vm"]).stdout,
        "Snapshot taken: vm.snapshot2\n"
    );
    let listed: Value =
        serde_json::from_str(&mp(&["list", "--snapshots", "--format", "json"]).stdout).unwrap();
    assert_eq!(
        listed["info"]["vm"],
        json!({"ready": {"comment": "as built", "parent": ""},
               "snapshot2": {"comment": "", "parent": "ready"}})
    );

    // The VM changes after the snapshot.
    assert_eq!(mp(&["start", "vm"]).code, Some(0));
    let mut state = bench.state();
    state["instances"]["vm"]["_files"]["/home/ubuntu/notes"] = json!("v2");
    state["instances"]["vm"]["_files"]["/tmp/extra"] = json!("new");
    state["instances"]["vm"]["_images"] = json!([]);
    bench.seed(state);
    exits(
        &mp(&["restore", "--destructive", "vm.ready"]),
        2,
        "restore failed: Multipass can only restore snapshots of stopped instances.",
    );
    assert_eq!(mp(&["stop", "vm"]).code, Some(0));
    exits(
        &mp(&["restore", "--destructive", "vm.nope"]),
        2,
        "restore failed: No such snapshot: vm.nope",
    );
    exits(
        &mp(&["restore", "--destructive", "vm"]),
        1,
        "in the form <instance>.<snapshot>.",
    );
    // Without `--destructive` Multipass asks on the terminal; without one it gives up.
    exits(
        &mp(&["restore", "vm.ready"]),
        1,
        "Use '--destructive' to automatically discard current machine state.",
    );
    assert_eq!(
        bench.state()["instances"]["vm"]["_files"]["/tmp/extra"],
        "new"
    );
    let restored = mp(&["restore", "--destructive", "vm.ready"]);
    assert_eq!(
        restored.stdout, "Snapshot restored: vm.ready\n",
        "{}",
        restored.stderr
    );
    let vm = &bench.state()["instances"]["vm"];
    assert_eq!(
        vm["state"], "Stopped",
        "restore leaves the instance stopped"
    );
    assert_eq!(vm["_files"], json!({"/home/ubuntu/notes": "v1"}));
    assert_eq!(vm["_images"], json!(["a:1"]));

    // A driver without snapshots.
    let mut state = bench.state();
    state["knobs"]["snapshots_unsupported"] = json!(true);
    bench.seed(state);
    for args in [
        &["snapshot", "vm"][..],
        &["restore", "--destructive", "vm.ready"],
        &["list", "--snapshots", "--format", "json"],
    ] {
        exits(
            &mp(args),
            2,
            "The snapshots feature is not implemented on this backend.",
        );
    }
}

/// Without a snapshot, and on an existing cluster, `reset` says why and what to do, and leaves
/// nothing behind.
#[test]
fn reset_is_refused_without_a_snapshot_and_on_an_existing_cluster() {
    let bench = Bench::new();
    let none = bench.ctx.homelab(&["reset"]);
    none.failure(1);
    assert!(
        none.stderr
            .contains("error: lab `t` does not exist, so there is nothing to reset")
            && none.stderr.contains("hint: `homelab up --lab t` builds it"),
        "{}",
        none.stderr
    );
    assert!(
        !bench.ctx.state_dir("t").exists(),
        "a refused reset writes nothing"
    );

    let existing = bench.ctx.homelab(&["reset", "--provider", "existing"]);
    existing.failure(1);
    assert!(
        existing
            .stderr
            .contains("error: `homelab reset` is not available on an existing cluster")
            && existing.stderr.contains("hint: "),
        "{}",
        existing.stderr
    );
    assert!(!bench.ctx.state_dir("t").exists());

    // A lab `up` built only to a bare cluster has no snapshot yet.
    bench.ctx.homelab(&["up", "--until", "ready"]).success();
    let status = bench.ctx.homelab(&["status"]);
    status.success();
    assert!(
        status.stdout.contains("Snapshot: none yet"),
        "{}",
        status.stdout
    );
    let _ = std::fs::remove_file(bench.fake_dir.join("argv.log"));
    let early = bench.ctx.homelab(&["reset"]);
    early.failure(1);
    assert!(
        early
            .stderr
            .contains("error: lab `t` has no snapshot to reset to")
            && early.stderr.contains("its last step, `snapshot`"),
        "{}",
        early.stderr
    );
    let argv = std::fs::read_to_string(bench.fake_dir.join("argv.log")).unwrap_or_default();
    assert!(argv.is_empty(), "a refused reset runs no multipass: {argv}");
    assert_eq!(
        bench.state()["instances"]["homelab-t-1"]["state"],
        "Running"
    );
}

fn argv_names(sim: &Sim) -> Vec<String> {
    sim.argv()
        .into_iter()
        .filter(|a| a.first().map(String::as_str) != Some("exec"))
        .map(|a| a.join(" "))
        .collect()
}

/// The whole story in the wired fakes: the first `up` snapshots the lab once (and the second
/// does not), the VM changes, `reset` brings it back and waits for the lab, `status` shows the
/// snapshot, `down --purge` takes it away with the VMs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_snapshots_once_and_reset_brings_a_changed_lab_back() {
    let sim = Sim::start(Provider::Multipass, 7).await;
    let vm = format!("homelab-{LAB}-1");
    let snapshot_line = |run: &Run| -> String {
        run.stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("snapshot"))
            .unwrap_or_else(|| panic!("no `snapshot` step in:\n{}", run.stdout))
            .to_string()
    };

    // 1. `--no-snapshot`: the lab is built, nothing stopped, and `reset` has nothing to go to.
    let bare = sim.homelab(&["up", "--no-verify", "--no-snapshot"]).await;
    sim.assert_ok("up --no-snapshot", &bare);
    let line = snapshot_line(&bare);
    assert!(
        line.trim_start().starts_with('=') && line.contains("not taken (`--no-snapshot`)"),
        "{line}"
    );
    assert!(sim.multipass_state()["instances"][&vm]["_snapshots"].is_null());
    assert!(
        !argv_names(&sim).iter().any(|c| c.starts_with("stop")),
        "nothing was stopped"
    );
    let refused = sim.homelab(&["reset"]).await;
    assert_eq!(refused.code, Some(1), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("has no snapshot to reset to"),
        "{}",
        refused.stderr
    );

    // 2. The first whole `up` takes it.
    sim.clear_argv();
    let up = sim.homelab(&["up", "--no-verify"]).await;
    sim.assert_ok("up", &up);
    let line = snapshot_line(&up);
    assert!(
        line.trim_start().starts_with('✓') && line.contains("`homelab-ready` of 1 VM taken"),
        "{line}"
    );
    assert!(
        up.stderr.contains("they stop and start again"),
        "the cost is said: {}",
        up.stderr
    );
    // Stopped, snapshotted, started: in that order, after the lab was built.
    let calls = argv_names(&sim);
    let at = |prefix: &str| {
        calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in {calls:#?}"))
    };
    let (stop, snap, start) = (
        at(&format!("stop {vm}")),
        at("snapshot --name homelab-ready --comment "),
        at(&format!("start {vm}")),
    );
    assert!(stop < snap && snap < start, "{calls:#?}");
    let fake_vm = sim.multipass_state()["instances"][&vm].clone();
    assert_eq!(fake_vm["state"], "Running");
    assert!(fake_vm["_snapshots"]["homelab-ready"].is_object());

    let status = sim.homelab(&["status"]).await;
    sim.assert_ok("status", &status);
    assert!(
        status
            .stdout
            .contains("Snapshot: `homelab-ready` of 1 VM(s), taken 20"),
        "{}",
        status.stdout
    );
    let json_status = sim.homelab(&["status", "--output", "json"]).await;
    let v: Value = serde_json::from_str(&json_status.stdout).unwrap();
    assert_eq!(v["snapshot"]["name"], "homelab-ready");
    assert_eq!(v["snapshot"]["vms"], json!([vm]));

    // 3. A later `up` finds the snapshot and stops nothing; when it changed the lab (here: the
    // lab's kubeconfig written again), it says the snapshot is older than the lab.
    std::fs::remove_file(sim.ctx.state_dir(LAB).join("kubeconfig")).unwrap();
    sim.clear_argv();
    let again = sim.homelab(&["up", "--no-verify"]).await;
    sim.assert_ok("the second up", &again);
    let line = snapshot_line(&again);
    assert!(line.trim_start().starts_with('='), "{line}");
    assert!(
        again
            .stderr
            .contains("this run changed the lab after its snapshot `homelab-ready` was taken")
            && again
                .stderr
                .contains(&format!("`multipass delete --purge {vm}.homelab-ready`")),
        "{}",
        again.stderr
    );
    for call in argv_names(&sim) {
        assert!(
            ["info", "version", "list --snapshots"]
                .iter()
                .any(|p| call.starts_with(p)),
            "the second up ran `multipass {call}`"
        );
    }

    // 4. The exercise changes the VM: a file, the images it holds, its /etc/hosts.
    let path = sim.mp_dir.join("state.json");
    let mut state = sim.multipass_state();
    let before = state["instances"][&vm].clone();
    let inst = &mut state["instances"][&vm];
    inst["_files"]["/home/ubuntu/exercise.txt"] = json!("half done");
    inst["_images"] = json!([]);
    inst["_etc_hosts"] = json!("127.0.0.1 localhost\n");
    std::fs::write(&path, serde_json::to_string(&state).unwrap()).unwrap();

    sim.clear_argv();
    let reset = sim.homelab(&["reset"]).await;
    sim.assert_ok("reset", &reset);
    // The README's measurement of `reset` against the fakes (`-- --nocapture` shows it).
    eprintln!("{}", reset.stdout.trim_end());
    assert!(
        reset
            .stdout
            .contains("Lab `t` reset to snapshot `homelab-ready` (taken 20")
            && reset
                .stdout
                .contains(": the cluster answers and every component is healthy"),
        "{}",
        reset.stdout
    );
    let after = sim.multipass_state()["instances"][&vm].clone();
    assert_eq!(after["state"], "Running");
    for key in ["_files", "_images", "_etc_hosts", "cpu_count", "memory"] {
        assert_eq!(
            after[key], before[key],
            "`{key}` is back as the snapshot had it"
        );
    }
    let calls = argv_names(&sim);
    let restore = format!("restore --destructive {vm}.homelab-ready");
    for expected in [format!("stop {vm}"), restore, format!("start {vm}")] {
        assert!(calls.contains(&expected), "`{expected}` ran: {calls:#?}");
    }
    // The lab answers again: `status` sees every component healthy.
    let status = sim.homelab(&["status"]).await;
    sim.assert_ok("status after reset", &status);
    assert!(
        status.stdout.contains("Cluster: reachable"),
        "{}",
        status.stdout
    );

    // 5. `down --purge` deletes the VMs, and their snapshots with them.
    let down = sim.homelab(&["down", "--purge"]).await;
    sim.assert_ok("down --purge", &down);
    assert!(
        down.stdout
            .contains("their snapshot `homelab-ready` for `homelab reset` went with them"),
        "{}",
        down.stdout
    );
    assert_eq!(sim.multipass_state()["instances"], json!({}));
    assert!(!sim.ctx.state_dir(LAB).exists());
    let gone = sim.homelab(&["reset"]).await;
    assert_eq!(gone.code, Some(1));
    assert!(gone.stderr.contains("does not exist"), "{}", gone.stderr);
}
