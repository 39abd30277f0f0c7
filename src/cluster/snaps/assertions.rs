//! Snap assertions, as far as homelab needs them to let a VM install a snap file without
//! `--dangerous`: read the store's assertion text, follow each assertion's prerequisites the way
//! snapd's fetcher does, and check that a `.assert` stream covers a given snap file.
//!
//! Architecture invariant: pure (no I/O). Signatures are not checked here: the VM's snapd checks
//! them on `snap ack`, against the root key it ships. homelab only makes sure the stream is the
//! one for this file (its `snap-revision` names the file's SHA3-384 and revision) and complete.
//!
//! Facts from canonical/snapd (commit bee548f7, Aug 2026):
//! - `asserts/asserts.go`: an assertion is its headers (`name: value` lines; longer values
//!   continue on indented lines), an optional body (`body-length` bytes after a blank line),
//!   then a blank line and the signature; `Encoder` separates assertions in a stream with a
//!   blank line. Primary keys: `account` by `account-id`, `account-key` by
//!   `public-key-sha3-384`, `snap-declaration` by `series`/`snap-id`, `snap-revision` by
//!   `snap-sha3-384` (its `provenance` key defaults to `global-upload` and is then left out of
//!   URLs, `ReducePrimaryKey`). The media type is `application/x.ubuntu.assertion`.
//! - `asserts/fetcher.go`: the prerequisites of an assertion, then the account-key that signed
//!   it (`sign-key-sha3-384`), are fetched and saved before the assertion itself; predefined
//!   (trusted) assertions are never fetched.
//! - Prerequisites: `snap-revision` → `snap-declaration` (series 16, its `snap-id`) and
//!   `account` (`developer-id`) (`asserts/snap_asserts.go`); `snap-declaration` → `account`
//!   (`publisher-id`); `account-key` → `account` (`account-id`) (`asserts/account_key.go`).
//! - Trusted: the `canonical` account and Canonical's root account-key
//!   (`asserts/sysdb/trusted.go`).
//! - `asserts/digest.go`: digests in headers are base64 URL-safe without padding.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;

/// The series every snap assertion homelab uses is for (`release.Series`).
pub const SERIES: &str = "16";

/// Canonical's root account-key, trusted by every snapd (`asserts/sysdb/trusted.go`).
pub const ROOT_KEY: &str = "-CvQKAwRQ5h3Ffn10FILJoEZUXOv6km9FwA80-Rcj-f-6jadQ89VRswHNiEB9Lxk";

/// The account snapd trusts without fetching it.
pub const TRUSTED_ACCOUNT: &str = "canonical";

/// One assertion: its top-level headers and its whole text (signature included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assertion {
    /// Top-level single-line headers (`type`, `sign-key-sha3-384`, the primary keys, …).
    pub headers: BTreeMap<String, String>,
    /// The encoded assertion, as received.
    pub text: String,
}

impl Assertion {
    /// A header's value, `""` when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    /// The reference it answers.
    pub fn reference(&self) -> Option<Ref> {
        let t = self.header("type");
        let key = match t {
            "account" => vec![self.header("account-id").to_string()],
            "account-key" => vec![self.header("public-key-sha3-384").to_string()],
            "snap-declaration" => vec![
                self.header("series").to_string(),
                self.header("snap-id").to_string(),
            ],
            "snap-revision" => vec![self.header("snap-sha3-384").to_string()],
            _ => return None,
        };
        Some(Ref {
            kind: t.to_string(),
            key,
        })
    }

    /// What must be known before this assertion: its prerequisites, then its signing key.
    pub fn prerequisites(&self) -> Vec<Ref> {
        let mut out = match self.header("type") {
            "snap-revision" => vec![
                Ref::new("snap-declaration", &[SERIES, self.header("snap-id")]),
                Ref::new("account", &[self.header("developer-id")]),
            ],
            "snap-declaration" => vec![Ref::new("account", &[self.header("publisher-id")])],
            "account-key" => vec![Ref::new("account", &[self.header("account-id")])],
            _ => vec![],
        };
        out.push(Ref::new("account-key", &[self.header("sign-key-sha3-384")]));
        out
    }
}

/// Which assertion: its type and primary key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ref {
    /// `account`, `account-key`, `snap-declaration`, `snap-revision`.
    pub kind: String,
    /// Primary key values, in the type's order.
    pub key: Vec<String>,
}

impl Ref {
    /// A reference.
    pub fn new(kind: &str, key: &[&str]) -> Ref {
        Ref {
            kind: kind.to_string(),
            key: key.iter().map(|k| k.to_string()).collect(),
        }
    }

    /// The path below the store's `v2/assertions/`: `<type>/<key>/…`.
    pub fn path(&self) -> String {
        let mut p = self.kind.clone();
        for k in &self.key {
            p.push('/');
            p.push_str(k);
        }
        p
    }

    /// snapd trusts it without fetching (it ships it).
    pub fn predefined(&self) -> bool {
        (self.kind == "account" && self.key == [TRUSTED_ACCOUNT])
            || (self.kind == "account-key" && self.key == [ROOT_KEY])
    }

    /// The highest format snapd (commit bee548f7) asks for, `max-format` (`asserts/asserts.go`
    /// `maxSupportedFormat`): 7 for snap-declaration, 1 for account-key, else 0.
    pub fn max_format(&self) -> u32 {
        match self.kind.as_str() {
            "snap-declaration" => 7,
            "account-key" => 1,
            _ => 0,
        }
    }
}

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.key.join("/"))
    }
}

/// A hex SHA3-384 as assertions write it: base64 URL-safe, no padding.
pub fn digest_header(sha3_384_hex: &str) -> Option<String> {
    let raw = hex::decode(sha3_384_hex).ok()?;
    (raw.len() == 48).then(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// Read one assertion or a stream of them.
pub fn parse_stream(text: &str) -> Result<Vec<Assertion>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    let bytes = text.as_bytes();
    loop {
        while pos < bytes.len() && bytes[pos] == b'\n' {
            pos += 1;
        }
        if pos >= bytes.len() {
            return Ok(out);
        }
        let start = pos;
        let head_end = find(text, pos, "\n\n").ok_or("an assertion without a signature")?;
        let headers = parse_headers(&text[start..head_end])?;
        let mut after = head_end + 2;
        let body_length: usize = match headers.get("body-length") {
            Some(v) => v.parse().map_err(|_| format!("bad body-length {v:?}"))?,
            None => 0,
        };
        if body_length > 0 {
            after += body_length;
            if text.get(after..after + 2) != Some("\n\n") {
                return Err("an assertion body longer than its body-length".into());
            }
            after += 2;
        }
        let sig_end = find(text, after, "\n\n").unwrap_or(text.len());
        if text[after..sig_end].trim().is_empty() {
            return Err("an assertion without a signature".into());
        }
        if !headers.contains_key("type") {
            return Err("an assertion without a type".into());
        }
        out.push(Assertion {
            headers,
            text: text[start..sig_end].trim_end_matches('\n').to_string(),
        });
        pos = sig_end;
    }
}

fn find(text: &str, from: usize, what: &str) -> Option<usize> {
    text.get(from..)?.find(what).map(|i| i + from)
}

fn parse_headers(block: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for line in block.lines() {
        if line.starts_with(' ') {
            continue; // continuation of a multi-line value
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("a header line without a colon: {line:?}"))?;
        out.insert(k.to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// Encode a stream as snapd's `Encoder` does: assertions separated by a blank line.
pub fn encode_stream(list: &[Assertion]) -> String {
    let mut out = String::new();
    for (i, a) in list.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&a.text);
        out.push('\n');
    }
    out
}

/// Check that `stream` is the assertions of the snap file with this SHA3-384 (hex) and
/// revision: its `snap-revision` names both, and every prerequisite of every assertion is in
/// the stream or predefined. The snap-id on success.
pub fn check_covers(stream: &str, sha3_384_hex: &str, revision: u64) -> Result<String, String> {
    let list = parse_stream(stream)?;
    let digest = digest_header(sha3_384_hex).ok_or("not a SHA3-384 digest")?;
    let rev = list
        .iter()
        .find(|a| a.header("type") == "snap-revision" && a.header("snap-sha3-384") == digest)
        .ok_or_else(|| format!("no snap-revision assertion for SHA3-384 {sha3_384_hex}"))?;
    if rev.header("snap-revision") != revision.to_string() {
        return Err(format!(
            "its snap-revision assertion is for revision {}, not {revision}",
            rev.header("snap-revision")
        ));
    }
    let present: BTreeSet<Ref> = list.iter().filter_map(Assertion::reference).collect();
    for a in &list {
        for p in a.prerequisites() {
            if !p.predefined() && !present.contains(&p) {
                return Err(format!("{p} is missing (needed by {})", a.header("type")));
            }
        }
    }
    Ok(rev.header("snap-id").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assertion(headers: &[(&str, &str)]) -> String {
        let mut t = String::new();
        for (k, v) in headers {
            t.push_str(&format!("{k}: {v}\n"));
        }
        t.push_str("\nAcLBUgQAAQoABgUCZ\nsignature==");
        t
    }

    #[test]
    fn a_stream_reads_back_with_its_body_and_multi_line_headers() {
        let decl = "type: snap-declaration\nauthority-id: canonical\nseries: 16\nsnap-id: ID\nplugs:\n  kernel-module-control:\n    allow-auto-connection: true\npublisher-id: pub\nsign-key-sha3-384: STORE\nbody-length: 5\n\nhello\n\nSIG1";
        let key = assertion(&[
            ("type", "account-key"),
            ("public-key-sha3-384", "STORE"),
            ("account-id", "canonical"),
            ("sign-key-sha3-384", ROOT_KEY),
        ]);
        let list = parse_stream(&format!("{key}\n\n{decl}\n")).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].header("publisher-id"), "pub");
        assert_eq!(list[1].header("plugs"), "");
        assert!(list[1].text.ends_with("SIG1"));
        assert_eq!(parse_stream(&encode_stream(&list)).unwrap(), list);
        assert_eq!(
            list[1].prerequisites(),
            vec![
                Ref::new("account", &["pub"]),
                Ref::new("account-key", &["STORE"])
            ]
        );
        assert!(list[0].prerequisites().iter().all(Ref::predefined));
    }

    #[test]
    fn coverage_needs_the_right_revision_and_every_prerequisite() {
        let hex = "ab".repeat(48);
        let digest = digest_header(&hex).unwrap();
        let rev = assertion(&[
            ("type", "snap-revision"),
            ("snap-sha3-384", &digest),
            ("snap-id", "ID"),
            ("snap-revision", "42"),
            ("developer-id", "canonical"),
            ("sign-key-sha3-384", "STORE"),
        ]);
        let key = assertion(&[
            ("type", "account-key"),
            ("public-key-sha3-384", "STORE"),
            ("account-id", "canonical"),
            ("sign-key-sha3-384", ROOT_KEY),
        ]);
        let decl = assertion(&[
            ("type", "snap-declaration"),
            ("series", "16"),
            ("snap-id", "ID"),
            ("publisher-id", "canonical"),
            ("sign-key-sha3-384", "STORE"),
        ]);
        let full = format!("{key}\n\n{decl}\n\n{rev}\n");
        assert_eq!(check_covers(&full, &hex, 42).unwrap(), "ID");
        assert!(
            check_covers(&full, &hex, 43)
                .unwrap_err()
                .contains("revision 42")
        );
        assert!(
            check_covers(&full, &"cd".repeat(48), 42)
                .unwrap_err()
                .contains("no snap-revision")
        );
        let partial = format!("{key}\n\n{rev}\n");
        assert!(
            check_covers(&partial, &hex, 42)
                .unwrap_err()
                .contains("snap-declaration 16/ID is missing")
        );
    }
}
