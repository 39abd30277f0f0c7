//! Issue 12: the lab's VMs resolve the lab's hostnames themselves, from `/etc/hosts`, so
//! containerd pulls `gitea.<domain>/lab/nyan-cat` without public DNS. `up`'s `node-names` step
//! writes them there through the `homelab-hosts` tool cloud-init installed (run for real by the
//! fake `multipass` in `tests/fakes/multipass`, which also models cloud-init rewriting
//! `/etc/hosts` at boot unless the user-data says `manage_etc_hosts: localhost`), keeps them
//! right when an address changes, and only looks on a lab whose entries are right.

use crate::support::common;

use std::path::PathBuf;

use common::{Run, TestContext};
use serde_json::{Value, json};

const VM: &str = "homelab-t-1";
const CAT_HOSTS: &str = "exec homelab-t-1 -- cat /etc/hosts";

struct Lab {
    ctx: TestContext,
    fake_dir: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let mut ctx = TestContext::new();
        let fake_dir = common::multipass::multipass_lab(&mut ctx);
        Lab { ctx, fake_dir }
    }

    /// `homelab up … --until node-names`: provisioning and the names, not the lab on top.
    fn up(&self, extra: &[&str]) -> Run {
        let mut args = vec!["up"];
        args.extend(extra);
        args.extend(["--until", "node-names"]);
        let run = self.ctx.homelab(&args);
        run.success();
        run
    }

    fn state(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.fake_dir.join("state.json")).unwrap())
            .unwrap()
    }

    fn edit(&self, f: impl FnOnce(&mut Value)) {
        let mut v = self.state();
        f(&mut v);
        std::fs::write(
            self.fake_dir.join("state.json"),
            serde_json::to_string(&v).unwrap(),
        )
        .unwrap();
    }

    fn etc_hosts(&self) -> String {
        self.state()["instances"][VM]["_etc_hosts"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn argv(&self) -> Vec<String> {
        std::fs::read_to_string(self.fake_dir.join("argv.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Vec<String>>(l).unwrap().join(" "))
            .collect()
    }

    fn clear_argv(&self) {
        let _ = std::fs::remove_file(self.fake_dir.join("argv.log"));
    }
}

fn step<'a>(run: &'a Run, name: &str) -> &'a str {
    run.stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no `{name}` line:\n{}", run.stdout))
}

/// The step `name`'s line starts with `mark` (`  ✓` done, `  =` already so, …).
#[track_caller]
fn assert_step(run: &Run, name: &str, mark: &str) {
    assert!(step(run, name).starts_with(mark), "{}", run.stdout);
}

fn block(address: &str, domain: &str) -> String {
    format!(
        "# BEGIN homelab lab names\n{address} drone.{domain} gitea.{domain} lab.{domain} nyan.{domain}\n# END homelab lab names\n"
    )
}

#[test]
fn up_writes_the_lab_names_into_the_vms_etc_hosts_and_then_only_looks() {
    let lab = Lab::new();
    let first = lab.up(&[]);
    assert_step(&first, "node-names", "  ✓");
    let hosts = lab.etc_hosts();
    assert!(
        hosts.ends_with(&block("10.77.0.2", "10.77.0.2.sslip.io")),
        "{hosts}"
    );
    assert!(
        hosts.starts_with("127.0.1.1 homelab-t-1 homelab-t-1\n127.0.0.1 localhost\n"),
        "the rest is kept: {hosts}"
    );

    lab.clear_argv();
    let again = lab.up(&[]);
    assert_step(&again, "node-names", "  =");
    let argv = lab.argv();
    assert!(argv.iter().any(|a| a == CAT_HOSTS), "{argv:?}");
    assert!(
        !argv.iter().any(|a| a.contains("homelab-hosts")),
        "a lab whose names are right is only looked at: {argv:?}"
    );
}

#[test]
fn a_custom_domain_needs_no_dns_setup_on_the_nodes() {
    let lab = Lab::new();
    lab.up(&["--domain", "lab.test"]);
    assert!(
        lab.etc_hosts().ends_with(&block("10.77.0.2", "lab.test")),
        "{}",
        lab.etc_hosts()
    );
}

#[test]
fn a_new_address_after_a_restart_is_written_on_the_next_up() {
    let lab = Lab::new();
    lab.up(&[]);
    lab.edit(|v| {
        v["instances"][VM]["state"] = json!("Stopped");
        v["knobs"]["new_ip_on_start"] = json!(true);
    });
    let run = lab.up(&[]);
    assert_step(&run, "node-names", "  ✓");
    let hosts = lab.etc_hosts();
    assert!(
        hosts.ends_with(&block("10.77.0.3", "10.77.0.3.sslip.io")),
        "{hosts}"
    );
    assert!(!hosts.contains("10.77.0.2"), "{hosts}");
    assert_eq!(hosts.matches("# BEGIN homelab lab names").count(), 1);
}

/// The restart above keeps the block only because the user-data says `manage_etc_hosts:
/// localhost`: with Multipass's own `true`, cloud-init rewrites /etc/hosts at every boot (the
/// fake models it), and the next `up` puts the names back.
#[test]
fn cloud_init_would_drop_the_names_at_boot_without_manage_etc_hosts_localhost() {
    let lab = Lab::new();
    lab.up(&[]);
    lab.edit(|v| {
        let ci = v["instances"][VM]["_cloud_init"]
            .as_str()
            .unwrap()
            .to_string();
        v["instances"][VM]["_cloud_init"] = json!(ci.replace("manage_etc_hosts: localhost\n", ""));
        v["instances"][VM]["state"] = json!("Stopped");
    });
    lab.clear_argv();
    let run = lab.up(&[]);
    assert_step(&run, "node-names", "  ✓");
    assert!(
        lab.argv()
            .iter()
            .any(|a| a.contains("sudo /usr/local/sbin/homelab-hosts 10.77.0.2"))
    );
}

#[test]
fn a_vm_from_an_earlier_homelab_without_the_tool_gets_a_warning_not_a_failure() {
    let lab = Lab::new();
    lab.up(&[]);
    lab.edit(|v| {
        v["instances"][VM]["_cloud_init"] = json!("#cloud-config\nruncmd: []\n");
        v["instances"][VM]["_etc_hosts"] = json!("127.0.0.1 localhost\n");
    });
    let run = lab.up(&[]);
    assert!(
        run.stderr.contains("warning: VM `homelab-t-1` has no `/usr/local/sbin/homelab-hosts` (launched by an earlier homelab)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("`homelab up --recreate`"),
        "{}",
        run.stderr
    );
}
