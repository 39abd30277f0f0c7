//! This computer: trusting the lab CA, doctor's checks, the host's tools, exporting a lab's
//! logs into one archive.

pub mod doctor;
pub mod export;
pub mod trust;
