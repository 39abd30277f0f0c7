//! What `cloud-init status --format json` says inside a lab VM, and whether `up` should go on
//! waiting for homelab's provisioning script (issue 12: a cloud-init that failed before the
//! script ran used to be noticed only at the 30-minute limit).
//!
//! Architecture invariant: pure. `super::ops` runs the command and asks [`verdict`].
//!
//! Facts from canonical/cloud-init `cloudinit/cmd/status.py`, the same from the release Ubuntu
//! 24.04 shipped with (tag `ubuntu/24.1.3-0ubuntu3.3`) to its current update
//! (`ubuntu/26.1-0ubuntu1_24.04.1`):
//! - `--format json` prints one object, keys sorted: `status`, `extended_status`, `detail`,
//!   `errors` (list of strings), `recoverable_errors` (level → list of strings),
//!   `boot_status_code`, `datasource`, `last_update`, and each stage of `status.json`'s `v1`.
//! - `status` is `not started`, `running`, `done` or `disabled`, or `error` whenever any stage
//!   recorded an error (also while later stages still run); `extended_status` keeps both:
//!   `error - running`, `error - done`, `degraded running`, `degraded done` (recoverable errors
//!   only), or the plain running status (`translate_status`).
//! - The exit code is 1 with errors, 2 with recoverable errors only, else 0 (`handle_status_args`);
//!   the JSON is printed either way, so the code is not what tells the state.
//! - cloud-init goes on with later stages after a module fails; homelab's script runs in the last
//!   one (`runcmd` in `modules-final`). So an error while cloud-init still runs is reported, not
//!   final; cloud-init being done without homelab's completion marker is.

use std::collections::BTreeMap;

use serde_json::Value;

/// The parts of `cloud-init status --format json` homelab reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudInitStatus {
    /// `status`.
    pub status: String,
    /// `extended_status` (older releases without it: the same as `status`).
    pub extended_status: String,
    /// `detail`.
    pub detail: String,
    /// `errors`.
    pub errors: Vec<String>,
    /// `recoverable_errors`, by level (`WARNING`, `ERROR`, …).
    pub recoverable_errors: BTreeMap<String, Vec<String>>,
}

/// The status, or `None` when the output is not that JSON (cloud-init missing or too old to
/// know `--format json`): then nothing is concluded from it.
pub fn parse_status(stdout: &str) -> Option<CloudInitStatus> {
    let v: Value = serde_json::from_str(stdout.trim()).ok()?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let status = text("status")?;
    let strings = |x: &Value| -> Vec<String> {
        x.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| match e {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(CloudInitStatus {
        extended_status: text("extended_status").unwrap_or_else(|| status.clone()),
        status,
        detail: text("detail").unwrap_or_default(),
        errors: v.get("errors").map(strings).unwrap_or_default(),
        recoverable_errors: v
            .get("recoverable_errors")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(level, list)| (level.clone(), strings(list)))
                    .filter(|(_, list)| !list.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// What `up` makes of a status while homelab's completion marker is absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// cloud-init has not finished; homelab's script may still run. `Some` carries what it
    /// reported so far (an error in an earlier stage), for the progress line.
    Waiting(Option<String>),
    /// cloud-init finished (or is disabled): the marker will never come. What it said.
    Finished(String),
}

/// Decide from one status.
pub fn verdict(s: &CloudInitStatus) -> Verdict {
    if s.status == "disabled" {
        return Verdict::Finished(format!("cloud-init is disabled: {}", s.detail));
    }
    let done = s.status == "done" || s.extended_status.ends_with("done");
    if done {
        return Verdict::Finished(said(s).unwrap_or_else(|| {
            "it finished without running homelab's provisioning script".into()
        }));
    }
    Verdict::Waiting(said(s))
}

/// cloud-init's own words: its errors, else its recoverable errors.
fn said(s: &CloudInitStatus) -> Option<String> {
    if !s.errors.is_empty() {
        return Some(s.errors.join("; "));
    }
    let recoverable: Vec<String> = s
        .recoverable_errors
        .iter()
        .flat_map(|(level, list)| list.iter().map(move |m| format!("{level}: {m}")))
        .collect();
    (!recoverable.is_empty()).then(|| recoverable.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape `print_status` writes (sorted keys, two-space indent), for a cloud-init whose
    /// write_files module failed in the `init` stage and that went on to the end.
    const ERROR_DONE: &str = r#"{
  "boot_status_code": "enabled-by-generator",
  "datasource": "nocloud",
  "detail": "DataSourceNoCloud [seed=/dev/sr0]",
  "errors": [
    "('write_files', PermissionError(13, 'Permission denied'))"
  ],
  "extended_status": "error - done",
  "init": {
    "errors": [
      "('write_files', PermissionError(13, 'Permission denied'))"
    ],
    "finished": 9.31,
    "recoverable_errors": {
      "WARNING": [
        "Running module write_files (<module 'cloudinit.config.cc_write_files' from '/usr/lib/python3/dist-packages/cloudinit/config/cc_write_files.py'>) failed"
      ]
    },
    "start": 7.02
  },
  "last_update": "Thu, 01 Jan 1970 00:00:41 +0000",
  "recoverable_errors": {
    "WARNING": [
      "Running module write_files (<module 'cloudinit.config.cc_write_files' from '/usr/lib/python3/dist-packages/cloudinit/config/cc_write_files.py'>) failed"
    ]
  },
  "stage": null,
  "status": "error"
}"#;

    #[test]
    fn a_finished_cloud_init_with_errors_is_final_and_says_them() {
        let s = parse_status(ERROR_DONE).unwrap();
        assert_eq!(s.extended_status, "error - done");
        assert_eq!(
            verdict(&s),
            Verdict::Finished("('write_files', PermissionError(13, 'Permission denied'))".into())
        );
    }

    #[test]
    fn an_error_while_cloud_init_runs_is_reported_not_final() {
        let mut s = parse_status(ERROR_DONE).unwrap();
        s.extended_status = "error - running".into();
        assert!(matches!(verdict(&s), Verdict::Waiting(Some(_))));
        let running = CloudInitStatus {
            status: "running".into(),
            extended_status: "running".into(),
            ..CloudInitStatus::default()
        };
        assert_eq!(verdict(&running), Verdict::Waiting(None));
    }

    #[test]
    fn degraded_done_names_the_recoverable_errors() {
        let s = CloudInitStatus {
            status: "done".into(),
            extended_status: "degraded done".into(),
            recoverable_errors: [("WARNING".to_string(), vec!["Invalid cloud-config".into()])]
                .into(),
            ..CloudInitStatus::default()
        };
        assert_eq!(
            verdict(&s),
            Verdict::Finished("WARNING: Invalid cloud-config".into())
        );
        let disabled = CloudInitStatus {
            status: "disabled".into(),
            extended_status: "disabled".into(),
            detail: "Cloud-init disabled by /etc/cloud/cloud-init.disabled".into(),
            ..CloudInitStatus::default()
        };
        assert!(
            matches!(verdict(&disabled), Verdict::Finished(t) if t.starts_with("cloud-init is disabled"))
        );
    }

    #[test]
    fn output_that_is_not_the_json_concludes_nothing() {
        assert_eq!(parse_status("status: running\n"), None);
        assert_eq!(parse_status(""), None);
    }
}
