//! The contract facts in `contracts/` are what `scripts/derive-contracts` writes (issue 13: the
//! tests run from this repository alone, so the upstream facts they check against live in it).
//!
//! Two checks: the files are as the script last wrote them (the sha256s in `sources.json`; runs
//! everywhere), and, where the upstream documents are at hand (`$HOMELAB_UPSTREAM_CONTRACTS`,
//! else `../shared/contracts` beside the checkout), the files are what those documents give. The
//! second is the one test of the suite that may skip, and it says so. Each also proves that it
//! can fail: a hand edit in a copy of the folder is named.

use crate::support::common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `scripts/derive-contracts --check [UPSTREAM] [--contracts DIR]`, with the validator's Python
/// (it has PyYAML, which reading the upstream CRDs needs): (success, stderr).
fn check(upstream: Option<&Path>, contracts: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new(common::validator_python());
    cmd.arg(repo().join("scripts/derive-contracts"))
        .arg("--check");
    if let Some(u) = upstream {
        cmd.arg(u);
    }
    if let Some(c) = contracts {
        cmd.arg("--contracts").arg(c);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of `contracts/` with one derived fact changed by hand: Gitea's `POST /orgs` renamed.
fn hand_edited_copy(temp: &Path) -> PathBuf {
    let copy = temp.join("contracts");
    copy_dir(&repo().join("contracts"), &copy);
    let swagger = copy.join("gitea/swagger.v1.json");
    let text = std::fs::read_to_string(&swagger).unwrap();
    assert!(text.contains("\"orgCreate\""), "the copy holds orgCreate");
    std::fs::write(&swagger, text.replacen("\"orgCreate\"", "\"orgMake\"", 1)).unwrap();
    copy
}

#[test]
fn derived_contracts_are_as_the_derive_script_wrote_them() {
    let (ok, text) = check(None, None);
    assert!(ok, "{text}");

    let temp = tempfile::tempdir().unwrap();
    let copy = hand_edited_copy(temp.path());
    let (ok, text) = check(None, Some(&copy));
    assert!(!ok, "a hand edit passed the check:\n{text}");
    assert!(text.contains("contracts/gitea/swagger.v1.json:"), "{text}");
}

#[test]
fn derived_contracts_match_the_upstream_documents() {
    let upstream = match std::env::var_os("HOMELAB_UPSTREAM_CONTRACTS") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            assert!(
                dir.is_dir(),
                "HOMELAB_UPSTREAM_CONTRACTS is `{}`, which is not a folder",
                dir.display()
            );
            dir
        }
        None => {
            let dir = repo().join("../shared/contracts");
            if !dir.is_dir() {
                eprintln!(
                    "SKIPPED: no upstream contract documents (`{}` is absent and \
                     HOMELAB_UPSTREAM_CONTRACTS is unset), so contracts/ is not compared with them",
                    dir.display()
                );
                return;
            }
            dir
        }
    };
    let (ok, text) = check(Some(&upstream), None);
    assert!(ok, "{text}");

    let temp = tempfile::tempdir().unwrap();
    let copy = hand_edited_copy(temp.path());
    let (ok, text) = check(Some(&upstream), Some(&copy));
    assert!(!ok, "a hand edit passed the check:\n{text}");
    assert!(text.contains("contracts/gitea/swagger.v1.json:"), "{text}");
}
