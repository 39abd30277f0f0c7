//! The archive `homelab export logs` writes: the collected files, a `README.txt` and an
//! `index.json` saying what was collected and what failed and why, every byte run through the
//! lab's [`Scrubber`], packed as one `.tar.gz` written atomically.
//!
//! Architecture invariant: [`Bundle`] is plain data and [`pack`] is pure (bytes in, bytes out);
//! only [`write()`] touches the filesystem. Nothing leaves [`pack`] unscrubbed, the README and
//! index included.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use time::OffsetDateTime;

use crate::edges::error::{Error, Result, ResultExt};
use crate::edges::redact::Scrubber;

/// What became of one thing the export tried to collect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// In the archive.
    Collected,
    /// Tried and failed (a partial file may be in the archive).
    Failed,
    /// Not tried, for the reason given (a VM that is stopped, a cluster that does not answer).
    Skipped,
}

/// One line of the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Record {
    /// Path inside the archive (below its top folder), when a file was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// What it is (usually the command that produced it).
    pub what: String,
    /// What became of it.
    pub status: Status,
    /// Why it failed or was skipped (or a note on what was collected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Files and their records, as collectors add them.
#[derive(Clone, Debug, Default)]
pub struct Bundle {
    files: Vec<(String, Vec<u8>)>,
    records: Vec<Record>,
}

impl Bundle {
    /// Nothing yet.
    pub fn new() -> Bundle {
        Bundle::default()
    }

    /// A collected file.
    pub fn file(&mut self, path: &str, what: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.files.push((path.to_string(), bytes.into()));
        self.records.push(Record {
            file: Some(path.to_string()),
            what: what.into(),
            status: Status::Collected,
            detail: None,
        });
    }

    /// A collected file with a note (a command that exited non-zero yet printed what it knew).
    pub fn file_noted(
        &mut self,
        path: &str,
        what: impl Into<String>,
        bytes: impl Into<Vec<u8>>,
        note: impl Into<String>,
    ) {
        self.file(path, what, bytes);
        self.records.last_mut().expect("just added").detail = Some(note.into());
    }

    /// Something that failed; `partial` is written when there is some output.
    pub fn failed(
        &mut self,
        path: Option<&str>,
        what: impl Into<String>,
        why: impl Into<String>,
        partial: Option<Vec<u8>>,
    ) {
        let file = match (path, partial) {
            (Some(p), Some(bytes)) if !bytes.is_empty() => {
                self.files.push((p.to_string(), bytes));
                Some(p.to_string())
            }
            _ => None,
        };
        self.records.push(Record {
            file,
            what: what.into(),
            status: Status::Failed,
            detail: Some(why.into()),
        });
    }

    /// Something not tried, and why.
    pub fn skipped(&mut self, what: impl Into<String>, why: impl Into<String>) {
        self.records.push(Record {
            file: None,
            what: what.into(),
            status: Status::Skipped,
            detail: Some(why.into()),
        });
    }

    /// Append another bundle's files and records (collectors that ran concurrently).
    pub fn extend(&mut self, other: Bundle) {
        self.files.extend(other.files);
        self.records.extend(other.records);
    }

    /// The records so far.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The files so far (path, bytes), unscrubbed.
    pub fn files(&self) -> &[(String, Vec<u8>)] {
        &self.files
    }
}

/// What the README says about the export itself.
#[derive(Clone, Debug)]
pub struct Header {
    /// Lab name.
    pub lab: String,
    /// When the export ran.
    pub created: OffsetDateTime,
    /// `homelab <version> (<os> <arch>)`.
    pub tool: String,
    /// Notes about the scrubbing itself (e.g. `secrets.json` could not be read).
    pub notes: Vec<String>,
}

/// `homelab-<lab>-logs-<UTC timestamp>` (no extension): the archive's name and its top folder.
pub fn stem(lab: &str, created: OffsetDateTime) -> String {
    let ts = created
        .to_offset(time::UtcOffset::UTC)
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .expect("a UTC time formats");
    format!("homelab-{lab}-logs-{ts}")
}

/// The finished archive in memory.
#[derive(Debug)]
pub struct Packed {
    /// The `.tar.gz` bytes.
    pub bytes: Vec<u8>,
    /// Every record, as the index lists them.
    pub records: Vec<Record>,
    /// How many secret values were replaced, over all files.
    pub replaced: usize,
}

/// Scrub every file, add `README.txt` and `index.json`, and pack it all under `<stem>/`.
pub fn pack(bundle: Bundle, header: &Header, scrubber: &Scrubber) -> Packed {
    let stem = stem(&header.lab, header.created);
    let mtime = header.created.unix_timestamp().max(0) as u64;
    let mut replaced = 0;
    let mut files = Vec::with_capacity(bundle.files.len());
    for (path, bytes) in bundle.files {
        let (clean, n) = scrubber.scrub_bytes(&bytes);
        replaced += n;
        files.push((path, clean));
    }
    let records = bundle.records;
    let readme = scrubber.scrub(&readme(header, &records, scrubber, replaced));
    let index = serde_json::json!({
        "lab": header.lab,
        "created": rfc3339(header.created),
        "tool": header.tool,
        "secret_values_replaced": replaced,
        "entries": records,
    });
    let index = scrubber.scrub(&serde_json::to_string_pretty(&index).expect("index serializes"));

    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut add = |path: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, format!("{stem}/{path}"), bytes)
            .expect("appending to an in-memory archive cannot fail");
    };
    add("README.txt", readme.as_bytes());
    add("index.json", index.as_bytes());
    for (path, bytes) in &files {
        add(path, bytes);
    }
    let gz = tar
        .into_inner()
        .expect("finishing an in-memory archive cannot fail");
    let bytes = gz.finish().expect("compressing in memory cannot fail");
    Packed {
        bytes,
        records,
        replaced,
    }
}

/// Write `packed` as `<dir>/<stem>.tar.gz` (a new name if that exists), atomically, mode 0600.
pub fn write(packed: &Packed, dir: &Path, stem: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .map_err(crate::edges::error::io_err("create directory", dir))
        .context(format!("write the logs archive into `{}`", dir.display()))?;
    let mut target = dir.join(format!("{stem}.tar.gz"));
    let mut n = 2;
    while target.exists() {
        target = dir.join(format!("{stem}-{n}.tar.gz"));
        n += 1;
    }
    crate::edges::state::write_atomic(&target, &packed.bytes, 0o600)
        .map_err(Error::from)
        .map_err(|e| e.hint("pass another directory: `homelab export logs DIR`"))?;
    Ok(target)
}

/// `2026-03-04T05:06:07Z`: to the second, in UTC.
fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn readme(header: &Header, records: &[Record], scrubber: &Scrubber, replaced: usize) -> String {
    let mut out = String::new();
    let created = rfc3339(header.created);
    let _ = writeln!(
        out,
        "homelab export logs: lab `{}`, {created}, {}\n",
        header.lab, header.tool
    );
    out.push_str(
        "What `homelab export logs` found about this lab, to learn why it failed: the lab's state\n\
         and settings, its rendered manifests, what Multipass and each VM say (cloud-init,\n\
         provisioning markers, `microk8s inspect`), and from the cluster the lab's events, pod\n\
         statuses, container logs, Applications and nodes. `index.json` lists the same as data.\n\n",
    );
    let _ = writeln!(
        out,
        "Secrets: Secret objects were never read; every known secret value of the lab ({} forms:\n\
         secrets.json values, the CA key, kubeconfig credentials, and their base64) was replaced\n\
         by `<redacted>` in every file ({replaced} replaced).",
        scrubber.len()
    );
    if scrubber.too_short() > 0 {
        let _ = writeln!(
            out,
            "{} value(s) shorter than {} characters could not be scrubbed safely.",
            scrubber.too_short(),
            crate::edges::redact::MIN_SCRUBBED_LEN
        );
    }
    for note in &header.notes {
        let _ = writeln!(out, "Note: {note}");
    }
    for (title, status) in [
        ("Collected", Status::Collected),
        ("Failed", Status::Failed),
        ("Skipped", Status::Skipped),
    ] {
        let rows: Vec<&Record> = records.iter().filter(|r| r.status == status).collect();
        let _ = writeln!(out, "\n{title} ({})", rows.len());
        for r in rows {
            match &r.file {
                Some(f) => {
                    let _ = write!(out, "  {f}\n      {}", r.what);
                }
                None => {
                    let _ = write!(out, "  {}", r.what);
                }
            }
            if let Some(d) = &r.detail {
                for (i, line) in d.lines().enumerate() {
                    let lead = if i == 0 { "\n      → " } else { "\n        " };
                    let _ = write!(out, "{lead}{line}");
                }
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn unpack(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let p = e.path().unwrap().display().to_string();
                let mut b = Vec::new();
                e.read_to_end(&mut b).unwrap();
                (p, b)
            })
            .collect()
    }

    #[test]
    fn packed_archive_has_readme_index_and_scrubbed_files_under_one_folder() {
        let created = time::macros::datetime!(2026-03-04 05:06:07 UTC);
        let mut b = Bundle::new();
        b.file("status.json", "`homelab status --output json`", "{}");
        b.file(
            "namespaces/gitea/logs/gitea-0/gitea.log",
            "log",
            "admin password is s3cretPassw0rd\n",
        );
        b.failed(
            Some("vms/x/microk8s-inspect.txt"),
            "`sudo microk8s inspect` in `x`",
            "exited with 1",
            Some(b"partial".to_vec()),
        );
        b.failed(None, "`cloud-init status`", "timed out", None);
        b.skipped("cluster", "no kubeconfig");
        let mut s = Scrubber::new();
        s.add("s3cretPassw0rd");
        let header = Header {
            lab: "t".into(),
            created,
            tool: "homelab 0.1.0".into(),
            notes: vec![],
        };
        let packed = pack(b, &header, &s);
        assert_eq!(packed.replaced, 1);
        let files = unpack(&packed.bytes);
        let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        let top = "homelab-t-logs-20260304T050607Z";
        assert_eq!(
            names,
            [
                format!("{top}/README.txt"),
                format!("{top}/index.json"),
                format!("{top}/status.json"),
                format!("{top}/namespaces/gitea/logs/gitea-0/gitea.log"),
                format!("{top}/vms/x/microk8s-inspect.txt"),
            ]
        );
        for (_, bytes) in &files {
            assert!(!String::from_utf8_lossy(bytes).contains("s3cretPassw0rd"));
        }
        let readme = String::from_utf8(files[0].1.clone()).unwrap();
        assert!(readme.contains("Collected (2)"), "{readme}");
        assert!(readme.contains("Failed (2)"), "{readme}");
        assert!(
            readme.contains("Skipped (1)\n  cluster\n      → no kubeconfig"),
            "{readme}"
        );
        let index: serde_json::Value = serde_json::from_slice(&files[1].1).unwrap();
        assert_eq!(index["entries"][2]["status"], "failed");
        assert_eq!(index["entries"][3].get("file"), None);
    }
}
