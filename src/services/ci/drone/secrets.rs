//! The decision about the pipeline's secrets in Drone, as a pure function of what was read.
//!
//! Place in the data flow: `wire` lists the repository's secret names, calls [`plan`], then
//! POSTs the missing ones and PATCHes the changed ones. Architecture invariant: Drone never
//! returns a secret's value, so "unchanged" is known from a fingerprint of the value last set,
//! kept in the lab's non-secret record; a secret Drone lacks is always created, never POSTed
//! twice (Drone answers 500 to a duplicate name).

use std::collections::{BTreeMap, BTreeSet};

use sha2::Digest as _;

use crate::edges::redact::Secret;

/// What to do with one secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Missing in Drone: POST.
    Create,
    /// Present, value changed or unknown: PATCH.
    Update,
    /// Present with the value last set.
    Keep,
}

/// A salted, name-bound SHA-256 of a secret value: enough to see a change, useless to guess the
/// value of a high-entropy token.
pub fn fingerprint(name: &str, value: &Secret) -> String {
    let mut h = sha2::Sha256::new();
    h.update(b"homelab drone secret\0");
    h.update(name.as_bytes());
    h.update(b"\0");
    h.update(value.expose().as_bytes());
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Per desired secret (in the order given): what to do.
pub fn plan(
    existing: &BTreeSet<String>,
    desired: &[(String, Secret)],
    recorded: &BTreeMap<String, String>,
) -> Vec<(String, Action)> {
    desired
        .iter()
        .map(|(name, value)| {
            let action = if !existing.contains(name) {
                Action::Create
            } else if recorded.get(name) == Some(&fingerprint(name, value)) {
                Action::Keep
            } else {
                Action::Update
            };
            (name.clone(), action)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_changed_and_unchanged_secrets() {
        let desired = vec![
            ("a".to_string(), Secret::new("1")),
            ("b".to_string(), Secret::new("2")),
            ("c".to_string(), Secret::new("3")),
            ("d".to_string(), Secret::new("4")),
        ];
        let existing: BTreeSet<String> = ["b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let recorded: BTreeMap<String, String> = [
            ("b".to_string(), fingerprint("b", &Secret::new("2"))),
            ("c".to_string(), fingerprint("c", &Secret::new("old"))),
        ]
        .into();
        assert_eq!(
            plan(&existing, &desired, &recorded),
            vec![
                ("a".into(), Action::Create),
                ("b".into(), Action::Keep),
                ("c".into(), Action::Update),
                ("d".into(), Action::Update),
            ]
        );
    }

    #[test]
    fn fingerprints_bind_the_name_and_hide_the_value() {
        let v = Secret::new("token-value");
        assert_ne!(fingerprint("a", &v), fingerprint("b", &v));
        assert!(!fingerprint("a", &v).contains("token-value"));
        assert!(fingerprint("a", &v).starts_with("sha256:"));
    }
}
