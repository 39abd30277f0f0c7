//! Trust on the host (issue 4): the commands for every OS and Linux family (snapshots, computed
//! on this machine from injected host facts), and `trust --apply` / `untrust` run against fake
//! `sudo`, `update-ca-certificates` and `certutil` on PATH that log their argv, with the real
//! `git` writing a temp HOME's global config. Nothing here touches the real system: the fake
//! `sudo` never executes a system program.

use crate::support::common;

use std::path::PathBuf;

use common::TestContext;
use homelab::edges::tools::Os;
use homelab::host::trust::{
    HostFacts, Ledger, LinuxFamily, NssDb, NssKind, TrustPlan, TrustTarget, plan,
};
use homelab::model::tls::CaInfo;

// ---- the commands per OS (pure, snapshotted) ----

fn ca_info() -> CaInfo {
    CaInfo {
        subject: "CN=homelab CA (workshop), O=homelab".into(),
        common_name: "homelab CA (workshop)".into(),
        sha256: "AA:BB:CC:DD".into(),
        sha1: "0123456789ABCDEF0123456789ABCDEF01234567".into(),
        not_before: "2026-01-01T00:00:00Z".into(),
        not_after: "2036-01-01T00:00:00Z".into(),
        not_after_unix: 2_082_758_400,
        permitted_dns: vec!["sslip.io".into(), "lab.example.test".into()],
        excluded: vec!["IP 0.0.0.0/0".into(), "IP ::/0".into()],
        key_usages: vec!["keyCertSign".into()],
        is_ca: true,
        path_len: Some(0),
        key_algorithm: "ECDSA P-256".into(),
    }
}

fn target(ca_path: &str, git: bool) -> TrustTarget {
    TrustTarget {
        lab: "workshop".into(),
        ca_path: PathBuf::from(ca_path),
        ca: ca_info(),
        git_urls: if git {
            vec!["https://gitea.lab.example.test/".into()]
        } else {
            Vec::new()
        },
    }
}

fn linux(family: LinuxFamily, certutil: bool, dbs: Vec<NssDb>) -> HostFacts {
    HostFacts {
        os: Os::Linux,
        linux_family: Some(family),
        nss_certutil: certutil,
        nss_databases: dbs,
    }
}

fn firefox(dir: &str) -> NssDb {
    NssDb {
        kind: NssKind::Firefox,
        dir: PathBuf::from(dir),
    }
}

/// The plan as `homelab trust` prints it, then the undo `untrust` would run (newest first).
fn script(plan: &TrustPlan) -> String {
    let mut out = plan.to_text();
    out.push_str("---- undo, newest first ----\n");
    for step in plan.steps.iter().rev() {
        for cmd in &step.undo {
            out.push_str(&cmd.display(plan.os));
            out.push('\n');
        }
    }
    out
}

#[test]
fn trust_commands_for_every_os() {
    let linux_ca = "/home/ada/.local/share/homelab/workshop/ca/ca.crt";
    let mac_ca = "/Users/ada/Library/Application Support/homelab/workshop/ca/ca.crt";
    let win_ca = r"C:\Users\ada\AppData\Roaming\homelab\workshop\ca\ca.crt";
    let variants: Vec<(&str, TrustTarget, HostFacts)> = vec![
        (
            "linux debian, NSS certutil, a Firefox profile and Chromium's database",
            target(linux_ca, true),
            linux(
                LinuxFamily::Debian,
                true,
                vec![
                    firefox("/home/ada/.mozilla/firefox/abcd.default-release"),
                    NssDb {
                        kind: NssKind::Chromium,
                        dir: PathBuf::from("/home/ada/.pki/nssdb"),
                    },
                ],
            ),
        ),
        (
            "linux fedora, Firefox but no NSS certutil",
            target(linux_ca, true),
            linux(
                LinuxFamily::Fedora,
                false,
                vec![firefox("/home/ada/.mozilla/firefox/abcd.default-release")],
            ),
        ),
        (
            "linux arch, no browsers",
            target(linux_ca, true),
            linux(LinuxFamily::Arch, true, vec![]),
        ),
        (
            "linux suse, snap Firefox",
            target(linux_ca, true),
            linux(
                LinuxFamily::Suse,
                true,
                vec![firefox(
                    "/home/ada/snap/firefox/common/.mozilla/firefox/x1.default",
                )],
            ),
        ),
        (
            "linux unknown distribution",
            target(linux_ca, true),
            linux(LinuxFamily::Unknown { id: "nixos".into() }, false, vec![]),
        ),
        (
            "linux without os-release, domain not known yet",
            target(linux_ca, false),
            linux(LinuxFamily::Unknown { id: String::new() }, false, vec![]),
        ),
        (
            "macos, NSS certutil and a Firefox profile",
            target(mac_ca, true),
            HostFacts {
                os: Os::Macos,
                linux_family: None,
                nss_certutil: true,
                nss_databases: vec![firefox(
                    "/Users/ada/Library/Application Support/Firefox/Profiles/q1.default-release",
                )],
            },
        ),
        (
            "macos, Firefox without NSS certutil",
            target(mac_ca, true),
            HostFacts {
                os: Os::Macos,
                linux_family: None,
                nss_certutil: false,
                nss_databases: vec![firefox(
                    "/Users/ada/Library/Application Support/Firefox/Profiles/q1.default-release",
                )],
            },
        ),
        (
            "windows with Firefox",
            target(win_ca, true),
            HostFacts {
                os: Os::Windows,
                linux_family: None,
                nss_certutil: false,
                nss_databases: vec![firefox(
                    r"C:\Users\ada\AppData\Roaming\Mozilla\Firefox\Profiles\w1.default-release",
                )],
            },
        ),
        (
            "another OS",
            target("/home/ada/.local/share/homelab/workshop/ca/ca.crt", true),
            HostFacts {
                os: Os::Other,
                linux_family: None,
                nss_certutil: false,
                nss_databases: vec![],
            },
        ),
    ];
    let mut out = String::new();
    for (name, target, facts) in &variants {
        out.push_str(&format!("==== {name} ====\n"));
        out.push_str(&script(&plan(target, facts)));
        out.push('\n');
    }
    insta::assert_snapshot!("trust_commands_per_os", out);
}

#[test]
fn trust_plan_as_json() {
    let p = plan(
        &target("/home/ada/.local/share/homelab/workshop/ca/ca.crt", true),
        &linux(
            LinuxFamily::Debian,
            true,
            vec![firefox("/home/ada/.mozilla/firefox/abcd.default-release")],
        ),
    );
    insta::assert_snapshot!(
        "trust_plan_debian_json",
        serde_json::to_string_pretty(&p).unwrap()
    );
}

#[test]
fn git_is_configured_per_lab_url_and_never_switches_verification_off() {
    let p = plan(
        &target("/home/ada/ca.crt", true),
        &linux(LinuxFamily::Debian, false, vec![]),
    );
    let all: Vec<String> = p
        .steps
        .iter()
        .flat_map(|s| s.apply.iter().chain(&s.undo))
        .map(|c| c.display(Os::Linux))
        .collect();
    assert!(
        all.iter()
            .all(|c| !c.to_ascii_lowercase().contains("sslverify"))
    );
    assert!(
        all.contains(
            &"git config --global http.https://gitea.lab.example.test/.sslCAInfo /home/ada/ca.crt"
                .to_string()
        )
    );
}

// ---- `trust --apply` / `untrust` against fake tools ----

const DOMAIN: &str = "lab.example.test";
const GIT_KEY: &str = "http.https://gitea.lab.example.test/.sslCAInfo";

struct Host {
    ctx: TestContext,
    log: PathBuf,
    markers: PathBuf,
}

impl Host {
    /// An Ubuntu host with sudo, update-ca-certificates, NSS certutil and one Firefox profile.
    fn new() -> Host {
        let mut ctx = TestContext::new();
        let root = ctx.temp.path().to_path_buf();
        let log = root.join("fake.log");
        let markers = root.join("markers");
        std::fs::create_dir_all(&markers).unwrap();
        let os_release = root.join("os-release");
        std::fs::write(&os_release, "NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\n").unwrap();
        let profile = ctx.home.join(".mozilla/firefox/abcd.default-release");
        std::fs::create_dir_all(&profile).unwrap();
        std::fs::write(profile.join("cert9.db"), b"").unwrap();
        for (k, v) in [
            ("FAKE_LOG", &log),
            ("FAKE_MARKERS", &markers),
            ("FAKE_BIN", &ctx.bin),
        ] {
            ctx.env.insert(k.into(), v.display().to_string());
        }
        // Logs, fails on request, and runs only other fakes: never `install` or `rm`.
        ctx.fake_tool(
            "sudo",
            r#"#!/bin/sh
echo "sudo $*" >> "$FAKE_LOG"
if [ -e "$FAKE_MARKERS/sudo-needs-password" ]; then echo "sudo: a password is required" >&2; exit 1; fi
[ "$1" = "-n" ] && shift
[ "$1" = "--" ] && shift
if [ -e "$FAKE_MARKERS/fail-$1" ]; then echo "$1: failed on purpose" >&2; exit 1; fi
prog="$1"; shift
if [ -x "$FAKE_BIN/$prog" ]; then exec "$FAKE_BIN/$prog" "$@"; fi
exit 0
"#,
        );
        ctx.fake_tool(
            "update-ca-certificates",
            "#!/bin/sh\necho \"update-ca-certificates $*\" >> \"$FAKE_LOG\"\n",
        );
        ctx.fake_tool(
            "certutil",
            r#"#!/bin/sh
echo "certutil $*" >> "$FAKE_LOG"
if [ "$1" = "-D" ] && [ -e "$FAKE_MARKERS/fail-certutil-D" ]; then
  echo "certutil: could not find certificate named \"homelab CA (homelab)\": SEC_ERROR_BAD_DATABASE" >&2
  exit 255
fi
"#,
        );
        Host { ctx, log, markers }
    }

    fn log(&self) -> String {
        self.ctx
            .filter(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    fn clear_log(&self) {
        let _ = std::fs::remove_file(&self.log);
    }

    fn marker(&self, name: &str, on: bool) {
        let p = self.markers.join(name);
        if on {
            std::fs::write(p, b"").unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }

    fn ledger(&self) -> Ledger {
        let text = std::fs::read_to_string(self.ledger_path()).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn ledger_ids(&self) -> Vec<String> {
        if !self.ledger_path().exists() {
            return Vec::new();
        }
        self.ledger().entries.into_iter().map(|e| e.id).collect()
    }

    fn ledger_path(&self) -> PathBuf {
        self.ctx.state_dir("homelab").join("trust-ledger.json")
    }

    /// The global git setting for the lab URL, read with the real git in the temp HOME.
    fn git_value(&self) -> Option<String> {
        let out = std::process::Command::new("git")
            .args(["config", "--global", "--get", GIT_KEY])
            .env("HOME", &self.ctx.home)
            .env("XDG_CONFIG_HOME", self.ctx.home.join(".config"))
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn set_git(&self, value: &str) {
        let status = std::process::Command::new("git")
            .args(["config", "--global", GIT_KEY, value])
            .env("HOME", &self.ctx.home)
            .env("XDG_CONFIG_HOME", self.ctx.home.join(".config"))
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The lab CA's SHA-256 fingerprint, as `homelab ca show --output json` gives it.
    fn ca_sha256(&self) -> String {
        serde_json::from_str::<serde_json::Value>(
            &self.ctx.homelab(&["ca", "show", "--output", "json"]).stdout,
        )
        .unwrap()["sha256"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn os_release(&self) -> String {
        self.ctx
            .temp
            .path()
            .join("os-release")
            .display()
            .to_string()
    }

    fn ca_path(&self) -> String {
        self.ctx
            .state_dir("homelab")
            .join("ca/ca.crt")
            .display()
            .to_string()
    }

    fn apply(&self) -> common::Run {
        self.ctx.homelab(&[
            "trust",
            "--apply",
            "--domain",
            DOMAIN,
            "--os-release",
            &self.os_release(),
        ])
    }
}

/// The `error: …` part of stderr (progress lines come before it).
fn error_part(stderr: &str) -> &str {
    &stderr[stderr.find("error: ").expect("an error on stderr")..]
}

const CA: &str = "[HOME]/.local/share/homelab/homelab/ca/ca.crt";
/// The CA file as messages for people name it (issue 16).
const CA_IN_MESSAGES: &str = "~/.local/share/homelab/homelab/ca/ca.crt";
const PROFILE: &str = "[HOME]/.mozilla/firefox/abcd.default-release";

/// Issue 12: `trust --apply`, `untrust` and `ca regenerate` change the lab, so each takes its
/// command lock; while another command holds it they say which, wait (bounded) and change
/// nothing. Printing the plan for an existing CA only reads and does not wait.
#[test]
fn commands_that_change_the_lab_wait_for_its_lock() {
    let mut host = Host::new();
    host.apply().success();
    host.clear_log();
    // Another `homelab up` holds the lab: this test process takes the OS lock itself.
    let lock_path = host.ctx.state_dir("homelab").join("command.lock");
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .unwrap();
    held.lock().unwrap();
    let pid = std::process::id();
    std::fs::write(
        &lock_path,
        format!(r#"{{"command":"up","pid":{pid},"since":"2026-01-01T00:00:00Z"}}"#),
    )
    .unwrap();
    host.ctx
        .env
        .insert("HOMELAB_TEST_WAITS".into(), "lock_ms=100".into());
    let busy = format!(
        "error: lab `homelab` is busy: `homelab up` (process {pid}) has been changing it since 2026-01-01T00:00:00Z\nhint: waited 0.1s; one command changes a lab at a time: let process {pid} finish, then run `homelab "
    );
    for (args, command) in [
        (vec!["untrust"], "untrust"),
        (vec!["ca", "regenerate"], "ca regenerate"),
    ] {
        let run = host.ctx.homelab(&args);
        run.failure(1);
        assert!(
            error_part(&run.stderr).starts_with(&format!("{busy}{command}` again\n")),
            "{}",
            run.stderr
        );
    }
    let run = host.apply();
    run.failure(1);
    assert!(
        error_part(&run.stderr).starts_with(&format!("{busy}trust --apply` again\n")),
        "{}",
        run.stderr
    );
    assert_eq!(host.log(), "", "nothing ran while the lab was busy");
    assert_eq!(host.ledger_ids().len(), 3, "the ledger is untouched");
    host.ctx
        .homelab(&[
            "trust",
            "--domain",
            DOMAIN,
            "--os-release",
            &host.os_release(),
        ])
        .success();

    drop(held);
    host.ctx.homelab(&["untrust"]).success();
    assert!(host.ledger_ids().is_empty());
}

#[test]
fn apply_then_untrust_round_trips_through_the_ledger() {
    let host = Host::new();
    let run = host.apply();
    run.success();
    assert_eq!(
        run.stdout,
        "applied  system trust store (Debian/Ubuntu): applied and recorded\n\
         applied  Firefox profile `abcd.default-release`: applied and recorded\n\
         applied  git, for `https://gitea.lab.example.test/` only: applied and recorded\n\
         ledger: `~/.local/share/homelab/homelab/trust-ledger.json`; `homelab untrust` undoes exactly what it lists\n"
    );
    assert_eq!(
        host.log(),
        format!(
            "sudo -n true\n\
             sudo -n -- install -D -m 0644 {CA} /usr/local/share/ca-certificates/homelab-homelab.crt\n\
             sudo -n -- update-ca-certificates\n\
             update-ca-certificates \n\
             certutil -A -d sql:{PROFILE} -t C,, -n homelab CA (homelab) -i {CA}\n"
        )
    );
    assert_eq!(host.git_value(), Some(host.ca_path()));

    let ledger = host.ledger();
    let sha = host.ca_sha256();
    assert_eq!(
        host.ledger_ids(),
        [
            "system",
            &format!(
                "nss:{}",
                host.ctx
                    .home
                    .join(".mozilla/firefox/abcd.default-release")
                    .display()
            ),
            "git:https://gitea.lab.example.test/",
        ]
    );
    assert!(
        ledger
            .entries
            .iter()
            .all(|e| e.ca_sha256 == sha && e.complete)
    );
    let undo: Vec<String> = ledger
        .entries
        .iter()
        .flat_map(|e| {
            e.undo
                .iter()
                .map(|c| host.ctx.filter(&c.display(Os::Linux)))
        })
        .collect();
    assert_eq!(
        undo,
        [
            "sudo rm -f /usr/local/share/ca-certificates/homelab-homelab.crt".to_string(),
            "sudo update-ca-certificates --fresh".to_string(),
            format!("certutil -D -d sql:{PROFILE} -n 'homelab CA (homelab)'"),
            format!("git config --global --unset {GIT_KEY}"),
        ]
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(host.ledger_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Re-running changes nothing and adds no entry.
    let before = std::fs::read_to_string(host.ledger_path()).unwrap();
    host.clear_log();
    let run = host.apply();
    run.success();
    assert_eq!(
        run.stdout,
        "skipped  system trust store (Debian/Ubuntu): already applied (recorded in `trust-ledger.json`)\n\
         skipped  Firefox profile `abcd.default-release`: already applied (recorded in `trust-ledger.json`)\n\
         skipped  git, for `https://gitea.lab.example.test/` only: already applied (recorded in `trust-ledger.json`)\n\
         ledger: `~/.local/share/homelab/homelab/trust-ledger.json`; `homelab untrust` undoes exactly what it lists\n"
    );
    assert_eq!(host.log(), "");
    assert_eq!(std::fs::read_to_string(host.ledger_path()).unwrap(), before);

    // Untrust runs exactly the recorded undo, newest first.
    let run = host.ctx.homelab(&["untrust"]);
    run.success();
    assert_eq!(
        run.stdout,
        "untrusted  git, for `https://gitea.lab.example.test/` only\n\
         untrusted  Firefox profile `abcd.default-release`\n\
         untrusted  system trust store (Debian/Ubuntu)\n"
    );
    assert_eq!(
        host.log(),
        format!(
            "sudo -n true\n\
             certutil -D -d sql:{PROFILE} -n homelab CA (homelab)\n\
             sudo -n -- rm -f /usr/local/share/ca-certificates/homelab-homelab.crt\n\
             sudo -n -- update-ca-certificates --fresh\n\
             update-ca-certificates --fresh\n"
        )
    );
    assert!(host.ledger().entries.is_empty());
    assert_eq!(host.git_value(), None);

    let run = host.ctx.homelab(&["untrust"]);
    run.success();
    assert_eq!(
        run.stdout,
        "nothing to undo: the trust ledger of lab `homelab` is empty\n"
    );
}

#[test]
fn failing_undo_leaves_exactly_what_is_still_applied() {
    let host = Host::new();
    host.apply().success();
    host.marker("fail-certutil-D", true);
    host.clear_log();

    let run = host.ctx.homelab(&["untrust"]);
    run.failure(1);
    assert_eq!(
        error_part(&run.stderr),
        format!(
            "error: could not undo 1 recorded trust change; `~/.local/share/homelab/homelab/trust-ledger.json` still lists it:\n  \
             - remove the lab CA from Firefox profile `abcd.default-release`: `certutil -D -d sql:{PROFILE} -n 'homelab CA (homelab)'` exited with 255\n    \
             certutil: could not find certificate named \"homelab CA (homelab)\": SEC_ERROR_BAD_DATABASE\n\
             hint: fix the cause and run `homelab untrust` again; it retries only what is still listed\n"
        )
    );
    // The entries before and after the failing one were still undone.
    assert_eq!(
        host.ledger_ids(),
        [format!(
            "nss:{}",
            host.ctx
                .home
                .join(".mozilla/firefox/abcd.default-release")
                .display()
        )]
    );
    assert_eq!(host.git_value(), None);
    assert!(
        host.log()
            .contains("sudo -n -- update-ca-certificates --fresh\n")
    );

    host.marker("fail-certutil-D", false);
    host.clear_log();
    host.ctx.homelab(&["untrust"]).success();
    assert_eq!(
        host.log(),
        format!("certutil -D -d sql:{PROFILE} -n homelab CA (homelab)\n"),
        "only what was still listed is retried, and no sudo is needed for it"
    );
    assert!(host.ledger().entries.is_empty());
}

#[test]
fn sudo_that_needs_a_password_fails_before_anything_changes() {
    let host = Host::new();
    host.marker("sudo-needs-password", true);
    let run = host.apply();
    run.failure(1);
    assert_eq!(
        run.stderr,
        "error: `sudo` would ask for a password to change the system trust store, and homelab does not wait on prompts\n  \
         caused by: check that sudo runs without a prompt: `sudo -n true` exited with 1\n    \
         sudo: a password is required\n\
         hint: run `sudo -v` in this terminal to enter your password, then `homelab trust --apply` again\n\
         hint: or run the commands `homelab trust` prints yourself\n"
    );
    assert_eq!(host.log(), "sudo -n true\n");
    assert_eq!(host.ledger_ids(), Vec::<String>::new());
    assert_eq!(host.git_value(), None);
}

#[test]
fn a_failed_change_is_not_recorded_and_a_failed_refresh_is_retried() {
    let host = Host::new();
    // The copy into the anchors directory fails: nothing changed, nothing recorded.
    host.marker("fail-install", true);
    let run = host.apply();
    run.failure(1);
    assert_eq!(
        error_part(&run.stderr),
        format!(
            "error: add the lab CA to system trust store (Debian/Ubuntu): `sudo -n -- install -D -m 0644 {CA_IN_MESSAGES} /usr/local/share/ca-certificates/homelab-homelab.crt` exited with 1\n\
             install: failed on purpose\n\
             hint: this step changed nothing; fix the cause and run `homelab trust --apply` again (steps already applied are skipped)\n"
        )
    );
    assert_eq!(host.ledger_ids(), Vec::<String>::new());

    // The copy works but the refresh fails: the copy is recorded, with its undo.
    host.marker("fail-install", false);
    host.marker("fail-update-ca-certificates", true);
    let run = host.apply();
    run.failure(1);
    assert_eq!(
        error_part(&run.stderr),
        "error: update system trust store (Debian/Ubuntu): `sudo -n -- update-ca-certificates` exited with 1\n\
         update-ca-certificates: failed on purpose\n\
         hint: the change is recorded in the trust ledger; `homelab untrust` undoes it\n\
         hint: fix the cause and run `homelab trust --apply` again; steps already applied are skipped\n"
    );
    assert_eq!(host.ledger_ids(), ["system"]);
    assert!(!host.ledger().entries[0].complete);

    // The next run finishes the half-applied step instead of skipping it.
    host.marker("fail-update-ca-certificates", false);
    host.clear_log();
    let run = host.apply();
    run.success();
    assert!(
        run.stdout
            .starts_with("applied  system trust store (Debian/Ubuntu): applied and recorded\n"),
        "{}",
        run.stdout
    );
    assert!(host.log().contains("sudo -n -- update-ca-certificates\n"));
    assert_eq!(host.ledger_ids().len(), 3);
    assert!(host.ledger().entries.iter().all(|e| e.complete));
}

#[test]
fn git_setting_the_user_had_is_restored_and_a_hand_made_one_is_left_alone() {
    let host = Host::new();
    host.set_git("/old/bundle.pem");
    host.apply().success();
    assert_eq!(host.git_value(), Some(host.ca_path()));
    host.ctx.homelab(&["untrust"]).success();
    assert_eq!(host.git_value(), Some("/old/bundle.pem".to_string()));

    // Already pointing at the lab CA (the user ran the printed command): not homelab's change.
    host.set_git(&host.ca_path());
    let run = host.apply();
    run.success();
    assert!(
        run.stdout.contains(
            "skipped  git, for `https://gitea.lab.example.test/` only: already set to this CA by hand; not recorded, so `homelab untrust` leaves it\n"
        ),
        "{}",
        run.stdout
    );
    assert!(!host.ledger_ids().iter().any(|id| id.starts_with("git:")));
    host.ctx.homelab(&["untrust"]).success();
    assert_eq!(host.git_value(), Some(host.ca_path()));
}

#[test]
fn trust_prints_the_commands_for_this_host() {
    let host = Host::new();
    // A Fedora host this time, detected from the injected os-release.
    std::fs::write(
        host.ctx.temp.path().join("os-release"),
        "ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n",
    )
    .unwrap();
    let run = host.ctx.homelab(&[
        "trust",
        "--domain",
        DOMAIN,
        "--os-release",
        &host.os_release(),
    ]);
    run.success();
    let sha = host.ca_sha256();
    assert_eq!(
        run.stdout.replace(&sha, "[SHA256]"),
        format!(
            "# Trust the CA of lab `homelab` on this computer: Linux (Fedora/RHEL).\n\
             # CA: homelab CA (homelab), SHA-256 [SHA256]\n\
             # file: {CA}\n\
             # Run these yourself, or `homelab trust --apply` to run them and record each change so\n\
             # `homelab untrust` can undo exactly that.\n\
             \n\
             # system trust store (Fedora/RHEL)\n\
             sudo install -D -m 0644 {CA} /etc/pki/ca-trust/source/anchors/homelab-homelab.crt\n\
             sudo update-ca-trust\n\
             \n\
             # Firefox profile `abcd.default-release`\n\
             # (restart Firefox afterwards)\n\
             certutil -A -d sql:{PROFILE} -t C,, -n 'homelab CA (homelab)' -i {CA}\n\
             \n\
             # git, for `https://gitea.lab.example.test/` only\n\
             git config --global http.https://gitea.lab.example.test/.sslCAInfo {CA}\n"
        )
    );
    assert_eq!(host.log(), "", "printing runs nothing");
    assert!(!host.ledger_path().exists());

    let run = host.ctx.homelab(&[
        "trust",
        "--domain",
        DOMAIN,
        "--os-release",
        &host.os_release(),
        "--output",
        "json",
    ]);
    run.success();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["os"], "linux");
    let ids: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "system",
            &format!("nss:{PROFILE}"),
            "git:https://gitea.lab.example.test/",
        ]
    );
}

#[test]
fn purge_reminder_names_what_is_still_trusted() {
    let host = Host::new();
    let state = homelab::edges::state::LabState::at("homelab", host.ctx.state_dir("homelab"));
    assert_eq!(homelab::host::trust::purge_reminder(&state).unwrap(), None);
    host.apply().success();
    assert_eq!(
        homelab::host::trust::purge_reminder(&state)
            .unwrap()
            .unwrap(),
        "this computer still trusts the CA of lab `homelab` (system trust store (Debian/Ubuntu); Firefox profile `abcd.default-release`; git, for `https://gitea.lab.example.test/` only); `homelab down --purge` would delete the record of those changes, so run `homelab untrust` first, or `homelab down --purge --untrust` to do both"
    );
    host.ctx.homelab(&["untrust"]).success();
    assert_eq!(homelab::host::trust::purge_reminder(&state).unwrap(), None);
}

#[test]
fn down_purge_refuses_while_trusted_and_untrusts_first_when_asked() {
    let host = Host::new();
    host.apply().success();
    let state_dir = host.ctx.state_dir("homelab");

    // Purging would delete the ledger, the only record of how to undo: refused, nothing gone.
    let run = host.ctx.homelab(&["down", "--purge"]);
    run.failure(1);
    assert_eq!(
        run.stderr,
        "error: this computer still trusts the CA of lab `homelab` (system trust store (Debian/Ubuntu); Firefox profile `abcd.default-release`; git, for `https://gitea.lab.example.test/` only); `homelab down --purge` would delete the record of those changes, so run `homelab untrust` first, or `homelab down --purge --untrust` to do both\nhint: `homelab down --purge --untrust` undoes those changes, then purges\n"
    );
    assert!(state_dir.join("trust-ledger.json").exists());
    assert_eq!(host.git_value(), Some(host.ca_path()));

    // `--untrust` needs `--purge`.
    host.ctx.homelab(&["down", "--untrust"]).failure(2);

    let run = host.ctx.homelab(&["down", "--purge", "--untrust"]);
    run.success();
    assert!(
        run.stderr
            .contains("undid 3 change(s) `homelab trust --apply` made on this computer"),
        "{}",
        run.stderr
    );
    assert_eq!(host.git_value(), None, "git's setting was removed");
    assert!(!state_dir.exists(), "nothing of the lab is left");
    assert!(host.log().contains("certutil -D -d sql:"), "{}", host.log());
}

/// The lab page tells a person on another computer how to trust the downloaded CA file by hand:
/// those lines are exactly the system step `homelab trust --apply` runs on each OS (with the file
/// name the page's download gives), so the page and the command cannot drift apart.
#[test]
fn the_lab_page_s_trust_steps_are_the_commands_homelab_trust_runs() {
    use homelab::sync::page::{ca_file_name, trust_steps};
    let lab = "workshop";
    let file = ca_file_name(lab);
    let shell = |cmd: &homelab::host::trust::HostCmd, sudo: bool| {
        let mut words = Vec::new();
        if cmd.elevated && sudo {
            words.push("sudo".to_string());
        }
        words.push(cmd.program.clone());
        words.extend(cmd.args.iter().cloned());
        words.join(" ")
    };
    let system_step = |facts: HostFacts, sudo: bool| -> Vec<String> {
        let plan = plan(&target(&file, false), &facts);
        let step = plan.steps.iter().find(|s| s.id == "system").unwrap();
        step.apply.iter().map(|c| shell(c, sudo)).collect()
    };
    let page = trust_steps(lab);
    let by_os = |os: &str| {
        page.iter()
            .find(|t| t.os == os)
            .unwrap_or_else(|| panic!("the page has no steps for {os}"))
            .commands
            .clone()
    };
    for (os, family) in [
        ("Debian, Ubuntu", LinuxFamily::Debian),
        ("Fedora, RHEL", LinuxFamily::Fedora),
        ("Arch", LinuxFamily::Arch),
        ("openSUSE", LinuxFamily::Suse),
    ] {
        assert_eq!(
            by_os(os),
            system_step(linux(family, false, vec![]), true),
            "{os}"
        );
    }
    let bare = |os| HostFacts {
        os,
        linux_family: None,
        nss_certutil: false,
        nss_databases: vec![],
    };
    assert_eq!(by_os("macOS"), system_step(bare(Os::Macos), true));
    // Windows has no sudo: the page says to use an administrator terminal instead.
    assert_eq!(by_os("Windows"), system_step(bare(Os::Windows), false));
    assert_eq!(page.len(), 6, "a page entry no plan checks");
}
