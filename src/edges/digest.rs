//! SHA-256 as lowercase hex: the content address of upstream files and cached copies, the
//! applied hash of an object, short names derived from URLs and certificates.

use sha2::{Digest as _, Sha256};

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
