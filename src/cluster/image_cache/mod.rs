//! Container images in the cache: the OCI image layout on disk ([`layout`]), filled by
//! `homelab prepare` and read by `up`'s side-load.

pub mod layout;
pub mod pull;

pub use layout::{Entry, Layout, LayoutError, normalize_reference};
