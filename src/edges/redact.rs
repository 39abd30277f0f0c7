//! Secrets that cannot leak by accident, and redaction of URLs that carry credentials.
//!
//! Architecture invariant: a secret value lives in a [`Secret`] from the moment it is read or
//! generated; its `Debug`, `Display` and `Serialize` print `<redacted>`. The one way out is
//! [`Secret::expose`], used where the value is written (state files, templates, HTTP auth) and by
//! `homelab credentials`, the command that exists to show them.
//!
//! [`Scrubber`] is the last line of defence for text that did not come from homelab's own types
//! (pod logs, VM logs, reports other tools wrote): it replaces every known secret value, byte for
//! byte, wherever it appears. `homelab export logs` runs every file of its archive through one.

use std::fmt;

/// The text printed in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// A secret string.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value. Call only where the secret is deliberately used or shown.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Replace the userinfo of a URL (`https://user:token@host/…`) and any `token=`/`access_token=`
/// query values with `<redacted>`, so a URL can be shown in a message or log.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?', '#'])
            .map(|i| rest_start + i)
            .unwrap_or(out.len());
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            out.replace_range(rest_start..rest_start + at, REDACTED);
        }
    }
    for key in ["token=", "access_token=", "password="] {
        let mut search_from = 0;
        while let Some(pos) = out[search_from..].find(key) {
            let start = search_from + pos;
            let boundary_ok = start == 0 || matches!(out.as_bytes()[start - 1], b'?' | b'&');
            let value_start = start + key.len();
            let value_end = out[value_start..]
                .find(['&', '#'])
                .map(|i| value_start + i)
                .unwrap_or(out.len());
            if boundary_ok {
                out.replace_range(value_start..value_end, REDACTED);
                search_from = value_start + REDACTED.len();
            } else {
                search_from = value_start;
            }
        }
    }
    out
}

/// Values shorter than this are not scrubbed: replacing every `abc` in a log would destroy it
/// and protect nothing. Generated secrets are 24 characters or more.
pub const MIN_SCRUBBED_LEN: usize = 6;

/// Replaces every known secret value in text (and bytes) with [`REDACTED`].
///
/// Besides each value as given it knows the forms a value takes where Kubernetes and HTTP put it:
/// standard base64 (Secret `data`, `Authorization: Basic`), and for PEM blocks (private keys)
/// every base64 line of the body, so a key that reaches a log line by line is caught too. One
/// pass over the bytes finds every value at once, the longest where two overlap.
#[derive(Clone, Default)]
pub struct Scrubber {
    needles: Vec<Vec<u8>>,
    /// Built from `needles` whenever one is added.
    automaton: Option<aho_corasick::AhoCorasick>,
    /// Values left out as too short to scrub safely.
    too_short: usize,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Scrubber({} needles, {} too short)",
            self.needles.len(),
            self.too_short
        )
    }
}

impl Scrubber {
    /// One that knows nothing yet.
    pub fn new() -> Scrubber {
        Scrubber::default()
    }

    /// Learn a secret value (and its base64 form; for PEM, each body line).
    pub fn add(&mut self, value: &str) {
        let value = value.trim_matches(|c: char| c == '\n' || c == '\r');
        if value.is_empty() {
            return;
        }
        if value.len() < MIN_SCRUBBED_LEN {
            self.too_short += 1;
            return;
        }
        let mut forms = vec![value.as_bytes().to_vec()];
        use base64::Engine as _;
        forms.push(
            base64::engine::general_purpose::STANDARD
                .encode(value)
                .into_bytes(),
        );
        if value.starts_with("-----BEGIN") {
            for line in value.lines().map(str::trim) {
                if line.len() >= 16 && !line.starts_with("-----") {
                    forms.push(line.as_bytes().to_vec());
                }
            }
        }
        let before = self.needles.len();
        for f in forms {
            if !self.needles.contains(&f) {
                self.needles.push(f);
            }
        }
        if self.needles.len() != before {
            self.automaton = Some(
                aho_corasick::AhoCorasick::builder()
                    .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                    .build(&self.needles)
                    .expect("a few hundred literal patterns always build"),
            );
        }
    }

    /// Learn a [`Secret`].
    pub fn add_secret(&mut self, secret: &Secret) {
        self.add(secret.expose());
    }

    /// How many distinct byte strings it replaces.
    pub fn len(&self) -> usize {
        self.needles.len()
    }

    /// True when it knows no value.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// How many values were left out as shorter than [`MIN_SCRUBBED_LEN`].
    pub fn too_short(&self) -> usize {
        self.too_short
    }

    /// `bytes` with every known value replaced; also how many replacements were made.
    pub fn scrub_bytes(&self, bytes: &[u8]) -> (Vec<u8>, usize) {
        let Some(ac) = &self.automaton else {
            return (bytes.to_vec(), 0);
        };
        let mut out = Vec::with_capacity(bytes.len());
        let mut last = 0;
        let mut count = 0;
        for m in ac.find_iter(bytes) {
            out.extend_from_slice(&bytes[last..m.start()]);
            out.extend_from_slice(REDACTED.as_bytes());
            last = m.end();
            count += 1;
        }
        out.extend_from_slice(&bytes[last..]);
        (out, count)
    }

    /// `text` with every known value replaced.
    pub fn scrub(&self, text: &str) -> String {
        let (bytes, _) = self.scrub_bytes(text.as_bytes());
        // Needles and the replacement are whole UTF-8 strings, so the result still is one.
        String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn urls_lose_credentials() {
        assert_eq!(
            redact_url("https://lab-admin:abc123@gitea.10.0.0.5.sslip.io/lab/gitops.git"),
            "https://<redacted>@gitea.10.0.0.5.sslip.io/lab/gitops.git"
        );
        assert_eq!(
            redact_url("https://drone.x/api/user?access_token=s3cret&x=1"),
            "https://drone.x/api/user?access_token=<redacted>&x=1"
        );
        assert_eq!(
            redact_url("https://a.b/path?mytoken=keep"),
            "https://a.b/path?mytoken=keep"
        );
        assert_eq!(redact_url("https://a.b/p"), "https://a.b/p");
    }

    #[test]
    fn scrubber_replaces_values_their_base64_and_key_lines() {
        let mut s = Scrubber::new();
        s.add("hunter2hunter2");
        s.add("abc");
        s.add("");
        let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n";
        s.add(key);
        assert_eq!(s.too_short(), 1);
        let text = format!(
            "pw=hunter2hunter2 b64={} line: MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n{key}abc",
            "aHVudGVyMmh1bnRlcjI="
        );
        let out = s.scrub(&text);
        assert!(!out.contains("hunter2"), "{out}");
        assert!(!out.contains("aHVudGVyMmh1bnRlcjI="), "{out}");
        assert!(!out.contains("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"), "{out}");
        assert!(!out.contains("BKcwggSjAgEAAoIBAQC7"), "{out}");
        assert!(
            out.starts_with("pw=<redacted> b64=<redacted> line: <redacted>\n"),
            "{out}"
        );
        assert!(out.ends_with("abc"), "too short to scrub: {out}");
        let (bytes, n) = s.scrub_bytes(b"\x00\xffhunter2hunter2\x00");
        assert_eq!((bytes, n), (b"\x00\xff<redacted>\x00".to_vec(), 1));
        assert_eq!(s.scrub("nothing here"), "nothing here");
        // A value that contains another is replaced whole, not around the shorter one.
        let mut t = Scrubber::new();
        t.add("secret-value");
        t.add("my-secret-value-long");
        assert_eq!(
            t.scrub("x my-secret-value-long y secret-value"),
            "x <redacted> y <redacted>"
        );
    }
}
