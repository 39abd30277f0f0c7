//! Secrets that cannot leak by accident, and redaction of URLs that carry credentials.
//!
//! Architecture invariant: a secret value lives in a [`Secret`] from the moment it is read or
//! generated; its `Debug`, `Display` and `Serialize` print `<redacted>`. The one way out is
//! [`Secret::expose`], used where the value is written (state files, templates, HTTP auth) and by
//! `homelab credentials`, the command that exists to show them.

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
}
