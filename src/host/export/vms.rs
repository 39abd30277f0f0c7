//! What Multipass and the lab's VMs say, for `homelab export logs`: `multipass version` and
//! `info` (the lab's VMs only), and from each running VM cloud-init's status and logs, the
//! provisioning markers `templates/cloud-init/user-data.yaml` writes, and `microk8s inspect`'s
//! report, unpacked so every file in it is scrubbed like the rest.
//!
//! Architecture invariant: every call is bounded and every failure becomes a record; nothing
//! here returns an error or stops the export.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::join_all;

use super::archive::Bundle;
use crate::edges::process::Output;
use crate::provider::multipass::json::VmState;
use crate::provider::multipass::{FAILED_MARKER, Multipass, PROVISIONED_MARKER, decide};

/// `microk8s inspect` journals every service and dumps the cluster: minutes on a busy node.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(300);
/// The report unpacked into the archive is bounded, per file and in all.
const REPORT_FILE_MAX: usize = 4 << 20;
const REPORT_TOTAL_MAX: usize = 48 << 20;
/// Where cloud-init writes what the commands it runs print (our provisioning script included).
const CLOUD_INIT_OUTPUT_LOG: &str = "/var/log/cloud-init-output.log";
/// cloud-init's own log: why a module failed before our script ran.
const CLOUD_INIT_LOG: &str = "/var/log/cloud-init.log";

/// What the VM collectors need.
#[derive(Clone, Debug)]
pub struct VmInput {
    /// Lab name (VMs are `homelab-<lab>-N`).
    pub lab: String,
    /// VM names the lab state recorded (kept even when renamed patterns miss them).
    pub recorded: Vec<String>,
    /// Bound of one `multipass exec`.
    pub exec_timeout: Duration,
    /// Lines of each log file to keep.
    pub tail_lines: usize,
    /// A private scratch directory for files copied out of VMs.
    pub scratch: PathBuf,
}

/// Collect from Multipass and every running VM of the lab.
pub async fn collect(input: &VmInput) -> Bundle {
    let mut b = Bundle::new();
    let mp = match Multipass::find(input.exec_timeout) {
        Ok(mp) => mp,
        Err(e) => {
            b.failed(None, "`multipass`", e.to_string(), None);
            return b;
        }
    };
    match mp.version_json().await {
        Ok(text) => b.file(
            "multipass/version.json",
            "`multipass version --format json`",
            text,
        ),
        Err(e) => b.failed(
            None,
            "`multipass version --format json`",
            e.to_string(),
            None,
        ),
    }
    let info = match mp.info().await {
        Ok(i) => i,
        Err(e) => {
            b.failed(None, "`multipass info --format json`", e.to_string(), None);
            b.skipped(
                "the lab's VMs",
                "Multipass could not list them (see the failure above)",
            );
            return b;
        }
    };
    let mut vms: Vec<(String, VmState)> = decide::lab_instances(&input.lab, &info)
        .into_values()
        .map(|i| (i.name.clone(), i.state.clone()))
        .collect();
    for name in &input.recorded {
        if let Some(i) = info.get(name)
            && !vms.iter().any(|(n, _)| n == name)
        {
            vms.push((name.clone(), i.state.clone()));
        }
    }
    if vms.is_empty() {
        b.skipped(
            "the lab's VMs",
            format!("Multipass has no VM of lab `{}`", input.lab),
        );
        return b;
    }
    let names: Vec<String> = vms.iter().map(|(n, _)| n.clone()).collect();
    let what = format!("`multipass info --format json {}`", names.join(" "));
    match mp.info_json(&names).await {
        Ok(text) => b.file("multipass/info.json", what, text),
        Err(e) => b.failed(None, what, e.to_string(), None),
    }
    let per_vm = join_all(vms.iter().map(|(name, state)| {
        let mp = mp.clone();
        async move {
            match state {
                VmState::Running | VmState::DelayedShutdown => vm(&mp, name, input).await,
                other => {
                    let mut b = Bundle::new();
                    b.skipped(
                        format!("inside VM `{name}`"),
                        format!("the VM is {other}: nothing can be read inside it"),
                    );
                    b
                }
            }
        }
    }))
    .await;
    for part in per_vm {
        b.extend(part);
    }
    b
}

/// Everything from inside one running VM.
async fn vm(mp: &Multipass, name: &str, input: &VmInput) -> Bundle {
    let mut b = Bundle::new();
    let dir = format!("vms/{name}");
    let tail = input.tail_lines.to_string();

    // cloud-init's verdict: 0 done, 1 error, 2 degraded (cloudinit/cmd/status.py); JSON each time.
    let what = format!("`cloud-init status --format json` in `{name}`");
    match exec(
        mp,
        name,
        &["cloud-init", "status", "--format", "json"],
        input,
    )
    .await
    {
        Ok(out) if matches!(out.code, Some(0..=2)) && !out.stdout.trim().is_empty() => {
            let path = format!("{dir}/cloud-init-status.json");
            match out.code {
                Some(1) => b.file_noted(&path, what, out.stdout, "cloud-init reports an error"),
                Some(2) => {
                    b.file_noted(&path, what, out.stdout, "cloud-init reports it is degraded")
                }
                _ => b.file(&path, what, out.stdout),
            }
        }
        Ok(out) => b.failed(
            Some(&format!("{dir}/cloud-init-status.txt")),
            what,
            exited(&out),
            Some(both(&out)),
        ),
        Err(why) => b.failed(None, what, why, None),
    }
    for (file, log) in [
        ("cloud-init-output.log", CLOUD_INIT_OUTPUT_LOG),
        ("cloud-init.log", CLOUD_INIT_LOG),
    ] {
        let what = format!("the last {tail} lines of `{log}` in `{name}`");
        match exec(mp, name, &["sudo", "tail", "-n", &tail, log], input).await {
            Ok(out) if out.success() => b.file(&format!("{dir}/{file}"), what, out.stdout),
            Ok(out) => b.failed(None, what, exited(&out), None),
            Err(why) => b.failed(None, what, why, None),
        }
    }
    // The provisioning script's markers: written last on success, or naming the failed step.
    for (file, marker) in [
        ("provisioned", PROVISIONED_MARKER),
        ("failed", FAILED_MARKER),
    ] {
        let what = format!("`{marker}` in `{name}`");
        match exec(mp, name, &["cat", marker], input).await {
            Ok(out) if out.success() => b.file(&format!("{dir}/homelab/{file}"), what, out.stdout),
            Ok(out) if out.stderr.contains("No such file") => b.skipped(what, "not present"),
            Ok(out) => b.failed(None, what, exited(&out), None),
            Err(why) => b.failed(None, what, why, None),
        }
    }
    inspect(mp, name, input, &dir, &mut b).await;
    b
}

/// `sudo microk8s inspect`: its output, and the report tarball it names, copied out and
/// unpacked (canonical/microk8s `scripts/inspect.sh`, `build_report_tarball`: it prints
/// `Report tarball is at <SNAP_DATA>/inspection-report-<YYYYmmdd_HHMMSS>.tar.gz`, and exits 1
/// when a service is not running, with the report written all the same).
async fn inspect(mp: &Multipass, name: &str, input: &VmInput, dir: &str, b: &mut Bundle) {
    let what = format!("`sudo microk8s inspect` in `{name}`");
    let out = match mp
        .exec_within(
            name,
            &["sudo", "microk8s", "inspect"],
            format!("inspect microk8s on `{name}`"),
            INSPECT_TIMEOUT,
        )
        .await
    {
        Ok(out) => out,
        Err(e) => return b.failed(None, what, e.to_string(), None),
    };
    let text_path = format!("{dir}/microk8s-inspect.txt");
    let Some(report) = report_path(&out.stdout) else {
        return b.failed(
            Some(&text_path),
            what,
            format!("{}; it named no report tarball", exited(&out)),
            Some(both(&out)),
        );
    };
    if out.success() {
        b.file(&text_path, what, both(&out));
    } else {
        b.file_noted(
            &text_path,
            what,
            both(&out),
            format!("{}: microk8s found a problem (see the file)", exited(&out)),
        );
    }
    let what = format!("`{report}` from `{name}`");
    if let Err(e) = private_dir(&input.scratch) {
        return b.failed(None, what, format!("scratch directory: {e}"), None);
    }
    let local = input
        .scratch
        .join(format!("{name}-inspection-report.tar.gz"));
    let copied = mp.transfer_out(name, &report, &local).await;
    let result = match copied {
        Ok(()) => unpack_report(&local, &format!("{dir}/inspection-report"), &what, b),
        Err(e) => Err(e.to_string()),
    };
    let _ = std::fs::remove_file(&local);
    if let Err(why) = result {
        b.failed(None, what, why, None);
    }
}

/// Create `dir` readable by this user only (what is copied out of a VM may be private).
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The report path `microk8s inspect` printed, if any.
pub fn report_path(stdout: &str) -> Option<String> {
    stdout.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("Report tarball is at ")?;
        let path = rest.trim();
        (path.starts_with('/') && path.ends_with(".tar.gz")).then(|| path.to_string())
    })
}

/// Unpack the report's regular files under `prefix`, bounded; one record per file.
fn unpack_report(local: &Path, prefix: &str, what: &str, b: &mut Bundle) -> Result<(), String> {
    use std::io::Read as _;
    let file = std::fs::File::open(local).map_err(|e| format!("open the copy: {e}"))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut total = 0usize;
    let mut count = 0usize;
    let entries = archive
        .entries()
        .map_err(|e| format!("not a .tar.gz: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("not a .tar.gz: {e}"))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let Ok(path) = entry.path().map(|p| p.into_owned()) else {
            continue;
        };
        // Only plain relative paths: nothing in the report may land outside its folder.
        let safe = path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !safe {
            continue;
        }
        let rel = path
            .strip_prefix("inspection-report")
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| format!("read `{rel}` in the report: {e}"))?;
        let item = format!("{what}: `{rel}`");
        if total >= REPORT_TOTAL_MAX {
            b.skipped(
                item,
                format!("the report is larger than {} MiB", REPORT_TOTAL_MAX >> 20),
            );
            continue;
        }
        let path = format!("{prefix}/{rel}");
        if bytes.len() > REPORT_FILE_MAX {
            let cut = bytes.split_off(bytes.len() - REPORT_FILE_MAX);
            total += cut.len();
            b.file_noted(
                &path,
                item,
                cut,
                format!("only its last {} MiB", REPORT_FILE_MAX >> 20),
            );
        } else {
            total += bytes.len();
            b.file(&path, item, bytes);
        }
        count += 1;
    }
    if count == 0 {
        return Err("the report holds no files".into());
    }
    Ok(())
}

async fn exec(
    mp: &Multipass,
    name: &str,
    argv: &[&str],
    input: &VmInput,
) -> Result<Output, String> {
    mp.exec_within(
        name,
        argv,
        format!("collect `{}` from `{name}`", argv.join(" ")),
        input.exec_timeout,
    )
    .await
    .map_err(|e| e.to_string())
}

fn exited(out: &Output) -> String {
    let code = out
        .code
        .map_or_else(|| "a signal".to_string(), |c| c.to_string());
    let said = out
        .stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| format!(": {l}"))
        .unwrap_or_default();
    format!("exited with {code}{said}")
}

fn both(out: &Output) -> Vec<u8> {
    let mut text = out.stdout.clone();
    if !out.stderr.trim().is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("--- stderr ---\n");
        text.push_str(&out.stderr);
    }
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_path_is_read_from_inspects_last_line() {
        let out = "Inspecting Certificates\nInspecting services\n  Service snap.microk8s.daemon-cluster-agent is running\nBuilding the report tarball\n  Report tarball is at /var/snap/microk8s/8148/inspection-report-20260101_120000.tar.gz\n";
        assert_eq!(
            report_path(out).as_deref(),
            Some("/var/snap/microk8s/8148/inspection-report-20260101_120000.tar.gz")
        );
        assert_eq!(report_path("Inspecting services\n"), None);
    }
}
