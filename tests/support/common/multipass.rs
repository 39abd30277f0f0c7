//! The lab the provisioning tests drive: lab `t` on the fake `multipass` of
//! `tests/fakes/multipass` (first on PATH, its instances in `<temp>/multipassd`), with short
//! waits, a pulled engine image and a computer with room for it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::{ROOMY_HOST, TestContext, contracts_dir};

const FAKE: &str = include_str!("../../fakes/multipass");

/// The Python interpreter behind `python3` (its shim may not work in the sandboxed PATH).
fn python() -> &'static str {
    static P: OnceLock<String> = OnceLock::new();
    P.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 runs");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

/// Lab `t` and what `up` needs to run it quickly, but no `multipass` yet (a test of a missing
/// `multipass` starts here); returns where the fake will keep its instances.
pub fn lab_without_multipass(ctx: &mut TestContext) -> PathBuf {
    let fake_dir = ctx.temp.path().join("multipassd");
    for (k, v) in [
        ("HOMELAB_LAB", "t"),
        // A pulled engine image: side-loading (building an archive of this ~80 MB test binary
        // for every lab) has its own tests.
        ("HOMELAB_SYNC_IMAGE", "ghcr.io/homelab-dev/homelab:0.1.0"),
        (
            "HOMELAB_TEST_WAITS",
            "poll_ms=5,poll_max_ms=20,ready_ms=5000,provisioned_ms=5000,vm_running_ms=5000",
        ),
        // `up`'s preflight measures this computer; the tests' verdicts must not depend on it.
        ("HOMELAB_TEST_HOST", ROOMY_HOST),
    ] {
        ctx.env.insert(k.into(), v.into());
    }
    fake_dir
}

/// The fake `multipass` first on PATH, keeping its instances in `fake_dir`.
pub fn install_fake(ctx: &mut TestContext, fake_dir: &Path) {
    let script = FAKE.replacen("#!/usr/bin/env python3", &format!("#!{}", python()), 1);
    ctx.fake_tool("multipass", &script);
    ctx.env
        .insert("FAKE_MULTIPASS_DIR".into(), fake_dir.display().to_string());
    ctx.env.insert(
        "FAKE_MULTIPASS_CONTRACTS".into(),
        contracts_dir().display().to_string(),
    );
}

/// [`lab_without_multipass`] with the fake `multipass` installed; returns the fake's directory.
pub fn multipass_lab(ctx: &mut TestContext) -> PathBuf {
    let fake_dir = lab_without_multipass(ctx);
    install_fake(ctx, &fake_dir);
    fake_dir
}
