//! The `Authorization` header: HTTP Basic credentials (RFC 7617) as the faked servers read them.

use base64::Engine as _;

/// `user` and `password` of a Basic credential (the base64 part after `Basic `); a value that
/// does not decode reads as an empty user, one without a colon as a user with no password.
pub fn basic_credentials(encoded: &str) -> (String, String) {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
    (user.to_string(), password.to_string())
}
