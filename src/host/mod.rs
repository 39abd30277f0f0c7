//! This computer: trusting the lab CA, doctor's checks, the host's tools, exporting a lab's
//! logs into one archive, serving the cache to a workshop room.

pub mod doctor;
pub mod export;
pub mod mirror;
pub mod offline;
pub mod trust;
