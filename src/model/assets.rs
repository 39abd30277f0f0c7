//! Files compiled into the binary: the stacks under `stacks/` and the templates under `templates/`.
//!
//! Architecture invariant: read-only, pure lookups; `build.rs` generates the list so a new file
//! needs no code change.

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The contents of an embedded file, by its path relative to the repository root.
pub fn get(path: &str) -> Option<&'static str> {
    FILES
        .binary_search_by(|(p, _)| (*p).cmp(path))
        .ok()
        .map(|i| FILES[i].1)
}

/// Embedded files under `prefix` (a directory path ending in `/`), in path order.
pub fn under(prefix: &str) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
    FILES
        .iter()
        .filter(move |(p, _)| p.starts_with(prefix))
        .map(|(p, c)| (*p, *c))
}
